//! The policy's controls: `GET /v1/policy` (mode, the leader's last round and
//! knobs), `POST /v1/policy/{pause,resume,dry-run}` and `GET /v1/decisions`.
//! Any rebalancer serves them: the mode lives in the catalog and the leader's
//! loop reads it every round.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::Deserialize;
use shardline_router::AppError;

use super::{Admin, AdminState, ApiError};
use crate::autopilot::{
    DecisionFilter, LoopError, PolicyMode, PolicyState, StoredDecision, list_decisions, state,
};

type ApiResult<T> = Result<T, ApiError>;

impl From<LoopError> for ApiError {
    fn from(e: LoopError) -> Self {
        match e {
            LoopError::Db(e) => e.into(),
            other => ApiError(AppError::internal(other)),
        }
    }
}

pub async fn get_policy(_: Admin, State(s): State<AdminState>) -> ApiResult<Json<PolicyState>> {
    Ok(Json(state::get(&s.catalog).await?))
}

async fn set(s: &AdminState, mode: PolicyMode) -> ApiResult<Json<PolicyState>> {
    Ok(Json(state::set_mode(&s.catalog, mode, "admin-api").await?))
}

pub async fn pause(_: Admin, State(s): State<AdminState>) -> ApiResult<Json<PolicyState>> {
    set(&s, PolicyMode::Paused).await
}

pub async fn resume(_: Admin, State(s): State<AdminState>) -> ApiResult<Json<PolicyState>> {
    set(&s, PolicyMode::Active).await
}

pub async fn dry_run(_: Admin, State(s): State<AdminState>) -> ApiResult<Json<PolicyState>> {
    set(&s, PolicyMode::DryRun).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionsQuery {
    limit: Option<i64>,
    taken: Option<bool>,
    reason: Option<String>,
    before: Option<i64>,
}

pub async fn decisions(
    _: Admin,
    State(s): State<AdminState>,
    q: Result<Query<DecisionsQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<StoredDecision>>> {
    let q = q
        .map(|Query(v)| v)
        .map_err(|r| ApiError(AppError::bad_request("invalid_query", r.body_text())))?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(AppError::bad_request("invalid_query", "limit must be 1-1000").into());
    }
    if let Some(r) = &q.reason
        && !crate::policy::Reason::ALL.iter().any(|c| c.code() == r)
    {
        return Err(
            AppError::bad_request("invalid_query", format!("unknown reason code {r:?}")).into(),
        );
    }
    let f = DecisionFilter {
        limit,
        taken: q.taken,
        reason: q.reason,
        before: q.before,
    };
    Ok(Json(list_decisions(&s.catalog, &f).await?))
}

//! Admin API handlers. Each is one catalog read or one intent written to the
//! catalog; the leader engine acts on moves.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use shardline_core::MerchantId;
use shardline_router::AppError;
use uuid::Uuid;

use super::views::{MOVE_VIEW_COLUMNS, MoveEventView, MoveView, ShardView};
use super::{Admin, AdminState, ApiError};
use crate::engine::{Subject, plan_move, request_abort};
use crate::ops;
use shardline_core::catalog::RangeRow;

type ApiResult<T> = Result<T, ApiError>;

/// A JSON body whose every rejection is a problem (400 `invalid_body`, 415).
fn body<T>(b: Result<Json<T>, JsonRejection>) -> ApiResult<T> {
    match b {
        Ok(Json(v)) => Ok(v),
        Err(JsonRejection::MissingJsonContentType(_)) => Err(AppError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected Content-Type: application/json",
        )
        .into()),
        Err(r) => Err(AppError::bad_request("invalid_body", r.body_text()).into()),
    }
}

/// A query string whose rejection is a problem (400 `invalid_query`).
fn query<T>(q: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    q.map(|Query(v)| v)
        .map_err(|r| AppError::bad_request("invalid_query", r.body_text()).into())
}

fn parse_merchant(s: &str) -> ApiResult<MerchantId> {
    s.parse::<MerchantId>()
        .map_err(|e| AppError::from(e).into())
}

fn parse_move_id(s: &str) -> ApiResult<Uuid> {
    Uuid::try_parse(s).map_err(|_| {
        AppError::bad_request("invalid_id", format!("{s:?} is not a move id (UUID)")).into()
    })
}

pub async fn shards(_: Admin, State(s): State<AdminState>) -> ApiResult<Json<Vec<ShardView>>> {
    let rows = sqlx::query_as::<_, ShardView>(
        "SELECT s.id, s.state,
                (SELECT count(*) FROM ranges r WHERE r.shard_id = s.id) AS ranges,
                (SELECT coalesce(sum(r.end_key - r.start_key), 0)::bigint
                   FROM ranges r WHERE r.shard_id = s.id) AS keys,
                (SELECT count(*) FROM moves m WHERE m.target_shard = s.id
                    AND m.state NOT IN ('done', 'aborted')) AS moves_in,
                (SELECT count(*) FROM moves m WHERE m.source_shard = s.id
                    AND m.state NOT IN ('done', 'aborted')) AS moves_out
           FROM shards s ORDER BY s.id",
    )
    .fetch_all(&s.catalog)
    .await?;
    Ok(Json(rows))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangesQuery {
    shard: Option<String>,
}

pub async fn ranges(
    _: Admin,
    State(s): State<AdminState>,
    q: Result<Query<RangesQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<RangeRow>>> {
    let q = query(q)?;
    let rows = sqlx::query_as::<_, RangeRow>(
        "SELECT id, start_key, end_key, shard_id, epoch, state FROM ranges
          WHERE $1::text IS NULL OR shard_id = $1 ORDER BY start_key",
    )
    .bind(q.shard)
    .fetch_all(&s.catalog)
    .await?;
    Ok(Json(rows))
}

async fn range_view(s: &AdminState, id: i64) -> ApiResult<RangeRow> {
    sqlx::query_as::<_, RangeRow>(
        "SELECT id, start_key, end_key, shard_id, epoch, state FROM ranges WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&s.catalog)
    .await?
    .ok_or_else(|| AppError::not_found("range_not_found", format!("no range {id}")).into())
}

async fn move_view(s: &AdminState, id: Uuid, with_events: bool) -> ApiResult<MoveView> {
    let mut m = sqlx::query_as::<_, MoveView>(sqlx::AssertSqlSafe(format!(
        "SELECT {MOVE_VIEW_COLUMNS} FROM moves WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&s.catalog)
    .await?
    .ok_or_else(|| AppError::not_found("move_not_found", format!("no move {id}")))?;
    if with_events {
        m.events = Some(
            sqlx::query_as::<_, MoveEventView>(
                "SELECT at, from_state, to_state, detail FROM move_events
                  WHERE move_id = $1 ORDER BY id",
            )
            .bind(id)
            .fetch_all(&s.catalog)
            .await?,
        );
    }
    Ok(m)
}

/// `POST /v1/moves`: exactly one of `range_id` / `merchant_id`, and `to`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateMove {
    range_id: Option<i64>,
    merchant_id: Option<String>,
    to: String,
    reason: Option<String>,
}

pub async fn create_move(
    _: Admin,
    State(s): State<AdminState>,
    b: Result<Json<CreateMove>, JsonRejection>,
) -> ApiResult<Response> {
    let b = body(b)?;
    let subject = match (b.range_id, b.merchant_id.as_deref()) {
        (Some(r), None) => Subject::Range(r),
        (None, Some(m)) => Subject::Merchant(parse_merchant(m)?),
        _ => {
            return Err(AppError::bad_request(
                "invalid_body",
                "give exactly one of range_id or merchant_id",
            )
            .into());
        }
    };
    let reason = b.reason.unwrap_or_else(|| "operator".to_owned());
    if reason.is_empty() || reason.len() > 200 {
        return Err(AppError::bad_request("invalid_body", "reason must be 1-200 bytes").into());
    }
    let id = plan_move(&s.catalog, subject, &b.to, &reason).await?;
    let view = move_view(&s, id, false).await?;
    let mut resp = (StatusCode::ACCEPTED, Json(view)).into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/moves/{id}")) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MovesQuery {
    /// A state, or `unfinished`.
    state: Option<String>,
    limit: Option<i64>,
}

pub async fn list_moves(
    _: Admin,
    State(s): State<AdminState>,
    q: Result<Query<MovesQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<MoveView>>> {
    let q = query(q)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(AppError::bad_request("invalid_query", "limit must be 1-1000").into());
    }
    let filter = match q.state.as_deref() {
        None => "true".to_owned(),
        Some("unfinished") => "state NOT IN ('done', 'aborted')".to_owned(),
        Some(st) => {
            let st: crate::MoveState = st.parse().map_err(|_| {
                AppError::bad_request(
                    "invalid_query",
                    format!("unknown state {st:?} (a move state or `unfinished`)"),
                )
            })?;
            format!("state = '{}'", st.as_str())
        }
    };
    let rows = sqlx::query_as::<_, MoveView>(sqlx::AssertSqlSafe(format!(
        "SELECT {MOVE_VIEW_COLUMNS} FROM moves WHERE {filter} ORDER BY created_at DESC LIMIT $1"
    )))
    .bind(limit)
    .fetch_all(&s.catalog)
    .await?;
    Ok(Json(rows))
}

pub async fn get_move(
    _: Admin,
    State(s): State<AdminState>,
    Path(id): Path<String>,
) -> ApiResult<Json<MoveView>> {
    let id = parse_move_id(&id)?;
    Ok(Json(move_view(&s, id, true).await?))
}

pub async fn abort_move(
    _: Admin,
    State(s): State<AdminState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = parse_move_id(&id)?;
    if request_abort(&s.catalog, id).await? {
        let view = move_view(&s, id, false).await?;
        return Ok((StatusCode::ACCEPTED, Json(view)).into_response());
    }
    let view = move_view(&s, id, false).await?;
    Err(AppError::conflict(
        "move_not_abortable",
        format!(
            "move {id} is {}: after the catalog flip (switched) a move only goes forward",
            view.state
        ),
    )
    .into())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Split {
    range_id: i64,
    at: i64,
}

pub async fn split(
    _: Admin,
    State(s): State<AdminState>,
    b: Result<Json<Split>, JsonRejection>,
) -> ApiResult<Response> {
    let b = body(b)?;
    range_view(&s, b.range_id).await?;
    let right = ops::split(&s.catalog, b.range_id, b.at).await?;
    let out = json!({
        "left": range_view(&s, b.range_id).await?,
        "right": range_view(&s, right).await?,
    });
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Merge {
    left: i64,
    right: i64,
}

pub async fn merge(
    _: Admin,
    State(s): State<AdminState>,
    b: Result<Json<Merge>, JsonRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let b = body(b)?;
    range_view(&s, b.left).await?;
    range_view(&s, b.right).await?;
    ops::merge(&s.catalog, b.left, b.right).await?;
    Ok(Json(json!({ "range": range_view(&s, b.left).await? })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Isolate {
    merchant_id: String,
}

/// Split the map down to the merchant's key (`[k, k+1)`); move it with
/// `POST /v1/moves {range_id}`.
pub async fn isolate(
    _: Admin,
    State(s): State<AdminState>,
    b: Result<Json<Isolate>, JsonRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let b = body(b)?;
    let m = parse_merchant(&b.merchant_id)?;
    let id = ops::isolate(&s.catalog, &m).await?;
    Ok(Json(json!({
        "merchant_id": m.to_string(),
        "shard_key": shardline_core::shard_key(&m),
        "range": range_view(&s, id).await?,
    })))
}

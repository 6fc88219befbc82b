//! The policy's persisted state (`policy_state`, one row): the mode any
//! rebalancer may set, and what the leader's loop reports each round.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::LoopError;

/// `policy_state.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyMode {
    /// Decisions are stored and taken ones executed.
    Active,
    /// Decisions are stored (with `dry_run = true`); nothing is executed.
    DryRun,
    /// No decision round runs.
    Paused,
}

impl PolicyMode {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyMode::Active => "active",
            PolicyMode::DryRun => "dry_run",
            PolicyMode::Paused => "paused",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(PolicyMode::Active),
            "dry_run" => Some(PolicyMode::DryRun),
            "paused" => Some(PolicyMode::Paused),
            _ => None,
        }
    }
}

/// The whole row, as `GET /v1/policy` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyState {
    pub mode: PolicyMode,
    pub changed_by: Option<String>,
    pub changed_at: DateTime<Utc>,
    /// The rebalancer whose loop ran the last round.
    pub leader: Option<String>,
    pub last_round_at: Option<DateTime<Utc>>,
    pub last_round_ms: Option<i32>,
    pub last_error: Option<String>,
    /// The leader's policy configuration (knobs).
    pub config: serde_json::Value,
}

type Row = (
    String,
    Option<String>,
    DateTime<Utc>,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<i32>,
    Option<String>,
    serde_json::Value,
);

/// Reads the state row.
///
/// # Errors
/// The catalog is unreachable or the row is missing or malformed.
pub async fn get(catalog: &PgPool) -> Result<PolicyState, LoopError> {
    fetch(catalog)
        .await?
        .ok_or_else(|| LoopError::Catalog("policy_state has no row".into()))
}

/// Reads the state row, if any, with any executor (the dashboard reads it
/// inside its own read-only snapshot transaction).
///
/// # Errors
/// The catalog is unreachable or the row is malformed.
pub async fn fetch<'e>(
    catalog: impl sqlx::PgExecutor<'e>,
) -> Result<Option<PolicyState>, LoopError> {
    let row: Option<Row> = sqlx::query_as(
        "SELECT mode, changed_by, changed_at, leader, last_round_at, last_round_ms, last_error,
                config
           FROM policy_state",
    )
    .fetch_optional(catalog)
    .await?;
    let Some((
        mode,
        changed_by,
        changed_at,
        leader,
        last_round_at,
        last_round_ms,
        last_error,
        config,
    )) = row
    else {
        return Ok(None);
    };
    Ok(Some(PolicyState {
        mode: PolicyMode::parse(&mode)
            .ok_or_else(|| LoopError::Catalog(format!("policy_state.mode = {mode:?}")))?,
        changed_by,
        changed_at,
        leader,
        last_round_at,
        last_round_ms,
        last_error,
        config,
    }))
}

/// Sets the mode (pause, resume, dry-run); returns the new state.
///
/// # Errors
/// The catalog is unreachable.
pub async fn set_mode(
    catalog: &PgPool,
    mode: PolicyMode,
    by: &str,
) -> Result<PolicyState, LoopError> {
    sqlx::query("UPDATE policy_state SET mode = $1, changed_by = $2, changed_at = now()")
        .bind(mode.as_str())
        .bind(by)
        .execute(catalog)
        .await?;
    tracing::info!(mode = mode.as_str(), by, "policy mode changed");
    get(catalog).await
}

/// The leader's report of one round (or of a failed one).
pub(crate) async fn record_round(
    catalog: &PgPool,
    leader: &str,
    took_ms: i32,
    error: Option<&str>,
    config: &serde_json::Value,
) -> Result<(), LoopError> {
    sqlx::query(
        "UPDATE policy_state SET leader = $1, last_round_at = now(), last_round_ms = $2,
                last_error = $3, config = $4",
    )
    .bind(leader)
    .bind(took_ms)
    .bind(error)
    .bind(config)
    .execute(catalog)
    .await?;
    Ok(())
}

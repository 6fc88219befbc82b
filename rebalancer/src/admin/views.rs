//! What the admin API returns (and the CLI reads back).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A shard and how much of the key space it owns. The DSN is not exposed (it may
/// carry credentials).
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct ShardView {
    pub id: String,
    pub state: String,
    pub ranges: i64,
    /// Keys owned, of 2^32.
    pub keys: i64,
    pub moves_in: i64,
    pub moves_out: i64,
}

/// A move with its phase timings (milliseconds per phase, e.g. `copy_ms`,
/// `pause_ms`) and, for one move, its events.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct MoveView {
    pub id: Uuid,
    pub range_id: i64,
    pub start_key: i64,
    pub end_key: i64,
    pub source_shard: String,
    pub target_shard: String,
    pub state: String,
    pub reason: String,
    pub requested_by: Option<String>,
    pub abort_requested: bool,
    pub error: Option<String>,
    pub phase_ms: serde_json::Value,
    pub stats: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    #[sqlx(skip)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<MoveEventView>>,
}

pub(crate) const MOVE_VIEW_COLUMNS: &str = "id, range_id, start_key, end_key, source_shard, \
     target_shard, state, reason, requested_by, abort_requested, error, phase_ms, stats, \
     created_at, updated_at, finished_at";

/// One entry of a move's audit log.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct MoveEventView {
    pub at: DateTime<Utc>,
    pub from_state: Option<String>,
    pub to_state: String,
    pub detail: serde_json::Value,
}

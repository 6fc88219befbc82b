//! What the policy reads. Every type mirrors a catalog table (or a shard-side
//! measurement) so the loop can fill it with plain queries; nothing here does IO.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shardline_core::{KeyRange, MerchantId, RangeMap, ShardId};
use uuid::Uuid;

/// A merchant in a sample's space-saving sketch (`load_samples.heavy_hitters`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeavyHitter {
    pub merchant_id: MerchantId,
    pub shard_key: u32,
    /// Requests counted for the merchant in the interval (an overestimate).
    pub count: u64,
    /// Bound on the overestimate: `count - error <= truth <= count`.
    pub error: u64,
}

/// One row of `load_samples`: one router's counters for one range over one
/// flush interval. `keys` is the range as the router saw it (it may have been
/// split, merged or moved since: the model attributes load by key, not by id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadSample {
    pub router_id: String,
    /// End of the router's interval (`load_samples.at`).
    pub at: DateTime<Utc>,
    pub range_id: i64,
    pub keys: KeyRange,
    /// The shard that served the requests (`load_samples.shard_id`).
    pub shard: ShardId,
    pub requests: u64,
    pub writes: u64,
    pub rows_touched: u64,
    pub bytes: u64,
    pub latency_us_sum: u64,
    pub latency_us_max: u64,
    pub heavy_hitters: Vec<HeavyHitter>,
}

/// `shards.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardState {
    /// Takes and gives ranges.
    Active,
    /// Gives its ranges away, takes none.
    Draining,
    /// Unreachable: neither a source nor a target.
    Down,
}

impl ShardState {
    /// Parses `shards.state`.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(ShardState::Active),
            "draining" => Some(ShardState::Draining),
            "down" => Some(ShardState::Down),
            _ => None,
        }
    }
}

/// A row of `shards`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub id: ShardId,
    pub state: ShardState,
}

impl ShardInfo {
    /// An active shard.
    pub fn active(id: ShardId) -> Self {
        ShardInfo {
            id,
            state: ShardState::Active,
        }
    }
}

/// An unfinished row of `moves` (state not `done`/`aborted`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveInFlight {
    pub move_id: Uuid,
    pub range_id: i64,
    pub keys: KeyRange,
    pub source: ShardId,
    pub target: ShardId,
    pub started_at: DateTime<Utc>,
    /// Estimated bytes being copied (spent from the byte budget).
    pub bytes: u64,
}

/// A finished row of `moves` (for cooldown, anti-oscillation and the budget).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveRecord {
    pub keys: KeyRange,
    pub source: ShardId,
    pub target: ShardId,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// Bytes the move copied (or its estimate).
    pub bytes: u64,
    /// `done` (true) or `aborted` (false). Only completed moves moved data, so
    /// only they count for anti-oscillation; both count for cooldown and budget.
    pub completed: bool,
}

/// A shard-side size measurement of some keys (e.g. per range from
/// `pg_total_relation_size` shares or row counts x row width). Entries should not
/// overlap; a key range's size is the sum of the entries' overlap, pro rata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SizeEstimate {
    pub keys: KeyRange,
    pub bytes: u64,
}

/// Everything [`decide`](super::decide) looks at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyInput {
    /// The decision time. Only complete intervals before the one holding `now`
    /// are read; cooldowns and the budget are measured back from it.
    pub now: DateTime<Utc>,
    /// The catalog range map.
    pub map: RangeMap,
    pub shards: Vec<ShardInfo>,
    /// Load samples; anything outside the history window is ignored.
    pub samples: Vec<LoadSample>,
    pub in_flight: Vec<MoveInFlight>,
    /// Finished moves (older than the oscillation window are ignored).
    pub history: Vec<MoveRecord>,
    pub sizes: Vec<SizeEstimate>,
}

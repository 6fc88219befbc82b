//! What the policy decides: an action taken or declined, a stable reason code, a
//! human explanation and the inputs that mattered. Serialises to the JSON stored
//! in `decisions.inputs`; [`Decision::kind`], [`Decision::taken`],
//! [`Decision::reason`] and [`Decision::range_id`] fill the other columns.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use shardline_core::{KeyRange, MerchantId, ShardId};

/// Something the loop can execute with the existing operations.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// `ops::isolate(merchant)` (split `range_id` down to `[key, key+1)`), then
    /// `plan_move(Subject::Merchant(merchant), target)`.
    Isolate {
        merchant: MerchantId,
        key: u32,
        range_id: i64,
        source: ShardId,
        target: ShardId,
    },
    /// `plan_move(Subject::Range(range_id), target)`.
    Move {
        range_id: i64,
        keys: KeyRange,
        source: ShardId,
        target: ShardId,
    },
    /// `ops::merge(left, right)` (left id survives).
    Merge {
        left: i64,
        right: i64,
        shard: ShardId,
    },
}

impl Action {
    /// `isolate`, `move` or `merge`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Isolate { .. } => "isolate",
            Action::Move { .. } => "move",
            Action::Merge { .. } => "merge",
        }
    }

    /// The catalog range the action works on (the left one for a merge).
    #[must_use]
    pub fn range_id(&self) -> i64 {
        match self {
            Action::Isolate { range_id, .. } | Action::Move { range_id, .. } => *range_id,
            Action::Merge { left, .. } => *left,
        }
    }
}

/// Stable, machine-readable reason codes (`decisions.reason`). Never rename one:
/// dashboards and alerts key on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    // Taken.
    /// A dominant merchant of a hot shard is split to its key and moved.
    IsolateDominantMerchant,
    /// A range of a hot shard is moved to the shard that ends up coolest.
    RebalanceHotShard,
    /// A range of a draining shard is moved off it.
    DrainShard,
    /// Two cold neighbouring ranges of one shard are merged.
    MergeColdNeighbours,
    // Declined / nothing to do.
    /// The hottest shard is below the absolute floor `min_shard_load`.
    BelowFloor,
    /// Every shard is within `tolerance` of the mean.
    WithinTolerance,
    /// A shard is hot now but was not hot for `sustained_intervals` intervals.
    NotSustained,
    /// Fewer complete intervals of history than `sustained_intervals`.
    InsufficientHistory,
    /// No candidate lowers the predicted maximum by `min_improvement`.
    NoImprovement,
    /// The range's keys moved within `range_cooldown`.
    RangeCooldown,
    /// The keys left the target shard within `oscillation_window`.
    Oscillation,
    /// `max_concurrent_moves` moves are already in flight.
    MaxConcurrentMoves,
    /// The move would exceed `byte_budget_per_hour`.
    ByteBudget,
    /// No active shard can take the range.
    NoTarget,
}

impl Reason {
    pub const ALL: [Reason; 14] = [
        Reason::IsolateDominantMerchant,
        Reason::RebalanceHotShard,
        Reason::DrainShard,
        Reason::MergeColdNeighbours,
        Reason::BelowFloor,
        Reason::WithinTolerance,
        Reason::NotSustained,
        Reason::InsufficientHistory,
        Reason::NoImprovement,
        Reason::RangeCooldown,
        Reason::Oscillation,
        Reason::MaxConcurrentMoves,
        Reason::ByteBudget,
        Reason::NoTarget,
    ];

    /// The code stored in `decisions.reason`.
    #[must_use]
    pub fn code(self) -> &'static str {
        match self {
            Reason::IsolateDominantMerchant => "isolate_dominant_merchant",
            Reason::RebalanceHotShard => "rebalance_hot_shard",
            Reason::DrainShard => "drain_shard",
            Reason::MergeColdNeighbours => "merge_cold_neighbours",
            Reason::BelowFloor => "below_floor",
            Reason::WithinTolerance => "within_tolerance",
            Reason::NotSustained => "not_sustained",
            Reason::InsufficientHistory => "insufficient_history",
            Reason::NoImprovement => "no_improvement",
            Reason::RangeCooldown => "range_cooldown",
            Reason::Oscillation => "oscillation",
            Reason::MaxConcurrentMoves => "max_concurrent_moves",
            Reason::ByteBudget => "byte_budget",
            Reason::NoTarget => "no_target",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// The numbers a decision rested on. Loads are smoothed (EWMA) load units per
/// second, projected as if every move in flight had finished.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Inputs {
    /// Smoothed load of every active or draining shard.
    pub shard_loads: BTreeMap<ShardId, f64>,
    /// Mean over the shards that can hold data (active ones).
    pub mean_load: f64,
    pub max_load: f64,
    /// `max(min_shard_load, mean * (1 + tolerance))`.
    pub hot_threshold: f64,
    /// Complete intervals of history read.
    pub intervals: u32,
    /// The shard the decision is about (source of a move).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardId>,
    /// Consecutive newest intervals the shard was above the threshold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intervals_hot: Option<u32>,
    /// The shard's mean load over the whole window and the hot threshold of
    /// the cluster's mean over it (the check against oscillating load).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_load: Option<(f64, f64)>,
    /// Smoothed load of what would move.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate_load: Option<f64>,
    /// Estimated bytes that would be copied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate_bytes: Option<u64>,
    /// The merchant's share of its range's load (isolation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merchant_share: Option<f64>,
    /// Predicted cluster maximum after the action.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicted_max: Option<f64>,
    /// Predicted load of the target after the action.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicted_target_load: Option<f64>,
    /// Moves in flight when deciding.
    pub moves_in_flight: u32,
    /// Bytes started moving in the trailing hour (before this decision).
    pub bytes_last_hour: u64,
    /// Start of the blocking move (cooldown, oscillation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_by_move_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Mean and max request latency of the shard over the history (us).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard_latency_us: Option<(f64, u64)>,
}

/// One decision, taken or declined.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// What was (or would have been) done; `None` for "nothing to do".
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// Whether the loop should execute `action`.
    pub taken: bool,
    pub reason: Reason,
    /// One human sentence.
    pub explanation: String,
    pub inputs: Inputs,
}

impl Decision {
    /// `decisions.kind`: the action's kind when taken, else `decline`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match (&self.action, self.taken) {
            (Some(a), true) => a.kind(),
            _ => "decline",
        }
    }

    /// `decisions.range_id`.
    #[must_use]
    pub fn range_id(&self) -> Option<i64> {
        self.action.as_ref().map(Action::range_id)
    }

    /// The whole decision as the JSON for `decisions.inputs`.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}] {}", self.kind(), self.reason, self.explanation)
    }
}

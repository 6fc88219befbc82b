//! The errors of the range map.

use crate::ids::ShardId;

/// Why a range map or an operation on it was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeMapError {
    /// A key range with `start >= end` or `end > 2^32`.
    #[error("invalid key range [{start}, {end}): need start < end <= 2^32")]
    InvalidKeyRange {
        /// Inclusive start.
        start: u64,
        /// Exclusive end.
        end: u64,
    },
    /// No ranges at all.
    #[error("the range map has no ranges")]
    Empty,
    /// The lowest range does not start at key 0.
    #[error("the range map must start at key 0, but its first range starts at {start}")]
    FirstStart {
        /// Start of the lowest range.
        start: u64,
    },
    /// Keys between two ranges belong to no range.
    #[error("the range map has a gap: keys [{start}, {end}) belong to no range")]
    Gap {
        /// First uncovered key.
        start: u64,
        /// One past the last uncovered key.
        end: u64,
    },
    /// Two ranges share keys.
    #[error("ranges {left} and {right} overlap on keys [{start}, {end})")]
    Overlap {
        /// Id of the lower range.
        left: i64,
        /// Id of the higher range.
        right: i64,
        /// First shared key.
        start: u64,
        /// One past the last shared key.
        end: u64,
    },
    /// The highest range does not end at 2^32.
    #[error("the range map must end at key 2^32, but its last range ends at {end}")]
    LastEnd {
        /// End of the highest range.
        end: u64,
    },
    /// Two ranges with one id.
    #[error("range id {id} appears more than once")]
    DuplicateId {
        /// The repeated id.
        id: i64,
    },
    /// An operation names a range that does not exist.
    #[error("no range has id {id}")]
    UnknownId {
        /// The missing id.
        id: i64,
    },
    /// An operation would give a new range an id that is already taken.
    #[error("range id {id} is already in use")]
    IdInUse {
        /// The taken id.
        id: i64,
    },
    /// Allocating range ids ran past `i64::MAX`.
    #[error("range ids overflow i64")]
    IdOverflow,
    /// A split point that is not strictly inside the range.
    #[error("split point {at} is not strictly inside range {id} [{start}, {end})")]
    SplitOutside {
        /// The range being split.
        id: i64,
        /// The requested split point.
        at: u64,
        /// The range's start.
        start: u64,
        /// The range's end.
        end: u64,
    },
    /// An operation's epoch is not newer than the map epoch.
    #[error("epoch {epoch} is not newer than the map epoch {current}")]
    StaleEpoch {
        /// The epoch given.
        epoch: i64,
        /// The current map epoch.
        current: i64,
    },
    /// Merge of two ranges where `left` does not end where `right` starts.
    #[error("range {left} does not end where range {right} starts")]
    NotAdjacent {
        /// The intended left range.
        left: i64,
        /// The intended right range.
        right: i64,
    },
    /// Merge of two ranges owned by different shards.
    #[error(
        "ranges {left} (shard {left_shard}) and {right} (shard {right_shard}) are owned by different shards"
    )]
    DifferentShards {
        /// The left range.
        left: i64,
        /// The right range.
        right: i64,
        /// Owner of the left range.
        left_shard: ShardId,
        /// Owner of the right range.
        right_shard: ShardId,
    },
    /// Reassignment of a range to the shard that already owns it.
    #[error("range {id} is already owned by shard {shard}")]
    AlreadyOwned {
        /// The range.
        id: i64,
        /// Its owner.
        shard: ShardId,
    },
    /// [`RangeMap::even`](super::RangeMap::even) without shards.
    #[error("at least one shard is required")]
    NoShards,
    /// [`RangeMap::even`](super::RangeMap::even) with a shard listed twice.
    #[error("shard {shard} is listed more than once")]
    DuplicateShard {
        /// The repeated shard.
        shard: ShardId,
    },
    /// [`RangeMap::even`](super::RangeMap::even) with `ranges_per_shard == 0` or too many
    /// ranges.
    #[error("cannot seed {count} ranges (need 1..=1048576)")]
    BadRangeCount {
        /// The requested number of ranges.
        count: u64,
    },
}

//! The range map: which shard owns which part of the shard-key space.
//!
//! The key space `[0, 2^32)` (see [`shard_key()`](crate::shard_key())) is partitioned
//! into half-open [`KeyRange`]s. A [`RangeMap`] always covers the whole space with no
//! gap and no overlap; it is the in-memory mirror of the catalog's `ranges` table.
//! Each [`Range`] carries a catalog id, its owner shard and the epoch of its last
//! change; the map epoch is the largest range epoch, so of two maps the one with the
//! larger epoch is newer.
//!
//! Every mutation ([`RangeMap::split`], [`RangeMap::merge`], [`RangeMap::reassign`],
//! [`RangeMap::isolate_key`]) takes a fresh epoch that must be strictly greater than
//! the current map epoch, builds the new state on the side, validates it and only
//! then commits it: a failed operation leaves the map untouched.

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{MerchantId, ShardId};
use crate::shard_key::{KEY_SPACE_END, shard_key};

mod error;

pub use error::RangeMapError;

/// A half-open interval `[start, end)` of shard keys with `start < end <= 2^32`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(try_from = "RawKeyRange")]
pub struct KeyRange {
    start: u64,
    end: u64,
}

#[derive(Deserialize)]
struct RawKeyRange {
    start: u64,
    end: u64,
}

impl TryFrom<RawKeyRange> for KeyRange {
    type Error = RangeMapError;

    fn try_from(raw: RawKeyRange) -> Result<Self, RangeMapError> {
        Self::new(raw.start, raw.end)
    }
}

impl KeyRange {
    /// The whole key space `[0, 2^32)`.
    pub const FULL: Self = Self {
        start: 0,
        end: KEY_SPACE_END,
    };

    /// Validates `start < end <= 2^32`.
    ///
    /// # Errors
    /// [`RangeMapError::InvalidKeyRange`] otherwise.
    pub const fn new(start: u64, end: u64) -> Result<Self, RangeMapError> {
        if start < end && end <= KEY_SPACE_END {
            Ok(Self { start, end })
        } else {
            Err(RangeMapError::InvalidKeyRange { start, end })
        }
    }

    /// The range holding exactly one key, `[key, key + 1)`.
    #[must_use]
    pub const fn single(key: u32) -> Self {
        Self {
            start: key as u64,
            end: key as u64 + 1,
        }
    }

    /// Inclusive start.
    #[must_use]
    pub const fn start(&self) -> u64 {
        self.start
    }

    /// Exclusive end (at most 2^32).
    #[must_use]
    pub const fn end(&self) -> u64 {
        self.end
    }

    /// Whether `key` lies in the range.
    #[must_use]
    pub const fn contains(&self, key: u32) -> bool {
        self.start <= key as u64 && (key as u64) < self.end
    }

    /// The number of keys in the range (at least 1).
    #[must_use]
    pub const fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Always false: a key range holds at least one key.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        false
    }
}

impl fmt::Display for KeyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#010x}, {:#010x})", self.start, self.end)
    }
}

/// One entry of the range map.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Range {
    /// Catalog id (`ranges.id`).
    pub id: i64,
    /// The keys it covers.
    pub range: KeyRange,
    /// The owner shard.
    pub shard: ShardId,
    /// The epoch of its last change.
    pub epoch: i64,
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} {} -> {} (epoch {})",
            self.id, self.range, self.shard, self.epoch
        )
    }
}

/// The whole key space partitioned into ranges, sorted by start.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(try_from = "Vec<Range>", into = "Vec<Range>")]
pub struct RangeMap {
    ranges: Vec<Range>,
    epoch: i64,
}

/// Checks that sorted `ranges` cover `[0, 2^32)` exactly, with unique ids.
fn validate(ranges: &[Range]) -> Result<(), RangeMapError> {
    let (Some(first), Some(last)) = (ranges.first(), ranges.last()) else {
        return Err(RangeMapError::Empty);
    };
    if first.range.start != 0 {
        return Err(RangeMapError::FirstStart {
            start: first.range.start,
        });
    }
    let mut ids = HashSet::with_capacity(ranges.len());
    for r in ranges {
        KeyRange::new(r.range.start, r.range.end)?;
        if !ids.insert(r.id) {
            return Err(RangeMapError::DuplicateId { id: r.id });
        }
    }
    for pair in ranges.windows(2) {
        let [a, b] = pair else { continue };
        if b.range.start > a.range.end {
            return Err(RangeMapError::Gap {
                start: a.range.end,
                end: b.range.start,
            });
        }
        if b.range.start < a.range.end {
            return Err(RangeMapError::Overlap {
                left: a.id,
                right: b.id,
                start: b.range.start,
                end: a.range.end.min(b.range.end),
            });
        }
    }
    if last.range.end != KEY_SPACE_END {
        return Err(RangeMapError::LastEnd {
            end: last.range.end,
        });
    }
    Ok(())
}

impl RangeMap {
    /// The epoch [`RangeMap::even`] gives every seeded range.
    pub const SEED_EPOCH: i64 = 1;

    /// The most ranges [`RangeMap::even`] creates (2^20): enough for any seed, small
    /// enough that a bad argument cannot exhaust memory.
    pub const MAX_SEED_RANGES: u64 = 1 << 20;

    /// Builds a map from ranges in any order.
    ///
    /// # Errors
    /// Unless the ranges cover `[0, 2^32)` exactly (no gap, no overlap, no empty
    /// range) with unique ids.
    pub fn new(mut ranges: Vec<Range>) -> Result<Self, RangeMapError> {
        ranges.sort_by_key(|r| (r.range.start, r.range.end));
        validate(&ranges)?;
        let epoch = ranges.iter().map(|r| r.epoch).max().unwrap_or_default();
        Ok(Self { ranges, epoch })
    }

    /// Splits the key space into `shards.len() * ranges_per_shard` ranges of (nearly)
    /// equal size, assigned to the shards round-robin, with ids `first_id..` and
    /// epoch [`RangeMap::SEED_EPOCH`]. Used to seed a cluster.
    ///
    /// # Errors
    /// No shards, a repeated shard, `ranges_per_shard == 0`, more than
    /// [`RangeMap::MAX_SEED_RANGES`] ranges, or ids past `i64::MAX`.
    pub fn even(
        shards: &[ShardId],
        ranges_per_shard: u32,
        first_id: i64,
    ) -> Result<Self, RangeMapError> {
        if shards.is_empty() {
            return Err(RangeMapError::NoShards);
        }
        let mut seen = HashSet::new();
        if let Some(dup) = shards.iter().find(|s| !seen.insert(*s)) {
            return Err(RangeMapError::DuplicateShard { shard: dup.clone() });
        }
        let count = u64::try_from(shards.len())
            .unwrap_or(u64::MAX)
            .saturating_mul(u64::from(ranges_per_shard));
        if count == 0 || count > Self::MAX_SEED_RANGES {
            return Err(RangeMapError::BadRangeCount { count });
        }
        let id_of = |i: u64| -> Result<i64, RangeMapError> {
            i64::try_from(i)
                .ok()
                .and_then(|offset| first_id.checked_add(offset))
                .ok_or(RangeMapError::IdOverflow)
        };
        // Boundary i is floor(i * 2^32 / count): strictly increasing since count <= 2^32.
        let boundary = |i: u64| -> u64 {
            let b = u128::from(i) * u128::from(KEY_SPACE_END) / u128::from(count);
            u64::try_from(b).unwrap_or(KEY_SPACE_END)
        };
        let ranges = (0..count)
            .zip(shards.iter().cycle())
            .map(|(i, shard)| {
                Ok(Range {
                    id: id_of(i)?,
                    range: KeyRange::new(boundary(i), boundary(i + 1))?,
                    shard: shard.clone(),
                    epoch: Self::SEED_EPOCH,
                })
            })
            .collect::<Result<Vec<_>, RangeMapError>>()?;
        Self::new(ranges)
    }

    /// The map epoch: the largest epoch of any range.
    #[must_use]
    pub const fn epoch(&self) -> i64 {
        self.epoch
    }

    /// The ranges, sorted by start.
    #[must_use]
    pub fn ranges(&self) -> &[Range] {
        &self.ranges
    }

    /// The number of ranges (at least 1).
    #[must_use]
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Always false: a valid map has at least one range.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The range that owns `key` (binary search, O(log n)).
    #[must_use]
    pub fn lookup(&self, key: u32) -> &Range {
        &self.ranges[self.index_of_key(key)]
    }

    /// The range that owns a merchant's data.
    #[must_use]
    pub fn lookup_merchant(&self, merchant: &MerchantId) -> &Range {
        self.lookup(shard_key(merchant))
    }

    /// The range with catalog id `id`.
    #[must_use]
    pub fn get(&self, id: i64) -> Option<&Range> {
        self.ranges.iter().find(|r| r.id == id)
    }

    /// The ranges owned by `shard`, in key order.
    pub fn ranges_of<'a>(&'a self, shard: &'a ShardId) -> impl Iterator<Item = &'a Range> + 'a {
        self.ranges.iter().filter(move |r| &r.shard == shard)
    }

    /// Splits range `id` at key `at` (`start < at < end`): `[start, at)` keeps `id`,
    /// `[at, end)` becomes `new_id`; both take `epoch`.
    ///
    /// # Errors
    /// Stale epoch, unknown `id`, `new_id` in use, or `at` not strictly inside.
    pub fn split(
        &mut self,
        id: i64,
        at: u64,
        new_id: i64,
        epoch: i64,
    ) -> Result<(), RangeMapError> {
        self.check_epoch(epoch)?;
        let i = self.index_of_id(id)?;
        if self.get(new_id).is_some() {
            return Err(RangeMapError::IdInUse { id: new_id });
        }
        let old = &self.ranges[i];
        let (start, end) = (old.range.start, old.range.end);
        if !(start < at && at < end) {
            return Err(RangeMapError::SplitOutside { id, at, start, end });
        }
        let left = Range {
            range: KeyRange::new(start, at)?,
            epoch,
            ..old.clone()
        };
        let right = Range {
            id: new_id,
            range: KeyRange::new(at, end)?,
            epoch,
            ..old.clone()
        };
        let mut next = self.ranges.clone();
        next.splice(i..=i, [left, right]);
        self.commit(next)
    }

    /// Merges the adjacent ranges `left_id` and `right_id` (left ends where right
    /// starts, same shard) into one range that keeps `left_id` and takes `epoch`.
    ///
    /// # Errors
    /// Stale epoch, unknown ids, not adjacent (in that order), or different shards.
    pub fn merge(&mut self, left_id: i64, right_id: i64, epoch: i64) -> Result<(), RangeMapError> {
        self.check_epoch(epoch)?;
        let i = self.index_of_id(left_id)?;
        let j = self.index_of_id(right_id)?;
        if j != i + 1 {
            return Err(RangeMapError::NotAdjacent {
                left: left_id,
                right: right_id,
            });
        }
        let (left, right) = (&self.ranges[i], &self.ranges[j]);
        if left.shard != right.shard {
            return Err(RangeMapError::DifferentShards {
                left: left_id,
                right: right_id,
                left_shard: left.shard.clone(),
                right_shard: right.shard.clone(),
            });
        }
        let merged = Range {
            range: KeyRange::new(left.range.start, right.range.end)?,
            epoch,
            ..left.clone()
        };
        let mut next = self.ranges.clone();
        next.splice(i..=j, [merged]);
        self.commit(next)
    }

    /// Gives range `id` to `shard` at `epoch`.
    ///
    /// # Errors
    /// Stale epoch, unknown id, or `shard` already owns it.
    pub fn reassign(&mut self, id: i64, shard: ShardId, epoch: i64) -> Result<(), RangeMapError> {
        self.check_epoch(epoch)?;
        let i = self.index_of_id(id)?;
        if self.ranges[i].shard == shard {
            return Err(RangeMapError::AlreadyOwned { id, shard });
        }
        let mut next = self.ranges.clone();
        next[i] = Range {
            shard,
            epoch,
            ..self.ranges[i].clone()
        };
        self.commit(next)
    }

    /// Gives `key` a range of its own, `[key, key + 1)`, and returns that range's id.
    ///
    /// Splits the range holding `key` at most twice, at `epoch`: the part below `key`
    /// (if any) keeps the old id; new ranges take ids from `*next_id` upwards, and
    /// `*next_id` is advanced past the ids used only if the operation succeeds.
    /// If `key` already has its own range this is a no-op that returns its id
    /// without checking `epoch`.
    ///
    /// # Errors
    /// Stale epoch, a needed id already in use, or id overflow.
    pub fn isolate_key(
        &mut self,
        key: u32,
        next_id: &mut i64,
        epoch: i64,
    ) -> Result<i64, RangeMapError> {
        let i = self.index_of_key(key);
        let old = &self.ranges[i];
        if old.range.len() == 1 {
            return Ok(old.id);
        }
        self.check_epoch(epoch)?;
        let (start, end, k) = (old.range.start, old.range.end, u64::from(key));
        let mut ids = *next_id;
        let mut take_id = || -> Result<i64, RangeMapError> {
            let id = ids;
            if self.get(id).is_some() {
                return Err(RangeMapError::IdInUse { id });
            }
            ids = ids.checked_add(1).ok_or(RangeMapError::IdOverflow)?;
            Ok(id)
        };
        let mut pieces = Vec::with_capacity(3);
        let single_id = if start < k {
            pieces.push(Range {
                range: KeyRange::new(start, k)?,
                epoch,
                ..old.clone()
            });
            take_id()?
        } else {
            old.id
        };
        pieces.push(Range {
            id: single_id,
            range: KeyRange::single(key),
            epoch,
            ..old.clone()
        });
        if k + 1 < end {
            pieces.push(Range {
                id: take_id()?,
                range: KeyRange::new(k + 1, end)?,
                epoch,
                ..old.clone()
            });
        }
        let mut next = self.ranges.clone();
        next.splice(i..=i, pieces);
        self.commit(next)?;
        *next_id = ids;
        Ok(single_id)
    }

    fn index_of_key(&self, key: u32) -> usize {
        // The first range starts at 0, so at least one range has start <= key.
        self.ranges
            .partition_point(|r| r.range.start <= u64::from(key))
            .saturating_sub(1)
    }

    fn index_of_id(&self, id: i64) -> Result<usize, RangeMapError> {
        self.ranges
            .iter()
            .position(|r| r.id == id)
            .ok_or(RangeMapError::UnknownId { id })
    }

    fn check_epoch(&self, epoch: i64) -> Result<(), RangeMapError> {
        if epoch > self.epoch {
            Ok(())
        } else {
            Err(RangeMapError::StaleEpoch {
                epoch,
                current: self.epoch,
            })
        }
    }

    /// Validates a sorted candidate state and makes it current.
    fn commit(&mut self, ranges: Vec<Range>) -> Result<(), RangeMapError> {
        validate(&ranges)?;
        self.epoch = ranges.iter().map(|r| r.epoch).max().unwrap_or(self.epoch);
        self.ranges = ranges;
        Ok(())
    }
}

impl TryFrom<Vec<Range>> for RangeMap {
    type Error = RangeMapError;

    fn try_from(ranges: Vec<Range>) -> Result<Self, RangeMapError> {
        Self::new(ranges)
    }
}

impl From<RangeMap> for Vec<Range> {
    fn from(map: RangeMap) -> Self {
        map.ranges
    }
}

impl fmt::Display for RangeMap {
    /// A multi-line summary: the epoch, the range count and one line per range.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = if self.ranges.len() == 1 { "" } else { "s" };
        write!(
            f,
            "range map epoch {}, {} range{plural}",
            self.epoch,
            self.ranges.len()
        )?;
        for r in &self.ranges {
            write!(f, "\n  {r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

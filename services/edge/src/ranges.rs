//! Range ownership on the edge, learned from the move engine's `range_events`
//! rows as they arrive in the shards' streams:
//!
//! * `cutover_marker` (written on the SOURCE after it froze the range): in the
//!   source's stream, every commit of the range precedes it. Recorded per move.
//! * `moved_in` (written on the TARGET in the transaction that activates the range
//!   there, before any write of its own to the range): the target owns
//!   `[start_key, end_key)` from this commit LSN on, at `epoch`. A `moved_in`
//!   at or below the epoch already recorded is stale and ignored.
//! * `moved_out` (optional, on the source after the switch): releases the range
//!   for that shard at its commit LSN, like a confirmed marker.
//!
//! A source is *released* at its marker's LSN once the target's `moved_in` of the
//! same move arrived (a marker alone may belong to a move that aborts: the source
//! then keeps writing). See [`decide`] for how a change is judged.

use std::collections::BTreeMap;

use redb::{ReadableTable, Table, TableDefinition};
use serde::{Deserialize, Serialize};
use shardline_replicator::wire::{Op, RowChange};
use tracing::{debug, warn};

use crate::store::{StoreError, StoredRow};

pub const RANGES: TableDefinition<i64, &[u8]> = TableDefinition::new("ranges");
pub const MARKERS: TableDefinition<&str, &[u8]> = TableDefinition::new("markers");

/// Who owns a range, as far as this edge has seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeOwner {
    pub range_id: i64,
    pub start_key: i64,
    /// Exclusive.
    pub end_key: i64,
    pub owner: String,
    pub epoch: i64,
    /// Commit LSN of the owner's `moved_in` in the owner's stream: its changes
    /// after it are writes as owner.
    pub owner_since_lsn: u64,
    /// The move that made `owner` the owner.
    pub move_id: Option<String>,
    /// Former owners and the commit LSN (in their streams) after which their
    /// changes to the range are ignored.
    pub released: BTreeMap<String, u64>,
    /// Stream sequence of the `moved_in` (newest record wins for overlapping
    /// ranges after splits and merges).
    pub stream_seq: u64,
}

impl RangeOwner {
    fn contains(&self, key: i64) -> bool {
        self.start_key <= key && key < self.end_key
    }
}

/// A source's cutover marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Marker {
    source: String,
    range_id: i64,
    lsn: u64,
}

/// Every ownership record.
pub fn load<T: ReadableTable<i64, &'static [u8]>>(t: &T) -> Result<Vec<RangeOwner>, StoreError> {
    let mut out = Vec::new();
    for item in t.iter()? {
        let (_, v) = item?;
        out.push(serde_json::from_slice(v.value())?);
    }
    Ok(out)
}

/// The record that covers `key` (the newest one when several do).
pub fn covering(ranges: &[RangeOwner], key: i64) -> Option<&RangeOwner> {
    ranges
        .iter()
        .filter(|r| r.contains(key))
        .max_by_key(|r| r.stream_seq)
}

/// A `range_events` insert from `shard` at `lsn`: update ownership. Returns
/// whether anything changed.
pub fn note_event(
    ranges: &mut Table<'_, i64, &'static [u8]>,
    markers: &mut Table<'_, &'static str, &'static [u8]>,
    shard: &str,
    lsn: u64,
    stream_seq: u64,
    change: &RowChange,
) -> Result<bool, StoreError> {
    if change.op != Op::Insert {
        return Ok(false);
    }
    let num = |c: &str| change.text(c).and_then(|v| v.parse::<i64>().ok());
    let (Some(kind), Some(range_id), Some(start_key), Some(end_key), Some(epoch)) = (
        change.text("kind"),
        num("range_id"),
        num("start_key"),
        num("end_key"),
        num("epoch"),
    ) else {
        warn!("range event without kind, range or epoch ignored");
        return Ok(false);
    };
    let move_id = change.text("move_id").map(str::to_owned);
    let existing: Option<RangeOwner> = match ranges.get(range_id)? {
        Some(v) => Some(serde_json::from_slice(v.value())?),
        None => None,
    };
    match kind {
        "cutover_marker" => {
            let Some(mid) = move_id else { return Ok(false) };
            let m = Marker {
                source: shard.to_owned(),
                range_id,
                lsn,
            };
            markers.insert(mid.as_str(), serde_json::to_vec(&m)?.as_slice())?;
            // The target's moved_in may have arrived first.
            if let Some(mut r) = existing.filter(|r| r.move_id.as_deref() == Some(mid.as_str())) {
                r.released.insert(m.source, lsn);
                ranges.insert(range_id, serde_json::to_vec(&r)?.as_slice())?;
                return Ok(true);
            }
            Ok(false)
        }
        "moved_in" => {
            if existing.as_ref().is_some_and(|r| r.epoch >= epoch) {
                debug!(range_id, epoch, "stale moved_in ignored");
                return Ok(false);
            }
            let mut released = existing.map(|r| r.released).unwrap_or_default();
            released.remove(shard);
            if let Some(mid) = &move_id
                && let Some(v) = markers.get(mid.as_str())?
            {
                let m: Marker = serde_json::from_slice(v.value())?;
                released.insert(m.source, m.lsn);
            }
            let r = RangeOwner {
                range_id,
                start_key,
                end_key,
                owner: shard.to_owned(),
                epoch,
                owner_since_lsn: lsn,
                move_id,
                released,
                stream_seq,
            };
            ranges.insert(range_id, serde_json::to_vec(&r)?.as_slice())?;
            Ok(true)
        }
        "moved_out" => {
            let Some(mut r) = existing else {
                return Ok(false);
            };
            if r.owner == shard {
                return Ok(false);
            }
            r.released.insert(shard.to_owned(), lsn);
            ranges.insert(range_id, serde_json::to_vec(&r)?.as_slice())?;
            Ok(true)
        }
        other => {
            warn!(kind = other, "unknown range event kind ignored");
            Ok(false)
        }
    }
}

/// Whether a change from `shard` (commit `lsn`) producing `row` replaces the
/// stored `existing` row. `range` covers the row's shard key, if known.
///
/// 1. No ownership known: a change from the shard that wrote the stored row
///    applies (one shard's stream is in commit order); from another shard an
///    insert/update applies only with a greater `version`, a delete never (the
///    only cross-shard deletes of unknown ranges are an aborted move's rollback
///    of its copies on the target).
/// 2. The owner's changes after its `moved_in` always apply.
/// 3. A released former owner's changes after its release are ignored (cleanup
///    deletes, if any ever reached the stream).
/// 4. Any other change (a late message from a former owner, older than the
///    handoff) never overwrites what the owner wrote as owner (no stale
///    resurrection after the owner updated or deleted the row); otherwise rule 1.
pub fn decide(
    range: Option<&RangeOwner>,
    shard: &str,
    lsn: u64,
    existing: Option<&StoredRow>,
    row: &StoredRow,
) -> bool {
    if let Some(r) = range {
        if r.owner == shard && lsn > r.owner_since_lsn {
            return true;
        }
        if r.released.get(shard).is_some_and(|rel| lsn > *rel) {
            return false;
        }
        if existing.is_some_and(|e| e.shard == r.owner && e.commit_lsn > r.owner_since_lsn) {
            return false;
        }
    }
    match existing {
        None => true,
        Some(e) if e.shard == shard => true,
        Some(_) if row.deleted => false,
        Some(e) => row.version > e.version,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(shard: &str, lsn: u64, version: i64, deleted: bool) -> StoredRow {
        StoredRow {
            shard: shard.into(),
            commit_lsn: lsn,
            version,
            deleted,
            columns: Vec::new(),
        }
    }

    #[test]
    fn owner_wins_released_shards_are_ignored_and_late_messages_cannot_resurrect() {
        let r = RangeOwner {
            range_id: 7,
            start_key: 100,
            end_key: 200,
            owner: "s2".into(),
            epoch: 3,
            owner_since_lsn: 50,
            move_id: None,
            released: BTreeMap::from([("s1".to_owned(), 1000)]),
            stream_seq: 9,
        };
        let ranges = vec![r.clone()];
        assert_eq!(covering(&ranges, 150).map(|r| r.range_id), Some(7));
        assert!(covering(&ranges, 200).is_none());
        // The owner's delete of a row the edge has from s1 applies.
        let from_s1 = stored("s1", 900, 5, false);
        assert!(decide(
            Some(&r),
            "s2",
            60,
            Some(&from_s1),
            &stored("s2", 60, 6, true)
        ));
        // A late s1 update (before its release) cannot resurrect the owner's tombstone,
        let tomb = stored("s2", 60, 1, true);
        assert!(!decide(
            Some(&r),
            "s1",
            990,
            Some(&tomb),
            &stored("s1", 990, 7, false)
        ));
        // but fills in a row the owner never touched,
        assert!(decide(
            Some(&r),
            "s1",
            990,
            Some(&from_s1),
            &stored("s1", 990, 6, false)
        ));
        assert!(decide(
            Some(&r),
            "s1",
            990,
            None,
            &stored("s1", 990, 1, false)
        ));
        // and nothing of s1 after its release applies (cleanup deletes).
        assert!(!decide(
            Some(&r),
            "s1",
            1001,
            Some(&from_s1),
            &stored("s1", 1001, 6, true)
        ));
        // Unknown ranges: versions across shards, never a cross-shard delete.
        assert!(decide(
            None,
            "s3",
            5,
            Some(&from_s1),
            &stored("s3", 5, 6, false)
        ));
        assert!(!decide(
            None,
            "s3",
            5,
            Some(&from_s1),
            &stored("s3", 5, 6, true)
        ));
        assert!(decide(
            None,
            "s1",
            901,
            Some(&from_s1),
            &stored("s1", 901, 6, true)
        ));
    }
}

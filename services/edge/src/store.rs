//! The embedded store (redb): rows keyed by (table, primary key) and, in the SAME
//! write transaction, the per-shard cursor (stream sequence + commit LSN) and the
//! global stream position. A transaction is either applied with its cursor or not
//! at all, so a crash never double-applies or loses one.
//!
//! Point reads ([`Store::get`]) go through a [`RowCache`] of decoded rows that
//! [`Store::apply`] keeps coherent (see [`crate::cache`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use shardline_replicator::wire::{Op, Transaction, Value};
use thiserror::Error;
use tracing::warn;

use crate::cache::{CacheStats, FillTicket, RowCache};
use crate::ranges;

const ROWS: TableDefinition<&str, &[u8]> = TableDefinition::new("rows");
const CURSORS: TableDefinition<&str, &[u8]> = TableDefinition::new("cursors");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const STREAM_SEQ: &str = "stream_seq";
/// Separates the parts of a row key (never occurs in ids, keys or table names).
pub const SEP: char = '\u{1f}';

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Database(#[from] redb::DatabaseError),
    #[error("store transaction: {0}")]
    Transaction(#[from] redb::TransactionError),
    #[error("store table: {0}")]
    Table(#[from] redb::TableError),
    #[error("store storage: {0}")]
    Storage(#[from] redb::StorageError),
    #[error("store commit: {0}")]
    Commit(#[from] redb::CommitError),
    #[error("stored value is corrupt: {0}")]
    Corrupt(#[from] serde_json::Error),
}

/// The primary key columns of each replicated table.
pub fn primary_key(table: &str) -> Option<&'static [&'static str]> {
    Some(match table {
        "merchants" => &["shard_key", "merchant_id"],
        "payments" => &["shard_key", "merchant_id", "payment_id"],
        "refunds" => &["shard_key", "merchant_id", "refund_id"],
        "ledger_entries" => &["shard_key", "journal_id", "line"],
        "balances" => &["shard_key", "merchant_id", "currency", "account"],
        "idempotency_keys" => &["shard_key", "merchant_id", "idem_key"],
        "range_events" => &["shard_key", "event_id"],
        _ => return None,
    })
}

/// `table SEP pk1 SEP pk2 ...`
pub fn row_key(table: &str, pk: &[&str]) -> String {
    let mut k = String::from(table);
    for p in pk {
        k.push(SEP);
        k.push_str(p);
    }
    k
}

/// A stored row (or tombstone) and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRow {
    pub shard: String,
    pub commit_lsn: u64,
    pub version: i64,
    pub deleted: bool,
    pub columns: Vec<(String, Option<String>)>,
}

impl StoredRow {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.columns
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }
}

/// How far one shard's stream has been applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub stream_seq: u64,
    pub commit_lsn: u64,
    pub end_lsn: u64,
    pub commit_time_micros: i64,
    pub applied_at_micros: i64,
    pub applied: u64,
    pub gaps: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Applied {
        rows: usize,
        rejected: usize,
        gap: bool,
    },
    /// Commit LSN at or below the shard's cursor: already applied.
    Skipped,
}

#[derive(Debug)]
pub struct Store {
    db: Database,
    cache: RowCache,
}

/// An apply's redb write transaction before its commit.
struct Prepared {
    outcome: Applied,
    cursor: Cursor,
    /// The rows it writes, by key, in write order (the last one of a key is
    /// what redb holds after the commit).
    rows: Vec<(String, StoredRow)>,
}

/// A miss's redb read, to be offered to the cache ([`Store::finish_fill`]).
#[derive(Debug)]
pub struct Fill {
    ticket: FillTicket,
    row: Option<Arc<StoredRow>>,
}

impl Store {
    /// Open (or create) the store with a read cache of
    /// [`crate::cache::DEFAULT_ENTRIES`] rows.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(path, crate::cache::DEFAULT_ENTRIES)
    }

    /// Open (or create) the store with a read cache of at most `cache_entries`
    /// rows (0: no cache). The cache starts empty.
    pub fn open_with_cache(path: &Path, cache_entries: usize) -> Result<Self, StoreError> {
        let db = Database::create(path)?;
        let w = db.begin_write()?;
        w.open_table(ROWS)?;
        w.open_table(CURSORS)?;
        w.open_table(META)?;
        w.open_table(ranges::RANGES)?;
        w.open_table(ranges::MARKERS)?;
        w.commit()?;
        Ok(Store {
            db,
            cache: RowCache::new(cache_entries),
        })
    }

    /// The last stream sequence consumed (0: none).
    pub fn stream_seq(&self) -> Result<u64, StoreError> {
        let r = self.db.begin_read()?;
        let t = r.open_table(META)?;
        Ok(t.get(STREAM_SEQ)?.map(|v| v.value()).unwrap_or(0))
    }

    pub fn cursors(&self) -> Result<BTreeMap<String, Cursor>, StoreError> {
        let r = self.db.begin_read()?;
        let t = r.open_table(CURSORS)?;
        let mut out = BTreeMap::new();
        for item in t.iter()? {
            let (k, v) = item?;
            out.insert(k.value().to_owned(), serde_json::from_slice(v.value())?);
        }
        Ok(out)
    }

    /// What this edge knows about range ownership (from `range_events`).
    pub fn ranges(&self) -> Result<Vec<ranges::RangeOwner>, StoreError> {
        let r = self.db.begin_read()?;
        ranges::load(&r.open_table(ranges::RANGES)?)
    }

    /// The row (or tombstone) at `key`: from the cache, else read from redb
    /// and cached unless an apply ran meanwhile.
    pub fn get(&self, key: &str) -> Result<Option<Arc<StoredRow>>, StoreError> {
        if let Some(row) = self.cache.get(key) {
            return Ok(Some(row));
        }
        let fill = self.read_for_fill(key)?;
        Ok(self.finish_fill(key, fill))
    }

    /// The row at `key` if the cache holds it (counted as a hit; nothing on a
    /// miss, so a following [`Store::get`] counts the lookup once). Never
    /// blocks on I/O: for async callers before they go to a blocking thread.
    pub fn get_if_cached(&self, key: &str) -> Option<Arc<StoredRow>> {
        self.cache.get_if_cached(key)
    }

    /// The first step of a miss: take the fill ticket, then read redb.
    /// [`Store::get`] is `cache.get`, then this, then [`Store::finish_fill`];
    /// split so a test can run an apply between the two steps.
    pub fn read_for_fill(&self, key: &str) -> Result<Fill, StoreError> {
        let ticket = self.cache.ticket(key);
        let row = self.get_uncached(key)?.map(Arc::new);
        Ok(Fill { ticket, row })
    }

    /// The second step of a miss: cache what was read if no apply began since
    /// the ticket (else leave the cache alone). Returns the entry the cache
    /// holds by now if there is one (what every hit returns), else what was
    /// read.
    pub fn finish_fill(&self, key: &str, fill: Fill) -> Option<Arc<StoredRow>> {
        match &fill.row {
            Some(row) => match self.cache.offer(key, fill.ticket, row) {
                (_, Some(present)) => Some(present),
                (_, None) => fill.row,
            },
            None => None,
        }
    }

    /// The row at `key` read from redb (read transaction + JSON decode), the
    /// cache neither consulted nor filled.
    pub fn get_uncached(&self, key: &str) -> Result<Option<StoredRow>, StoreError> {
        let r = self.db.begin_read()?;
        let t = r.open_table(ROWS)?;
        match t.get(key)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
            None => Ok(None),
        }
    }

    /// The cached row at `key`, counting nothing (tests, diagnostics).
    pub fn cache_peek(&self, key: &str) -> Option<Arc<StoredRow>> {
        self.cache.peek(key)
    }

    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Empty the read cache (fills that read before this are refused).
    pub fn clear_cache(&self) {
        self.cache.clear();
    }

    /// Rows whose key starts with `prefix`, in key order.
    pub fn scan(&self, prefix: &str) -> Result<Vec<(String, StoredRow)>, StoreError> {
        let r = self.db.begin_read()?;
        let t = r.open_table(ROWS)?;
        let mut out = Vec::new();
        for item in t.range(prefix..)? {
            let (k, v) = item?;
            let k = k.value();
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_owned(), serde_json::from_slice(v.value())?));
        }
        Ok(out)
    }

    /// Apply one transaction with its cursor, atomically; when this returns,
    /// the cache holds every row it wrote (readers see them at once).
    pub fn apply(
        &self,
        stream_seq: u64,
        txn: &Transaction,
        now_micros: i64,
    ) -> Result<(Applied, Cursor), StoreError> {
        let mut out = self.apply_batch(&[(stream_seq, txn)], now_micros)?;
        Ok(out.pop().expect("one result per transaction"))
    }

    /// Apply consecutive stream messages in order, in ONE redb transaction (one
    /// fsync for the batch: a consumer that fell behind catches up at disk
    /// speed / batch size instead of paying a commit per message). Each
    /// transaction's rows and cursor are written exactly as [`Store::apply`]
    /// would; all become visible (redb and cache) together. Returns one
    /// (outcome, cursor after it) per transaction.
    pub fn apply_batch(
        &self,
        batch: &[(u64, &Transaction)],
        now_micros: i64,
    ) -> Result<Vec<(Applied, Cursor)>, StoreError> {
        let w = self.db.begin_write()?;
        let mut rows = Vec::new();
        let mut out = Vec::with_capacity(batch.len());
        for (seq, txn) in batch {
            let p = self.prepare(&w, *seq, txn, now_micros)?;
            rows.extend(p.rows);
            out.push((p.outcome, p.cursor));
        }
        // The generations of the written keys' cache shards are odd from
        // before the commit until every put is done; an error return drops
        // the guard unfinished, which empties those shards.
        let write = self.cache.begin_write(rows.iter().map(|(k, _)| k.as_str()));
        w.commit()?;
        for (key, row) in rows {
            write.put(&key, Arc::new(row));
        }
        write.finish();
        Ok(out)
    }

    /// One transaction's writes into the open redb transaction `w` (reads in
    /// `w` see the earlier transactions of the same batch).
    fn prepare(
        &self,
        w: &redb::WriteTransaction,
        stream_seq: u64,
        txn: &Transaction,
        now_micros: i64,
    ) -> Result<Prepared, StoreError> {
        let mut puts = Vec::new();
        let outcome;
        let cursor;
        {
            let mut meta = w.open_table(META)?;
            let mut cursors = w.open_table(CURSORS)?;
            let mut rows = w.open_table(ROWS)?;
            let mut owners = w.open_table(ranges::RANGES)?;
            let mut markers = w.open_table(ranges::MARKERS)?;
            let mut known = ranges::load(&owners)?;
            let prev: Option<Cursor> = match cursors.get(txn.shard.as_str())? {
                Some(v) => Some(serde_json::from_slice(v.value())?),
                None => None,
            };
            let seen = meta.get(STREAM_SEQ)?.map(|v| v.value()).unwrap_or(0);
            meta.insert(STREAM_SEQ, seen.max(stream_seq))?;
            if let Some(c) = prev.as_ref().filter(|c| txn.commit_lsn <= c.commit_lsn) {
                cursor = c.clone();
                outcome = Applied::Skipped;
            } else {
                let mut c = prev.clone().unwrap_or_default();
                let gap = match &prev {
                    Some(p) => txn.prev_commit_lsn != p.commit_lsn,
                    None => false,
                };
                if gap {
                    warn!(shard = %txn.shard, expected = p_lsn(&prev), got = txn.prev_commit_lsn,
                        "CDC gap: the previous commit of this message is not the last applied one");
                    c.gaps += 1;
                }
                let (mut n, mut rejected) = (0, 0);
                for change in &txn.changes {
                    let Some(pk_cols) = primary_key(&change.table) else {
                        warn!(table = %change.table, "change for an unknown table ignored");
                        continue;
                    };
                    let pk: Option<Vec<&str>> =
                        pk_cols.iter().map(|col| change.text(col)).collect();
                    let Some(pk) = pk else {
                        warn!(table = %change.table, "change without its primary key ignored");
                        continue;
                    };
                    if change.table == "range_events"
                        && ranges::note_event(
                            &mut owners,
                            &mut markers,
                            &txn.shard,
                            txn.commit_lsn,
                            stream_seq,
                            change,
                        )?
                    {
                        known = ranges::load(&owners)?;
                    }
                    let range = change
                        .text("shard_key")
                        .and_then(|k| k.parse::<i64>().ok())
                        .and_then(|k| ranges::covering(&known, k));
                    let key = row_key(&change.table, &pk);
                    let existing: Option<StoredRow> = match rows.get(key.as_str())? {
                        Some(v) => Some(serde_json::from_slice(v.value())?),
                        None => None,
                    };
                    let row = next_row(txn, change, existing.as_ref());
                    let accept =
                        ranges::decide(range, &txn.shard, txn.commit_lsn, existing.as_ref(), &row);
                    if accept {
                        rows.insert(key.as_str(), serde_json::to_vec(&row)?.as_slice())?;
                        puts.push((key, row));
                        n += 1;
                    } else {
                        rejected += 1;
                    }
                }
                c.stream_seq = stream_seq;
                c.commit_lsn = txn.commit_lsn;
                c.end_lsn = txn.end_lsn;
                c.commit_time_micros = txn.commit_time_micros;
                c.applied_at_micros = now_micros;
                c.applied += 1;
                cursors.insert(txn.shard.as_str(), serde_json::to_vec(&c)?.as_slice())?;
                cursor = c;
                outcome = Applied::Applied {
                    rows: n,
                    rejected,
                    gap,
                };
            }
        }
        Ok(Prepared {
            outcome,
            cursor,
            rows: puts,
        })
    }
}

fn p_lsn(c: &Option<Cursor>) -> u64 {
    c.as_ref().map_or(0, |c| c.commit_lsn)
}

/// The row a change produces (before the version check).
fn next_row(
    txn: &Transaction,
    change: &shardline_replicator::wire::RowChange,
    existing: Option<&StoredRow>,
) -> StoredRow {
    match change.op {
        Op::Insert | Op::Update => {
            let columns = change
                .columns
                .iter()
                .map(|(name, v)| {
                    let v = match v {
                        Value::Null => None,
                        Value::Text(s) => Some(s.clone()),
                        // Unchanged TOASTed value: keep what we have.
                        Value::Unchanged => existing.and_then(|e| e.get(name)).map(str::to_owned),
                    };
                    (name.clone(), v)
                })
                .collect();
            let version = change
                .text("version")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            StoredRow {
                shard: txn.shard.clone(),
                commit_lsn: txn.commit_lsn,
                version,
                deleted: false,
                columns,
            }
        }
        // A delete carries only the key: the tombstone succeeds the last version.
        Op::Delete => StoredRow {
            shard: txn.shard.clone(),
            commit_lsn: txn.commit_lsn,
            version: existing.map_or(1, |e| e.version + 1),
            deleted: true,
            columns: existing.map(|e| e.columns.clone()).unwrap_or_else(|| {
                change
                    .columns
                    .iter()
                    .map(|(n, v)| {
                        let v = match v {
                            Value::Text(s) => Some(s.clone()),
                            _ => None,
                        };
                        (n.clone(), v)
                    })
                    .collect()
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardline_replicator::wire::RowChange;

    fn txn(shard: &str, lsn: u64, prev: u64, op: Op, version: &str, name: &str) -> Transaction {
        let mut columns = vec![
            ("shard_key".into(), Value::Text("1".into())),
            ("merchant_id".into(), Value::Text("m".into())),
        ];
        if op != Op::Delete {
            columns.push(("name".into(), Value::Text(name.into())));
            columns.push(("version".into(), Value::Text(version.into())));
        }
        Transaction {
            shard: shard.into(),
            commit_lsn: lsn,
            end_lsn: lsn + 1,
            commit_time_micros: 0,
            prev_commit_lsn: prev,
            changes: vec![RowChange {
                table: "merchants".into(),
                op,
                columns,
            }],
        }
    }

    #[test]
    fn applies_in_order_skips_replays_and_rejects_older_versions_from_other_shards() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("edge.redb")).unwrap();
        let key = row_key("merchants", &["1", "m"]);
        let (a, _) = s
            .apply(1, &txn("s1", 10, 0, Op::Insert, "1", "a"), 0)
            .unwrap();
        assert!(matches!(
            a,
            Applied::Applied {
                rows: 1,
                gap: false,
                ..
            }
        ));
        let (a, _) = s
            .apply(2, &txn("s1", 20, 10, Op::Update, "2", "b"), 0)
            .unwrap();
        assert!(matches!(a, Applied::Applied { rows: 1, .. }));
        // A replay is skipped by LSN.
        let (a, _) = s
            .apply(1, &txn("s1", 10, 0, Op::Insert, "1", "a"), 0)
            .unwrap();
        assert_eq!(a, Applied::Skipped);
        assert_eq!(s.get(&key).unwrap().unwrap().get("name"), Some("b"));
        // The range moved to s2: its newer version wins, then a late s1 message loses.
        s.apply(3, &txn("s2", 5, 0, Op::Update, "3", "c"), 0)
            .unwrap();
        let (a, _) = s
            .apply(4, &txn("s1", 30, 20, Op::Update, "2", "stale"), 0)
            .unwrap();
        assert!(matches!(
            a,
            Applied::Applied {
                rows: 0,
                rejected: 1,
                ..
            }
        ));
        assert_eq!(s.get(&key).unwrap().unwrap().get("name"), Some("c"));
        // Delete keeps a tombstone with the successor version.
        s.apply(5, &txn("s2", 6, 5, Op::Delete, "", ""), 0).unwrap();
        let t = s.get(&key).unwrap().unwrap();
        assert!(t.deleted);
        assert_eq!(t.version, 4);
        // A gap is detected (prev does not match the cursor).
        let (a, c) = s
            .apply(6, &txn("s2", 9, 7, Op::Insert, "1", "d"), 0)
            .unwrap();
        assert!(matches!(a, Applied::Applied { gap: true, .. }));
        assert_eq!(c.gaps, 1);
        assert_eq!(s.stream_seq().unwrap(), 6);
        assert_eq!(s.cursors().unwrap().len(), 2);
        assert_eq!(s.scan("merchants\u{1f}").unwrap().len(), 1);
    }
}

//! The edge's read cache against a real redb store in a temp dir (no NATS, no
//! PostgreSQL): hits equal the store, applies are visible when they return,
//! a fill that raced an apply is refused, the bound holds, rows rejected by
//! the move rules never enter the cache, and concurrent readers beside an
//! applier read monotonically and never below what an apply already returned.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use shardline_edge::store::{Store, row_key};
use shardline_replicator::wire::{Op, RowChange, Transaction, Value};

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

/// A merchant row change (shard key 1) at `version`.
fn merchant(mid: &str, op: Op, version: i64) -> RowChange {
    let mut columns = vec![
        ("shard_key".to_owned(), text("1")),
        ("merchant_id".to_owned(), text(mid)),
    ];
    if op != Op::Delete {
        columns.push(("name".to_owned(), text(&format!("{mid} v{version}"))));
        columns.push(("version".to_owned(), text(&version.to_string())));
    }
    RowChange {
        table: "merchants".to_owned(),
        op,
        columns,
    }
}

fn key(mid: &str) -> String {
    row_key("merchants", &["1", mid])
}

/// Applies transactions of one shard in LSN order.
struct Applier<'a> {
    store: &'a Store,
    shard: &'static str,
    lsn: u64,
    seq: u64,
}

impl<'a> Applier<'a> {
    fn new(store: &'a Store, shard: &'static str) -> Self {
        Applier {
            store,
            shard,
            lsn: 0,
            seq: 0,
        }
    }

    fn apply(&mut self, changes: Vec<RowChange>) -> shardline_edge::store::Applied {
        let prev = self.lsn;
        self.lsn += 10;
        self.seq += 1;
        let txn = Transaction {
            shard: self.shard.to_owned(),
            commit_lsn: self.lsn,
            end_lsn: self.lsn + 1,
            commit_time_micros: 0,
            prev_commit_lsn: prev,
            changes,
        };
        self.store.apply(self.seq, &txn, 0).unwrap().0
    }
}

fn open(dir: &tempfile::TempDir, entries: usize) -> Store {
    Store::open_with_cache(&dir.path().join("edge.redb"), entries).unwrap()
}

fn version(store: &Store, k: &str) -> Option<i64> {
    store.get(k).unwrap().map(|r| r.version)
}

#[test]
fn a_hit_returns_what_the_store_holds_and_applies_are_visible_when_they_return() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, 1000);
    let mut s1 = Applier::new(&store, "s1");
    s1.apply(
        (0..20)
            .map(|i| merchant(&format!("m{i}"), Op::Insert, 1))
            .collect(),
    );
    // The apply put its rows: hits, equal to redb's decoded rows.
    for i in 0..20 {
        let k = key(&format!("m{i}"));
        let hit = store.get(&k).unwrap().unwrap();
        assert_eq!(*hit, store.get_uncached(&k).unwrap().unwrap());
        assert!(Arc::ptr_eq(&hit, &store.cache_peek(&k).unwrap()));
    }
    let st = store.cache_stats();
    assert_eq!((st.hits, st.misses, st.entries), (20, 0, 20));
    // A restart starts empty; a miss fills, the next read hits the same row.
    drop(store);
    let store = open(&dir, 1000);
    let k = key("m3");
    assert!(store.cache_peek(&k).is_none());
    let miss = store.get(&k).unwrap().unwrap();
    let hit = store.get(&k).unwrap().unwrap();
    assert!(Arc::ptr_eq(&miss, &hit));
    assert_eq!(miss.get("name"), Some("m3 v1"));
    assert!(store.get("merchants\u{1f}1\u{1f}nope").unwrap().is_none());
    let st = store.cache_stats();
    assert_eq!((st.hits, st.misses, st.fills, st.entries), (1, 2, 1, 1));

    // Newer versions and a delete are visible as soon as apply returns.
    let mut s1 = Applier::new(&store, "s1");
    s1.lsn = 10;
    s1.seq = 1;
    for v in 2..=5 {
        s1.apply(vec![merchant("m3", Op::Update, v)]);
        let r = store.get(&k).unwrap().unwrap();
        assert_eq!((r.version, r.get("name")), (v, Some(&*format!("m3 v{v}"))));
    }
    s1.apply(vec![merchant("m3", Op::Delete, 0)]);
    let t = store.get(&k).unwrap().unwrap();
    assert!(t.deleted, "tombstone cached");
    assert_eq!(t.version, 6);
    assert_eq!(*t, store.get_uncached(&k).unwrap().unwrap());
    // Rebuild in place: clearing empties it, reads refill from redb.
    store.clear_cache();
    assert!(store.cache_peek(&k).is_none());
    assert_eq!(version(&store, &k), Some(6));
}

#[test]
fn a_fill_that_read_before_an_apply_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, 1000);
    let mut s1 = Applier::new(&store, "s1");
    s1.apply(vec![merchant("a", Op::Insert, 1)]);
    store.clear_cache();
    let k = key("a");

    // Reader reads redb (v1), apply commits v2 and puts it, reader fills.
    let fill = store.read_for_fill(&k).unwrap();
    s1.apply(vec![merchant("a", Op::Update, 2)]);
    let read = store.finish_fill(&k, fill).unwrap();
    assert_eq!(
        read.version, 2,
        "the reader returns the entry the apply put"
    );
    assert_eq!(store.cache_peek(&k).unwrap().version, 2, "v1 not cached");
    assert_eq!(version(&store, &k), Some(2));
    assert_eq!(store.cache_stats().fills_refused, 1);

    // Same race with the apply's entry evicted before the fill (capacity 1):
    // the slot is empty, only the generation refuses the stale row.
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, 1);
    let mut s1 = Applier::new(&store, "s1");
    s1.apply(vec![merchant("a", Op::Insert, 1)]);
    store.clear_cache();
    let fill = store.read_for_fill(&k).unwrap();
    s1.apply(vec![merchant("a", Op::Update, 2)]);
    s1.apply(vec![merchant("b", Op::Insert, 1)]);
    assert!(store.cache_peek(&k).is_none(), "a evicted by b");
    // No entry: the reader returns its snapshot (v1: it read before the
    // commit), but does not cache it.
    assert_eq!(store.finish_fill(&k, fill).unwrap().version, 1);
    assert!(store.cache_peek(&k).is_none(), "stale fill refused");
    assert_eq!(version(&store, &k), Some(2));
    assert_eq!(store.cache_peek(&k).unwrap().version, 2, "fresh fill kept");

    // A fill that read after the apply returned is kept; one that finds the
    // slot filled (by an apply or another reader) leaves it alone.
    let f1 = store.read_for_fill(&key("b")).unwrap();
    let f2 = store.read_for_fill(&key("b")).unwrap();
    let r1 = store.finish_fill(&key("b"), f1).unwrap();
    store.finish_fill(&key("b"), f2).unwrap();
    assert!(Arc::ptr_eq(&r1, &store.cache_peek(&key("b")).unwrap()));
}

#[test]
fn the_entry_bound_holds_and_evicted_rows_read_back_from_redb() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, 100);
    let mut s1 = Applier::new(&store, "s1");
    for b in 0..10 {
        s1.apply(
            (0..100)
                .map(|i| merchant(&format!("m{}", b * 100 + i), Op::Insert, 1))
                .collect(),
        );
        assert!(store.cache_stats().entries <= 100);
    }
    for round in 0..3 {
        for i in 0..1000 {
            // A scan larger than the cache misses; the read right after hits.
            for _ in 0..2 {
                let r = store.get(&key(&format!("m{i}"))).unwrap().unwrap();
                assert_eq!(r.get("name"), Some(&*format!("m{i} v1")), "round {round}");
            }
            assert!(store.cache_stats().entries <= 100);
        }
    }
    let st = store.cache_stats();
    assert_eq!(st.entries, 100);
    assert_eq!(st.hits + st.misses, 6000);
    assert!(st.hits >= 3000 && st.misses >= 2900, "{st:?}");
    assert_eq!(st.evictions, 900 + st.misses, "{st:?}");
}

/// A range_events `moved_in` of keys [0, 100) to `shard`.
fn moved_in(event: &str, move_id: &str) -> RowChange {
    let cols = [
        ("shard_key", "0"),
        ("event_id", event),
        ("kind", "moved_in"),
        ("range_id", "1"),
        ("start_key", "0"),
        ("end_key", "100"),
        ("epoch", "1"),
        ("move_id", move_id),
    ];
    RowChange {
        table: "range_events".to_owned(),
        op: Op::Insert,
        columns: cols
            .iter()
            .map(|(n, v)| ((*n).to_owned(), text(v)))
            .collect(),
    }
}

#[test]
fn rows_rejected_by_the_move_and_version_rules_never_enter_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, 1000);
    let (mut s1, mut s2) = (Applier::new(&store, "s1"), Applier::new(&store, "s2"));
    let k = key("a");
    s1.apply(vec![merchant("a", Op::Insert, 5)]);
    assert_eq!(version(&store, &k), Some(5));
    // Unknown range: another shard's lower version and its delete lose.
    s2.apply(vec![merchant("a", Op::Update, 3)]);
    s2.apply(vec![merchant("a", Op::Delete, 0)]);
    let r = store.get(&k).unwrap().unwrap();
    assert_eq!((r.version, r.deleted, r.shard.as_str()), (5, false, "s1"));
    // The range moves to s2, which deletes the row as owner: a tombstone.
    s2.apply(vec![moved_in("e1", "mv1")]);
    s2.apply(vec![merchant("a", Op::Delete, 0)]);
    let t = store.get(&k).unwrap().unwrap();
    assert!(t.deleted && t.shard == "s2");
    // A late s1 update (higher version, before any release) cannot resurrect it:
    // rejected in redb, so not put in the cache.
    s1.apply(vec![merchant("a", Op::Update, 9)]);
    let t = store.get(&k).unwrap().unwrap();
    assert!(t.deleted, "{t:?}");
    assert_eq!(
        store.cache_peek(&k).as_deref(),
        store.get_uncached(&k).unwrap().as_ref(),
        "the cache equals redb"
    );
}

/// One applier raises versions of a few hot keys (a cache smaller than the
/// key set, so evictions, misses and fills race the applies) while readers
/// check that versions never go back for a reader and never fall below what
/// an apply had already returned.
#[test]
fn concurrent_readers_read_monotonically_and_never_below_a_returned_apply() {
    const KEYS: usize = 24;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(&dir, 8));
    let keys: Arc<Vec<String>> = Arc::new((0..KEYS).map(|i| key(&format!("k{i}"))).collect());
    let applied: Arc<Vec<AtomicI64>> = Arc::new((0..KEYS).map(|_| AtomicI64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3u64)
        .map(|r| {
            let (store, keys, applied, stop) =
                (store.clone(), keys.clone(), applied.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = [0i64; KEYS];
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ r;
                let mut reads = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let i = (x % KEYS as u64) as usize;
                    let floor = applied[i].load(Ordering::SeqCst);
                    let v = store.get(&keys[i]).unwrap().map_or(0, |r| r.version);
                    assert!(
                        v >= floor,
                        "key {i}: read v{v} after apply of v{floor} returned"
                    );
                    assert!(v >= seen[i], "key {i}: read v{v} after v{}", seen[i]);
                    seen[i] = v;
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    let mut s1 = Applier::new(&store, "s1");
    let mut versions = [0i64; KEYS];
    let started = Instant::now();
    let mut n = 0u64;
    let mut x = 0x2545_f491_4f6c_dd1du64;
    while n < 3000 && started.elapsed() < Duration::from_secs(20) {
        // 1-3 keys per transaction.
        let mut changes = Vec::new();
        let mut touched = Vec::new();
        for _ in 0..(1 + n % 3) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x % KEYS as u64) as usize;
            if touched.contains(&i) {
                continue;
            }
            versions[i] += 1;
            let op = if versions[i] == 1 {
                Op::Insert
            } else {
                Op::Update
            };
            changes.push(merchant(&format!("k{i}"), op, versions[i]));
            touched.push(i);
        }
        s1.apply(changes);
        for i in touched {
            applied[i].store(versions[i], Ordering::SeqCst);
        }
        n += 1;
    }
    stop.store(true, Ordering::SeqCst);
    let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    let st = store.cache_stats();
    eprintln!("{n} applies, {reads} reads, {st:?}");
    assert!(n >= 100 && reads >= 1000, "{n} applies, {reads} reads");
    assert!(st.fills > 0 && st.misses > 0 && st.evictions > 0, "{st:?}");
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(version(&store, k).unwrap_or(0), versions[i]);
    }
}

fn txn(shard: &str, lsn: u64, prev: u64, changes: Vec<RowChange>) -> Transaction {
    Transaction {
        shard: shard.to_owned(),
        commit_lsn: lsn,
        end_lsn: lsn + 1,
        commit_time_micros: 0,
        prev_commit_lsn: prev,
        changes,
    }
}

#[test]
fn a_batch_applies_exactly_like_one_message_at_a_time() {
    // Two shards interleaved, a key written twice and deleted within the batch, a
    // redelivered message (skipped), a gap.
    let msgs = [
        txn("s1", 10, 0, vec![merchant("a", Op::Insert, 1)]),
        txn("s2", 10, 0, vec![merchant("b", Op::Insert, 1)]),
        txn("s1", 20, 10, vec![merchant("a", Op::Update, 2)]),
        txn("s1", 10, 0, vec![merchant("a", Op::Insert, 1)]),
        txn("s2", 40, 30, vec![merchant("b", Op::Update, 5)]),
        txn(
            "s1",
            30,
            20,
            vec![merchant("a", Op::Delete, 0), merchant("c", Op::Insert, 1)],
        ),
        txn("s1", 40, 30, vec![merchant("c", Op::Update, 3)]),
    ];
    let with_seq: Vec<(u64, &Transaction)> = msgs
        .iter()
        .enumerate()
        .map(|(i, t)| (i as u64 + 1, t))
        .collect();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let stores: Vec<Store> = dirs.iter().map(|d| open(d, 100)).collect();
    let one_by_one: Vec<_> = with_seq
        .iter()
        .map(|(q, t)| stores[0].apply(*q, t, 7).unwrap())
        .collect();
    let whole = stores[1].apply_batch(&with_seq, 7).unwrap();
    let pairs: Vec<_> = with_seq
        .chunks(2)
        .flat_map(|c| stores[2].apply_batch(c, 7).unwrap())
        .collect();
    assert_eq!(whole, one_by_one, "outcomes and cursors");
    assert_eq!(pairs, one_by_one);
    assert!(matches!(
        one_by_one[3].0,
        shardline_edge::store::Applied::Skipped
    ));
    assert!(matches!(
        one_by_one[4].0,
        shardline_edge::store::Applied::Applied { gap: true, .. }
    ));
    let reference = stores[0].scan("").unwrap();
    assert_eq!(reference.len(), 3, "{reference:?}");
    for s in &stores[1..] {
        assert_eq!(s.scan("").unwrap(), reference, "redb rows");
        assert_eq!(s.cursors().unwrap(), stores[0].cursors().unwrap());
        assert_eq!(s.stream_seq().unwrap(), 7);
        for k in ["a", "b", "c"] {
            assert_eq!(
                s.cache_peek(&key(k)).map(|r| (r.version, r.deleted)),
                stores[0]
                    .cache_peek(&key(k))
                    .map(|r| (r.version, r.deleted)),
                "cached {k}"
            );
            assert_eq!(version(s, &key(k)), version(&stores[0], &key(k)));
        }
    }
    assert_eq!(version(&stores[1], &key("c")), Some(3));
    assert!(stores[1].get(&key("a")).unwrap().unwrap().deleted);
}

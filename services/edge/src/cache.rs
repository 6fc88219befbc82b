//! The edge's read cache: decoded rows (`Arc<StoredRow>`, tombstones included)
//! by row key, in front of redb, so a point read that hits costs a shard read
//! lock and an `Arc` clone instead of a redb read transaction and a JSON decode.
//!
//! * Sharded `RwLock<HashMap>` (std only), bounded by entry count: a full shard
//!   evicts a random entry of its own (O(1): the keys also sit in a vector, an
//!   eviction swaps the last key into the hole).
//! * Coherence with the apply path (the only writer of the rows table), a
//!   seqlock-style generation per shard: [`RowCache::begin_write`] (given the
//!   keys the apply wrote, before its redb commit) takes the writer lock and
//!   makes the generation of every shard holding one of those keys odd; the
//!   apply commits, puts every row it wrote ([`CacheWrite::put`], insert, not
//!   invalidate) and [`CacheWrite::finish`] makes them even again. A reader
//!   that misses takes a [`FillTicket`] (its key's shard generation) BEFORE its
//!   redb read and [`RowCache::fill`]s what it read only if the ticket was even
//!   and the generation is still the same, checked under the shard's write
//!   lock (which every put also takes), and only into a vacant slot. The full
//!   argument is in `docs/edge.md` ("Read cache").

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::store::StoredRow;

/// Default bound of [`RowCache`] (entries; a 12-column payment row decodes to
/// about 1 KiB, so about 1 GiB when full).
pub const DEFAULT_ENTRIES: usize = 1_000_000;
/// Most shards; small caches get fewer (about one per 1024 entries).
const MAX_SHARDS: usize = 64;

/// Counters since the cache was created, and its size.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that went to redb.
    pub misses: u64,
    /// Entries dropped to make room.
    pub evictions: u64,
    /// Misses whose row was put in the cache.
    pub fills: u64,
    /// Misses not cached because an apply ran during their redb read (or the
    /// slot was already filled).
    pub fills_refused: u64,
    pub entries: u64,
    pub capacity: u64,
}

/// The generation a reader saw before its redb read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FillTicket(u64);

#[derive(Debug)]
struct Slot {
    row: Arc<StoredRow>,
    /// Position of the key in [`Map::keys`].
    idx: usize,
}

/// xxh3 with a per-process random seed: several times faster than std's
/// SipHash on ~100-byte row keys (hashed twice per lookup: shard, then map),
/// still not predictable from outside (keys come from request paths).
#[derive(Debug, Clone, Copy)]
struct KeyHash {
    seed: u64,
}

impl BuildHasher for KeyHash {
    type Hasher = KeyHasher;

    fn build_hasher(&self) -> KeyHasher {
        KeyHasher { h: self.seed }
    }
}

/// One-shot xxh3 of each `write` (a `str` key is one `write` of its bytes and
/// one `write_u8(0xff)`).
#[derive(Debug)]
struct KeyHasher {
    h: u64,
}

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.h = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.h);
    }

    fn write_u8(&mut self, i: u8) {
        self.h = (self.h ^ u64::from(i)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.h
    }
}

#[derive(Debug)]
struct Map {
    map: HashMap<Arc<str>, Slot, KeyHash>,
    keys: Vec<Arc<str>>,
    /// xorshift64 state for random eviction (never 0).
    rng: u64,
}

impl Map {
    /// Insert or replace; returns whether an entry was evicted for room.
    fn put(&mut self, key: &str, row: Arc<StoredRow>, cap: usize) -> bool {
        if let Some(slot) = self.map.get_mut(key) {
            slot.row = row;
            return false;
        }
        self.insert_new(key, row, cap)
    }

    /// Insert a key known to be absent (`cap` > 0).
    fn insert_new(&mut self, key: &str, row: Arc<StoredRow>, cap: usize) -> bool {
        let evicted = self.keys.len() >= cap && self.evict_one();
        let k: Arc<str> = Arc::from(key);
        self.map.insert(
            k.clone(),
            Slot {
                row,
                idx: self.keys.len(),
            },
        );
        self.keys.push(k);
        evicted
    }

    fn evict_one(&mut self) -> bool {
        if self.keys.is_empty() {
            return false;
        }
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        let i = (x % self.keys.len() as u64) as usize;
        let key = self.keys.swap_remove(i);
        self.map.remove(&*key);
        if let Some(moved) = self.keys.get(i)
            && let Some(slot) = self.map.get_mut(&**moved)
        {
            slot.idx = i;
        }
        true
    }

    fn clear(&mut self) {
        self.map.clear();
        self.keys.clear();
    }
}

/// One shard, aligned so its lock and counters do not share a cache line with
/// a neighbour's.
#[derive(Debug)]
#[repr(align(128))]
struct Shard {
    map: RwLock<Map>,
    cap: usize,
    /// Odd while a write of a key of this shard is between (just before) its
    /// redb commit and its last put.
    generation: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    fills: AtomicU64,
    fills_refused: AtomicU64,
}

impl Shard {
    fn read(&self) -> RwLockReadGuard<'_, Map> {
        self.map.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// A panic while the lock was held may have left the map half-updated:
    /// start the shard over empty (always safe: a miss reads redb).
    fn write(&self) -> RwLockWriteGuard<'_, Map> {
        match self.map.write() {
            Ok(g) => g,
            Err(p) => {
                let mut g = p.into_inner();
                g.clear();
                self.map.clear_poison();
                g
            }
        }
    }
}

/// The row cache. Capacity 0 disables it (every lookup misses, nothing is kept).
pub struct RowCache {
    shards: Box<[Shard]>,
    capacity: usize,
    hasher: KeyHash,
    /// Serializes writers (applies and clears), so a generation's parity
    /// means what it says.
    writer: Mutex<()>,
}

impl std::fmt::Debug for RowCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowCache")
            .field("capacity", &self.capacity)
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

impl RowCache {
    /// A cache of at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        let n = (capacity / 1024).clamp(1, MAX_SHARDS);
        let random = RandomState::new();
        let hasher = KeyHash {
            seed: random.hash_one(u64::MAX),
        };
        let shards = (0..n)
            .map(|i| Shard {
                map: RwLock::new(Map {
                    // Another seed than the shard choice's, so a shard's keys
                    // still spread over its map.
                    map: HashMap::with_hasher(KeyHash {
                        seed: random.hash_one(i),
                    }),
                    keys: Vec::new(),
                    rng: random.hash_one(i + MAX_SHARDS) | 1,
                }),
                // Spread exactly `capacity` over the shards.
                cap: capacity / n + usize::from(i < capacity % n),
                generation: AtomicU64::new(0),
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                evictions: AtomicU64::new(0),
                fills: AtomicU64::new(0),
                fills_refused: AtomicU64::new(0),
            })
            .collect();
        RowCache {
            shards,
            capacity,
            hasher,
            writer: Mutex::new(()),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn index(&self, key: &str) -> usize {
        (self.hasher.hash_one(key) % self.shards.len() as u64) as usize
    }

    fn shard(&self, key: &str) -> &Shard {
        &self.shards[self.index(key)]
    }

    /// The cached row, counting a hit or a miss.
    pub fn get(&self, key: &str) -> Option<Arc<StoredRow>> {
        let shard = self.shard(key);
        let found = self.peek_in(shard, key);
        let counter = if found.is_some() {
            &shard.hits
        } else {
            &shard.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// The cached row if any, counting only a hit (a caller that then falls
    /// back to [`RowCache::get`] is counted once).
    pub fn get_if_cached(&self, key: &str) -> Option<Arc<StoredRow>> {
        let shard = self.shard(key);
        let found = self.peek_in(shard, key);
        if found.is_some() {
            shard.hits.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// The cached row, counting nothing.
    pub fn peek(&self, key: &str) -> Option<Arc<StoredRow>> {
        self.peek_in(self.shard(key), key)
    }

    fn peek_in(&self, shard: &Shard, key: &str) -> Option<Arc<StoredRow>> {
        if shard.cap == 0 {
            return None;
        }
        shard.read().map.get(key).map(|s| s.row.clone())
    }

    /// Take before reading `key` from redb for a later [`RowCache::fill`].
    pub fn ticket(&self, key: &str) -> FillTicket {
        FillTicket(self.shard(key).generation.load(Ordering::SeqCst))
    }

    /// [`RowCache::offer`], returning only whether `row` was cached.
    pub fn fill(&self, key: &str, ticket: FillTicket, row: &Arc<StoredRow>) -> bool {
        self.offer(key, ticket, row).0
    }

    /// Offer `row`, read from redb after `ticket` was taken: cached unless an
    /// apply of this shard began since (or was running then), or the slot is
    /// filled. Returns whether it was cached and the entry already there, if
    /// any: the reader must return THAT entry rather than `row` (`row` may
    /// come from a commit whose apply has not yet put it, while other readers
    /// still hit the older entry: returning `row` would let one reader see a
    /// version and its next read an older one).
    pub fn offer(
        &self,
        key: &str,
        ticket: FillTicket,
        row: &Arc<StoredRow>,
    ) -> (bool, Option<Arc<StoredRow>>) {
        let shard = self.shard(key);
        if shard.cap == 0 {
            return (false, None);
        }
        let (cached, present) = {
            let mut map = shard.write();
            // Checked under the shard lock: a put for this key after a
            // generation change waits for this insert and overwrites it.
            let unchanged =
                ticket.0.is_multiple_of(2) && shard.generation.load(Ordering::SeqCst) == ticket.0;
            match map.map.get(key) {
                Some(slot) => (false, Some(slot.row.clone())),
                None if unchanged => {
                    if map.insert_new(key, row.clone(), shard.cap) {
                        shard.evictions.fetch_add(1, Ordering::Relaxed);
                    }
                    (true, None)
                }
                None => (false, None),
            }
        };
        let counter = if cached {
            &shard.fills
        } else {
            &shard.fills_refused
        };
        counter.fetch_add(1, Ordering::Relaxed);
        (cached, present)
    }

    /// Start a write of the rows `keys` (call before the redb commit that
    /// writes them): waits for any other writer, then makes the generation of
    /// each shard holding one of them odd. Finish with [`CacheWrite::finish`];
    /// dropping the guard unfinished (an error or panic between begin and
    /// finish) empties those shards, since what redb then holds is not known
    /// here.
    pub fn begin_write<'k>(&self, keys: impl IntoIterator<Item = &'k str>) -> CacheWrite<'_> {
        let mut touched = 0u64;
        for k in keys {
            touched |= 1 << self.index(k);
        }
        self.begin_write_shards(touched)
    }

    /// `touched`: bit i = shard i (at most [`MAX_SHARDS`] = 64 shards).
    fn begin_write_shards(&self, touched: u64) -> CacheWrite<'_> {
        let lock = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let w = CacheWrite {
            cache: self,
            _lock: lock,
            touched,
            finished: false,
        };
        w.bump();
        w
    }

    /// Drop every entry (as a write of every shard: fills that read before it
    /// are refused).
    pub fn clear(&self) {
        let w = self.begin_write_shards(u64::MAX);
        w.clear_touched();
        w.finish();
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().keys.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn stats(&self) -> CacheStats {
        let sum = |f: fn(&Shard) -> &AtomicU64| {
            self.shards
                .iter()
                .map(|s| f(s).load(Ordering::Relaxed))
                .sum()
        };
        CacheStats {
            hits: sum(|s| &s.hits),
            misses: sum(|s| &s.misses),
            evictions: sum(|s| &s.evictions),
            fills: sum(|s| &s.fills),
            fills_refused: sum(|s| &s.fills_refused),
            entries: self.len() as u64,
            capacity: self.capacity as u64,
        }
    }
}

/// A write in progress (its shards' generations odd, writer lock held).
#[derive(Debug)]
pub struct CacheWrite<'a> {
    cache: &'a RowCache,
    _lock: MutexGuard<'a, ()>,
    /// Bit i: shard i's generation was made odd.
    touched: u64,
    finished: bool,
}

impl CacheWrite<'_> {
    fn touched(&self) -> impl Iterator<Item = &Shard> {
        let t = self.touched;
        self.cache
            .shards
            .iter()
            .enumerate()
            .filter(move |(i, _)| t & (1 << i) != 0)
            .map(|(_, s)| s)
    }

    fn bump(&self) {
        for s in self.touched() {
            s.generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn clear_touched(&self) {
        for s in self.touched() {
            s.write().clear();
        }
    }

    /// Put a row the write committed to redb (after the commit; its key must
    /// have been given to [`RowCache::begin_write`], else it is not put).
    pub fn put(&self, key: &str, row: Arc<StoredRow>) {
        let i = self.cache.index(key);
        let shard = &self.cache.shards[i];
        if shard.cap == 0 || self.touched & (1 << i) == 0 {
            return;
        }
        if shard.write().put(key, row, shard.cap) {
            shard.evictions.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every put done: the generations become even.
    pub fn finish(mut self) {
        self.finished = true;
        self.bump();
    }
}

impl Drop for CacheWrite<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.clear_touched();
            self.bump();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(v: i64) -> Arc<StoredRow> {
        Arc::new(StoredRow {
            shard: "s1".into(),
            commit_lsn: 1,
            version: v,
            deleted: false,
            columns: Vec::new(),
        })
    }

    #[test]
    fn random_eviction_keeps_the_bound_and_the_index_consistent() {
        let c = RowCache::new(10);
        for i in 0..1000 {
            let k = format!("k{i}");
            let t = c.ticket(&k);
            assert!(c.fill(&k, t, &row(i)));
            assert!(c.len() <= 10);
        }
        let s = c.stats();
        assert_eq!((s.entries, s.evictions, s.fills), (10, 990, 1000));
        for s in c.shards.iter() {
            let m = s.read();
            assert_eq!(m.map.len(), m.keys.len());
            for (i, k) in m.keys.iter().enumerate() {
                assert_eq!(m.map[k].idx, i);
            }
        }
    }

    #[test]
    fn fills_are_refused_during_and_after_a_write_and_into_filled_slots() {
        // 100 entries: one shard, so "a" and "b" share a generation.
        let c = RowCache::new(100);
        let before = c.ticket("b");
        let w = c.begin_write(["a"]);
        let during = c.ticket("b");
        w.put("a", row(2));
        w.finish();
        assert!(!c.fill("b", before, &row(1)), "ticket from before");
        assert!(!c.fill("b", during, &row(1)), "ticket from during");
        assert!(!c.fill("a", c.ticket("a"), &row(1)), "slot filled");
        assert_eq!(c.peek("a").map(|r| r.version), Some(2));
        assert!(c.fill("b", c.ticket("b"), &row(1)));
        // An unfinished write (error path) empties its shards.
        drop(c.begin_write(["a"]));
        assert!(c.is_empty());
        assert_eq!(c.ticket("a").0 % 2, 0);
        let off = RowCache::new(0);
        assert!(!off.fill("a", off.ticket("a"), &row(1)));
        assert!(off.get("a").is_none());
    }

    #[test]
    fn a_write_bumps_only_the_shards_of_its_keys() {
        let c = RowCache::new(64 * 1024);
        assert_eq!(c.shards.len(), 64);
        let a = "k0".to_owned();
        let b = (1..)
            .map(|i| format!("k{i}"))
            .find(|k| c.index(k) != c.index(&a))
            .unwrap_or_default();
        let tb = c.ticket(&b);
        let w = c.begin_write([a.as_str()]);
        // Not given to begin_write: not put (its shard was not made odd).
        w.put(&b, row(9));
        w.finish();
        assert!(c.peek(&b).is_none());
        assert!(c.fill(&b, tb, &row(1)), "other shard's fill unaffected");
        let ta = c.ticket(&a);
        c.clear();
        assert!(c.is_empty());
        assert!(!c.fill(&a, ta, &row(1)), "clear refuses older fills");
    }
}

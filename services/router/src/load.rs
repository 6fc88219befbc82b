//! Load accounting: per-range counters (requests, writes, rows, bytes, latency sum
//! and max) with a space-saving sketch of the heaviest merchants, flushed to the
//! catalog's `load_samples` every interval (one row per range touched). The
//! rebalancer's policy reads them.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use shardline_core::{MerchantId, Range};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Heavy merchants remembered per range and interval.
pub const HEAVY_HITTERS: usize = 16;

/// The space-saving sketch (Metwally et al.): at most `capacity` counters; a new
/// item replaces the smallest counter `min` and starts at `min + 1` with error
/// `min`. Every item whose true count exceeds `total / capacity` is present, and a
/// reported count overestimates the truth by at most its `error`.
#[derive(Debug, Clone)]
pub struct SpaceSaving<K> {
    capacity: usize,
    items: Vec<(K, u64, u64)>,
}

impl<K: Eq + Hash + Clone> SpaceSaving<K> {
    pub fn new(capacity: usize) -> Self {
        SpaceSaving {
            capacity: capacity.max(1),
            items: Vec::with_capacity(capacity.max(1)),
        }
    }

    pub fn insert(&mut self, key: K, weight: u64) {
        if let Some(item) = self.items.iter_mut().find(|(k, _, _)| *k == key) {
            item.1 += weight;
            return;
        }
        if self.items.len() < self.capacity {
            self.items.push((key, weight, 0));
            return;
        }
        if let Some(min) = self.items.iter_mut().min_by_key(|(_, c, _)| *c) {
            let floor = min.1;
            *min = (key, floor + weight, floor);
        }
    }

    /// `(key, count, error)`, heaviest first.
    pub fn top(&self) -> Vec<(K, u64, u64)> {
        let mut v = self.items.clone();
        v.sort_by_key(|item| std::cmp::Reverse(item.1));
        v
    }
}

/// One range's counters over an interval.
#[derive(Debug, Clone)]
pub struct RangeLoad {
    pub range: Range,
    pub requests: u64,
    pub writes: u64,
    pub rows: u64,
    pub bytes: u64,
    pub latency_us_sum: u64,
    pub latency_us_max: u64,
    pub hitters: SpaceSaving<(MerchantId, u32)>,
}

/// An element of `load_samples.heavy_hitters`.
#[derive(Debug, Clone, Serialize)]
pub struct HeavyHitter {
    pub merchant_id: String,
    pub shard_key: u32,
    pub count: u64,
    pub error: u64,
}

/// What one request cost.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub merchant: MerchantId,
    pub key: u32,
    pub write: bool,
    pub rows: u64,
    pub bytes: u64,
    pub latency: Duration,
}

#[derive(Debug)]
struct Window {
    since: Instant,
    ranges: HashMap<i64, RangeLoad>,
}

/// The counters of the current interval.
#[derive(Debug)]
pub struct LoadRecorder {
    router_id: String,
    window: Mutex<Window>,
}

impl LoadRecorder {
    pub fn new(router_id: String) -> Self {
        LoadRecorder {
            router_id,
            window: Mutex::new(Window {
                since: Instant::now(),
                ranges: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn record(&self, range: &Range, s: Sample) {
        let us = u64::try_from(s.latency.as_micros()).unwrap_or(u64::MAX);
        let mut w = self.lock();
        let load = w.ranges.entry(range.id).or_insert_with(|| RangeLoad {
            range: range.clone(),
            requests: 0,
            writes: 0,
            rows: 0,
            bytes: 0,
            latency_us_sum: 0,
            latency_us_max: 0,
            hitters: SpaceSaving::new(HEAVY_HITTERS),
        });
        load.range = range.clone();
        load.requests += 1;
        load.writes += u64::from(s.write);
        load.rows += s.rows;
        load.bytes += s.bytes;
        load.latency_us_sum = load.latency_us_sum.saturating_add(us);
        load.latency_us_max = load.latency_us_max.max(us);
        load.hitters.insert((s.merchant, s.key), 1);
    }

    /// Take the interval's counters and start a new interval.
    pub fn take(&self) -> (Duration, Vec<RangeLoad>) {
        let mut w = self.lock();
        let elapsed = w.since.elapsed();
        w.since = Instant::now();
        let mut v: Vec<RangeLoad> = w.ranges.drain().map(|(_, l)| l).collect();
        v.sort_by_key(|l| l.range.range.start());
        (elapsed, v)
    }

    /// Write the interval's samples to the catalog (nothing when idle). A failed
    /// write loses that interval (logged): load reporting never blocks requests.
    pub async fn flush(&self, catalog: &PgPool) -> Result<usize, sqlx::Error> {
        let (elapsed, loads) = self.take();
        if loads.is_empty() {
            return Ok(0);
        }
        let interval_ms = i32::try_from(elapsed.as_millis())
            .unwrap_or(i32::MAX)
            .max(1);
        let mut tx = catalog.begin().await?;
        for l in &loads {
            let hitters: Vec<HeavyHitter> = l
                .hitters
                .top()
                .into_iter()
                .map(|((m, key), count, error)| HeavyHitter {
                    merchant_id: m.to_string(),
                    shard_key: key,
                    count,
                    error,
                })
                .collect();
            let big = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            sqlx::query(
                "INSERT INTO load_samples (router_id, at, interval_ms, range_id, start_key, end_key,
                    shard_id, requests, writes, rows_touched, bytes, latency_us_sum, latency_us_max,
                    heavy_hitters)
                 VALUES ($1, now(), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            )
            .bind(&self.router_id)
            .bind(interval_ms)
            .bind(l.range.id)
            .bind(big(l.range.range.start()))
            .bind(big(l.range.range.end()))
            .bind(l.range.shard.as_str())
            .bind(big(l.requests))
            .bind(big(l.writes))
            .bind(big(l.rows))
            .bind(big(l.bytes))
            .bind(big(l.latency_us_sum))
            .bind(big(l.latency_us_max))
            .bind(sqlx::types::Json(&hitters))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(loads.len())
    }
}

/// Time from `now_ms` (Unix ms) to just after the next multiple of `every`.
fn until_aligned(now_ms: u128, every: Duration) -> Duration {
    let every_ms = every.as_millis().max(1);
    let next = (now_ms / every_ms + 1) * every_ms + FLUSH_AFTER_BOUNDARY_MS;
    Duration::from_millis(u64::try_from(next - now_ms).unwrap_or(0))
}

/// Flushes happen this long after a wall-clock multiple of the period, so the
/// sample's `at` (the flush time) falls in the policy bucket after the one the
/// counters cover, the same for every router.
const FLUSH_AFTER_BOUNDARY_MS: u128 = 20;

/// Flush every `every` until shutdown, and once more at shutdown. Flushes are
/// aligned to wall-clock multiples of `every` (every router the same), so the
/// rebalancer's load buckets each get the same number of samples per router.
pub async fn flush_periodically(
    load: Arc<LoadRecorder>,
    catalog: PgPool,
    every: Duration,
    shutdown: CancellationToken,
) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let first = tokio::time::Instant::now() + until_aligned(now_ms, every);
    let mut tick = tokio::time::interval_at(first, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stop = tokio::select! {
            () = shutdown.cancelled() => true,
            _ = tick.tick() => false,
        };
        match load.flush(&catalog).await {
            Ok(n) => tracing::debug!(ranges = n, "load samples flushed"),
            Err(e) => tracing::warn!(error = %e, "writing load samples failed; interval dropped"),
        }
        if stop {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flushes_align_to_wall_clock_multiples() {
        let five = Duration::from_secs(5);
        assert_eq!(until_aligned(10_000, five), Duration::from_millis(5_020));
        assert_eq!(until_aligned(12_345, five), Duration::from_millis(2_675));
        assert_eq!(until_aligned(14_999, five), Duration::from_millis(21));
    }

    #[test]
    fn exact_below_capacity() {
        let mut s = SpaceSaving::new(4);
        for (k, n) in [("a", 5), ("b", 3), ("c", 1)] {
            for _ in 0..n {
                s.insert(k, 1);
            }
        }
        assert_eq!(s.top(), vec![("a", 5, 0), ("b", 3, 0), ("c", 1, 0)]);
    }

    #[test]
    fn finds_heavy_hitters_in_a_long_tail() {
        // 3 heavy keys with 1000 hits each among 5000 distinct one-hit keys.
        let mut s = SpaceSaving::new(HEAVY_HITTERS);
        let mut total = 0u64;
        for i in 0..5000u64 {
            s.insert(10_000 + i, 1);
            total += 1;
            if i % 5 == 0 {
                for heavy in [1u64, 2, 3] {
                    s.insert(heavy, 1);
                    total += 1;
                }
            }
        }
        let top = s.top();
        assert_eq!(top.len(), HEAVY_HITTERS);
        let heavy: Vec<u64> = top.iter().take(3).map(|(k, _, _)| *k).collect();
        for k in [1, 2, 3] {
            assert!(heavy.contains(&k), "{k} missing from {top:?}");
        }
        for (k, count, error) in &top {
            // Guarantees: count - error <= true count <= count; error <= total / capacity.
            let truth = if *k <= 3 { 1000 } else { 1 };
            assert!(
                count - error <= truth && truth <= *count,
                "{k}: {count} {error}"
            );
            assert!(*error <= total / HEAVY_HITTERS as u64);
        }
    }

    #[test]
    fn recorder_takes_and_resets() {
        let r = LoadRecorder::new("t".into());
        let range = Range {
            id: 7,
            range: shardline_core::KeyRange::FULL,
            shard: "s1".parse().unwrap(),
            epoch: 1,
        };
        let m = MerchantId::new();
        for write in [true, false, true] {
            r.record(
                &range,
                Sample {
                    merchant: m,
                    key: shardline_core::shard_key(&m),
                    write,
                    rows: 2,
                    bytes: 100,
                    latency: Duration::from_micros(50),
                },
            );
        }
        let (_, loads) = r.take();
        assert_eq!(loads.len(), 1);
        let l = &loads[0];
        assert_eq!((l.requests, l.writes, l.rows, l.bytes), (3, 2, 6, 300));
        assert_eq!((l.latency_us_sum, l.latency_us_max), (150, 50));
        assert_eq!(l.hitters.top()[0].1, 3);
        assert!(r.take().1.is_empty());
    }
}

//! The load model: router samples bucketed into complete intervals, attributed to
//! the current map by key (so history survives splits, merges and moves),
//! weighted into one load score per second and smoothed with an EWMA.
//!
//! Heavy hitters are placed at their shard key with the sketch's lower bound
//! (`count - error`) as their share of the sample; the rest of a sample's load is
//! spread over the keys it covered, pro rata. Every unit is owned by its
//! *projected* shard: a range with a move in flight counts on the move's target,
//! because that is where its load will be. The EWMA is linear, so a shard's
//! smoothed load is the sum of its units' and moving a unit moves exactly its
//! smoothed load: the prediction the policy uses.

use std::collections::BTreeMap;

use shardline_core::{KeyRange, MerchantId, ShardId};

use super::config::PolicyConfig;
use super::input::{PolicyInput, SizeEstimate};

/// A merchant seen in the sketches of a unit's keys.
#[derive(Debug, Clone)]
pub(crate) struct MerchantLoad {
    pub merchant: MerchantId,
    pub key: u32,
    pub series: Vec<f64>,
    pub smoothed: f64,
}

/// A piece of the key space with its load: a catalog range, or a merchant key
/// carved out of one by a planned isolation.
#[derive(Debug, Clone)]
pub(crate) struct Unit {
    pub range_id: i64,
    pub keys: KeyRange,
    /// Projected owner.
    pub shard: ShardId,
    /// Load per complete interval, oldest first.
    pub series: Vec<f64>,
    pub smoothed: f64,
    /// Heaviest first (ties by merchant id).
    pub merchants: Vec<MerchantLoad>,
    /// A move is in flight or planned this round: not a candidate.
    pub busy: bool,
    /// Estimated bytes of data.
    pub bytes: u64,
}

/// Per shard latency over the window: (sum us, requests, max us).
type Latency = (u64, u64, u64);

#[derive(Debug, Clone)]
pub(crate) struct Model {
    /// Sorted by key.
    pub units: Vec<Unit>,
    /// Complete intervals with data (<= history_intervals), newest last.
    pub intervals: u32,
    latency: BTreeMap<ShardId, Latency>,
}

fn ewma(series: &[f64], alpha: f64) -> f64 {
    let mut it = series.iter();
    let Some(first) = it.next() else { return 0.0 };
    it.fold(*first, |s, x| alpha * x + (1.0 - alpha) * s)
}

/// Bytes of `keys` by pro-rata overlap with the estimates; `None` if none overlaps.
pub(crate) fn size_of(keys: KeyRange, sizes: &[SizeEstimate]) -> Option<u64> {
    let mut total = 0.0f64;
    let mut any = false;
    for s in sizes {
        let lo = keys.start().max(s.keys.start());
        let hi = keys.end().min(s.keys.end());
        if lo < hi {
            any = true;
            total += s.bytes as f64 * (hi - lo) as f64 / s.keys.len() as f64;
        }
    }
    any.then(|| total.round() as u64)
}

impl Model {
    pub fn build(input: &PolicyInput, config: &PolicyConfig) -> Model {
        let interval_ms = config.interval_ms();
        let h = i64::from(config.history_intervals);
        let now_bucket = input.now.timestamp_millis().div_euclid(interval_ms);
        let first_bucket = now_bucket - h;
        let secs = interval_ms as f64 / 1000.0;
        let len = usize::try_from(h).unwrap_or(0);

        let projected: BTreeMap<i64, &ShardId> = input
            .in_flight
            .iter()
            .map(|m| (m.range_id, &m.target))
            .collect();
        let mut units: Vec<Unit> = input
            .map
            .ranges()
            .iter()
            .map(|r| Unit {
                range_id: r.id,
                keys: r.range,
                shard: projected.get(&r.id).map_or(&r.shard, |s| *s).clone(),
                series: vec![0.0; len],
                smoothed: 0.0,
                merchants: Vec::new(),
                busy: projected.contains_key(&r.id),
                bytes: size_of(r.range, &input.sizes).unwrap_or(config.unknown_size_bytes),
            })
            .collect();
        let mut merchants: BTreeMap<(usize, MerchantId), (u32, Vec<f64>)> = BTreeMap::new();
        let mut earliest: Option<i64> = None;
        let mut latency: BTreeMap<ShardId, Latency> = BTreeMap::new();
        for s in &input.samples {
            let bucket = s.at.timestamp_millis().div_euclid(interval_ms);
            if bucket < first_bucket || bucket >= now_bucket {
                continue;
            }
            let Ok(b) = usize::try_from(bucket - first_bucket) else {
                continue;
            };
            earliest = Some(earliest.map_or(bucket, |e| e.min(bucket)));
            let l = latency.entry(s.shard.clone()).or_default();
            l.0 = l.0.saturating_add(s.latency_us_sum);
            l.1 = l.1.saturating_add(s.requests);
            l.2 = l.2.max(s.latency_us_max);
            let score = (config.request_weight * s.requests as f64
                + config.write_weight * s.writes as f64
                + config.row_weight * s.rows_touched as f64
                + config.kib_weight * s.bytes as f64 / 1024.0)
                / secs;
            if score <= 0.0 {
                continue;
            }
            let mut residual = score;
            if s.requests > 0 {
                for hh in &s.heavy_hitters {
                    let share = (hh.count.saturating_sub(hh.error)) as f64 / s.requests as f64;
                    let load = score * share.min(1.0);
                    if load <= 0.0 || residual <= 0.0 {
                        continue;
                    }
                    let load = load.min(residual);
                    residual -= load;
                    let u = units_partition(&units, u64::from(hh.shard_key));
                    units[u].series[b] += load;
                    let e = merchants
                        .entry((u, hh.merchant_id))
                        .or_insert_with(|| (hh.shard_key, vec![0.0; len]));
                    e.1[b] += load;
                }
            }
            // The rest of the load, spread over the sample's keys pro rata.
            let total = s.keys.len() as f64;
            let mut u = units_partition(&units, s.keys.start());
            while let Some(unit) = units.get_mut(u) {
                if unit.keys.start() >= s.keys.end() {
                    break;
                }
                let lo = unit.keys.start().max(s.keys.start());
                let hi = unit.keys.end().min(s.keys.end());
                if lo < hi {
                    unit.series[b] += residual * (hi - lo) as f64 / total;
                }
                u += 1;
            }
        }
        // Only intervals from the first one with data count.
        let intervals = earliest.map_or(0, |e| now_bucket - e);
        let skip = usize::try_from(h - intervals).unwrap_or(0);
        for u in &mut units {
            u.series.drain(..skip);
            u.smoothed = ewma(&u.series, config.ewma_alpha);
        }
        for ((u, merchant), (key, mut series)) in merchants {
            series.drain(..skip);
            let smoothed = ewma(&series, config.ewma_alpha);
            units[u].merchants.push(MerchantLoad {
                merchant,
                key,
                series,
                smoothed,
            });
        }
        for u in &mut units {
            u.merchants.sort_by(|a, b| {
                b.smoothed
                    .total_cmp(&a.smoothed)
                    .then(a.merchant.cmp(&b.merchant))
            });
        }
        Model {
            units,
            intervals: u32::try_from(intervals).unwrap_or(0),
            latency,
        }
    }

    /// Smoothed load per shard of `shards` (0 for a shard without units).
    pub fn shard_loads<'a>(
        &self,
        shards: impl Iterator<Item = &'a ShardId>,
    ) -> BTreeMap<ShardId, f64> {
        let mut m: BTreeMap<ShardId, f64> = shards.map(|s| (s.clone(), 0.0)).collect();
        for u in &self.units {
            if let Some(v) = m.get_mut(&u.shard) {
                *v += u.smoothed;
            }
        }
        m
    }

    /// Raw load of `shard` per interval, oldest first.
    pub fn shard_series(&self, shard: &ShardId) -> Vec<f64> {
        let n = usize::try_from(self.intervals).unwrap_or(0);
        let mut v = vec![0.0; n];
        for u in self.units.iter().filter(|u| &u.shard == shard) {
            for (acc, x) in v.iter_mut().zip(&u.series) {
                *acc += x;
            }
        }
        v
    }

    /// Mean latency (us) and max latency of requests served by `shard`.
    pub fn latency(&self, shard: &ShardId) -> Option<(f64, u64)> {
        let (sum, n, max) = self.latency.get(shard)?;
        (*n > 0).then(|| (*sum as f64 / *n as f64, *max))
    }

    /// Carves merchant `m` (index into `units[u].merchants`) out of unit `u` as a
    /// unit of its own `[key, key+1)`, owned by the same shard; returns its index.
    pub fn carve(&mut self, u: usize, m: usize) -> usize {
        let parent = &mut self.units[u];
        let ml = parent.merchants.remove(m);
        for (p, x) in parent.series.iter_mut().zip(&ml.series) {
            *p = (*p - x).max(0.0);
        }
        let share = if parent.smoothed > 0.0 {
            (ml.smoothed / parent.smoothed).min(1.0)
        } else {
            0.0
        };
        parent.smoothed = (parent.smoothed - ml.smoothed).max(0.0);
        let bytes = (parent.bytes as f64 * share).round() as u64;
        parent.bytes = parent.bytes.saturating_sub(bytes);
        let unit = Unit {
            range_id: parent.range_id,
            keys: KeyRange::single(ml.key),
            shard: parent.shard.clone(),
            series: ml.series,
            smoothed: ml.smoothed,
            merchants: Vec::new(),
            busy: false,
            bytes,
        };
        self.units.insert(u + 1, unit);
        u + 1
    }
}

/// Index of the unit holding `key` (units are sorted and cover the key space).
fn units_partition(units: &[Unit], key: u64) -> usize {
    units
        .partition_point(|u| u.keys.start() <= key)
        .saturating_sub(1)
}

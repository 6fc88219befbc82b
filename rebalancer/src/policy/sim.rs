//! A deterministic cluster simulator for the policy: load follows merchants and
//! keys through the range map, the policy runs once per interval, taken
//! decisions are applied the way the operations would apply them (a move takes
//! `move_intervals` intervals, then flips the owner; isolate and merge change the
//! map at once), and everything is recorded for assertions. No clock, no IO, no
//! randomness beyond a seeded generator: the same scenario gives the same run.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use shardline_core::{KeyRange, MerchantId, RangeMap, ShardId, shard_key};
use uuid::Uuid;

use super::{
    Action, Decision, HeavyHitter, LoadSample, MoveInFlight, MoveRecord, PolicyConfig, PolicyInput,
    ShardInfo, ShardState, SizeEstimate, decide,
};

/// splitmix64: a tiny seeded generator for reproducible merchants.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, n)` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// A simulated merchant.
#[derive(Debug, Clone)]
pub struct SimMerchant {
    pub id: MerchantId,
    pub key: u32,
    /// Bytes of data it owns.
    pub bytes: u64,
}

/// `count` merchants with ids from `seed`, each owning `bytes`.
pub fn merchants(count: usize, seed: u64, bytes: u64) -> Vec<SimMerchant> {
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|_| {
            let uuid =
                Uuid::from_u128(u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64()) | 1);
            let id = MerchantId::from_uuid(uuid);
            SimMerchant {
                id,
                key: shard_key(&id),
                bytes,
            }
        })
        .collect()
}

/// Requests per second of merchant `i` in interval `tick`.
pub type MerchantLoadFn = Box<dyn Fn(u64, usize) -> f64>;

/// A move the simulator is running.
#[derive(Debug, Clone)]
pub struct SimMove {
    pub flight: MoveInFlight,
    pub finishes_at_tick: u64,
}

/// One interval of a run.
#[derive(Debug, Clone)]
pub struct Tick {
    pub tick: u64,
    /// Requests per second served per shard (actual owner) in this interval.
    pub loads: BTreeMap<ShardId, f64>,
    pub decisions: Vec<Decision>,
}

/// The simulated cluster.
pub struct Sim {
    pub config: PolicyConfig,
    pub shards: Vec<ShardInfo>,
    pub map: RangeMap,
    pub merchants: Vec<SimMerchant>,
    pub load: MerchantLoadFn,
    /// Requests per second spread over the whole key space pro rata by keys (no
    /// heavy hitters): background load.
    pub uniform_rate: f64,
    /// Bytes of background data per key range, pro rata by keys, over the space.
    pub uniform_bytes: u64,
    /// Intervals a move takes from plan to flip.
    pub move_intervals: u64,
    pub start: DateTime<Utc>,
    pub tick: u64,
    pub in_flight: Vec<SimMove>,
    pub history: Vec<MoveRecord>,
    pub samples: Vec<LoadSample>,
    pub trace: Vec<Tick>,
    next_id: i64,
}

impl fmt::Debug for Sim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sim")
            .field("tick", &self.tick)
            .field("map", &self.map)
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// A cluster of `shards` (all active) with `map`, no load yet.
    pub fn new(
        config: PolicyConfig,
        shards: &[ShardId],
        map: RangeMap,
        merchants: Vec<SimMerchant>,
        load: MerchantLoadFn,
    ) -> Self {
        let next_id = map.ranges().iter().map(|r| r.id).max().unwrap_or(0) + 1;
        Sim {
            config,
            shards: shards
                .iter()
                .map(|s| ShardInfo::active(s.clone()))
                .collect(),
            map,
            merchants,
            load,
            uniform_rate: 0.0,
            uniform_bytes: 0,
            move_intervals: 2,
            start: DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default(),
            tick: 0,
            in_flight: Vec::new(),
            history: Vec::new(),
            samples: Vec::new(),
            trace: Vec::new(),
            next_id,
        }
    }

    fn interval(&self) -> ChronoDuration {
        ChronoDuration::from_std(self.config.interval).unwrap_or(ChronoDuration::MAX)
    }

    /// The time at the end of interval `tick` (just after it completed).
    pub fn time_of(&self, tick: u64) -> DateTime<Utc> {
        let n = i32::try_from(tick + 1).unwrap_or(i32::MAX);
        self.start + self.interval() * n + ChronoDuration::milliseconds(1)
    }

    pub fn set_state(&mut self, shard: &ShardId, state: ShardState) {
        for s in &mut self.shards {
            if &s.id == shard {
                s.state = state;
            }
        }
    }

    /// Requests per second each shard serves under the current map and load.
    pub fn loads_now(&self, tick: u64) -> BTreeMap<ShardId, f64> {
        let mut m: BTreeMap<ShardId, f64> =
            self.shards.iter().map(|s| (s.id.clone(), 0.0)).collect();
        for (i, mer) in self.merchants.iter().enumerate() {
            let rate = (self.load)(tick, i);
            *m.entry(self.map.lookup(mer.key).shard.clone()).or_default() += rate;
        }
        for r in self.map.ranges() {
            *m.entry(r.shard.clone()).or_default() +=
                self.uniform_rate * r.range.len() as f64 / KeyRange::FULL.len() as f64;
        }
        m
    }

    /// The policy's input as the loop would build it now.
    pub fn input(&self) -> PolicyInput {
        let mut sizes: BTreeMap<i64, f64> = BTreeMap::new();
        for r in self.map.ranges() {
            sizes.insert(
                r.id,
                self.uniform_bytes as f64 * r.range.len() as f64 / KeyRange::FULL.len() as f64,
            );
        }
        for m in &self.merchants {
            *sizes.entry(self.map.lookup(m.key).id).or_default() += m.bytes as f64;
        }
        PolicyInput {
            now: self.time_of(self.tick),
            map: self.map.clone(),
            shards: self.shards.clone(),
            samples: self.samples.clone(),
            in_flight: self.in_flight.iter().map(|m| m.flight.clone()).collect(),
            history: self.history.clone(),
            sizes: self
                .map
                .ranges()
                .iter()
                .map(|r| SizeEstimate {
                    keys: r.range,
                    bytes: sizes.get(&r.id).copied().unwrap_or(0.0).round() as u64,
                })
                .collect(),
        }
    }

    fn finish_moves(&mut self) {
        let tick = self.tick;
        let (done, running): (Vec<SimMove>, Vec<SimMove>) = std::mem::take(&mut self.in_flight)
            .into_iter()
            .partition(|m| m.finishes_at_tick <= tick);
        self.in_flight = running;
        for m in done {
            let epoch = self.map.epoch() + 1;
            self.map
                .reassign(m.flight.range_id, m.flight.target.clone(), epoch)
                .unwrap_or_else(|e| panic!("sim: move {:?} cannot flip: {e}", m.flight));
            self.history.push(MoveRecord {
                keys: m.flight.keys,
                source: m.flight.source,
                target: m.flight.target,
                started_at: m.flight.started_at,
                finished_at: self.time_of(tick.saturating_sub(1)),
                bytes: m.flight.bytes,
                completed: true,
            });
        }
    }

    fn record_samples(&mut self) {
        let secs = self.config.interval.as_secs_f64();
        let at = self.time_of(self.tick) - ChronoDuration::milliseconds(2);
        let mut per_range: BTreeMap<i64, (u64, Vec<HeavyHitter>)> = BTreeMap::new();
        for (i, m) in self.merchants.iter().enumerate() {
            let req = ((self.load)(self.tick, i) * secs).round() as u64;
            if req == 0 {
                continue;
            }
            let e = per_range.entry(self.map.lookup(m.key).id).or_default();
            e.0 += req;
            e.1.push(HeavyHitter {
                merchant_id: m.id,
                shard_key: m.key,
                count: req,
                error: 0,
            });
        }
        for r in self.map.ranges() {
            let bg = (self.uniform_rate * secs * r.range.len() as f64 / KeyRange::FULL.len() as f64)
                .round() as u64;
            let (req, mut hitters) = per_range.remove(&r.id).unwrap_or_default();
            let requests = req + bg;
            if requests == 0 {
                continue;
            }
            hitters.sort_by(|a, b| {
                b.count
                    .cmp(&a.count)
                    .then(a.merchant_id.cmp(&b.merchant_id))
            });
            hitters.truncate(16);
            self.samples.push(LoadSample {
                router_id: "sim".into(),
                at,
                range_id: r.id,
                keys: r.range,
                shard: r.shard.clone(),
                requests,
                writes: requests / 2,
                rows_touched: requests * 2,
                bytes: requests * 512,
                latency_us_sum: requests * 800,
                latency_us_max: 5_000,
                heavy_hitters: hitters,
            });
        }
        let keep = i32::try_from(self.config.history_intervals + 1).unwrap_or(i32::MAX);
        let horizon = at - self.interval() * keep;
        self.samples.retain(|s| s.at > horizon);
    }

    fn apply(&mut self, d: &Decision) {
        let Some(action) = d.action.as_ref().filter(|_| d.taken) else {
            return;
        };
        let epoch = self.map.epoch() + 1;
        let started_at = self.time_of(self.tick);
        let busy = |sim: &Sim, id: i64| sim.in_flight.iter().any(|m| m.flight.range_id == id);
        let (range_id, target) = match action {
            Action::Merge { left, right, .. } => {
                assert!(
                    !busy(self, *left) && !busy(self, *right),
                    "sim: merge of a moving range: {d}"
                );
                self.map
                    .merge(*left, *right, epoch)
                    .unwrap_or_else(|e| panic!("sim: {d}: {e}"));
                return;
            }
            Action::Move {
                range_id, target, ..
            } => (*range_id, target.clone()),
            Action::Isolate {
                key,
                range_id,
                target,
                ..
            } => {
                assert!(
                    !busy(self, *range_id),
                    "sim: isolate inside a moving range: {d}"
                );
                let id = self
                    .map
                    .isolate_key(*key, &mut self.next_id, epoch)
                    .unwrap_or_else(|e| panic!("sim: {d}: {e}"));
                (id, target.clone())
            }
        };
        assert!(
            !busy(self, range_id),
            "sim: second move of range {range_id}: {d}"
        );
        let r = self
            .map
            .get(range_id)
            .unwrap_or_else(|| panic!("sim: {d}: no range {range_id}"))
            .clone();
        assert_ne!(r.shard, target, "sim: move to its own shard: {d}");
        let bytes = d.inputs.candidate_bytes.unwrap_or(0);
        self.in_flight.push(SimMove {
            flight: MoveInFlight {
                move_id: Uuid::from_u128(
                    u128::from(self.tick) << 32
                        | u128::from(self.in_flight.len() as u32)
                        | 1 << 100,
                ),
                range_id,
                keys: r.range,
                source: r.shard,
                target,
                started_at,
                bytes,
            },
            finishes_at_tick: self.tick + self.move_intervals,
        });
        let max = usize::try_from(self.config.max_concurrent_moves).unwrap_or(usize::MAX);
        assert!(
            self.in_flight.len() <= max,
            "sim: more than {max} moves in flight after {d}"
        );
    }

    /// One interval: finish due moves, record the interval's load, decide at its
    /// end and apply what was taken.
    pub fn step(&mut self) -> &Tick {
        self.finish_moves();
        self.record_samples();
        let loads = self.loads_now(self.tick);
        let decisions = decide(&self.input(), &self.config).unwrap_or_else(|e| panic!("sim: {e}"));
        for d in &decisions {
            self.apply(d);
        }
        self.trace.push(Tick {
            tick: self.tick,
            loads,
            decisions,
        });
        self.tick += 1;
        self.trace.last().unwrap_or_else(|| unreachable!())
    }

    pub fn run(&mut self, ticks: u64) {
        for _ in 0..ticks {
            self.step();
        }
    }

    /// Every decision so far with its tick.
    pub fn decisions(&self) -> impl Iterator<Item = (u64, &Decision)> {
        self.trace
            .iter()
            .flat_map(|t| t.decisions.iter().map(move |d| (t.tick, d)))
    }

    /// Taken actions with their tick.
    pub fn taken(&self) -> Vec<(u64, Action)> {
        self.decisions()
            .filter(|(_, d)| d.taken)
            .filter_map(|(t, d)| d.action.clone().map(|a| (t, a)))
            .collect()
    }

    /// max / mean of the load the shards actually served in interval `tick`
    /// (max over shards active now; 1 when idle or not simulated yet).
    pub fn spread(&self, tick: u64) -> f64 {
        let Some(loads) = usize::try_from(tick)
            .ok()
            .and_then(|t| self.trace.get(t))
            .map(|t| &t.loads)
        else {
            return 1.0;
        };
        let active: Vec<f64> = self
            .shards
            .iter()
            .filter(|s| s.state == ShardState::Active)
            .map(|s| loads.get(&s.id).copied().unwrap_or(0.0))
            .collect();
        let total: f64 = loads.values().sum();
        let mean = total / active.len().max(1) as f64;
        let max = active.iter().copied().fold(0.0, f64::max);
        if mean > 0.0 { max / mean } else { 1.0 }
    }
}

//! The decision round: drain, then balance, then merge. Pure: reads the model
//! and the input, writes decisions, and updates its own projection after each
//! taken action so later choices in the same round see its effect.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use shardline_core::{KeyRange, ShardId};

use super::config::PolicyConfig;
use super::decision::{Action, Decision, Inputs, Reason};
use super::input::{PolicyInput, ShardState};
use super::model::Model;

/// Declines recorded per shard and round beyond which further blocked
/// candidates are dropped silently (keeps the decisions table readable).
pub(super) const MAX_DECLINES_PER_SHARD: usize = 4;

/// A possible move off a hot shard.
#[derive(Debug, Clone)]
struct Candidate {
    unit: usize,
    /// Index into the unit's merchants when this isolates one.
    merchant: Option<usize>,
    load: f64,
    bytes: u64,
    share: Option<f64>,
    target: ShardId,
    /// Cluster maximum after the move.
    predicted_max: f64,
    /// max(source, target) after the move.
    pair_max: f64,
    predicted_target: f64,
}

pub(crate) struct Planner<'a> {
    pub(super) input: &'a PolicyInput,
    pub(super) config: &'a PolicyConfig,
    pub(super) model: Model,
    /// Shards that may receive ranges.
    pub(super) active: Vec<ShardId>,
    pub(super) draining: Vec<ShardId>,
    pub(super) in_flight: u32,
    pub(super) bytes_hour: u64,
    pub(super) out: Vec<Decision>,
}

fn overlaps(a: KeyRange, b: KeyRange) -> bool {
    a.start() < b.end() && b.start() < a.end()
}

fn chrono(d: std::time::Duration) -> ChronoDuration {
    ChronoDuration::from_std(d).unwrap_or(ChronoDuration::MAX)
}

impl<'a> Planner<'a> {
    pub fn new(input: &'a PolicyInput, config: &'a PolicyConfig) -> Self {
        let model = Model::build(input, config);
        let mut active = Vec::new();
        let mut draining = Vec::new();
        for s in &input.shards {
            match s.state {
                ShardState::Active => active.push(s.id.clone()),
                ShardState::Draining => draining.push(s.id.clone()),
                ShardState::Down => {}
            }
        }
        active.sort();
        active.dedup();
        draining.sort();
        draining.dedup();
        let hour_ago = input.now - ChronoDuration::hours(1);
        let bytes_hour = input
            .in_flight
            .iter()
            .filter(|m| m.started_at > hour_ago)
            .map(|m| m.bytes)
            .chain(
                input
                    .history
                    .iter()
                    .filter(|m| m.started_at > hour_ago)
                    .map(|m| m.bytes),
            )
            .fold(0u64, u64::saturating_add);
        Planner {
            input,
            config,
            model,
            active,
            draining,
            in_flight: u32::try_from(input.in_flight.len()).unwrap_or(u32::MAX),
            bytes_hour,
            out: Vec::new(),
        }
    }

    pub fn run(mut self) -> Vec<Decision> {
        self.drain();
        self.balance();
        self.merge();
        self.out
    }

    pub(super) fn loads(&self) -> BTreeMap<ShardId, f64> {
        self.model
            .shard_loads(self.active.iter().chain(self.draining.iter()))
    }

    /// (mean over active shards of the total, max over active shards, hottest).
    fn stats(&self, loads: &BTreeMap<ShardId, f64>) -> (f64, f64, Option<ShardId>) {
        let total: f64 = loads.values().sum();
        let mean = if self.active.is_empty() {
            0.0
        } else {
            total / self.active.len() as f64
        };
        let mut hottest: Option<(&ShardId, f64)> = None;
        for s in &self.active {
            let l = loads.get(s).copied().unwrap_or(0.0);
            if hottest.is_none_or(|(_, m)| l > m) {
                hottest = Some((s, l));
            }
        }
        (
            mean,
            hottest.map_or(0.0, |h| h.1),
            hottest.map(|h| h.0.clone()),
        )
    }

    pub(super) fn threshold(&self, mean: f64) -> f64 {
        self.config
            .min_shard_load
            .max(mean * (1.0 + self.config.tolerance))
    }

    pub(super) fn base_inputs(&self) -> Inputs {
        let loads = self.loads();
        let (mean, max, _) = self.stats(&loads);
        Inputs {
            hot_threshold: self.threshold(mean),
            shard_loads: loads,
            mean_load: mean,
            max_load: max,
            intervals: self.model.intervals,
            moves_in_flight: self.in_flight,
            bytes_last_hour: self.bytes_hour,
            ..Inputs::default()
        }
    }

    pub(super) fn push(
        &mut self,
        action: Option<Action>,
        taken: bool,
        reason: Reason,
        text: String,
        inputs: Inputs,
    ) {
        self.out.push(Decision {
            action,
            taken,
            reason,
            explanation: text,
            inputs,
        });
    }

    /// Why a move of `keys` from `source` to `target` of `bytes` may not start.
    pub(super) fn guard(
        &self,
        keys: KeyRange,
        target: &ShardId,
        bytes: u64,
        drain: bool,
    ) -> Result<(), (Reason, String, Option<DateTime<Utc>>)> {
        let c = self.config;
        if self.in_flight >= c.max_concurrent_moves {
            return Err((
                Reason::MaxConcurrentMoves,
                format!(
                    "{} moves in flight (max_concurrent_moves = {})",
                    self.in_flight, c.max_concurrent_moves
                ),
                None,
            ));
        }
        let now = self.input.now;
        if !drain {
            let since = now - chrono(c.range_cooldown);
            if let Some(m) = self
                .input
                .history
                .iter()
                .filter(|m| m.started_at > since && overlaps(m.keys, keys))
                .max_by_key(|m| m.started_at)
            {
                return Err((
                    Reason::RangeCooldown,
                    format!(
                        "keys {keys} moved {} -> {} at {} (range_cooldown = {} s)",
                        m.source,
                        m.target,
                        m.started_at,
                        c.range_cooldown.as_secs()
                    ),
                    Some(m.started_at),
                ));
            }
            let since = now - chrono(c.oscillation_window);
            if let Some(m) = self
                .input
                .history
                .iter()
                .filter(|m| {
                    m.completed
                        && m.finished_at > since
                        && &m.source == target
                        && overlaps(m.keys, keys)
                })
                .max_by_key(|m| m.started_at)
            {
                return Err((
                    Reason::Oscillation,
                    format!(
                        "keys {keys} left {target} for {} at {}; they may not go back within oscillation_window = {} s",
                        m.target,
                        m.finished_at,
                        c.oscillation_window.as_secs()
                    ),
                    Some(m.started_at),
                ));
            }
        }
        let after = self.bytes_hour.saturating_add(bytes);
        // A range bigger than the whole budget may still move alone in an
        // otherwise quiet hour, or it could never move at all.
        let oversized_alone = bytes > c.byte_budget_per_hour && self.bytes_hour == 0;
        if after > c.byte_budget_per_hour && !oversized_alone {
            return Err((
                Reason::ByteBudget,
                format!(
                    "{bytes} bytes on top of {} started in the last hour exceed byte_budget_per_hour = {}",
                    self.bytes_hour, c.byte_budget_per_hour
                ),
                None,
            ));
        }
        Ok(())
    }

    /// Records a taken move of unit `u` (after carving, if isolating) to `target`.
    pub(super) fn take(&mut self, u: usize, target: &ShardId, bytes: u64) {
        let unit = &mut self.model.units[u];
        unit.shard = target.clone();
        unit.busy = true;
        self.in_flight += 1;
        self.bytes_hour = self.bytes_hour.saturating_add(bytes);
    }

    fn balance(&mut self) {
        let n = self.config.sustained_intervals;
        if self.model.intervals < n {
            let inputs = self.base_inputs();
            let text = format!(
                "only {} complete intervals of load history; sustained_intervals = {n}",
                self.model.intervals
            );
            self.push(None, false, Reason::InsufficientHistory, text, inputs);
            return;
        }
        let mut done: BTreeSet<ShardId> = BTreeSet::new();
        let mut any_taken = false;
        loop {
            let loads = self.loads();
            let (mean, max, hottest) = self.stats(&loads);
            let Some(hottest) = hottest else {
                let inputs = self.base_inputs();
                self.push(
                    None,
                    false,
                    Reason::NoTarget,
                    "no active shard".to_owned(),
                    inputs,
                );
                return;
            };
            if max < self.config.min_shard_load {
                if !any_taken {
                    let inputs = self.base_inputs();
                    self.push(
                        None,
                        false,
                        Reason::BelowFloor,
                        format!(
                            "hottest shard {hottest} carries {max:.1}/s, below min_shard_load = {}",
                            self.config.min_shard_load
                        ),
                        inputs,
                    );
                }
                return;
            }
            let threshold = self.threshold(mean);
            if max <= threshold {
                if !any_taken {
                    let mut inputs = self.base_inputs();
                    inputs.shard = Some(hottest.clone());
                    self.push(None, false, Reason::WithinTolerance, format!("hottest shard {hottest} at {max:.1}/s is within tolerance of the mean {mean:.1}/s (threshold {threshold:.1}/s)"), inputs);
                }
                return;
            }
            let mut hot: Vec<(ShardId, f64)> = self
                .active
                .iter()
                .map(|s| (s.clone(), loads.get(s).copied().unwrap_or(0.0)))
                .filter(|(s, l)| *l > threshold && !done.contains(s))
                .collect();
            hot.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let mut progressed = false;
            for (shard, load) in hot {
                done.insert(shard.clone());
                let run = self.intervals_hot(&shard);
                if run < n {
                    let mut inputs = self.base_inputs();
                    inputs.shard = Some(shard.clone());
                    inputs.intervals_hot = Some(run);
                    inputs.shard_latency_us = self.model.latency(&shard);
                    self.push(None, false, Reason::NotSustained, format!("shard {shard} at {load:.1}/s is above the threshold {threshold:.1}/s but only for the last {run} intervals; sustained_intervals = {n}"), inputs);
                    continue;
                }
                let (long, long_threshold) = self.window_load(&shard);
                if self.hot_before_run(&shard, run) && long <= long_threshold {
                    let mut inputs = self.base_inputs();
                    inputs.shard = Some(shard.clone());
                    inputs.intervals_hot = Some(run);
                    inputs.window_load = Some((long, long_threshold));
                    self.push(None, false, Reason::NotSustained, format!("shard {shard} is hot for the last {run} intervals, but its average over {} intervals ({long:.1}/s) is within tolerance of the cluster's (threshold {long_threshold:.1}/s): oscillating load, not sustained imbalance", self.model.intervals), inputs);
                    continue;
                }
                match self.relieve(&shard, run) {
                    Relief::Taken => {
                        progressed = true;
                        any_taken = true;
                        // Loads changed: the hottest shard may differ now.
                        done.remove(&shard);
                        break;
                    }
                    Relief::Declined => {}
                    Relief::Stop => return,
                }
            }
            if !progressed {
                return;
            }
        }
    }

    /// Candidates to move off `src`, improving ones only, best first; or the
    /// best non-improving one (as `Err`) for the decline.
    fn candidates(&self, src: &ShardId) -> Result<Vec<Candidate>, Option<Candidate>> {
        let loads = self.loads();
        let old_max = self
            .active
            .iter()
            .map(|s| loads.get(s).copied().unwrap_or(0.0))
            .fold(0.0, f64::max);
        let src_load = loads.get(src).copied().unwrap_or(0.0);
        let mut improving = Vec::new();
        let mut best_other: Option<Candidate> = None;
        for (i, u) in self.model.units.iter().enumerate() {
            if &u.shard != src || u.busy || u.smoothed <= 0.0 {
                continue;
            }
            let mut options = vec![(None, u.smoothed, u.bytes, None)];
            if let Some(m) = u.merchants.first() {
                let share = m.smoothed / u.smoothed;
                if u.keys.len() > 1 && m.smoothed > 0.0 && share >= self.config.dominant_share {
                    let bytes = (u.bytes as f64 * share.min(1.0)).round() as u64;
                    options.insert(0, (Some(0), m.smoothed, bytes, Some(share)));
                }
            }
            for (merchant, load, bytes, share) in options {
                for t in &self.active {
                    if t == src {
                        continue;
                    }
                    let tl = loads.get(t).copied().unwrap_or(0.0) + load;
                    let others = self
                        .active
                        .iter()
                        .filter(|s| *s != src && *s != t)
                        .map(|s| loads.get(s).copied().unwrap_or(0.0))
                        .fold(0.0, f64::max);
                    let pair_max = tl.max(src_load - load);
                    let predicted_max = others.max(pair_max);
                    let c = Candidate {
                        unit: i,
                        merchant,
                        load,
                        bytes,
                        share,
                        target: t.clone(),
                        predicted_max,
                        pair_max,
                        predicted_target: tl,
                    };
                    // The pair must improve (the source is relieved without the
                    // target becoming as hot) and the cluster maximum must not grow.
                    if pair_max <= src_load * (1.0 - self.config.min_improvement)
                        && predicted_max <= old_max
                    {
                        improving.push(c);
                    } else if best_other.as_ref().is_none_or(|b| c.pair_max < b.pair_max) {
                        best_other = Some(c);
                    }
                }
            }
        }
        if improving.is_empty() {
            return Err(best_other);
        }
        let units = &self.model.units;
        improving.sort_by(|a, b| {
            b.merchant
                .is_some()
                .cmp(&a.merchant.is_some())
                .then(a.pair_max.total_cmp(&b.pair_max))
                .then(a.predicted_max.total_cmp(&b.predicted_max))
                .then(a.predicted_target.total_cmp(&b.predicted_target))
                .then(a.bytes.cmp(&b.bytes))
                .then(units[a.unit].keys.cmp(&units[b.unit].keys))
                .then(a.target.cmp(&b.target))
        });
        Ok(improving)
    }

    fn action_of(&self, src: &ShardId, c: &Candidate) -> Action {
        let u = &self.model.units[c.unit];
        match c.merchant.and_then(|m| u.merchants.get(m)) {
            Some(m) => Action::Isolate {
                merchant: m.merchant,
                key: m.key,
                range_id: u.range_id,
                source: src.clone(),
                target: c.target.clone(),
            },
            None => Action::Move {
                range_id: u.range_id,
                keys: u.keys,
                source: src.clone(),
                target: c.target.clone(),
            },
        }
    }

    fn candidate_inputs(&self, src: &ShardId, run: u32, c: &Candidate) -> Inputs {
        let mut inputs = self.base_inputs();
        inputs.shard = Some(src.clone());
        inputs.intervals_hot = Some(run);
        inputs.candidate_load = Some(c.load);
        inputs.candidate_bytes = Some(c.bytes);
        inputs.merchant_share = c.share;
        inputs.predicted_max = Some(c.predicted_max);
        inputs.predicted_target_load = Some(c.predicted_target);
        inputs.shard_latency_us = self.model.latency(src);
        inputs
    }

    fn relieve(&mut self, src: &ShardId, run: u32) -> Relief {
        let list = match self.candidates(src) {
            Ok(list) => list,
            Err(best) => {
                let (action, inputs) = match &best {
                    Some(c) => (
                        Some(self.action_of(src, c)),
                        self.candidate_inputs(src, run, c),
                    ),
                    None => {
                        let mut i = self.base_inputs();
                        i.shard = Some(src.clone());
                        i.intervals_hot = Some(run);
                        (None, i)
                    }
                };
                let text = match &best {
                    Some(c) => format!(
                        "shard {src} is hot for {run} intervals, but the best move ({:.1}/s to {}) would leave the larger of the two at {:.1}/s, not {:.0}% below the source's {:.1}/s (min_improvement), or would raise the cluster maximum",
                        c.load,
                        c.target,
                        c.pair_max,
                        self.config.min_improvement * 100.0,
                        inputs.shard_loads.get(src).copied().unwrap_or(0.0)
                    ),
                    None => {
                        format!("shard {src} is hot for {run} intervals, but has no movable range")
                    }
                };
                self.push(action, false, Reason::NoImprovement, text, inputs);
                return Relief::Declined;
            }
        };
        let mut declines = 0;
        for c in list {
            if declines >= MAX_DECLINES_PER_SHARD {
                break;
            }
            let action = self.action_of(src, &c);
            let keys = match &action {
                Action::Isolate { key, .. } => KeyRange::single(*key),
                _ => self.model.units[c.unit].keys,
            };
            let mut inputs = self.candidate_inputs(src, run, &c);
            match self.guard(keys, &c.target, c.bytes, false) {
                Ok(()) => {
                    let (reason, text) = match &action {
                        Action::Isolate {
                            merchant,
                            key,
                            range_id,
                            ..
                        } => (
                            Reason::IsolateDominantMerchant,
                            format!(
                                "shard {src} is hot ({:.1}/s > {:.1}/s for {run} intervals); merchant {merchant} carries {:.0}% of range {range_id}: isolate key {key} and move it ({:.1}/s) to {}, predicted max {:.1}/s",
                                inputs.max_load,
                                inputs.hot_threshold,
                                c.share.unwrap_or(0.0) * 100.0,
                                c.load,
                                c.target,
                                c.predicted_max
                            ),
                        ),
                        _ => (
                            Reason::RebalanceHotShard,
                            format!(
                                "shard {src} is hot ({:.1}/s > {:.1}/s for {run} intervals): move range {} {keys} ({:.1}/s, {} bytes) to {}, predicted max {:.1}/s",
                                inputs.max_load,
                                inputs.hot_threshold,
                                action.range_id(),
                                c.load,
                                c.bytes,
                                c.target,
                                c.predicted_max
                            ),
                        ),
                    };
                    let unit = match c.merchant {
                        Some(m) => {
                            // ops::isolate splits the parent: it is busy too.
                            self.model.units[c.unit].busy = true;
                            self.model.carve(c.unit, m)
                        }
                        None => c.unit,
                    };
                    self.take(unit, &c.target, c.bytes);
                    self.push(Some(action), true, reason, text, inputs);
                    return Relief::Taken;
                }
                Err((reason, why, at)) => {
                    inputs.blocked_by_move_at = at;
                    let text = format!(
                        "{} of {keys} from hot shard {src} to {} declined: {why}",
                        action.kind(),
                        c.target
                    );
                    self.push(Some(action), false, reason, text, inputs);
                    declines += 1;
                    if reason == Reason::MaxConcurrentMoves {
                        return Relief::Stop;
                    }
                }
            }
        }
        Relief::Declined
    }
}

enum Relief {
    Taken,
    Declined,
    /// Concurrency exhausted: nothing more can start this round.
    Stop,
}

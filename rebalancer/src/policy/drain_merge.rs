//! The drain and merge phases of a round (balance is in `plan`).

use std::collections::{BTreeMap, BTreeSet};

use shardline_core::ShardId;

use super::decision::{Action, Reason};
use super::plan::{MAX_DECLINES_PER_SHARD, Planner};

impl Planner<'_> {
    pub(super) fn drain(&mut self) {
        for shard in self.draining.clone() {
            let mut order: Vec<usize> = (0..self.model.units.len())
                .filter(|&i| {
                    let u = &self.model.units[i];
                    u.shard == shard && !u.busy
                })
                .collect();
            order.sort_by(|&a, &b| {
                let (ua, ub) = (&self.model.units[a], &self.model.units[b]);
                ub.smoothed
                    .total_cmp(&ua.smoothed)
                    .then(ua.keys.cmp(&ub.keys))
            });
            let mut declines = 0usize;
            for i in order {
                if declines >= MAX_DECLINES_PER_SHARD {
                    break;
                }
                let loads = self.loads();
                let unit = &self.model.units[i];
                let (load, keys, bytes, range_id) =
                    (unit.smoothed, unit.keys, unit.bytes, unit.range_id);
                let target = self
                    .active
                    .iter()
                    .min_by(|a, b| {
                        let la = loads.get(*a).copied().unwrap_or(0.0);
                        let lb = loads.get(*b).copied().unwrap_or(0.0);
                        la.total_cmp(&lb).then(a.cmp(b))
                    })
                    .cloned();
                let mut inputs = self.base_inputs();
                inputs.shard = Some(shard.clone());
                inputs.candidate_load = Some(load);
                inputs.candidate_bytes = Some(bytes);
                let Some(target) = target else {
                    self.push(
                        None,
                        false,
                        Reason::NoTarget,
                        format!(
                            "shard {shard} is draining but no shard is active to take its ranges"
                        ),
                        inputs,
                    );
                    return;
                };
                let action = Action::Move {
                    range_id,
                    keys,
                    source: shard.clone(),
                    target: target.clone(),
                };
                match self.guard(keys, &target, bytes, true) {
                    Ok(()) => {
                        let t = loads.get(&target).copied().unwrap_or(0.0) + load;
                        inputs.predicted_target_load = Some(t);
                        self.take(i, &target, bytes);
                        self.push(Some(action), true, Reason::DrainShard, format!("shard {shard} is draining: move range {range_id} {keys} ({load:.1}/s, {bytes} bytes) to the least loaded active shard {target}"), inputs);
                    }
                    Err((reason, why, at)) => {
                        inputs.blocked_by_move_at = at;
                        self.push(
                            Some(action),
                            false,
                            reason,
                            format!("drain of {shard} waits: {why}"),
                            inputs,
                        );
                        declines += 1;
                        if reason == Reason::MaxConcurrentMoves {
                            return;
                        }
                    }
                }
            }
        }
    }

    pub(super) fn merge(&mut self) {
        let c = self.config;
        let mut load: BTreeMap<i64, f64> = BTreeMap::new();
        let mut busy: BTreeSet<i64> = BTreeSet::new();
        for u in &self.model.units {
            *load.entry(u.range_id).or_default() += u.smoothed;
            if u.busy {
                busy.insert(u.range_id);
            }
        }
        let mut count: BTreeMap<&ShardId, u32> = BTreeMap::new();
        for r in self.input.map.ranges() {
            *count.entry(&r.shard).or_default() += 1;
        }
        let ranges = self.input.map.ranges();
        let mut merges = 0;
        // The open left side of a chain: (range id, shard, accumulated load).
        let mut left: Option<(i64, ShardId, f64)> = None;
        let mut taken = Vec::new();
        for r in ranges {
            if merges >= c.max_merges_per_round {
                break;
            }
            let l = load.get(&r.id).copied().unwrap_or(0.0);
            let eligible =
                !busy.contains(&r.id) && self.active.contains(&r.shard) && l < c.merge_cold_load;
            if !eligible {
                left = None;
                continue;
            }
            match &left {
                Some((lid, shard, acc))
                    if *shard == r.shard
                        && acc + l < c.merge_cold_load
                        && count.get(&r.shard).copied().unwrap_or(0) > c.min_ranges_per_shard =>
                {
                    let (lid, acc) = (*lid, acc + l);
                    taken.push((lid, r.id, r.shard.clone(), acc));
                    if let Some(n) = count.get_mut(&r.shard) {
                        *n -= 1;
                    }
                    merges += 1;
                    left = Some((lid, r.shard.clone(), acc));
                }
                _ => left = Some((r.id, r.shard.clone(), l)),
            }
        }
        for (l, r, shard, acc) in taken {
            let mut inputs = self.base_inputs();
            inputs.shard = Some(shard.clone());
            inputs.candidate_load = Some(acc);
            let text = format!(
                "ranges {l} and {r} are neighbours on {shard} with {acc:.2}/s together (< merge_cold_load = {}): merge them, {l} survives",
                c.merge_cold_load
            );
            self.push(
                Some(Action::Merge {
                    left: l,
                    right: r,
                    shard,
                }),
                true,
                Reason::MergeColdNeighbours,
                text,
                inputs,
            );
        }
    }
}

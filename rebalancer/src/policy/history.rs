//! A shard's load history over the policy's window: which intervals it was hot
//! in, its current hot run, and its mean over the whole window (the
//! sustained-imbalance and anti-oscillation rules of `plan`).

use shardline_core::ShardId;

use super::plan::Planner;

impl Planner<'_> {
    /// Per interval (oldest first): whether `shard` was above that interval's
    /// hot threshold.
    pub(super) fn hot_series(&self, shard: &ShardId) -> Vec<bool> {
        let n = usize::try_from(self.model.intervals).unwrap_or(0);
        let mut totals = vec![0.0; n];
        for u in &self.model.units {
            if self.active.contains(&u.shard) || self.draining.contains(&u.shard) {
                for (t, x) in totals.iter_mut().zip(&u.series) {
                    *t += x;
                }
            }
        }
        let k = self.active.len().max(1) as f64;
        self.model
            .shard_series(shard)
            .iter()
            .zip(&totals)
            .map(|(x, total)| *x > self.threshold(total / k))
            .collect()
    }

    /// Whether `shard` was hot in some interval before its current hot run of
    /// `run` intervals: it has been hot, cooled off and is hot again, the mark
    /// of oscillating load. A first hot run after a cool history is a step
    /// change (a merchant turning hot) and is acted on once sustained.
    pub(super) fn hot_before_run(&self, shard: &ShardId, run: u32) -> bool {
        let hot = self.hot_series(shard);
        let run = usize::try_from(run).unwrap_or(usize::MAX);
        hot.len() > run && hot[..hot.len() - run].iter().any(|h| *h)
    }

    /// Consecutive newest intervals in which `shard` was above that interval's
    /// hot threshold.
    pub(super) fn intervals_hot(&self, shard: &ShardId) -> u32 {
        let n = self
            .hot_series(shard)
            .iter()
            .rev()
            .take_while(|h| **h)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// The shard's mean load over the whole history window and the hot
    /// threshold computed from the cluster's mean over the same window.
    pub(super) fn window_load(&self, shard: &ShardId) -> (f64, f64) {
        let n = f64::from(self.model.intervals.max(1));
        let mut total = 0.0;
        for u in &self.model.units {
            if self.active.contains(&u.shard) || self.draining.contains(&u.shard) {
                total += u.series.iter().sum::<f64>();
            }
        }
        let mean = total / n / self.active.len().max(1) as f64;
        let long = self.model.shard_series(shard).iter().sum::<f64>() / n;
        (long, self.threshold(mean))
    }
}

//! `shardline bench ...`: benchmarks that print their same-run baseline and the
//! ratio. Speed goals live here, never in tests.

pub mod cluster;
pub mod edge;
pub mod edge_store;
pub mod fencing;
pub mod move_data;
mod move_engine;
pub mod moves;
pub mod router;

use std::future::Future;
use std::time::Duration;

use clap::Args;

use crate::cli::{BenchArgs, BenchCommand};
use crate::config::{ConfigError, in_range};

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.command {
        BenchCommand::Fencing(a) => fencing::run(fencing::FencingConfig::from_args(a)?).await,
        BenchCommand::Router(a) => router::run(router::RouterBenchConfig::from_args(a)?).await,
        BenchCommand::Move(a) => moves::run(moves::MoveBenchConfig::from_args(a)?).await,
        BenchCommand::Edge(a) => edge::run(edge::EdgeBenchConfig::from_args(a)?).await,
    }
}

/// The shape of an A/B run, the same flags for every benchmark.
#[derive(Debug, Clone, Args)]
pub struct AbArgs {
    /// Concurrent clients per variant.
    #[arg(long, default_value_t = 8)]
    pub clients: u32,
    /// Seconds per round and variant.
    #[arg(long, default_value_t = 5)]
    pub seconds: u32,
    /// Measured rounds (after one warm-up round).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Validated [`AbArgs`].
#[derive(Debug, Clone, Copy)]
pub struct AbShape {
    pub clients: u32,
    pub seconds: u32,
    pub rounds: u32,
    pub json: bool,
}

impl AbShape {
    pub fn from_args(a: AbArgs) -> Result<Self, ConfigError> {
        Ok(AbShape {
            clients: in_range("clients", a.clients, 1..=256)?,
            seconds: in_range("seconds", a.seconds, 1..=600)?,
            rounds: in_range("rounds", a.rounds, 1..=100)?,
            json: a.json,
        })
    }

    /// Record the run's shape in a JSON report.
    pub fn describe(&self, report: &mut serde_json::Value) {
        report["clients"] = self.clients.into();
        report["seconds_per_round"] = self.seconds.into();
        report["rounds"] = self.rounds.into();
    }
}

/// p-th percentile (0..=100) of sorted microsecond samples.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Operations, wall time and per-operation latencies (microseconds).
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub ops: u64,
    pub elapsed: Duration,
    pub latencies_us: Vec<u64>,
}

impl Tally {
    pub fn per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Merge another client of the same round (same wall-clock window).
    pub fn add_concurrent(&mut self, t: Tally) {
        self.ops += t.ops;
        self.elapsed = self.elapsed.max(t.elapsed);
        self.latencies_us.extend(t.latencies_us);
    }

    /// Append a later round.
    pub fn add_round(&mut self, t: Tally) {
        self.ops += t.ops;
        self.elapsed += t.elapsed;
        self.latencies_us.extend(t.latencies_us);
    }

    fn sort(&mut self) {
        self.latencies_us.sort_unstable();
    }

    fn p(&self, q: f64) -> u64 {
        percentile(&self.latencies_us, q)
    }
}

/// A baseline and a candidate measured in the same run.
#[derive(Debug)]
pub struct AbResult {
    pub names: [&'static str; 2],
    pub baseline: Tally,
    pub candidate: Tally,
}

impl AbResult {
    pub fn ratio(&self) -> f64 {
        self.candidate.per_sec() / self.baseline.per_sec().max(1e-9)
    }

    /// `{"<baseline name>": {per_s, p50_us, p99_us}, "<candidate name>": {...}, "ratio"}`
    pub fn json(&self) -> serde_json::Value {
        let one = |t: &Tally| serde_json::json!({"per_s": t.per_sec(), "p50_us": t.p(50.0), "p99_us": t.p(99.0)});
        serde_json::json!({
            self.names[0]: one(&self.baseline),
            self.names[1]: one(&self.candidate),
            "ratio": self.ratio(),
        })
    }

    /// A small table: both variants side by side, then the ratio.
    pub fn print(&self, title: &str, unit: &str) {
        println!("{title:<26} {unit:>10} {:>9} {:>9}", "p50 us", "p99 us");
        for (name, t) in [
            (format!("{} (baseline)", self.names[0]), &self.baseline),
            (self.names[1].to_owned(), &self.candidate),
        ] {
            println!(
                "{name:<26} {:>10.0} {:>9} {:>9}",
                t.per_sec(),
                t.p(50.0),
                t.p(99.0)
            );
        }
        println!(
            "ratio {}/{}: {:.3}x",
            self.names[1],
            self.names[0],
            self.ratio()
        );
    }
}

/// One warm-up round of each variant, then `rounds` rounds alternating which runs
/// first, so neither always meets a warmer cache or a quieter machine.
/// `run(candidate, seconds)` measures one round of one variant.
pub async fn alternate<F, Fut>(
    names: [&'static str; 2],
    unit: &str,
    rounds: u32,
    seconds: u32,
    mut run: F,
) -> anyhow::Result<AbResult>
where
    F: FnMut(bool, u32) -> Fut,
    Fut: Future<Output = anyhow::Result<Tally>>,
{
    run(false, 1).await?;
    run(true, 1).await?;
    let (mut baseline, mut candidate) = (Tally::default(), Tally::default());
    for r in 0..rounds {
        let order = if r % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for is_candidate in order {
            let t = run(is_candidate, seconds).await?;
            eprintln!(
                "  round {} {:<12} {:>9.0} {unit}",
                r + 1,
                names[usize::from(is_candidate)],
                t.per_sec()
            );
            if is_candidate {
                candidate.add_round(t);
            } else {
                baseline.add_round(t);
            }
        }
    }
    baseline.sort();
    candidate.sort();
    Ok(AbResult {
        names,
        baseline,
        candidate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 51);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[tokio::test]
    async fn alternate_interleaves_and_sums_rounds() {
        let mut calls = Vec::new();
        let res = alternate(["a", "b"], "op/s", 2, 1, |cand, secs| {
            calls.push((cand, secs));
            async move {
                Ok(Tally {
                    ops: if cand { 50 } else { 100 },
                    elapsed: Duration::from_secs(1),
                    latencies_us: vec![10, 20],
                })
            }
        })
        .await
        .unwrap();
        assert_eq!(
            calls,
            vec![
                (false, 1),
                (true, 1),
                (false, 1),
                (true, 1),
                (true, 1),
                (false, 1)
            ]
        );
        assert_eq!(res.baseline.ops, 200);
        assert!((res.ratio() - 0.5).abs() < 1e-9);
        assert_eq!(res.json()["ratio"], 0.5);
    }
}

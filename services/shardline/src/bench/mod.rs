//! `shardline bench ...`: benchmarks that print their same-run baseline and the
//! ratio. Speed goals live here, never in tests.

pub mod fencing;
pub mod router;

use crate::cli::{BenchArgs, BenchCommand};

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.command {
        BenchCommand::Fencing(a) => fencing::run(fencing::FencingConfig::from_args(a)?).await,
        BenchCommand::Router(a) => router::run(router::RouterBenchConfig::from_args(a)?).await,
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

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 51);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[], 50.0), 0);
    }
}

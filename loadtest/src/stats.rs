//! Latency and outcome accounting: one HDR histogram per operation for the run,
//! and per-second buckets (count, errors, p50/p99) for the time series.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::workload::OpKind;

/// 1 µs .. 1 h, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid")
}

#[derive(Debug)]
struct OpStats {
    all: Histogram<u64>,
    ok: u64,
    failed: BTreeMap<String, u64>,
    unknown: BTreeMap<String, u64>,
    per_second: BTreeMap<u64, Histogram<u64>>,
    errors_per_second: BTreeMap<u64, u64>,
}

impl OpStats {
    fn new() -> Self {
        OpStats {
            all: histogram(),
            ok: 0,
            failed: BTreeMap::new(),
            unknown: BTreeMap::new(),
            per_second: BTreeMap::new(),
            errors_per_second: BTreeMap::new(),
        }
    }
}

#[derive(Debug)]
pub struct Stats {
    ops: BTreeMap<OpKind, OpStats>,
    pub retry_mismatches: Vec<String>,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

/// Summary of one operation kind (latencies in ms, measured from the intended
/// send time).
#[derive(Debug, Clone, Serialize)]
pub struct OpSummary {
    pub op: OpKind,
    pub count: u64,
    pub ok: u64,
    pub failed: BTreeMap<String, u64>,
    pub unknown: BTreeMap<String, u64>,
    pub throughput: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// One second of one operation.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub second: u64,
    pub op: OpKind,
    pub count: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl Stats {
    pub fn new() -> Self {
        Stats {
            ops: BTreeMap::new(),
            retry_mismatches: Vec::new(),
        }
    }

    /// Record an operation intended at `second` (since start) that took
    /// `latency` from its intended send time.
    pub fn record(
        &mut self,
        op: OpKind,
        second: u64,
        latency: Duration,
        error: Option<(bool, String)>,
    ) {
        let s = self.ops.entry(op).or_insert_with(OpStats::new);
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        s.all.saturating_record(us);
        s.per_second
            .entry(second)
            .or_insert_with(histogram)
            .saturating_record(us);
        match error {
            None => s.ok += 1,
            Some((unknown, why)) => {
                *s.errors_per_second.entry(second).or_default() += 1;
                let m = if unknown {
                    &mut s.unknown
                } else {
                    &mut s.failed
                };
                *m.entry(why).or_default() += 1;
            }
        }
    }

    pub fn summaries(&self, elapsed: Duration) -> Vec<OpSummary> {
        let secs = elapsed.as_secs_f64().max(1e-9);
        self.ops
            .iter()
            .map(|(op, s)| OpSummary {
                op: *op,
                count: s.all.len(),
                ok: s.ok,
                failed: s.failed.clone(),
                unknown: s.unknown.clone(),
                throughput: s.all.len() as f64 / secs,
                p50_ms: ms(s.all.value_at_quantile(0.5)),
                p90_ms: ms(s.all.value_at_quantile(0.9)),
                p99_ms: ms(s.all.value_at_quantile(0.99)),
                p999_ms: ms(s.all.value_at_quantile(0.999)),
                max_ms: ms(s.all.max()),
            })
            .collect()
    }

    pub fn timeline(&self) -> Vec<Point> {
        let mut out = Vec::new();
        for (op, s) in &self.ops {
            for (sec, h) in &s.per_second {
                out.push(Point {
                    second: *sec,
                    op: *op,
                    count: h.len(),
                    errors: s.errors_per_second.get(sec).copied().unwrap_or(0),
                    p50_ms: ms(h.value_at_quantile(0.5)),
                    p99_ms: ms(h.value_at_quantile(0.99)),
                });
            }
        }
        out.sort_by_key(|p| (p.second, p.op));
        out
    }

    /// (operations, errors, p99 ms) of one second, over all operations: the live
    /// progress line.
    pub fn second(&self, second: u64) -> (u64, u64, f64) {
        let mut n = 0;
        let mut e = 0;
        let mut p99: u64 = 0;
        for s in self.ops.values() {
            if let Some(h) = s.per_second.get(&second) {
                n += h.len();
                p99 = p99.max(h.value_at_quantile(0.99));
            }
            e += s.errors_per_second.get(&second).copied().unwrap_or(0);
        }
        (n, e, ms(p99))
    }

    pub fn totals(&self) -> (u64, u64) {
        let n = self.ops.values().map(|s| s.all.len()).sum();
        let e = self
            .ops
            .values()
            .map(|s| s.failed.values().sum::<u64>() + s.unknown.values().sum::<u64>())
            .sum();
        (n, e)
    }
}

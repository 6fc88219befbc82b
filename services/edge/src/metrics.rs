//! Prometheus series of an edge (label `edge` = [`crate::Config::name`]), recorded
//! into the process recorder (`shardline_core::prometheus`) and served on the
//! edge's `GET /metrics` (which renders the whole process: under `shardline up`
//! also the router's and the replicators' series).
//!
//! * counters `shardline_edge_transactions_total{edge,shard,result="applied"|"skipped"}`,
//!   `shardline_edge_rows_total{edge,shard,result="applied"|"rejected"}`,
//!   `shardline_edge_gaps_total{edge,shard}`
//! * histograms `shardline_edge_commit_to_apply_seconds{edge,shard}` (PostgreSQL
//!   commit timestamp to the edge's store commit), `shardline_edge_read_staleness_seconds{edge}`
//!   (the `Shardline-Staleness-Ms` of every merchant read),
//!   `shardline_edge_apply_batch_messages{edge}` (messages per store commit)
//! * gauges, refreshed at scrape time from the cursors:
//!   `shardline_edge_applied_commit_lsn`, `_applied_end_lsn`, `_applied_stream_seq`
//!   (`{edge,shard}`), `shardline_edge_staleness_seconds{edge}`,
//!   `shardline_edge_since_last_apply_seconds{edge,shard}`.
//! * the read cache (`crate::cache`), refreshed at scrape time:
//!   counters `shardline_edge_cache_hits_total{edge}`, `_misses_total`,
//!   `_evictions_total`, `_fills_total`, `_fills_refused_total`; gauges
//!   `shardline_edge_cache_entries{edge}`, `shardline_edge_cache_capacity{edge}`.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::store::Applied;
use crate::{Shared, now_micros};

/// Record one consumed message; `lag_micros`: its PostgreSQL commit timestamp
/// to the return of the store commit that applied it.
pub fn consumed(edge: &str, shard: &str, applied: &Applied, lag_micros: i64) {
    let (edge, shard) = (edge.to_owned(), shard.to_owned());
    match applied {
        Applied::Skipped => {
            metrics::counter!("shardline_edge_transactions_total", "edge" => edge, "shard" => shard, "result" => "skipped")
                .increment(1);
        }
        Applied::Applied {
            rows,
            rejected,
            gap,
        } => {
            metrics::counter!("shardline_edge_transactions_total", "edge" => edge.clone(), "shard" => shard.clone(), "result" => "applied")
                .increment(1);
            metrics::counter!("shardline_edge_rows_total", "edge" => edge.clone(), "shard" => shard.clone(), "result" => "applied")
                .increment(*rows as u64);
            metrics::counter!("shardline_edge_rows_total", "edge" => edge.clone(), "shard" => shard.clone(), "result" => "rejected")
                .increment(*rejected as u64);
            // Registered at 0 so a rate() works before the first gap.
            let gaps = metrics::counter!("shardline_edge_gaps_total", "edge" => edge.clone(), "shard" => shard.clone());
            gaps.increment(u64::from(*gap));
            let lag = lag_micros.max(0);
            metrics::histogram!("shardline_edge_commit_to_apply_seconds", "edge" => edge, "shard" => shard)
                .record(lag as f64 / 1_000_000.0);
        }
    }
}

/// Record how many messages one store commit applied.
pub fn batch(edge: &str, messages: usize) {
    metrics::histogram!("shardline_edge_apply_batch_messages", "edge" => edge.to_owned())
        .record(messages as f64);
}

/// Record the staleness a read was served with.
pub fn read_staleness(edge: &str, ms: i64) {
    metrics::histogram!("shardline_edge_read_staleness_seconds", "edge" => edge.to_owned())
        .record(ms.max(0) as f64 / 1000.0);
}

/// `GET /metrics`: refresh the cursor gauges, then render the process registry.
pub fn render(shared: &Shared, staleness_ms: i64) -> Response {
    let edge = shared.name.clone();
    let now = now_micros();
    for (shard, c) in shared.cursors.borrow().iter() {
        let l = [("edge", edge.clone()), ("shard", shard.clone())];
        metrics::gauge!("shardline_edge_applied_commit_lsn", &l).set(c.commit_lsn as f64);
        metrics::gauge!("shardline_edge_applied_end_lsn", &l).set(c.end_lsn as f64);
        metrics::gauge!("shardline_edge_applied_stream_seq", &l).set(c.stream_seq as f64);
        metrics::gauge!("shardline_edge_since_last_apply_seconds", &l)
            .set((now - c.applied_at_micros).max(0) as f64 / 1_000_000.0);
    }
    metrics::gauge!("shardline_edge_staleness_seconds", "edge" => edge.clone())
        .set(staleness_ms.max(0) as f64 / 1000.0);
    // Counted in the cache's own atomics (no registry lookup per read).
    let c = shared.store.cache_stats();
    let e = [("edge", edge)];
    metrics::counter!("shardline_edge_cache_hits_total", &e).absolute(c.hits);
    metrics::counter!("shardline_edge_cache_misses_total", &e).absolute(c.misses);
    metrics::counter!("shardline_edge_cache_evictions_total", &e).absolute(c.evictions);
    metrics::counter!("shardline_edge_cache_fills_total", &e).absolute(c.fills);
    metrics::counter!("shardline_edge_cache_fills_refused_total", &e).absolute(c.fills_refused);
    metrics::gauge!("shardline_edge_cache_entries", &e).set(c.entries as f64);
    metrics::gauge!("shardline_edge_cache_capacity", &e).set(c.capacity as f64);
    let mut resp = shardline_core::prometheus::render().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(shardline_core::prometheus::CONTENT_TYPE),
    );
    resp
}

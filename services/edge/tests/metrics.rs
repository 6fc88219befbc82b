//! `GET /metrics` on the edge after router writes: the edge's apply counters,
//! cursor gauges and histograms and the replicators' publish series (same process
//! registry) moved; real PostgreSQL, nats-server and router.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::{Fixture, metric, scrape};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_metrics_count_applied_transactions_and_replicator_publishes() {
    let f = Fixture::start(2).await;
    let edge = f.edge_name();
    let e = [("edge", edge.as_str())];
    let before = scrape(&f.edge().app).await;
    let applied_before = metric(
        &before,
        "shardline_edge_transactions_total",
        &[e[0], ("result", "applied")],
    )
    .unwrap_or(0.0);

    const WRITES: usize = 8;
    let mut last = None;
    for i in 0..WRITES {
        let r = f
            .router_post(
                "/v1/merchants",
                &format!("mm{i}"),
                json!({"name": format!("Metered {i}"), "default_currency": "USD"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        let mid = r.body["id"].as_str().unwrap().to_owned();
        let token = r.headers["shardline-token"].to_str().unwrap().to_owned();
        let read = f
            .edge_get(&format!("/v1/merchants/{mid}"), Some(&token))
            .await;
        assert_eq!(read.status, StatusCode::OK, "{read:?}");
        last = Some(token);
    }
    f.assert_converges(Duration::from_secs(30)).await;
    // The replicators' flush LSN sampler runs every second.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let after = scrape(&f.edge().app).await;
    let m = |name: &str, labels: &[(&str, &str)]| metric(&after, name, labels);
    let applied = m(
        "shardline_edge_transactions_total",
        &[e[0], ("result", "applied")],
    )
    .expect("applied counter");
    assert!(
        applied - applied_before >= WRITES as f64,
        "applied {applied_before} -> {applied}"
    );
    let rows = m("shardline_edge_rows_total", &[e[0], ("result", "applied")]).unwrap();
    assert!(rows >= WRITES as f64, "rows {rows}");
    assert_eq!(m("shardline_edge_gaps_total", &e), Some(0.0), "no gaps");
    let lag_n = m("shardline_edge_commit_to_apply_seconds_count", &e).unwrap();
    assert!(lag_n >= WRITES as f64, "commit->apply samples {lag_n}");
    let reads = m("shardline_edge_read_staleness_seconds_count", &e).unwrap();
    assert!(reads >= WRITES as f64, "staleness samples {reads}");
    assert!(m("shardline_edge_staleness_seconds", &e).is_some());
    // The read cache: each read found the merchant its apply had put there.
    let cache = |name: &str| m(name, &e).unwrap_or_else(|| panic!("{name} missing"));
    let stats = f.edge().shared.store.cache_stats();
    assert!(cache("shardline_edge_cache_hits_total") >= WRITES as f64);
    assert!(stats.hits >= WRITES as u64, "{stats:?}");
    assert_eq!(cache("shardline_edge_cache_misses_total"), 0.0, "{stats:?}");
    assert_eq!(cache("shardline_edge_cache_evictions_total"), 0.0);
    assert_eq!(cache("shardline_edge_cache_fills_refused_total"), 0.0);
    assert!(cache("shardline_edge_cache_entries") >= WRITES as f64);
    assert_eq!(
        cache("shardline_edge_cache_capacity"),
        shardline_edge::cache::DEFAULT_ENTRIES as f64
    );

    // Cursor gauges equal the store's cursors.
    let cursors = f.edge().shared.store.cursors().unwrap();
    assert!(!cursors.is_empty());
    for (shard, c) in &cursors {
        let l = [e[0], ("shard", shard.as_str())];
        assert_eq!(
            m("shardline_edge_applied_commit_lsn", &l),
            Some(c.commit_lsn as f64)
        );
        assert_eq!(
            m("shardline_edge_applied_end_lsn", &l),
            Some(c.end_lsn as f64)
        );
        assert_eq!(
            m("shardline_edge_applied_stream_seq", &l),
            Some(c.stream_seq as f64)
        );
        // The replicator of that shard: published at least what the edge applied,
        // its source flush LSN is sampled and no lower than the edge's position.
        let s = [("shard", shard.as_str())];
        let published = m("shardline_replicator_published_total", &s).unwrap();
        assert!(
            published >= c.applied as f64,
            "{shard}: published {published}"
        );
        assert!(m("shardline_replicator_publish_seconds_count", &s).unwrap() >= published);
        assert!(m("shardline_replicator_published_commit_lsn", &s).unwrap() >= c.commit_lsn as f64);
        let flush = m("shardline_replicator_source_flush_lsn", &s).expect("flush LSN sampled");
        assert!(
            flush >= c.end_lsn as f64,
            "{shard}: flush {flush} < applied end {}",
            c.end_lsn
        );
        let lag = m("shardline_replicator_lag_bytes", &s).expect("lag gauge");
        eprintln!("{shard}: published {published}, flush {flush}, lag {lag} bytes");
    }
    let (p50, p99, max, n) = f.edge().shared.lag_percentiles().unwrap();
    eprintln!(
        "commit->apply over {n}: p50 {p50} us, p99 {p99} us, max {max} us; last token {last:?}"
    );
    f.close().await;
}

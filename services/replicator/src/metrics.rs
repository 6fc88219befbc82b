//! Prometheus series of a replicator (label `shard`), recorded into the process
//! recorder (`shardline_core::prometheus`; rendered by whichever `/metrics` the
//! process serves), and the source flush LSN sampler behind the lag gauge.
//!
//! * `shardline_replicator_published_total`, `_duplicates_total`,
//!   `_skipped_total{reason="origin"|"already_published"}`, `_reconnects_total`,
//!   `_heartbeats_total` (core NATS `shardline.hb.<shard>`: position read while idle)
//! * `shardline_replicator_publish_seconds` (publish until the JetStream ack,
//!   retries included), `_commit_to_publish_seconds` (PostgreSQL commit
//!   timestamp until the ack)
//! * gauges `shardline_replicator_published_commit_lsn`, `_confirmed_lsn` (the
//!   slot's flush position we acknowledged), `_source_flush_lsn`
//!   (`pg_current_wal_flush_lsn()` sampled every second), `_lag_bytes`
//!   (source flush LSN minus the position the replicator has processed: the
//!   last commit's end LSN, or the walsender's `wal_end` from a keepalive while
//!   no transaction was open).
//!
//! LSNs are exported as floats: exact below 2^53 bytes of WAL (8 PiB).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::Stats;

pub fn published(shard: &str, duplicate: bool, publish_secs: f64, commit_to_ack_secs: f64) {
    let shard = shard.to_owned();
    if duplicate {
        metrics::counter!("shardline_replicator_duplicates_total", "shard" => shard.clone())
            .increment(1);
    } else {
        metrics::counter!("shardline_replicator_published_total", "shard" => shard.clone())
            .increment(1);
    }
    metrics::histogram!("shardline_replicator_publish_seconds", "shard" => shard.clone())
        .record(publish_secs);
    metrics::histogram!("shardline_replicator_commit_to_publish_seconds", "shard" => shard)
        .record(commit_to_ack_secs.max(0.0));
}

pub fn skipped(shard: &str, reason: &'static str) {
    metrics::counter!("shardline_replicator_skipped_total", "shard" => shard.to_owned(), "reason" => reason)
        .increment(1);
}

pub fn heartbeat(shard: &str) {
    metrics::counter!("shardline_replicator_heartbeats_total", "shard" => shard.to_owned())
        .increment(1);
}

pub fn reconnected(shard: &str) {
    metrics::counter!("shardline_replicator_reconnects_total", "shard" => shard.to_owned())
        .increment(1);
}

/// Refresh the LSN gauges from `stats`.
pub fn positions(shard: &str, stats: &Stats) {
    let shard = shard.to_owned();
    let published = stats.last_published_lsn.load(Ordering::Relaxed);
    let confirmed = stats.confirmed_lsn.load(Ordering::Relaxed);
    let flush = stats.source_flush_lsn.load(Ordering::Relaxed);
    metrics::gauge!("shardline_replicator_published_commit_lsn", "shard" => shard.clone())
        .set(published as f64);
    metrics::gauge!("shardline_replicator_confirmed_lsn", "shard" => shard.clone())
        .set(confirmed as f64);
    if flush > 0 {
        metrics::gauge!("shardline_replicator_source_flush_lsn", "shard" => shard.clone())
            .set(flush as f64);
        metrics::gauge!("shardline_replicator_lag_bytes", "shard" => shard)
            .set(stats.lag_bytes() as f64);
    }
}

/// Sample the shard's `pg_current_wal_flush_lsn()` every `every` until
/// `shutdown` (reconnecting after errors; a down shard leaves the last value).
pub async fn sample_source_flush(
    dsn: String,
    shard: String,
    stats: Arc<Stats>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut client: Option<tokio_postgres::Client> = None;
    loop {
        if client
            .as_ref()
            .is_none_or(tokio_postgres::Client::is_closed)
        {
            client = match tokio_postgres::connect(&dsn, NoTls).await {
                Ok((c, conn)) => {
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    Some(c)
                }
                Err(e) => {
                    debug!(error = %e, "flush LSN sampler cannot connect");
                    None
                }
            };
        }
        if let Some(c) = &client {
            match c
                .query_one("SELECT pg_current_wal_flush_lsn()::text", &[])
                .await
            {
                Ok(row) => {
                    let text: String = row.get(0);
                    if let Some(lsn) = crate::wire::parse_lsn(&text) {
                        stats.source_flush_lsn.store(lsn, Ordering::Relaxed);
                    }
                }
                Err(e) => debug!(error = %e, "flush LSN sample failed"),
            }
        }
        positions(&shard, &stats);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

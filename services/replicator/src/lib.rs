//! Shardline replicator: one per shard. Tails the shard's logical slot
//! (`shardline_cdc_<shard>`, pgoutput, publication `shardline_cdc`), skips
//! transactions applied under a replication origin (move copies and cleanup
//! deletes) and publishes every other committed transaction as ONE JetStream
//! message on `shardline.cdc.<shard>` with `Nats-Msg-Id: <shard>:<commit_lsn>`.
//! The slot's confirmed flush position advances only after JetStream acknowledged
//! the message, so a restart resends from there and the stream deduplicates.
//!
//! * [`wire`]: the versioned binary message format (shared with the edge).
//! * [`pgoutput`]: the pgoutput (protocol 1) decoder.
//! * [`setup`]: publication, slot and stream creation/validation.
//! * [`metrics`]: Prometheus series (publish rate and latency, LSN positions, lag).

pub mod metrics;
pub mod pgoutput;
pub mod setup;
pub mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream;
use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig, ReplicationEvent, TlsConfig};
use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::pgoutput::{Decoded, Decoder};
use crate::wire::{Heartbeat, RowChange, Transaction, format_lsn};

/// The tables every shard publishes.
pub const TABLES: [&str; 7] = [
    "merchants",
    "payments",
    "refunds",
    "ledger_entries",
    "balances",
    "idempotency_keys",
    "range_events",
];
pub const PUBLICATION: &str = "shardline_cdc";
pub const STREAM: &str = "SHARDLINE_CDC";
pub const SUBJECT_PREFIX: &str = "shardline.cdc";
/// Core NATS (not stored) subjects of heartbeats: `shardline.hb.<shard>`.
pub const HEARTBEAT_PREFIX: &str = "shardline.hb";
/// An idle replicator repeats its last heartbeat this often (edges that
/// (re)connected meanwhile learn its position).
const HEARTBEAT_REPEAT: Duration = Duration::from_secs(1);
/// Microseconds between the PostgreSQL epoch (2000-01-01) and the Unix epoch.
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

#[derive(Debug, Error)]
pub enum ReplicatorError {
    #[error("invalid shard DSN: {0}")]
    Dsn(String),
    #[error("shard setup query failed: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("replication stream failed: {0}")]
    Replication(#[from] pgwire_replication::PgWireError),
    #[error("pgoutput decoding failed: {0}")]
    Decode(#[from] pgoutput::PgOutputError),
    #[error("NATS: {0}")]
    Nats(String),
    #[error("stream {name} exists with an incompatible configuration: {detail}")]
    StreamConfig { name: String, detail: String },
    #[error("the replication stream closed")]
    Closed,
    #[error("bad CDC message in the stream: {0}")]
    Wire(#[from] wire::WireError),
}

/// Replicator configuration (one shard).
#[derive(Debug, Clone)]
pub struct Config {
    /// Shard id (`s1`): names the slot, subject and message ids.
    pub shard: String,
    /// `postgres://user[:password]@host:port/db` of the shard.
    pub dsn: String,
    pub nats_url: String,
    /// JetStream duplicate window (must exceed the longest replicator outage for
    /// dedupe by id; the replicator also skips commits at or below the last one it
    /// finds in the stream, which covers any outage).
    pub duplicate_window: Duration,
    /// How long to wait before reconnecting after a failure.
    pub retry_backoff: Duration,
    /// Replicas and retention of the stream (created or updated at start).
    pub stream: setup::StreamLimits,
}

impl Config {
    pub fn new(
        shard: impl Into<String>,
        dsn: impl Into<String>,
        nats_url: impl Into<String>,
    ) -> Self {
        Config {
            shard: shard.into(),
            dsn: dsn.into(),
            nats_url: nats_url.into(),
            duplicate_window: Duration::from_secs(120),
            retry_backoff: Duration::from_millis(200),
            stream: setup::StreamLimits::default(),
        }
    }

    pub fn slot(&self) -> String {
        format!("shardline_cdc_{}", self.shard)
    }

    pub fn subject(&self) -> String {
        format!("{SUBJECT_PREFIX}.{}", self.shard)
    }
}

/// Counters of a running replicator (shared with callers for status and tests).
#[derive(Debug, Default)]
pub struct Stats {
    pub published: AtomicU64,
    pub duplicates: AtomicU64,
    pub skipped_origin: AtomicU64,
    pub skipped_already_published: AtomicU64,
    pub last_published_lsn: AtomicU64,
    pub confirmed_lsn: AtomicU64,
    pub reconnects: AtomicU64,
    /// The walsender's `wal_end` of the last keepalive received while no
    /// transaction was open: everything before it has been seen.
    pub idle_wal_end: AtomicU64,
    /// The shard's `pg_current_wal_flush_lsn()`, sampled every second.
    pub source_flush_lsn: AtomicU64,
}

impl Stats {
    /// Bytes of WAL flushed on the source that the replicator has not processed
    /// yet (0 when the flush LSN was never sampled).
    pub fn lag_bytes(&self) -> u64 {
        let seen = self
            .confirmed_lsn
            .load(Ordering::Relaxed)
            .max(self.idle_wal_end.load(Ordering::Relaxed));
        self.source_flush_lsn
            .load(Ordering::Relaxed)
            .saturating_sub(seen)
    }
}

/// Run until `shutdown`, reconnecting to PostgreSQL and NATS after failures.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), ReplicatorError> {
    run_with_stats(config, shutdown, Arc::new(Stats::default())).await
}

pub async fn run_with_stats(
    config: Config,
    shutdown: CancellationToken,
    stats: Arc<Stats>,
) -> Result<(), ReplicatorError> {
    let span = info_span!("replicator", shard = %config.shard);
    async move {
        let nats = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            .connect(&config.nats_url)
            .await
            .map_err(|e| ReplicatorError::Nats(e.to_string()))?;
        let js = jetstream::new(nats);
        let sampler = tokio::spawn(metrics::sample_source_flush(
            config.dsn.clone(),
            config.shard.clone(),
            stats.clone(),
            Duration::from_secs(1),
            shutdown.child_token(),
        ));
        let _stop_sampler = AbortOnDrop(sampler);
        loop {
            let result = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                r = session(&config, &js, &shutdown, &stats) => r,
            };
            match result {
                Ok(()) => return Ok(()),
                // A stream with the wrong shape will not fix itself.
                Err(e @ ReplicatorError::StreamConfig { .. }) => return Err(e),
                Err(e) => {
                    stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    metrics::reconnected(&config.shard);
                    warn!(error = %e, "replication session ended; reconnecting");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(config.retry_backoff) => {}
            }
        }
    }
    .instrument(span)
    .await
}

/// Heartbeats of one replication session: the WAL position read while no
/// transaction was open, and whether edges have heard it since it last moved.
#[derive(Debug, Default)]
struct HeartbeatState {
    position: u64,
}

impl HeartbeatState {
    /// Publish (core NATS, at most once; a lost one is repeated within
    /// [`HEARTBEAT_REPEAT`]) that everything up to `position` is read and the
    /// last published commit is `last_published`. `position: None` repeats the
    /// last position. Nothing is sent before the first keepalive.
    async fn send(
        &mut self,
        js: &jetstream::Context,
        config: &Config,
        last_published: u64,
        position: Option<u64>,
    ) {
        if let Some(p) = position {
            if p <= self.position {
                return;
            }
            self.position = p;
        }
        if self.position == 0 {
            return;
        }
        let hb = Heartbeat {
            shard: config.shard.clone(),
            prev_commit_lsn: last_published,
            position: self.position,
            sent_at_micros: unix_now_micros(),
        };
        let subject = format!("{HEARTBEAT_PREFIX}.{}", config.shard);
        if let Err(e) = js.client().publish(subject, hb.encode().into()).await {
            debug!(error = %e, "heartbeat not sent");
        }
        metrics::heartbeat(&config.shard);
    }
}

/// Aborts a task when dropped (the sampler ends with its replicator).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A transaction being collected between Begin and Commit.
#[derive(Debug, Default)]
struct Pending {
    origin: Option<String>,
    changes: Vec<RowChange>,
}

/// One connection's life: setup, then stream until an error or shutdown.
async fn session(
    config: &Config,
    js: &jetstream::Context,
    shutdown: &CancellationToken,
    stats: &Stats,
) -> Result<(), ReplicatorError> {
    let pg: tokio_postgres::Config = config
        .dsn
        .parse()
        .map_err(|e: tokio_postgres::Error| ReplicatorError::Dsn(e.to_string()))?;
    setup::ensure_shard(&config.dsn, &config.slot()).await?;
    setup::ensure_stream(js, config.duplicate_window, &config.stream).await?;
    let mut last_published = setup::last_published_lsn(js, &config.subject()).await?;
    stats
        .last_published_lsn
        .store(last_published, Ordering::Relaxed);
    info!(last_published = %format_lsn(last_published), "starting replication");

    let mut client = ReplicationClient::connect(replication_config(&pg, config)?).await?;
    let mut decoder = Decoder::new();
    let mut pending: Option<Pending> = None;
    let mut beat = HeartbeatState::default();
    let mut repeat = tokio::time::interval(HEARTBEAT_REPEAT);
    repeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => {
                client.stop();
                return Ok(());
            }
            _ = repeat.tick() => {
                if pending.is_none() {
                    beat.send(js, config, last_published, None).await;
                }
                continue;
            }
            ev = client.recv() => ev?,
        };
        let Some(event) = event else {
            return Err(ReplicatorError::Closed);
        };
        match event {
            ReplicationEvent::Begin { .. } => pending = Some(Pending::default()),
            ReplicationEvent::XLogData { data, .. } => match decoder.decode(&data)? {
                Decoded::Meta => {}
                Decoded::Origin(name) => {
                    if let Some(p) = pending.as_mut() {
                        p.origin = Some(name);
                    }
                }
                Decoded::Change(c) => {
                    if let Some(p) = pending.as_mut() {
                        p.changes.push(c);
                    }
                }
                Decoded::Truncate(tables) => {
                    warn!(?tables, "TRUNCATE is not replicated to edges");
                }
            },
            ReplicationEvent::Commit {
                lsn,
                end_lsn,
                commit_time_micros,
            } => {
                let txn = pending.take().unwrap_or_default();
                let commit_lsn = lsn.as_u64();
                if let Some(origin) = txn.origin {
                    debug!(lsn = %format_lsn(commit_lsn), %origin, "skipping transaction under a replication origin");
                    stats.skipped_origin.fetch_add(1, Ordering::Relaxed);
                    metrics::skipped(&config.shard, "origin");
                } else if commit_lsn <= last_published {
                    stats
                        .skipped_already_published
                        .fetch_add(1, Ordering::Relaxed);
                    metrics::skipped(&config.shard, "already_published");
                } else if !txn.changes.is_empty() {
                    let msg = Transaction {
                        shard: config.shard.clone(),
                        commit_lsn,
                        end_lsn: end_lsn.as_u64(),
                        commit_time_micros: commit_time_micros + PG_EPOCH_OFFSET_MICROS,
                        prev_commit_lsn: last_published,
                        changes: txn.changes,
                    };
                    publish(js, config, &msg, shutdown, stats).await?;
                    last_published = commit_lsn;
                    stats
                        .last_published_lsn
                        .store(commit_lsn, Ordering::Relaxed);
                }
                client.update_applied_lsn(end_lsn);
                stats
                    .confirmed_lsn
                    .store(end_lsn.as_u64(), Ordering::Relaxed);
                metrics::positions(&config.shard, stats);
            }
            ReplicationEvent::KeepAlive { wal_end, .. } => {
                if pending.is_none() {
                    stats
                        .idle_wal_end
                        .fetch_max(wal_end.as_u64(), Ordering::Relaxed);
                    beat.send(js, config, last_published, Some(wal_end.as_u64()))
                        .await;
                }
            }
            ReplicationEvent::Message { .. } => {}
            ReplicationEvent::StoppedAt { .. } => return Ok(()),
        }
    }
}

fn replication_config(
    pg: &tokio_postgres::Config,
    config: &Config,
) -> Result<ReplicationConfig, ReplicatorError> {
    let host = match pg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "127.0.0.1".to_owned(),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    let user = pg
        .get_user()
        .ok_or_else(|| ReplicatorError::Dsn("no user in the shard DSN".into()))?;
    let password = pg
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    let db = pg
        .get_dbname()
        .ok_or_else(|| ReplicatorError::Dsn("no database in the shard DSN".into()))?;
    Ok(
        ReplicationConfig::new(host, user, password, db, config.slot(), PUBLICATION)
            .with_port(port)
            .with_tls(TlsConfig::disabled())
            .with_start_lsn(Lsn::ZERO)
            .with_status_interval(Duration::from_secs(1))
            .with_application_name(format!("shardline-replicator-{}", config.shard)),
    )
}

/// Publish and wait for the JetStream ack, retrying (same message id) until it
/// succeeds or the replicator shuts down.
async fn publish(
    js: &jetstream::Context,
    config: &Config,
    msg: &Transaction,
    shutdown: &CancellationToken,
    stats: &Stats,
) -> Result<(), ReplicatorError> {
    let payload = bytes::Bytes::from(msg.encode());
    let id = format!("{}:{}", config.shard, format_lsn(msg.commit_lsn));
    let subject = config.subject();
    let mut backoff = Duration::from_millis(50);
    let started = std::time::Instant::now();
    loop {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.as_str());
        let attempt = async {
            js.publish_with_headers(subject.clone(), headers, payload.clone())
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())
        };
        match attempt.await {
            Ok(ack) => {
                if ack.duplicate {
                    stats.duplicates.fetch_add(1, Ordering::Relaxed);
                } else {
                    stats.published.fetch_add(1, Ordering::Relaxed);
                }
                let commit_to_ack =
                    (unix_now_micros() - msg.commit_time_micros) as f64 / 1_000_000.0;
                metrics::published(
                    &config.shard,
                    ack.duplicate,
                    started.elapsed().as_secs_f64(),
                    commit_to_ack,
                );
                debug!(%id, seq = ack.sequence, duplicate = ack.duplicate, changes = msg.changes.len(), "published");
                return Ok(());
            }
            Err(e) => {
                warn!(%id, error = %e, "publish not acknowledged; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return Err(ReplicatorError::Nats(format!("shutdown before {id} was acknowledged"))),
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Microseconds since the Unix epoch (the wire format's commit time unit).
fn unix_now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

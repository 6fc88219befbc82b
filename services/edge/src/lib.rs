//! Shardline edge: consumes `shardline.cdc.>` from JetStream, applies each shard
//! transaction atomically in an embedded redb store together with its per-shard
//! cursor, and serves reads (`/v1/merchants/...`, `/v1/status`) with bounded
//! staleness (`Shardline-Staleness-Ms`) and read-your-writes (`Shardline-Min-Token`).
//!
//! * [`store`]: the redb store, version rule and cursors.
//! * [`cache`]: the read cache of decoded rows in front of the store.
//! * [`ranges`]: range ownership from the move engine's `range_events`.
//! * [`consume`]: the ordered pull consumer loop.
//! * [`api`]: the axum read API.
//! * [`metrics`]: Prometheus series (`GET /metrics`).

pub mod api;
pub mod cache;
pub mod consume;
pub mod heartbeat;
pub mod metrics;
pub mod ranges;
pub mod store;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span};

use crate::store::{Cursor, Store, StoreError};

#[derive(Debug, Error)]
pub enum EdgeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
    #[error("invalid catalog URL: {0}")]
    Catalog(#[from] sqlx::Error),
    #[error("edge task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Names this edge in metrics (`edge` label) and logs.
    pub name: String,
    pub listen: SocketAddr,
    pub nats_url: String,
    /// The redb file.
    pub store_path: PathBuf,
    /// Catalog DSN, for API key verification.
    pub catalog_url: String,
    /// Longest wait for `Shardline-Min-Token`.
    pub min_token_wait: Duration,
    /// How long a verified API key is trusted without asking the catalog again.
    pub auth_cache_ttl: Duration,
    /// Bound of the read cache of decoded rows (entries; 0 disables it).
    pub cache_entries: usize,
    /// Replicas and retention of the CDC stream, should this edge create it
    /// (or find it different): the same settings as the replicators'.
    pub stream: shardline_replicator::setup::StreamLimits,
}

impl Config {
    pub fn new(
        nats_url: impl Into<String>,
        store_path: impl Into<PathBuf>,
        catalog_url: impl Into<String>,
    ) -> Self {
        Config {
            name: "edge".to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8090)),
            nats_url: nats_url.into(),
            store_path: store_path.into(),
            catalog_url: catalog_url.into(),
            min_token_wait: Duration::from_secs(1),
            auth_cache_ttl: Duration::from_secs(30),
            cache_entries: cache::DEFAULT_ENTRIES,
            stream: shardline_replicator::setup::StreamLimits::default(),
        }
    }
}

/// State shared by the consumer and the API.
#[derive(Debug)]
pub struct Shared {
    /// [`Config::name`].
    pub name: String,
    pub store: Store,
    /// Per-shard cursors, updated after each applied transaction (waiters of
    /// `Shardline-Min-Token` watch it).
    pub cursors: watch::Sender<BTreeMap<String, Cursor>>,
    /// When the consumer last knew it had nothing pending (unix micros).
    pub caught_up_at_micros: AtomicI64,
    /// The consumer has had nothing pending at least once since start (`/readyz`).
    pub caught_up_once: std::sync::atomic::AtomicBool,
    /// Commit -> applied latency (µs, PostgreSQL commit timestamp to the edge's
    /// commit) of the last [`LAG_SAMPLES`] applied transactions.
    pub apply_lags_micros: std::sync::Mutex<std::collections::VecDeque<i64>>,
    /// The latest replicator heartbeat per shard ([`heartbeat`]).
    pub heard: heartbeat::Heard,
}

pub const LAG_SAMPLES: usize = 4096;

impl Shared {
    /// The consumer has nothing pending (now).
    pub fn caught_up(&self, now_micros: i64) {
        self.caught_up_at_micros
            .store(now_micros, std::sync::atomic::Ordering::Relaxed);
        self.caught_up_once
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn record_lag(&self, micros: i64) {
        if let Ok(mut q) = self.apply_lags_micros.lock() {
            if q.len() == LAG_SAMPLES {
                q.pop_front();
            }
            q.push_back(micros);
        }
    }

    /// (p50, p99, max, samples) of the recorded commit -> applied latencies, in µs.
    pub fn lag_percentiles(&self) -> Option<(i64, i64, i64, usize)> {
        let mut v: Vec<i64> = self
            .apply_lags_micros
            .lock()
            .ok()?
            .iter()
            .copied()
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let at = |q: usize| v[(v.len() * q / 100).min(v.len() - 1)];
        Some((at(50), at(99), v[v.len() - 1], v.len()))
    }
}

/// A running edge (consumer + HTTP server).
#[derive(Debug)]
pub struct Edge {
    pub shared: Arc<Shared>,
    pub addr: SocketAddr,
    pub app: axum::Router,
    /// Ends the HTTP server and its open connections (on shutdown or kill).
    http_stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<Result<(), EdgeError>>>,
}

impl Edge {
    /// Open the store, bind the listener and start consuming and serving until
    /// `shutdown`.
    pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Edge, EdgeError> {
        let store = {
            let path = config.store_path.clone();
            let entries = config.cache_entries;
            tokio::task::spawn_blocking(move || Store::open_with_cache(&path, entries)).await??
        };
        let cursors = store.cursors()?;
        shardline_core::prometheus::handle();
        let shared = Arc::new(Shared {
            name: config.name.clone(),
            store,
            cursors: watch::Sender::new(cursors),
            caught_up_at_micros: AtomicI64::new(now_micros()),
            caught_up_once: std::sync::atomic::AtomicBool::new(false),
            apply_lags_micros: std::sync::Mutex::new(std::collections::VecDeque::new()),
            heard: heartbeat::Heard::default(),
        });
        let catalog = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect_lazy(&config.catalog_url)?;
        let state = api::ApiState::new(shared.clone(), catalog, &config);
        let app = api::app(state);
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| EdgeError::Listen {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(EdgeError::Serve)?;
        info!(%addr, edge = %config.name, "edge listening");
        // axum's open connections watch this signal, not the serve task: they
        // outlive an aborted server (and keep serving the killed edge's store)
        // unless it fires. `kill` fires it.
        let http_stop = shutdown.child_token();
        let serve = {
            let app = app.clone();
            let shutdown = http_stop.clone();
            tokio::spawn(
                async move {
                    axum::serve(listener, app)
                        .with_graceful_shutdown(shutdown.cancelled_owned())
                        .await
                        .map_err(EdgeError::Serve)
                }
                .instrument(info_span!("edge_http")),
            )
        };
        let consume = tokio::spawn(consume::run(
            shared.clone(),
            config.nats_url.clone(),
            config.stream,
            shutdown,
        ));
        Ok(Edge {
            shared,
            addr,
            app,
            http_stop,
            tasks: vec![serve, consume],
        })
    }

    /// Wait for the tasks to end (after the shutdown token fired).
    pub async fn join(self) -> Result<(), EdgeError> {
        for t in self.tasks {
            t.await??;
        }
        Ok(())
    }

    /// Crash the edge: abort its tasks at whatever await point they are (no
    /// graceful shutdown, an apply may be cut between messages) and release the
    /// store. What a restart must survive, short of killing the process.
    pub async fn kill(self) {
        let Edge {
            shared,
            app,
            http_stop,
            tasks,
            ..
        } = self;
        drop(app);
        // Keep-alive connections would otherwise go on serving (and hold the
        // store): tell them to close once their request is answered.
        http_stop.cancel();
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        // An apply already inside `spawn_blocking` runs to its commit (or not at
        // all) and then lets go of the store; wait for that, so a restart can
        // open the file. redb commits are atomic either way.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while Arc::strong_count(&shared) > 1 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        if Arc::strong_count(&shared) > 1 {
            tracing::warn!("edge killed, but its store is still referenced after 10 s");
        }
    }
}

/// Run an edge until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), EdgeError> {
    Edge::start(config, shutdown).await?.join().await
}

pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

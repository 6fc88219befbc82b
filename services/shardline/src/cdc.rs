//! `shardline replicator --shard ID` and `shardline edge`, and starting both in
//! `shardline up` (one replicator per shard, `--edges N` edges).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use shardline_replicator::setup::StreamLimits;

use crate::cli::CatalogArgs;
use crate::config::{ConfigError, in_range, parse_duration};
use crate::local::{LocalCluster, catalog_url};
use crate::restartable::RestartableEdge;
use crate::up::LocalStack;

#[derive(Debug, Args)]
pub struct ReplicatorArgs {
    /// The shard to replicate (its DSN comes from the catalog unless --dsn is given).
    #[arg(long)]
    pub shard: String,
    /// Shard database URL (default: the catalog's entry for --shard).
    #[arg(long, env = "SHARDLINE_SHARD_URL")]
    pub dsn: Option<String>,
    /// Serve Prometheus `GET /metrics` on this address (e.g. 127.0.0.1:9187).
    /// Under `shardline up` replicators have no listener of their own: their
    /// series appear on the router's and the edges' `/metrics`.
    #[arg(long, env = "SHARDLINE_REPLICATOR_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// NATS URL (default: the local cluster's).
    #[arg(long, env = "SHARDLINE_NATS_URL")]
    pub nats: Option<String>,
    #[command(flatten)]
    pub stream: StreamArgs,
    #[command(flatten)]
    pub catalog: CatalogArgs,
}

/// Replicas and retention of the CDC stream `SHARDLINE_CDC`, for replicators and
/// edges alike (whichever starts first creates the stream; one finding it
/// different updates it, so give every replicator and edge the same values).
#[derive(Debug, Clone, Args)]
pub struct StreamArgs {
    /// Replicas of the CDC stream (1-5; above 1 needs a NATS cluster).
    #[arg(long, env = "SHARDLINE_STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: u32,
    /// Remove stream messages older than this (e.g. 12h, 7d; at least 2m, the
    /// duplicate window). Default: keep them forever. An edge that starts empty
    /// (or was down longer) then misses what was removed.
    #[arg(long, env = "SHARDLINE_STREAM_MAX_AGE", value_name = "DURATION")]
    pub stream_max_age: Option<String>,
    /// Remove the oldest stream messages above this many bytes (per replica).
    /// Default: no limit.
    #[arg(long, env = "SHARDLINE_STREAM_MAX_BYTES", value_name = "BYTES")]
    pub stream_max_bytes: Option<u64>,
}

impl StreamArgs {
    pub fn limits(&self) -> Result<StreamLimits, ConfigError> {
        let max_replicas = shardline_replicator::setup::MAX_REPLICAS as u32;
        let replicas = in_range("stream_replicas", self.stream_replicas, 1..=max_replicas)?;
        let max_age = self
            .stream_max_age
            .as_deref()
            .map(|s| {
                let d = parse_duration(s).map_err(|e| ConfigError::new("stream_max_age", e))?;
                if d < DUPLICATE_WINDOW {
                    return Err(ConfigError::new(
                        "stream_max_age",
                        format!("{s:?} is shorter than the stream's duplicate window (2m)"),
                    ));
                }
                Ok(d)
            })
            .transpose()?;
        let max_bytes = match self.stream_max_bytes {
            Some(0) => {
                return Err(ConfigError::new(
                    "stream_max_bytes",
                    "0 is not a limit (omit it for no limit)",
                ));
            }
            Some(b) if i64::try_from(b).is_err() => {
                return Err(ConfigError::new("stream_max_bytes", "too large"));
            }
            other => other,
        };
        Ok(StreamLimits {
            replicas: replicas as usize,
            max_age,
            max_bytes,
        })
    }
}

/// The replicators' (and edges') duplicate window.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

#[derive(Debug, Args)]
pub struct EdgeArgs {
    /// HTTP listen address of the read API (and `/metrics`).
    #[arg(long, env = "SHARDLINE_EDGE_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// The edge's name in metrics (`edge` label) and logs.
    #[arg(long, env = "SHARDLINE_EDGE_NAME", default_value = "edge")]
    pub name: String,
    /// The redb store file (default: <dir>/edge/edge.redb).
    #[arg(long, env = "SHARDLINE_EDGE_STORE")]
    pub store: Option<PathBuf>,
    /// NATS URL (default: the local cluster's).
    #[arg(long, env = "SHARDLINE_NATS_URL")]
    pub nats: Option<String>,
    /// Bound of the read cache of decoded rows, in entries (0: no cache; a
    /// payment row takes about 1 KiB).
    #[arg(long, env = "SHARDLINE_EDGE_CACHE_ENTRIES", default_value_t = shardline_edge::cache::DEFAULT_ENTRIES)]
    pub cache_entries: usize,
    #[command(flatten)]
    pub stream: StreamArgs,
    #[command(flatten)]
    pub catalog: CatalogArgs,
}

fn nats_url(explicit: Option<String>, catalog: &CatalogArgs) -> anyhow::Result<String> {
    if let Some(u) = explicit {
        return Ok(u);
    }
    LocalCluster::load(&catalog.dir)?
        .map(|c| c.nats_url)
        .context("no --nats URL (or SHARDLINE_NATS_URL) and no local cluster to take it from")
}

pub async fn run_replicator(args: ReplicatorArgs) -> anyhow::Result<()> {
    let limits = args.stream.limits()?;
    let nats = nats_url(args.nats, &args.catalog)?;
    let dsn = match args.dsn {
        Some(d) => d,
        None => {
            let url = catalog_url(&args.catalog)?;
            let pool = sqlx::PgPool::connect(&url)
                .await
                .with_context(|| format!("connecting to the catalog {url}"))?;
            let shards = shardline_core::catalog::list_shards(&pool).await?;
            shards
                .into_iter()
                .find(|s| s.id == args.shard)
                .map(|s| s.dsn)
                .with_context(|| format!("shard {} is not in the catalog", args.shard))?
        }
    };
    let shutdown = CancellationToken::new();
    crate::up::spawn_signal_handler(shutdown.clone());
    if let Some(addr) = args.metrics_listen {
        serve_metrics(addr, shutdown.clone()).await?;
    }
    let mut config = shardline_replicator::Config::new(args.shard, dsn, nats);
    config.stream = limits;
    Ok(shardline_replicator::run(config, shutdown).await?)
}

/// A listener with only `GET /metrics` (the process registry).
async fn serve_metrics(addr: SocketAddr, shutdown: CancellationToken) -> anyhow::Result<()> {
    shardline_core::prometheus::handle();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for metrics"))?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    shardline_core::prometheus::CONTENT_TYPE,
                )],
                shardline_core::prometheus::render(),
            )
        }),
    );
    tracing::info!(%addr, "replicator metrics listening");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "metrics listener failed");
        }
    });
    Ok(())
}

pub async fn run_edge(args: EdgeArgs) -> anyhow::Result<()> {
    let limits = args.stream.limits()?;
    let nats = nats_url(args.nats, &args.catalog)?;
    let catalog = catalog_url(&args.catalog)?;
    let store = match args.store {
        Some(s) => s,
        None => args.catalog.dir.join("edge").join("edge.redb"),
    };
    if let Some(parent) = store.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut config = shardline_edge::Config::new(nats, store, catalog);
    config.listen = args.listen;
    config.name = args.name;
    config.cache_entries = args.cache_entries;
    config.stream = limits;
    let shutdown = CancellationToken::new();
    crate::up::spawn_signal_handler(shutdown.clone());
    Ok(shardline_edge::run(config, shutdown).await?)
}

/// Start one replicator per shard and `edges` edges for `shardline up`: edge `i`
/// (from 1) keeps its store in `<dir>/edge/edge.redb` (i = 1) or
/// `<dir>/edge-<i>/edge.redb` and listens on the base address (127.0.0.1:8090 or
/// `SHARDLINE_EDGE_LISTEN`) plus `i - 1`, or a free port when that is taken.
/// Returns the replicator tasks to await after `shutdown`, and the edges
/// (restartable in place, for the loadtest's `kill_edge`).
pub async fn start_in_up(
    stack: &LocalStack,
    edges: u32,
    shutdown: &CancellationToken,
) -> anyhow::Result<(Vec<JoinHandle<()>>, Vec<RestartableEdge>)> {
    let d = &stack.description;
    let mut tasks = Vec::new();
    for s in &d.shards {
        let config =
            shardline_replicator::Config::new(s.id.clone(), s.url.clone(), d.nats_url.clone());
        // The slot must exist before `up` reports the system ready: a write
        // committed before the slot is created never reaches the stream (the
        // loadtest verifier caught edges missing merchants onboarded right after
        // start-up). The replicator's own start repeats this, idempotently.
        shardline_replicator::setup::ensure_shard(&s.url, &config.slot())
            .await
            .with_context(|| format!("creating the CDC slot of shard {}", s.id))?;
        let token = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = shardline_replicator::run(config, token).await {
                tracing::error!(error = %e, "replicator failed");
            }
        }));
    }
    let base: SocketAddr = match std::env::var("SHARDLINE_EDGE_LISTEN") {
        Ok(v) => v.parse().map_err(|e| {
            crate::config::ConfigError::new("SHARDLINE_EDGE_LISTEN", format!("{v:?}: {e}"))
        })?,
        Err(_) => SocketAddr::from(([127, 0, 0, 1], 8090)),
    };
    let mut started = Vec::new();
    for i in 1..=edges {
        let dir = if i == 1 {
            stack.dir.join("edge")
        } else {
            stack.dir.join(format!("edge-{i}"))
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut config = shardline_edge::Config::new(
            d.nats_url.clone(),
            dir.join("edge.redb"),
            d.catalog_url.clone(),
        );
        config.name = format!("edge{i}");
        config.listen = base;
        let port = u32::from(base.port()) + i - 1;
        config.listen.set_port(u16::try_from(port).unwrap_or(0));
        let edge = match shardline_edge::Edge::start(config.clone(), shutdown.clone()).await {
            Err(shardline_edge::EdgeError::Listen { addr, .. }) => {
                tracing::warn!(%addr, edge = i, "edge port taken; using a free port");
                config.listen.set_port(0);
                shardline_edge::Edge::start(config.clone(), shutdown.clone()).await?
            }
            other => other?,
        };
        started.push(RestartableEdge::new(config, edge, shutdown));
    }
    Ok((tasks, started))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_settings() {
        let args = StreamArgs {
            stream_replicas: 3,
            stream_max_age: Some("7d".into()),
            stream_max_bytes: Some(1 << 40),
        };
        let limits = args.limits().unwrap();
        assert_eq!(limits.replicas, 3);
        assert_eq!(limits.max_age, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(limits.max_bytes, Some(1 << 40));
        let none = StreamArgs {
            stream_replicas: 1,
            stream_max_age: None,
            stream_max_bytes: None,
        };
        assert_eq!(none.limits().unwrap(), StreamLimits::default());
        let short = StreamArgs {
            stream_max_age: Some("1m".into()),
            ..none
        };
        let e = short.limits().unwrap_err();
        assert_eq!(e.setting, "stream_max_age");
    }
}

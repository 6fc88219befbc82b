//! `shardline replicator --shard ID` and `shardline edge`, and starting both in
//! `shardline up` (one replicator per shard, one edge).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cli::CatalogArgs;
use crate::local::{LocalCluster, catalog_url};
use crate::up::LocalStack;

#[derive(Debug, Args)]
pub struct ReplicatorArgs {
    /// The shard to replicate (its DSN comes from the catalog unless --dsn is given).
    #[arg(long)]
    pub shard: String,
    /// Shard database URL (default: the catalog's entry for --shard).
    #[arg(long, env = "SHARDLINE_SHARD_URL")]
    pub dsn: Option<String>,
    /// NATS URL (default: the local cluster's).
    #[arg(long, env = "SHARDLINE_NATS_URL")]
    pub nats: Option<String>,
    #[command(flatten)]
    pub catalog: CatalogArgs,
}

#[derive(Debug, Args)]
pub struct EdgeArgs {
    /// HTTP listen address of the read API.
    #[arg(long, env = "SHARDLINE_EDGE_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// The redb store file (default: <dir>/edge/edge.redb).
    #[arg(long, env = "SHARDLINE_EDGE_STORE")]
    pub store: Option<PathBuf>,
    /// NATS URL (default: the local cluster's).
    #[arg(long, env = "SHARDLINE_NATS_URL")]
    pub nats: Option<String>,
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
    let config = shardline_replicator::Config::new(args.shard, dsn, nats);
    Ok(shardline_replicator::run(config, shutdown).await?)
}

pub async fn run_edge(args: EdgeArgs) -> anyhow::Result<()> {
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
    let shutdown = CancellationToken::new();
    crate::up::spawn_signal_handler(shutdown.clone());
    Ok(shardline_edge::run(config, shutdown).await?)
}

/// Start one replicator per shard and an edge (127.0.0.1:8090, or a free port when
/// taken) for `shardline up`. Returns the edge URL and the tasks to await after
/// `shutdown`.
pub async fn start_in_up(
    stack: &LocalStack,
    shutdown: &CancellationToken,
) -> anyhow::Result<(String, Vec<JoinHandle<()>>)> {
    let d = &stack.description;
    let mut tasks = Vec::new();
    for s in &d.shards {
        let config =
            shardline_replicator::Config::new(s.id.clone(), s.url.clone(), d.nats_url.clone());
        let token = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = shardline_replicator::run(config, token).await {
                tracing::error!(error = %e, "replicator failed");
            }
        }));
    }
    let store = stack.dir.join("edge").join("edge.redb");
    std::fs::create_dir_all(stack.dir.join("edge"))?;
    let mut config = shardline_edge::Config::new(d.nats_url.clone(), store, d.catalog_url.clone());
    config.listen = std::env::var("SHARDLINE_EDGE_LISTEN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8090)));
    let edge = match shardline_edge::Edge::start(config.clone(), shutdown.clone()).await {
        Err(shardline_edge::EdgeError::Listen { addr, .. }) => {
            tracing::warn!(%addr, "edge port taken; using a free port");
            config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
            shardline_edge::Edge::start(config, shutdown.clone()).await?
        }
        other => other?,
    };
    let url = format!("http://{}", edge.addr);
    tasks.push(tokio::spawn(async move {
        if let Err(e) = edge.join().await {
            tracing::error!(error = %e, "edge failed");
        }
    }));
    Ok((url, tasks))
}

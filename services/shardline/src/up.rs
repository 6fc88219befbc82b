//! `shardline up`: a whole local cluster under one directory, kept across restarts.
//!
//! Boots the catalog and every shard as separate real PostgreSQL clusters plus a
//! JetStream server (all children of this process, each in its own process group),
//! applies migrations, registers shards, seeds an even range map and the shards'
//! owned ranges, creates a dev admin key, then runs until Ctrl-C / SIGTERM and stops
//! everything in order. Services: the router on 127.0.0.1:8080 (or
//! `SHARDLINE_ROUTER_LISTEN`; a free port when that one is taken), the move engine,
//! one replicator per shard and an edge on 127.0.0.1:8090 (or
//! `SHARDLINE_EDGE_LISTEN`; likewise).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::future::try_join_all;
use nix::fcntl::{Flock, FlockArg};
use serde::Deserialize;
use shardline_core::ShardId;
use shardline_core::api_keys::{self, Scope};
use shardline_devkit::{NatsOptions, NatsServer, PgCluster, PgOptions};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bootstrap::{ShardDb, bootstrap};
use crate::cli::UpArgs;
use crate::config::{ConfigError, in_range, load_file};
use crate::local::{LocalCluster, LocalShard, admin_key_path};
use crate::restartable::{RestartableEdge, RestartableRebalancer};

pub const CATALOG_DB: &str = "shardline_catalog";
pub const SHARD_DB: &str = "shardline";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpFile {
    dir: Option<PathBuf>,
    shards: Option<u32>,
    ranges_per_shard: Option<u32>,
    catalog_port: Option<u16>,
    nats_port: Option<u16>,
    edges: Option<u32>,
}

/// Validated settings of `shardline up`.
#[derive(Debug, Clone)]
pub struct UpConfig {
    pub dir: PathBuf,
    /// `None`: 3 for a new cluster, the existing count otherwise.
    pub shards: Option<u32>,
    pub ranges_per_shard: u32,
    pub catalog_port: Option<u16>,
    pub nats_port: Option<u16>,
    /// Edges to start (1-16).
    pub edges: u32,
    pub fresh: bool,
}

impl UpConfig {
    pub fn from_args(args: UpArgs) -> Result<Self, ConfigError> {
        let file: UpFile = load_file(args.config.as_deref())?;
        let dir = args
            .dir
            .or(file.dir)
            .unwrap_or_else(|| PathBuf::from(".shardline"));
        if dir.as_os_str().is_empty() {
            return Err(ConfigError::new("dir", "must not be empty"));
        }
        let shards = args
            .shards
            .or(file.shards)
            .map(|n| in_range("shards", n, 1..=16))
            .transpose()?;
        let ranges_per_shard = in_range(
            "ranges_per_shard",
            args.ranges_per_shard.or(file.ranges_per_shard).unwrap_or(4),
            1..=256,
        )?;
        let catalog_port = nonzero_port("catalog_port", args.catalog_port.or(file.catalog_port))?;
        let nats_port = nonzero_port("nats_port", args.nats_port.or(file.nats_port))?;
        if catalog_port.is_some() && catalog_port == nats_port {
            return Err(ConfigError::new(
                "nats_port",
                "must differ from catalog_port",
            ));
        }
        let edges = in_range("edges", args.edges.or(file.edges).unwrap_or(1), 1..=16)?;
        Ok(UpConfig {
            dir,
            edges,
            shards,
            ranges_per_shard,
            catalog_port,
            nats_port,
            fresh: args.fresh,
        })
    }
}

fn nonzero_port(setting: &str, port: Option<u16>) -> Result<Option<u16>, ConfigError> {
    match port {
        Some(0) => Err(ConfigError::new(
            setting,
            "port 0 is not allowed (omit it to pick a free port)",
        )),
        other => Ok(other),
    }
}

/// The running local cluster. Dropping it stops every server.
#[derive(Debug)]
pub struct LocalStack {
    pub dir: PathBuf,
    pub description: LocalCluster,
    pub catalog_pool: PgPool,
    pub shard_pools: Vec<(ShardId, PgPool)>,
    pub admin_key: String,
    // Field order is drop order: NATS, then shards, then the catalog.
    pub nats: NatsServer,
    pub shards: Vec<PgCluster>,
    pub catalog: PgCluster,
    _lock: Flock<File>,
}

impl LocalStack {
    pub async fn boot(cfg: &UpConfig) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&cfg.dir)
            .with_context(|| format!("creating {}", cfg.dir.display()))?;
        let dir = cfg.dir.canonicalize()?;
        let lock = lock_dir(&dir)?;
        if cfg.fresh {
            wipe(&dir)?;
        }
        let previous = LocalCluster::load(&dir)?;
        let shard_count = match (&previous, cfg.shards) {
            (Some(p), Some(n)) if p.shards.len() != n as usize => {
                return Err(ConfigError::new(
                    "shards",
                    format!(
                        "the cluster in {} has {} shards; use --fresh to recreate it with {n}",
                        dir.display(),
                        p.shards.len()
                    ),
                )
                .into());
            }
            (Some(p), _) => p.shards.len(),
            (None, n) => n.unwrap_or(3) as usize,
        };
        let fixed = |p: Option<u16>| PgOptions {
            port: p,
            fsync: true,
            ..PgOptions::default()
        };
        let catalog_port = cfg
            .catalog_port
            .or(previous.as_ref().map(|p| p.catalog_port));
        let nats_port = cfg.nats_port.or(previous.as_ref().map(|p| p.nats_port));

        let started = Instant::now();
        let shard_futures = (0..shard_count).map(|i| {
            let port = previous
                .as_ref()
                .and_then(|p| p.shards.get(i))
                .map(|s| s.port);
            let root = dir.join(format!("shard-{}", i + 1));
            let opts = fixed(port);
            async move { PgCluster::open(&root, opts).await }
        });
        let (catalog_root, nats_root) = (dir.join("catalog"), dir.join("nats"));
        let (catalog, shards, nats) = tokio::try_join!(
            PgCluster::open(&catalog_root, fixed(catalog_port)),
            try_join_all(shard_futures),
            NatsServer::open(
                &nats_root,
                NatsOptions {
                    port: nats_port,
                    ..NatsOptions::default()
                }
            ),
        )?;
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "servers started"
        );

        catalog.create_database(CATALOG_DB).await?;
        let catalog_url = catalog.url(CATALOG_DB);
        let catalog_pool = pool(&catalog_url).await?;

        let mut targets = Vec::with_capacity(shards.len());
        let mut local_shards = Vec::with_capacity(shards.len());
        for (i, cluster) in shards.iter().enumerate() {
            let id: ShardId = format!("s{}", i + 1).parse()?;
            cluster.create_database(SHARD_DB).await?;
            let url = cluster.url(SHARD_DB);
            let p = pool(&url).await?;
            local_shards.push(LocalShard {
                id: id.to_string(),
                port: cluster.port(),
                url: url.clone(),
            });
            targets.push(ShardDb { id, url, pool: p });
        }
        let ranges_per_shard = previous
            .as_ref()
            .map_or(cfg.ranges_per_shard, |p| p.ranges_per_shard);
        bootstrap(&catalog_pool, &targets, ranges_per_shard).await?;
        let shard_pools: Vec<(ShardId, PgPool)> =
            targets.into_iter().map(|s| (s.id, s.pool)).collect();
        let admin_key = ensure_admin_key(&catalog_pool, &dir).await?;

        let description = LocalCluster {
            catalog_port: catalog.port(),
            catalog_url,
            shards: local_shards,
            nats_port: nats.port(),
            nats_url: nats.url(),
            ranges_per_shard,
            router_url: None,
            rebalancer_url: None,
            edge_urls: Vec::new(),
        };
        description.save(&dir)?;
        Ok(LocalStack {
            dir,
            description,
            catalog_pool,
            shard_pools,
            admin_key,
            nats,
            shards,
            catalog,
            _lock: lock,
        })
    }

    /// Close connection pools, then stop the servers (NATS, shards, catalog).
    pub async fn shutdown(self) {
        self.catalog_pool.close().await;
        for (_, p) in &self.shard_pools {
            p.close().await;
        }
        drop(self);
    }
}

pub(crate) async fn pool(url: &str) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(4)
        .connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))
}

/// One `up` per directory at a time.
fn lock_dir(dir: &Path) -> anyhow::Result<Flock<File>> {
    let path = dir.join("up.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|_| {
        anyhow::anyhow!(
            "another `shardline up` is running on {} (stop it first)",
            dir.display()
        )
    })
}

fn wipe(dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name() == "up.lock" {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        }
        .with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

/// The dev admin key, kept in `<dir>/admin.key` (mode 0600); a new one is created
/// when the file is missing or its key no longer verifies.
async fn ensure_admin_key(pool: &PgPool, dir: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = admin_key_path(dir);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let token = existing.trim().to_owned();
        if matches!(
            api_keys::verify(pool, &token).await?,
            Some((_, Scope::Admin))
        ) {
            return Ok(token);
        }
    }
    let key = api_keys::create(pool, "dev-admin (shardline up)", &Scope::Admin).await?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    std::io::Write::write_all(&mut file, format!("{}\n", key.token).as_bytes())?;
    Ok(key.token)
}

/// Every service of the local system, running on a booted [`LocalStack`].
#[derive(Debug)]
pub struct Services {
    pub router_url: String,
    pub rebalancer_url: String,
    pub edge_urls: Vec<String>,
    router_task: JoinHandle<Result<(), shardline_router::RouterError>>,
    /// Restartable in place (the loadtest's `kill_rebalancer`).
    pub rebalancer: RestartableRebalancer,
    /// Restartable in place (the loadtest's `kill_edge`).
    pub edges: Vec<RestartableEdge>,
    cdc_tasks: Vec<JoinHandle<()>>,
}

impl Services {
    /// Start router, rebalancer, one replicator per shard and `edges` edges; their
    /// URLs are written to `<dir>/cluster.json`. They stop when `shutdown` fires.
    pub async fn start(
        stack: &LocalStack,
        edges: u32,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Self> {
        Self::start_with(stack, edges, None, shutdown).await
    }

    /// [`Services::start`], the router writing load samples every
    /// `load_flush` instead of its default (the loadtest's per-shard chart).
    pub async fn start_with(
        stack: &LocalStack,
        edges: u32,
        load_flush: Option<Duration>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let router = start_router(stack, load_flush).await?;
        let router_url = format!("http://{}", router.local_addr());
        let router_task = tokio::spawn(router.serve(shutdown.clone()));
        let mut rebalancer_config =
            shardline_rebalancer::Config::new(stack.description.catalog_url.clone());
        rebalancer_config.policy = Some(crate::rebalancer::policy_config(None)?);
        let rebalancer = RestartableRebalancer::start(
            rebalancer_config,
            stack.catalog_pool.clone(),
            crate::rebalancer::listen_from_env(true)?,
            shutdown,
        )
        .await?;
        let rebalancer_url = format!("http://{}", rebalancer.addr);
        let mut description = stack.description.clone();
        description.rebalancer_url = Some(rebalancer_url.clone());
        description.router_url = Some(router_url.clone());
        description.save(&stack.dir)?;
        let (cdc_tasks, edges) = crate::cdc::start_in_up(stack, edges, shutdown).await?;
        let edge_urls: Vec<String> = edges.iter().map(|e| format!("http://{}", e.addr)).collect();
        description.edge_urls.clone_from(&edge_urls);
        description.save(&stack.dir)?;
        Ok(Services {
            router_url,
            rebalancer_url,
            edge_urls,
            router_task,
            rebalancer,
            edges,
            cdc_tasks,
        })
    }

    /// Wait for every service to stop (after `shutdown` fired).
    pub async fn join(self) {
        match self.router_task.await {
            Ok(Err(e)) => tracing::error!(error = %e, "router failed"),
            Err(e) => tracing::error!(error = %e, "router task panicked"),
            Ok(Ok(())) => {}
        }
        self.rebalancer.join().await;
        for t in self.cdc_tasks {
            if let Err(e) = t.await {
                tracing::error!(error = %e, "replicator task panicked");
            }
        }
        for e in self.edges {
            e.join().await;
        }
    }
}

pub async fn run(cfg: UpConfig) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone());
    let stack = tokio::select! {
        s = LocalStack::boot(&cfg) => s?,
        () = shutdown.cancelled() => anyhow::bail!("interrupted during start-up"),
    };
    let services = Services::start(&stack, cfg.edges, &shutdown).await?;
    print_summary(
        &stack,
        &services.router_url,
        &services.edge_urls,
        &services.rebalancer_url,
    );
    shutdown.cancelled().await;
    println!("stopping...");
    services.join().await;
    stack.shutdown().await;
    println!("stopped");
    Ok(())
}

/// Bind the router on the local cluster's catalog.
async fn start_router(
    stack: &LocalStack,
    load_flush: Option<Duration>,
) -> anyhow::Result<shardline_router::Server> {
    let mut config = shardline_router::Config::new(stack.description.catalog_url.clone());
    config.router_id = "up-router".into();
    if let Some(d) = load_flush {
        config.load_flush_interval = d;
    }
    let wanted = std::env::var("SHARDLINE_ROUTER_LISTEN").ok();
    if let Some(listen) = &wanted {
        config.listen = listen
            .parse()
            .map_err(|e| ConfigError::new("SHARDLINE_ROUTER_LISTEN", format!("{listen:?}: {e}")))?;
    }
    match shardline_router::Server::bind(config.clone()).await {
        Err(shardline_router::RouterError::Bind { addr, source })
            if wanted.is_none() && source.kind() == std::io::ErrorKind::AddrInUse =>
        {
            tracing::warn!(%addr, "router port taken; using a free port");
            config.listen.set_port(0);
            Ok(shardline_router::Server::bind(config).await?)
        }
        other => Ok(other?),
    }
}

fn print_summary(stack: &LocalStack, router_url: &str, edge_urls: &[String], rebalancer_url: &str) {
    let d = &stack.description;
    println!("shardline is up (data in {})", stack.dir.display());
    println!("  catalog    {}", d.catalog_url);
    for s in &d.shards {
        println!("  shard {:<4} {}", s.id, s.url);
    }
    println!(
        "  nats       {} (JetStream, fsync every message)",
        d.nats_url
    );
    println!(
        "  admin key  {} (also in {})",
        stack.admin_key,
        admin_key_path(&stack.dir).display()
    );
    println!("  router     {router_url} (payments API; {router_url}/openapi.json)");
    for (i, url) in edge_urls.iter().enumerate() {
        println!(
            "  edge{:<6} {url} (reads from the CDC stream; {url}/metrics)",
            i + 1
        );
    }
    println!("  metrics    {router_url}/metrics (router, edges and replicators of this process)");
    println!("  rebalancer {rebalancer_url} (admin API: moves, split, merge; `shardline moves`)");
    println!(
        "  services   router, rebalancer (move engine), one replicator per shard, {} edge(s)",
        edge_urls.len()
    );
    println!("inspect with `shardline status`; stop with Ctrl-C");
}

pub fn spawn_signal_handler(token: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot install SIGTERM handler");
                    let _ = tokio::signal::ctrl_c().await;
                    token.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        token.cancel();
    });
}

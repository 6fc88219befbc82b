//! `shardline rebalancer`: the move engine and the autonomous policy loop
//! (leader-elected by a catalog advisory lock; a second instance waits as
//! standby) plus its admin API. `up` starts one.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use shardline_rebalancer::admin::{AdminServer, AdminState, DEFAULT_LISTEN, ServeError};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cli::CatalogArgs;
use crate::config::ConfigError;
use crate::local::catalog_url;

const LISTEN_ENV: &str = "SHARDLINE_REBALANCER_LISTEN";

#[derive(Debug, Args)]
pub struct RebalancerArgs {
    #[command(flatten)]
    pub catalog: CatalogArgs,
    /// Admin API listen address.
    #[arg(long, env = LISTEN_ENV, default_value = DEFAULT_LISTEN)]
    pub listen: String,
    /// How often the engine looks for planned moves (e.g. 500ms, 2s).
    #[arg(long, env = "SHARDLINE_REBALANCER_POLL", default_value = "1s")]
    pub poll_interval: String,
    /// TOML file with policy knobs (any of docs/rebalancer.md's table; the
    /// rest keep their defaults). Checked at start.
    #[arg(long, env = "SHARDLINE_POLICY_CONFIG")]
    pub policy_config: Option<std::path::PathBuf>,
    /// Run moves only: no autonomous policy loop in this process.
    #[arg(long)]
    pub no_policy: bool,
}

/// The policy loop's configuration from an optional TOML file of knobs.
pub fn policy_config(
    file: Option<&std::path::Path>,
) -> Result<shardline_rebalancer::autopilot::LoopConfig, ConfigError> {
    let knobs = match file {
        None => shardline_rebalancer::policy::PolicyConfig::default(),
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| {
                ConfigError::new("policy-config", format!("cannot read {}: {e}", p.display()))
            })?;
            toml::from_str(&text)
                .map_err(|e| ConfigError::new("policy-config", format!("{}: {e}", p.display())))?
        }
    };
    let cfg = shardline_rebalancer::autopilot::LoopConfig::new(knobs);
    cfg.validate()
        .map_err(|e| ConfigError::new("policy-config", e.to_string()))?;
    Ok(cfg)
}

/// The listen address from `SHARDLINE_REBALANCER_LISTEN` (default 127.0.0.1:8070).
/// `fallback`: when the default port is taken, use a free one (for `up`).
pub fn listen_from_env(fallback: bool) -> Result<(SocketAddr, bool), ConfigError> {
    match std::env::var(LISTEN_ENV) {
        Ok(v) => Ok((parse_listen(&v)?, false)),
        Err(_) => Ok((parse_listen(DEFAULT_LISTEN)?, fallback)),
    }
}

fn parse_listen(v: &str) -> Result<SocketAddr, ConfigError> {
    v.parse()
        .map_err(|e| ConfigError::new("listen", format!("{v:?} is not an address: {e}")))
}

/// A running rebalancer: engine task + admin API task.
#[derive(Debug)]
pub struct Rebalancer {
    pub addr: SocketAddr,
    engine: JoinHandle<shardline_rebalancer::Result<()>>,
    api: JoinHandle<Result<(), ServeError>>,
}

impl Rebalancer {
    /// Bind the admin API (on a free port instead when `listen.1` and the port is
    /// taken), then start the engine and the API until `shutdown`.
    pub async fn start(
        config: shardline_rebalancer::Config,
        catalog: PgPool,
        listen: (SocketAddr, bool),
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let state = AdminState::new(catalog);
        let (addr, fallback) = listen;
        let server = match AdminServer::bind(addr, state.clone()).await {
            Err(ServeError::Bind { source, .. })
                if fallback && source.kind() == std::io::ErrorKind::AddrInUse =>
            {
                tracing::warn!(%addr, "rebalancer admin port taken; using a free port");
                AdminServer::bind(SocketAddr::new(addr.ip(), 0), state).await?
            }
            other => other?,
        };
        let addr = server.local_addr();
        let api = tokio::spawn(server.serve(shutdown.clone()));
        let engine = tokio::spawn(shardline_rebalancer::run(config, shutdown.clone()));
        Ok(Rebalancer { addr, engine, api })
    }

    /// Wait for both tasks (after shutdown), logging failures.
    pub async fn join(self) {
        match self.engine.await {
            Ok(Err(e)) => tracing::error!(error = %e, "move engine failed"),
            Err(e) => tracing::error!(error = %e, "move engine task panicked"),
            Ok(Ok(())) => {}
        }
        match self.api.await {
            Ok(Err(e)) => tracing::error!(error = %e, "rebalancer admin API failed"),
            Err(e) => tracing::error!(error = %e, "rebalancer admin API task panicked"),
            Ok(Ok(())) => {}
        }
    }
}

pub async fn run(args: RebalancerArgs) -> anyhow::Result<()> {
    let url = catalog_url(&args.catalog)?;
    let listen = parse_listen(&args.listen)?;
    let poll = shardline_core::config::parse_duration(&args.poll_interval)
        .map_err(|e| ConfigError::new("poll-interval", e))?;
    if poll < Duration::from_millis(10) || poll > Duration::from_secs(60) {
        return Err(ConfigError::new("poll-interval", "must be between 10ms and 60s").into());
    }
    let catalog = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy(&url)
        .map_err(|e| ConfigError::new("catalog", e.to_string()))?;
    let mut config = shardline_rebalancer::Config::new(url);
    config.poll_interval = poll;
    if !args.no_policy {
        config.policy = Some(policy_config(args.policy_config.as_deref())?);
    }
    let shutdown = CancellationToken::new();
    crate::up::spawn_signal_handler(shutdown.clone());
    let r = Rebalancer::start(config, catalog, (listen, false), &shutdown).await?;
    println!("rebalancer admin API on http://{}", r.addr);
    shutdown.cancelled().await;
    r.join().await;
    Ok(())
}

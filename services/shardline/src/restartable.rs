//! Services of the local system that can be crashed and started again in
//! place (the loadtest's `kill_rebalancer` and `kill_edge` faults): each keeps
//! what it needs to start again on the same address (and store).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::rebalancer::Rebalancer;

/// How long a restart keeps trying to bind its old port.
const REBIND_WAIT: Duration = Duration::from_secs(10);

/// The rebalancer (move engine + admin API) on its own child token.
#[derive(Debug)]
pub struct RestartableRebalancer {
    pub addr: SocketAddr,
    config: shardline_rebalancer::Config,
    catalog: PgPool,
    shutdown: CancellationToken,
    running: Mutex<Option<(CancellationToken, Rebalancer)>>,
}

impl RestartableRebalancer {
    /// Start on `listen` (see [`Rebalancer::start`]); a restart rebinds the
    /// address it got.
    pub async fn start(
        config: shardline_rebalancer::Config,
        catalog: PgPool,
        listen: (SocketAddr, bool),
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let token = shutdown.child_token();
        let r = Rebalancer::start(config.clone(), catalog.clone(), listen, &token).await?;
        Ok(RestartableRebalancer {
            addr: r.addr,
            config,
            catalog,
            shutdown: shutdown.clone(),
            running: Mutex::new(Some((token, r))),
        })
    }

    /// Crash: the engine's current step is dropped at its await point (moves
    /// resume from their persisted state), its connections close (releasing
    /// the leader lock), and the admin API stops. No-op when not running.
    pub async fn kill(&self) {
        if let Some((token, r)) = self.running.lock().await.take() {
            token.cancel();
            r.join().await;
        }
    }

    /// A new instance on the same address (the standby taking over).
    pub async fn restart(&self) -> anyhow::Result<()> {
        let mut running = self.running.lock().await;
        if running.is_some() {
            anyhow::bail!("the rebalancer is running");
        }
        let deadline = Instant::now() + REBIND_WAIT;
        loop {
            let token = self.shutdown.child_token();
            match Rebalancer::start(
                self.config.clone(),
                self.catalog.clone(),
                (self.addr, false),
                &token,
            )
            .await
            {
                Ok(r) => {
                    *running = Some((token, r));
                    return Ok(());
                }
                Err(e) if Instant::now() < deadline => {
                    tracing::warn!(error = %e, addr = %self.addr, "rebalancer restart: retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Wait for it to stop (after the shutdown token fired).
    pub async fn join(self) {
        if let Some((_, r)) = self.running.into_inner() {
            r.join().await;
        }
    }
}

/// An in-process edge that can be crashed and started again on its store.
#[derive(Debug)]
pub struct RestartableEdge {
    pub addr: SocketAddr,
    config: shardline_edge::Config,
    shutdown: CancellationToken,
    running: Mutex<Option<shardline_edge::Edge>>,
}

impl RestartableEdge {
    /// Wrap a started edge; `config.listen` is set to its bound address.
    pub fn new(
        mut config: shardline_edge::Config,
        edge: shardline_edge::Edge,
        shutdown: &CancellationToken,
    ) -> Self {
        config.listen = edge.addr;
        RestartableEdge {
            addr: edge.addr,
            config,
            shutdown: shutdown.clone(),
            running: Mutex::new(Some(edge)),
        }
    }

    /// Crash ([`shardline_edge::Edge::kill`]: tasks aborted, store released).
    pub async fn kill(&self) {
        if let Some(e) = self.running.lock().await.take() {
            e.kill().await;
        }
    }

    /// Start again on the same store and address.
    pub async fn restart(&self) -> anyhow::Result<()> {
        let mut running = self.running.lock().await;
        if running.is_some() {
            anyhow::bail!("the edge is running");
        }
        let deadline = Instant::now() + REBIND_WAIT;
        loop {
            match shardline_edge::Edge::start(self.config.clone(), self.shutdown.clone()).await {
                Ok(e) => {
                    *running = Some(e);
                    return Ok(());
                }
                Err(e) if Instant::now() < deadline => {
                    tracing::warn!(error = %e, addr = %self.addr, "edge restart: retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Wait for it to stop (after the shutdown token fired).
    pub async fn join(self) {
        if let Some(e) = self.running.into_inner()
            && let Err(e) = e.join().await
        {
            tracing::error!(error = %e, "edge failed");
        }
    }
}

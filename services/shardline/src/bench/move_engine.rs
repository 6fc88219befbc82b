//! The engine side of `bench move`: moves run by an engine on its own thread
//! and runtime, and each move's outcome read back from the catalog.

use std::time::{Duration, SystemTime};

use anyhow::Context;
use shardline_rebalancer::{Engine, MoveState, Subject};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// One move's outcome and windows (offsets from the bench's start).
#[derive(Debug, Clone)]
pub(super) struct MoveOutcome {
    pub(super) state: MoveState,
    pub(super) window: (Duration, Duration),
    pub(super) cutover: (Duration, Duration),
    pub(super) pause_ms: f64,
    pub(super) copy_ms: f64,
    pub(super) bytes: i64,
    pub(super) phase_ms: serde_json::Value,
    /// Each state the move passed through, from its event to the next one.
    pub(super) steps: Vec<(String, (Duration, Duration))>,
}

/// Offset of a catalog timestamp from the bench's start.
fn offset(at: chrono::DateTime<chrono::Utc>, wall0: SystemTime) -> Duration {
    SystemTime::from(at)
        .duration_since(wall0)
        .unwrap_or_default()
}

async fn one_move(
    engine: &Engine,
    cat: &PgPool,
    range_id: i64,
    to: &str,
    wall0: SystemTime,
) -> anyhow::Result<MoveOutcome> {
    let id = engine
        .plan_move(Subject::Range(range_id), to, "bench")
        .await?;
    let state = engine.run_move(id).await?;
    let events: Vec<(String, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("SELECT to_state, at FROM move_events WHERE move_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(cat)
            .await?;
    let at = |st: &str| {
        events
            .iter()
            .find(|e| e.0 == st)
            .map(|e| offset(e.1, wall0))
    };
    let first = events
        .first()
        .map(|e| offset(e.1, wall0))
        .unwrap_or_default();
    let last = events
        .last()
        .map(|e| offset(e.1, wall0))
        .unwrap_or_default();
    let phase: serde_json::Value = sqlx::query_scalar("SELECT phase_ms FROM moves WHERE id = $1")
        .bind(id)
        .fetch_one(cat)
        .await?;
    Ok(MoveOutcome {
        state,
        window: (first, last),
        cutover: (
            at("cutover").unwrap_or(first),
            at("switched").unwrap_or(last) + Duration::from_millis(5),
        ),
        pause_ms: phase["pause_ms"].as_f64().unwrap_or(f64::NAN),
        copy_ms: phase["copy_ms"].as_f64().unwrap_or(f64::NAN),
        bytes: 0,
        phase_ms: phase,
        steps: events
            .windows(2)
            .map(|w| {
                (
                    w[0].0.clone(),
                    (offset(w[0].1, wall0), offset(w[1].1, wall0)),
                )
            })
            .collect(),
    })
}

type MoveRequest = (
    i64,
    String,
    tokio::sync::oneshot::Sender<anyhow::Result<MoveOutcome>>,
);

/// The engine on its own OS thread and runtime, as the rebalancer is its own
/// process in a deployment: its pause is not measured through the scheduling of
/// the router and the load generator that share this process.
pub(super) struct EngineThread {
    tx: tokio::sync::mpsc::Sender<MoveRequest>,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl EngineThread {
    pub(super) async fn start(catalog_url: String, wall0: SystemTime) -> anyhow::Result<Self> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<MoveRequest>(1);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
        let thread = std::thread::Builder::new()
            .name("bench-engine".into())
            .spawn(move || -> anyhow::Result<()> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let started = async {
                        let cat = PgPoolOptions::new()
                            .max_connections(8)
                            .connect(&catalog_url)
                            .await?;
                        let cfg = shardline_rebalancer::Config::new(catalog_url.clone());
                        let engine = Engine::new(cat.clone(), cfg).await?;
                        anyhow::Ok((cat, engine))
                    };
                    let (cat, engine) = match started.await {
                        Ok(v) => {
                            let _ = ready_tx.send(Ok(()));
                            v
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(anyhow::anyhow!("{e:#}")));
                            return Err(e);
                        }
                    };
                    while let Some((range_id, to, reply)) = rx.recv().await {
                        let _ = reply.send(one_move(&engine, &cat, range_id, &to, wall0).await);
                    }
                    Ok(())
                })
            })?;
        ready_rx.await.context("bench engine thread died")??;
        Ok(EngineThread { tx, thread })
    }

    pub(super) async fn run(&self, range_id: i64, to: &str) -> anyhow::Result<MoveOutcome> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send((range_id, to.to_owned(), reply))
            .await
            .map_err(|_| anyhow::anyhow!("bench engine thread stopped"))?;
        rx.await.context("bench engine thread stopped")?
    }

    pub(super) fn stop(self) -> anyhow::Result<()> {
        drop(self.tx);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("bench engine thread panicked"))?
    }
}

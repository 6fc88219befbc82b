//! The move engine: plans moves, drives each through its persisted states, aborts,
//! resumes after a crash and reconciles orphaned replication objects.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shardline_core::MerchantId;
use sqlx::postgres::PgPoolOptions;
use sqlx::{ConnectOptions, PgConnection, PgPool};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::model::{Error, MOVE_COLUMNS, MoveRow, MoveState, Result, move_id_of, object_name};
use crate::repl::{self, TABLES, timeout};
use crate::verify::{self, PassReport};

mod cutover;
mod finish;
mod service;
mod steps;

pub use service::{plan_move, request_abort, run};

/// The fail points (cargo feature `failpoints`, the `fail` crate) the engine
/// evaluates, as (fail point, step). `move-after-<step>` points are evaluated after
/// the step's action, before the next state is persisted; `move-during-copy`
/// after the subscription exists, before waiting for the initial copy;
/// `move-during-catch-up` when catch-up starts; `move-before-cutover-freeze` in
/// `cutover` right before the freeze; `move-after-target-activated` in the pause,
/// after the target's activation committed, before the catalog flip commits.
/// The `return` action stops the move right there with [`Error::Crashed`]`(step)`,
/// as if the process died; `return(error)` fails the step with an ordinary
/// error (the engine handles it, as a lost connection at that point); `pause`,
/// `sleep(ms)` and callbacks run on a blocking thread, so they hold only the move.
pub const FAIL_POINTS: [(&str, &str); 12] = [
    ("move-during-copy", "copying"),
    ("move-after-copying", "copying"),
    ("move-during-catch-up", "catching_up"),
    ("move-after-catching-up", "catching_up"),
    ("move-before-money-pass", "verifying"),
    ("move-after-verifying", "verifying"),
    ("move-before-cutover-freeze", "cutover"),
    ("move-after-cutover-frozen", "cutover_frozen"),
    ("move-after-target-activated", "cutover_activated"),
    ("move-after-switched", "switched"),
    ("move-after-cleaning", "cleaning"),
    ("move-after-aborting", "aborting"),
];

/// Evaluate fail point `name` (one of [`FAIL_POINTS`]).
#[cfg(feature = "failpoints")]
async fn fail_point(name: &'static str) -> Result<()> {
    let step = FAIL_POINTS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(name, |(_, s)| *s);
    let eval = move || -> Result<()> {
        fail::fail_point!(name, |arg: Option<String>| match arg.as_deref() {
            Some("error") => Err(Error::Inconsistent(format!(
                "fail point {name}: injected error"
            ))),
            _ => Err(Error::Crashed(step)),
        });
        Ok(())
    };
    tokio::task::spawn_blocking(eval)
        .await
        .map_err(|e| Error::Inconsistent(format!("fail point {name}: {e}")))?
}

#[cfg(not(feature = "failpoints"))]
async fn fail_point(_name: &'static str) -> Result<()> {
    Ok(())
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Catalog URL (used by [`run`]; [`Engine::new`] takes a pool).
    pub catalog_url: String,
    /// Key of the catalog advisory lock that elects the leader engine.
    pub leader_lock_key: i64,
    /// How often [`run`] looks for moves to drive.
    pub poll_interval: Duration,
    /// Bound on the initial copy (all tables in sync state 'r').
    pub sync_timeout: Duration,
    /// Catch-up is reached when the slot lags by at most this many WAL bytes...
    pub catchup_max_lag_bytes: i64,
    /// ...or after this long (verification absorbs the remaining lag).
    pub catchup_timeout: Duration,
    /// Re-check passes over mismatching rows before verification gives up.
    pub verify_max_passes: u32,
    pub verify_recheck_delay: Duration,
    /// After the full pass, delta passes (rows written since the previous pass)
    /// repeat until one sees at most `delta_settle_rows` rows, at most this often,
    /// so the check inside the pause covers only the last few milliseconds.
    pub delta_passes_max: u32,
    pub delta_settle_rows: usize,
    /// Bound on waiting for the cutover marker on the target (inside the pause).
    pub marker_timeout: Duration,
    /// Rows per DELETE batch in cleanup and abort.
    pub delete_batch: i64,
    /// Connections per shard pool.
    pub shard_pool_size: u32,
    /// A step failing with a transient error (a shard restarting, a connection
    /// lost) is run again, with backoff, for up to this long before the failure
    /// counts (steps are idempotent).
    pub transient_retry_for: Duration,
    /// The autonomous policy loop, run by the leader beside the moves; `None`
    /// (the default here) runs moves only. `shardline rebalancer` turns it on.
    pub policy: Option<crate::autopilot::LoopConfig>,
}

impl Config {
    pub fn new(catalog_url: impl Into<String>) -> Self {
        Config {
            catalog_url: catalog_url.into(),
            leader_lock_key: 0x5348_524C_5245_4231, // "SHRLREB1"
            poll_interval: Duration::from_secs(1),
            sync_timeout: Duration::from_secs(600),
            catchup_max_lag_bytes: 64 * 1024,
            catchup_timeout: Duration::from_secs(5),
            verify_max_passes: 50,
            verify_recheck_delay: Duration::from_millis(10),
            delta_passes_max: 6,
            delta_settle_rows: 64,
            marker_timeout: Duration::from_secs(2),
            delete_batch: 5000,
            shard_pool_size: 8,
            transient_retry_for: Duration::from_secs(120),
            policy: None,
        }
    }
}

/// What to move.
#[derive(Debug, Clone)]
pub enum Subject {
    /// A catalog range by id.
    Range(i64),
    /// The range holding a merchant's shard key.
    Merchant(MerchantId),
}

#[derive(Debug, Clone)]
struct ShardConn {
    pool: PgPool,
    dsn: String,
}

/// The move engine. Holds the leader lock for its whole life.
#[derive(Debug)]
pub struct Engine {
    catalog: PgPool,
    config: Config,
    shards: Mutex<HashMap<String, ShardConn>>,
    _leader: Mutex<PgConnection>,
}

impl Engine {
    /// Become the leader engine (`pg_try_advisory_lock` on a dedicated catalog
    /// connection held until the engine is dropped) or fail with [`Error::NotLeader`].
    pub async fn new(catalog: PgPool, config: Config) -> Result<Self> {
        let mut conn = catalog.acquire().await?.detach();
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(config.leader_lock_key)
            .fetch_one(&mut conn)
            .await?;
        if !got {
            return Err(Error::NotLeader);
        }
        Ok(Engine {
            catalog,
            config,
            shards: Mutex::new(HashMap::new()),
            _leader: Mutex::new(conn),
        })
    }

    pub fn catalog(&self) -> &PgPool {
        &self.catalog
    }

    async fn shard(&self, id: &str) -> Result<ShardConn> {
        let mut shards = self.shards.lock().await;
        if let Some(s) = shards.get(id) {
            return Ok(s.clone());
        }
        let dsn: String = sqlx::query_scalar("SELECT dsn FROM shards WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.catalog)
            .await?
            .ok_or_else(|| Error::UnknownShard(id.to_owned()))?;
        // Verification scans whole ranges on purpose: only statements slower than
        // a minute are worth a warning (sqlx's default is one second).
        let options = dsn
            .parse::<sqlx::postgres::PgConnectOptions>()?
            .log_slow_statements(log::LevelFilter::Warn, Duration::from_secs(60));
        let pool = PgPoolOptions::new()
            .max_connections(self.config.shard_pool_size)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(options);
        let conn = ShardConn { pool, dsn };
        shards.insert(id.to_owned(), conn.clone());
        Ok(conn)
    }

    /// The persisted move.
    pub async fn load(&self, id: Uuid) -> Result<MoveRow> {
        sqlx::query_as::<_, MoveRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {MOVE_COLUMNS} FROM moves WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.catalog)
        .await?
        .ok_or(Error::NotFound(id))
    }

    /// Record a move of `subject` to shard `to` in state `planned`; returns its id.
    pub async fn plan_move(&self, subject: Subject, to: &str, reason: &str) -> Result<Uuid> {
        plan_move(&self.catalog, subject, to, reason).await
    }

    /// Ask a move to roll back. Returns false when it is past the point of no
    /// return (`switched` or later) or already finished.
    pub async fn abort(&self, id: Uuid) -> Result<bool> {
        request_abort(&self.catalog, id).await
    }

    async fn transition(&self, m: &mut MoveRow, to: MoveState, detail: Value) -> Result<()> {
        let from = m.state()?;
        let mut tx = self.catalog.begin().await?;
        let n = sqlx::query(
            "UPDATE moves SET state = $2, updated_at = now(),
                    finished_at = CASE WHEN $2 IN ('done', 'aborted') THEN now() END
              WHERE id = $1 AND state = $3",
        )
        .bind(m.id)
        .bind(to.as_str())
        .bind(from.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        exactly_one(n, m.id, from)?;
        if to == MoveState::Copying {
            // Routers see the range as moving (and get a new map epoch).
            sqlx::query("UPDATE ranges SET state = 'moving' WHERE id = $1 AND shard_id = $2")
                .bind(m.range_id)
                .bind(&m.source_shard)
                .execute(&mut *tx)
                .await?;
        }
        self.event(&mut tx, m.id, Some(from), to, detail).await?;
        tx.commit().await?;
        tracing::info!(move_id = %m.id, %from, %to, "move state");
        m.state = to.as_str().to_owned();
        Ok(())
    }

    async fn event(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        id: Uuid,
        from: Option<MoveState>,
        to: MoveState,
        detail: Value,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO move_events (move_id, from_state, to_state, detail) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(from.map(|s| s.as_str()))
        .bind(to.as_str())
        .bind(detail)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    async fn set_phase(&self, id: Uuid, phase: &str, d: Duration) -> Result<()> {
        sqlx::query(
            "UPDATE moves SET phase_ms = phase_ms || jsonb_build_object($2::text, $3::float8), updated_at = now() WHERE id = $1",
        )
        .bind(id)
        .bind(phase)
        .bind(d.as_secs_f64() * 1000.0)
        .execute(&self.catalog)
        .await?;
        Ok(())
    }

    async fn set_stats(&self, id: Uuid, stats: Value) -> Result<()> {
        sqlx::query("UPDATE moves SET stats = stats || $2 WHERE id = $1")
            .bind(id)
            .bind(stats)
            .execute(&self.catalog)
            .await?;
        Ok(())
    }

    async fn check_abort(&self, id: Uuid) -> Result<()> {
        let flag: bool = sqlx::query_scalar("SELECT abort_requested FROM moves WHERE id = $1")
            .bind(id)
            .fetch_one(&self.catalog)
            .await?;
        if flag {
            return Err(Error::AbortRequested);
        }
        Ok(())
    }

    /// Drive a move until `done` or `aborted`. A failure before the catalog flip
    /// rolls the move back (`aborting -> aborted`); a failure after it is returned
    /// and the move is resumed forward later.
    pub async fn run_move(&self, id: Uuid) -> Result<MoveState> {
        let mut m = self.load(id).await?;
        let mut retry = Retry::default();
        loop {
            let st = m.state()?;
            if st.is_terminal() {
                return Ok(st);
            }
            if m.abort_requested && st.can_abort() && st != MoveState::Aborting {
                self.transition(&mut m, MoveState::Aborting, json!({"reason": "operator"}))
                    .await?;
                continue;
            }
            let span = tracing::info_span!("move_step", move_id = %id, state = %st,
                range_id = m.range_id, source = %m.source_shard, target = %m.target_shard);
            let again = retry.state == Some(st);
            let res = self.step(&mut m, st, again).instrument(span).await;
            match res {
                Ok(()) => retry = Retry::default(),
                Err(e @ Error::Crashed(_)) => return Err(e),
                Err(e) => {
                    if e.is_transient() && self.retry_step(&mut retry, id, st, &e).await? {
                        m = self.load(id).await?;
                        continue;
                    }
                    let msg = e.to_string();
                    tracing::warn!(move_id = %id, state = %st, error = %msg, "move step failed");
                    sqlx::query("UPDATE moves SET error = $2, updated_at = now() WHERE id = $1")
                        .bind(id)
                        .bind(&msg)
                        .execute(&self.catalog)
                        .await?;
                    m = self.load(id).await?;
                    let now = m.state()?;
                    if now.can_abort() && now != MoveState::Aborting {
                        self.transition(&mut m, MoveState::Aborting, json!({"error": msg}))
                            .await?;
                        continue;
                    }
                    return Err(e);
                }
            }
            m = self.load(id).await?;
        }
    }

    /// After a transient error in step `st`: whether to run the step again (after a
    /// backoff sleep). Only while the persisted state is still `st` (an error after
    /// the switch to `cutover` rolls back instead) and within
    /// `transient_retry_for` of the step's first transient error.
    async fn retry_step(
        &self,
        retry: &mut Retry,
        id: Uuid,
        st: MoveState,
        e: &Error,
    ) -> Result<bool> {
        if self.load(id).await?.state()? != st || st == MoveState::Cutover {
            return Ok(false);
        }
        if retry.state != Some(st) {
            *retry = Retry {
                state: Some(st),
                since: Instant::now(),
                delay: Duration::from_millis(100),
            };
        }
        if retry.since.elapsed() >= self.config.transient_retry_for {
            return Ok(false);
        }
        tracing::warn!(move_id = %id, state = %st, error = %e, delay_ms = retry.delay.as_millis() as u64,
            "transient error, retrying the step");
        tokio::time::sleep(retry.delay).await;
        retry.delay = (retry.delay * 2).min(Duration::from_secs(2));
        Ok(true)
    }

    /// Run step `st`; `again`: it is re-run after a transient error.
    async fn step(&self, m: &mut MoveRow, st: MoveState, again: bool) -> Result<()> {
        match st {
            MoveState::Planned => self.transition(m, MoveState::Copying, json!({})).await,
            MoveState::Copying => {
                let t = Instant::now();
                self.copy(m).await?;
                self.set_phase(m.id, "copy_ms", t.elapsed()).await?;
                fail_point("move-after-copying").await?;
                self.transition(m, MoveState::CatchingUp, json!({})).await
            }
            MoveState::CatchingUp => {
                fail_point("move-during-catch-up").await?;
                let t = Instant::now();
                let lag = self.catch_up(m).await?;
                self.set_phase(m.id, "catch_up_ms", t.elapsed()).await?;
                fail_point("move-after-catching-up").await?;
                self.transition(m, MoveState::Verifying, json!({"lag_bytes": lag}))
                    .await
            }
            MoveState::Verifying => {
                if again {
                    // a shard was unreachable: the target may be far behind now
                    self.catch_up(m).await?;
                }
                let t = Instant::now();
                let mut report = self.verify(m).await?;
                self.set_phase(m.id, "verify_ms", t.elapsed()).await?;
                self.set_stats(m.id, json!({"verify": report})).await?;
                fail_point("move-after-verifying").await?;
                self.check_abort(m.id).await?;
                // still `verifying`: a failure here is retried or re-verified
                let prepared = self.prepare_cutover(m, &mut report).await?;
                self.transition(m, MoveState::Cutover, json!({"verify": report}))
                    .await?;
                self.cutover(m, &report, prepared).await
            }
            // Only reached when a previous engine stopped mid-cutover: the source
            // is (or may be) frozen and the catalog did not flip. Roll back.
            MoveState::Cutover => Err(Error::Inconsistent(
                "cutover was interrupted before the catalog flip".into(),
            )),
            MoveState::Switched => {
                fail_point("move-after-switched").await?;
                self.transition(m, MoveState::Cleaning, json!({})).await
            }
            MoveState::Cleaning => {
                let t = Instant::now();
                let deleted = self.cleanup(m).await?;
                self.set_phase(m.id, "cleanup_ms", t.elapsed()).await?;
                fail_point("move-after-cleaning").await?;
                self.transition(m, MoveState::Done, json!({"source_rows_deleted": deleted}))
                    .await
            }
            MoveState::Aborting => {
                let deleted = self.teardown(m).await?;
                fail_point("move-after-aborting").await?;
                self.finish_abort(m, deleted).await
            }
            MoveState::Done | MoveState::Aborted => Ok(()),
        }
    }
}

/// Backoff state of the step being retried after transient errors.
#[derive(Debug)]
struct Retry {
    state: Option<MoveState>,
    since: Instant,
    delay: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            state: None,
            since: Instant::now(),
            delay: Duration::from_millis(100),
        }
    }
}

/// A conditional state update (`WHERE id = $1 AND state = <expected>`) must hit
/// exactly one row; otherwise another process moved the move on.
/// Set the state of owned range `id` on a shard to `to` unless it already is
/// (the `owned_ranges` trigger takes the range's fencing locks).
async fn set_owned_state(pool: &PgPool, id: i64, to: &str) -> Result<()> {
    sqlx::query(
        "SELECT shardline_set_range_state($1, $2) FROM owned_ranges
          WHERE id = $1 AND state <> $2",
    )
    .bind(id)
    .bind(to)
    .execute(pool)
    .await?;
    Ok(())
}

fn exactly_one(n: u64, id: Uuid, expected: MoveState) -> Result<()> {
    if n == 1 {
        Ok(())
    } else {
        Err(Error::Conflict { id, expected })
    }
}

//! The policy loop: the leader engine runs [`decide`](crate::policy::decide)
//! against the catalog every interval, stores every decision (taken or declined)
//! in `decisions` with its inputs and reason, and executes taken ones through the
//! same catalog operations an operator uses (isolate = split, `plan_move`,
//! merge). It writes intent only: the engine drives the planned moves.
//!
//! Rounds start just after each interval boundary (plus `round_delay`, so the
//! routers' flush of the interval that just ended has landed). The mode in
//! `policy_state` is read every round: `paused` skips the round, `dry_run`
//! stores decisions marked `dry_run` and executes nothing.

mod input;
pub mod state;

use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::engine::{Subject, plan_move};
use crate::policy::{Action, ConfigError, Decision, PolicyConfig, decide};
pub use state::{PolicyMode, PolicyState};

/// Why a round failed (the loop logs it, records it and tries again next
/// interval).
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("catalog: {0}")]
    Db(#[from] sqlx::Error),
    #[error("catalog content: {0}")]
    Catalog(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// The loop's settings (the policy's knobs plus how the loop runs).
#[derive(Debug, Clone)]
pub struct LoopConfig {
    pub policy: PolicyConfig,
    /// Wait after an interval boundary before deciding (router flushes land).
    pub round_delay: Duration,
    /// How long measured range sizes are reused.
    pub size_refresh: Duration,
    /// Load samples older than this are deleted (at least twice the history
    /// window is kept whatever this says).
    pub sample_retention: Duration,
    /// Decisions older than this are deleted.
    pub decision_retention: Duration,
    /// Who runs the loop (`policy_state.leader`, `moves.requested_by`).
    pub identity: String,
}

impl LoopConfig {
    #[must_use]
    pub fn new(policy: PolicyConfig) -> Self {
        LoopConfig {
            policy,
            round_delay: Duration::from_millis(500),
            size_refresh: Duration::from_secs(60),
            sample_retention: Duration::from_secs(6 * 3600),
            decision_retention: Duration::from_secs(7 * 24 * 3600),
            identity: format!("rebalancer-{}", std::process::id()),
        }
    }

    /// Checks the knobs.
    ///
    /// # Errors
    /// The first bad knob.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.policy.validate()?;
        if self.round_delay >= self.policy.interval {
            return Err(ConfigError {
                knob: "round_delay",
                value: format!("{:?}", self.round_delay),
                rule: "must be shorter than the interval",
            });
        }
        Ok(())
    }
}

/// What one round did.
#[derive(Debug, Clone, Default)]
pub struct RoundReport {
    pub mode: Option<PolicyMode>,
    pub decisions: Vec<Decision>,
    /// Moves planned this round.
    pub moves: Vec<uuid::Uuid>,
    /// Actions that failed to execute (stale map, a concurrent operator).
    pub failed: Vec<String>,
}

/// The loop with its caches.
#[derive(Debug)]
pub struct PolicyLoop {
    catalog: PgPool,
    config: LoopConfig,
    sizes: input::SizeCache,
}

impl PolicyLoop {
    /// # Errors
    /// The configuration is invalid.
    pub fn new(catalog: PgPool, config: LoopConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(PolicyLoop {
            catalog,
            config,
            sizes: input::SizeCache::default(),
        })
    }

    /// Run rounds until `shutdown`. Only the leader engine calls this.
    pub async fn run(mut self, shutdown: CancellationToken) {
        tracing::info!(identity = %self.config.identity, interval = ?self.config.policy.interval, "policy loop started");
        loop {
            let wait = self.until_next_round();
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            let started = Instant::now();
            let result = self.round().await;
            let took = i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX);
            let err = match &result {
                Ok(r) => {
                    if r.mode != Some(PolicyMode::Paused) {
                        for d in &r.decisions {
                            if d.taken {
                                tracing::info!(decision = %d, "policy decision taken");
                            } else {
                                tracing::debug!(decision = %d, "policy decision declined");
                            }
                        }
                    }
                    r.failed.first().cloned()
                }
                Err(e) => {
                    tracing::warn!(error = %e, "policy round failed");
                    Some(e.to_string())
                }
            };
            let cfg = serde_json::to_value(&self.config.policy).unwrap_or_default();
            if let Err(e) = state::record_round(
                &self.catalog,
                &self.config.identity,
                took,
                err.as_deref(),
                &cfg,
            )
            .await
            {
                tracing::warn!(error = %e, "recording the policy round failed");
            }
        }
    }

    /// Time until the next interval boundary plus `round_delay` (wall clock, so
    /// rounds line up with the buckets the model sums samples into).
    fn until_next_round(&self) -> Duration {
        let interval = self.config.policy.interval.as_millis().max(1);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let delay = self.config.round_delay.as_millis();
        let next = (now.saturating_sub(delay) / interval + 1) * interval + delay;
        Duration::from_millis(u64::try_from(next - now).unwrap_or(1000))
    }

    /// One round: read the mode; unless paused, build the input, decide, store
    /// every decision and (when active) execute the taken ones.
    ///
    /// # Errors
    /// The catalog is unreachable or inconsistent. Execution failures of single
    /// actions are not errors: they are recorded on their decision.
    pub async fn round(&mut self) -> Result<RoundReport, LoopError> {
        let st = state::get(&self.catalog).await?;
        let mut report = RoundReport {
            mode: Some(st.mode),
            ..RoundReport::default()
        };
        if st.mode == PolicyMode::Paused {
            return Ok(report);
        }
        let now: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()")
            .fetch_one(&self.catalog)
            .await?;
        let sizes = self
            .sizes
            .refresh(&self.catalog, self.config.size_refresh)
            .await?;
        let input = input::load(&self.catalog, now, &self.config.policy, sizes).await?;
        let decisions = decide(&input, &self.config.policy)?;
        let dry_run = st.mode == PolicyMode::DryRun;
        for d in &decisions {
            let id = self.store(d, dry_run).await?;
            if !d.taken || dry_run {
                continue;
            }
            let Some(action) = &d.action else { continue };
            match self.execute(action, d).await {
                Ok(move_id) => {
                    sqlx::query("UPDATE decisions SET move_id = $2 WHERE id = $1")
                        .bind(id)
                        .bind(move_id)
                        .execute(&self.catalog)
                        .await?;
                    report.moves.extend(move_id);
                }
                Err(e) => {
                    let msg = format!("{} of range {}: {e}", action.kind(), action.range_id());
                    tracing::warn!(decision_id = id, error = %e, "executing a policy decision failed");
                    sqlx::query(
                        "UPDATE decisions SET inputs = inputs || jsonb_build_object('error', $2::text)
                          WHERE id = $1",
                    )
                    .bind(id)
                    .bind(&msg)
                    .execute(&self.catalog)
                    .await?;
                    report.failed.push(msg);
                }
            }
        }
        self.retention(now).await?;
        report.decisions = decisions;
        Ok(report)
    }

    async fn store(&self, d: &Decision, dry_run: bool) -> Result<i64, LoopError> {
        Ok(sqlx::query_scalar(
            "INSERT INTO decisions (kind, taken, dry_run, reason, range_id, inputs)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(d.kind())
        .bind(d.taken)
        .bind(dry_run)
        .bind(d.reason.code())
        .bind(d.range_id())
        .bind(d.to_json())
        .fetch_one(&self.catalog)
        .await?)
    }

    /// Carries out a taken action; returns the planned move, if any.
    #[tracing::instrument(skip_all, fields(action = action.kind(), range_id = action.range_id()))]
    async fn execute(
        &self,
        action: &Action,
        d: &Decision,
    ) -> Result<Option<uuid::Uuid>, crate::Error> {
        let reason = format!("policy:{}", d.reason.code());
        let id = match action {
            Action::Isolate {
                merchant, target, ..
            } => {
                let range = crate::ops::isolate(&self.catalog, merchant).await?;
                plan_move(
                    &self.catalog,
                    Subject::Range(range),
                    target.as_str(),
                    &reason,
                )
                .await?
            }
            Action::Move {
                range_id, target, ..
            } => {
                plan_move(
                    &self.catalog,
                    Subject::Range(*range_id),
                    target.as_str(),
                    &reason,
                )
                .await?
            }
            Action::Merge { left, right, .. } => {
                crate::ops::merge(&self.catalog, *left, *right).await?;
                return Ok(None);
            }
        };
        sqlx::query("UPDATE moves SET requested_by = $2 WHERE id = $1")
            .bind(id)
            .bind(&self.config.identity)
            .execute(&self.catalog)
            .await?;
        Ok(Some(id))
    }

    async fn retention(&self, now: chrono::DateTime<chrono::Utc>) -> Result<(), LoopError> {
        let p = &self.config.policy;
        let keep = self
            .config
            .sample_retention
            .max(p.interval * (p.history_intervals + 1) * 2);
        let ago =
            |d: Duration| now - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        sqlx::query("DELETE FROM load_samples WHERE at < $1")
            .bind(ago(keep))
            .execute(&self.catalog)
            .await?;
        sqlx::query("DELETE FROM decisions WHERE at < $1")
            .bind(ago(self.config.decision_retention))
            .execute(&self.catalog)
            .await?;
        Ok(())
    }
}

/// Decisions as stored, newest first (for `GET /v1/decisions` and `explain`).
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct StoredDecision {
    pub id: i64,
    pub at: chrono::DateTime<chrono::Utc>,
    pub kind: String,
    pub taken: bool,
    pub dry_run: bool,
    pub reason: String,
    pub range_id: Option<i64>,
    pub move_id: Option<uuid::Uuid>,
    /// The decision: action, explanation, inputs (and `error` if executing failed).
    pub decision: serde_json::Value,
}

/// Filters for [`list_decisions`].
#[derive(Debug, Clone, Default)]
pub struct DecisionFilter {
    pub limit: i64,
    pub taken: Option<bool>,
    pub reason: Option<String>,
    /// Only decisions with `id < before` (paging).
    pub before: Option<i64>,
}

/// # Errors
/// The catalog is unreachable.
pub async fn list_decisions(
    catalog: &PgPool,
    f: &DecisionFilter,
) -> Result<Vec<StoredDecision>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, at, kind, taken, dry_run, reason, range_id, move_id, inputs AS decision
           FROM decisions
          WHERE ($2::boolean IS NULL OR taken = $2)
            AND ($3::text IS NULL OR reason = $3)
            AND ($4::bigint IS NULL OR id < $4)
          ORDER BY id DESC LIMIT $1",
    )
    .bind(f.limit)
    .bind(f.taken)
    .bind(f.reason.as_deref())
    .bind(f.before)
    .fetch_all(catalog)
    .await
}

//! The forward steps: copy, catch up, verify, cut over.

use super::*;

impl Engine {
    pub(super) async fn copy(&self, m: &MoveRow) -> Result<()> {
        let src = self.shard(&m.source_shard).await?;
        let dst = self.shard(&m.target_shard).await?;
        self.check_abort(m.id).await?;
        // The source must still own the range actively (a resumed move may find it
        // frozen only mid-cutover, which never reaches this step).
        let src_state: Option<String> =
            sqlx::query_scalar("SELECT state FROM owned_ranges WHERE id = $1")
                .bind(m.range_id)
                .fetch_optional(&src.pool)
                .await?;
        if src_state.as_deref() != Some("active") {
            return Err(Error::Inconsistent(format!(
                "source {} holds range {} as {src_state:?}",
                m.source_shard, m.range_id
            )));
        }
        // The change log first: every write of the range from here on is recorded,
        // long before verification takes its first horizon.
        repl::ensure_change_log(&src.pool, &m.publication, m.id, m.start_key, m.end_key).await?;
        repl::ensure_publication(&src.pool, &m.publication, m.start_key, m.end_key).await?;
        repl::ensure_slot(&src.pool, &m.slot).await?;
        let epoch: i64 = sqlx::query_scalar("SELECT epoch FROM ranges WHERE id = $1")
            .bind(m.range_id)
            .fetch_one(&self.catalog)
            .await?;
        let dst_state: Option<String> =
            sqlx::query_scalar("SELECT state FROM owned_ranges WHERE id = $1")
                .bind(m.range_id)
                .fetch_optional(&dst.pool)
                .await?;
        let has_sub = repl::subscription_oid(&dst.pool, &m.subscription)
            .await?
            .is_some();
        match dst_state.as_deref() {
            None => {
                if !has_sub && repl::range_row_count(&dst.pool, m.start_key, m.end_key).await? > 0 {
                    // leftovers of an earlier, interrupted attempt: the copy restarts
                    tracing::warn!(move_id = %m.id, "purging leftover rows on the target");
                    repl::delete_range(
                        &dst.dsn,
                        m.start_key,
                        m.end_key,
                        self.config.delete_batch,
                        None,
                    )
                    .await?;
                }
                sqlx::query(
                    "INSERT INTO owned_ranges (id, start_key, end_key, epoch, state)
                     VALUES ($1, $2, $3, $4, 'incoming')",
                )
                .bind(m.range_id)
                .bind(m.start_key)
                .bind(m.end_key)
                .bind(epoch)
                .execute(&dst.pool)
                .await?;
            }
            Some("incoming") => {}
            Some(s) => {
                return Err(Error::Inconsistent(format!(
                    "target {} already holds range {} as {s}",
                    m.target_shard, m.range_id
                )));
            }
        }
        repl::ensure_subscription(
            &dst.pool,
            &m.subscription,
            &src.dsn,
            &m.publication,
            &m.slot,
        )
        .await?;
        fail_point("move-during-copy").await?;
        let deadline = Instant::now() + self.config.sync_timeout;
        loop {
            let (n, not_ready) = repl::sync_state(&dst.pool, &m.subscription).await?;
            if n == TABLES.len() as i64 && not_ready == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(timeout(format!(
                    "waiting for the initial copy ({not_ready} of {n} tables not ready)"
                )));
            }
            self.check_abort(m.id).await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait until the slot lags by at most `catchup_max_lag_bytes`, or give up
    /// waiting (verification absorbs the rest) once the lag has not reached a new
    /// low (by more than `catchup_max_lag_bytes`) for `catchup_timeout`. That clock
    /// starts only once the subscriber confirmed progress while streaming: while the
    /// subscription is not streaming (walsender on the source or apply worker on
    /// the target gone: a shard restarting) or has not confirmed anything since,
    /// catching up has not resumed. More than `transient_retry_for` without
    /// streaming fails the step; waiting is capped at `transient_retry_for` overall.
    pub(super) async fn catch_up(&self, m: &MoveRow) -> Result<Option<i64>> {
        let src = self.shard(&m.source_shard).await?;
        let dst = self.shard(&m.target_shard).await?;
        let (cap, wait) = (self.config.transient_retry_for, self.config.catchup_timeout);
        let started = Instant::now();
        let mut deadline = started + wait;
        // (lowest lag, confirmed position when streaming was last seen to start)
        let mut best = i64::MAX;
        let mut resumed_at: Option<Option<i64>> = None;
        let mut stalled_since: Option<Instant> = None;
        loop {
            let running = repl::apply_worker_running(&dst.pool, &m.subscription).await?;
            let Some(slot) = repl::slot_state(&src.pool, &m.slot).await? else {
                return Err(Error::Inconsistent(format!(
                    "slot {} is missing on the source",
                    m.slot
                )));
            };
            let now = Instant::now();
            let lag = slot.lag.unwrap_or(i64::MAX);
            if lag <= self.config.catchup_max_lag_bytes {
                return Ok(slot.lag);
            }
            if !(running && slot.active) {
                let since = *stalled_since.get_or_insert(now);
                if now - since > cap {
                    return Err(timeout(format!(
                        "catching up: subscription {} not streaming",
                        m.subscription
                    )));
                }
                resumed_at = None;
                deadline = deadline.max(now + wait);
            } else {
                stalled_since = None;
                let from = *resumed_at.get_or_insert(slot.confirmed);
                if slot.confirmed == from {
                    // nothing confirmed since streaming (re)started
                    deadline = deadline.max(now + wait);
                } else if lag.saturating_add(self.config.catchup_max_lag_bytes) < best {
                    best = lag;
                    deadline = deadline.max(now + wait);
                }
                if now > deadline || now - started > cap {
                    tracing::info!(move_id = %m.id, lag = slot.lag, "catch-up: lag still above target, verifying anyway");
                    return Ok(slot.lag);
                }
            }
            self.check_abort(m.id).await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(super) async fn verify(&self, m: &MoveRow) -> Result<PassReport> {
        let src = self.shard(&m.source_shard).await?;
        let dst = self.shard(&m.target_shard).await?;
        let (passes, delay) = (
            self.config.verify_max_passes,
            self.config.verify_recheck_delay,
        );
        let mut report =
            verify::full_pass(&src.pool, &dst.pool, m.start_key, m.end_key, passes, delay).await?;
        for _ in 0..self.config.delta_passes_max {
            self.check_abort(m.id).await?;
            let changed =
                verify::delta_pass(&src.pool, &dst.pool, m.id, &mut report, passes, delay).await?;
            if changed <= self.config.delta_settle_rows {
                break;
            }
        }
        fail_point("move-before-money-pass").await?;
        verify::money_pass(
            &src.pool,
            &dst.pool,
            m.id,
            m.start_key,
            m.end_key,
            &mut report,
        )
        .await?;
        Ok(report)
    }
}

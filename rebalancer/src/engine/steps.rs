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

    /// Fence the source, prove the target applied everything (marker row), check
    /// what changed since the last pass, activate the target and flip the catalog.
    pub(super) async fn cutover(&self, m: &mut MoveRow, report: &PassReport) -> Result<()> {
        let src = self.shard(&m.source_shard).await?;
        let dst = self.shard(&m.target_shard).await?;
        let t0 = Instant::now();
        // (1) freeze: waits for in-flight writers of the range; new ones get SLF02
        sqlx::query("SELECT shardline_set_range_state($1, 'frozen')")
            .bind(m.range_id)
            .execute(&src.pool)
            .await?;
        let freeze = t0.elapsed();
        fail_point("move-after-cutover-frozen").await?;
        let result = self.cutover_frozen(m, report, &src, &dst, t0, freeze).await;
        if let Err(e) = &result
            && !matches!(e, Error::Crashed(_))
        {
            // Unfreeze right away unless the flip happened; abort follows.
            let st = self.load(m.id).await.ok().and_then(|r| r.state().ok());
            if st == Some(MoveState::Cutover) {
                let _ = sqlx::query(
                    "SELECT shardline_set_range_state($1, 'active') FROM owned_ranges
                      WHERE id = $1 AND state <> 'active'",
                )
                .bind(m.range_id)
                .execute(&src.pool)
                .await;
            }
        }
        result
    }

    pub(super) async fn cutover_frozen(
        &self,
        m: &mut MoveRow,
        report: &PassReport,
        src: &ShardConn,
        dst: &ShardConn,
        t0: Instant,
        freeze: Duration,
    ) -> Result<()> {
        // (2) marker row: travels through the publication after every earlier commit
        let event_id = Uuid::now_v7();
        let epoch: i64 = sqlx::query_scalar("SELECT epoch FROM ranges WHERE id = $1")
            .bind(m.range_id)
            .fetch_one(&self.catalog)
            .await?;
        insert_range_event(&src.pool, m, "cutover_marker", event_id, epoch).await?;
        let lsn: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
            .fetch_one(&src.pool)
            .await?;
        let t_marker = Instant::now();
        // (3) wait until the target applied the marker; meanwhile read the frozen
        // source side of the final check (it cannot change any more)
        let deadline = t_marker + self.config.marker_timeout;
        let wait = async {
            loop {
                let seen: Option<i32> = sqlx::query_scalar(
                    "SELECT 1 FROM range_events WHERE shard_key = $1 AND event_id = $2",
                )
                .bind(m.start_key)
                .bind(event_id)
                .fetch_optional(&dst.pool)
                .await?;
                if seen.is_some() {
                    return Ok::<_, Error>(t_marker.elapsed());
                }
                if Instant::now() > deadline {
                    return Err(timeout("waiting for the cutover marker on the target"));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        let source_side = verify::frozen_source(&src.pool, m.id, report);
        let (marker_wait, frozen) = tokio::try_join!(wait, source_side)?;
        // (4) counts, ledger sums, balances and rows changed since the last pass
        let t_check = Instant::now();
        let changed = verify::frozen_compare(&dst.pool, &frozen).await?;
        let check = t_marker.elapsed();
        let target_check = t_check.elapsed();
        self.check_abort(m.id).await?;
        // (5) activate on the target and flip the catalog in one catalog transaction
        let t_flip = Instant::now();
        let mut tx = self.catalog.begin().await?;
        let new_epoch: Option<i64> = sqlx::query_scalar(
            "UPDATE ranges SET shard_id = $2, state = 'active' WHERE id = $1 AND shard_id = $3
             RETURNING epoch",
        )
        .bind(m.range_id)
        .bind(&m.target_shard)
        .bind(&m.source_shard)
        .fetch_optional(&mut *tx)
        .await?;
        let new_epoch = new_epoch.ok_or_else(|| {
            Error::Inconsistent(format!(
                "range {} no longer on {}",
                m.range_id, m.source_shard
            ))
        })?;
        // Activation and a `moved_in` marker in one target transaction: in the
        // target's CDC stream the marker precedes every write the target makes to
        // the range as its owner (edges order the range's rows by it).
        let mut dtx = dst.pool.begin().await?;
        sqlx::query("UPDATE owned_ranges SET state = 'active', epoch = $2 WHERE id = $1")
            .bind(m.range_id)
            .bind(new_epoch)
            .execute(&mut *dtx)
            .await?;
        insert_range_event(&mut *dtx, m, "moved_in", Uuid::now_v7(), new_epoch).await?;
        dtx.commit().await?;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let pause = t0.elapsed();
        let phases = json!({
            "freeze_ms": ms(freeze),
            "marker_wait_ms": ms(marker_wait),
            "final_check_ms": ms(check),
            "final_check_target_ms": ms(target_check),
            "pause_ms": ms(pause),
        });
        let n = sqlx::query(
            "UPDATE moves SET state = 'switched', cutover_lsn = $2::pg_lsn,
                    phase_ms = phase_ms || $3, updated_at = now()
              WHERE id = $1 AND state = 'cutover'",
        )
        .bind(m.id)
        .bind(&lsn)
        .bind(&phases)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        exactly_one(n, m.id, MoveState::Cutover)?;
        self.event(
            &mut tx,
            m.id,
            Some(MoveState::Cutover),
            MoveState::Switched,
            json!({"epoch": new_epoch, "cutover_lsn": lsn, "changed_rows_checked": changed,
                   "phase_ms": phases}),
        )
        .await?;
        tx.commit().await?;
        let pause = t0.elapsed();
        m.state = MoveState::Switched.as_str().to_owned();
        // The pause as callers saw it: freeze until the flip committed.
        self.set_phase(m.id, "pause_ms", pause).await?;
        self.set_phase(m.id, "flip_ms", t_flip.elapsed()).await?;
        tracing::info!(move_id = %m.id, pause_ms = ms(pause), epoch = new_epoch, "range switched");
        Ok(())
    }
}

/// A `range_events` row of move `m` (`kind` is `cutover_marker` or `moved_in`).
/// Its shard key is the range's start key, so the move's row-filtered publication
/// and the shard's CDC stream both carry it.
async fn insert_range_event<'e>(
    exec: impl sqlx::PgExecutor<'e>,
    m: &MoveRow,
    kind: &str,
    event_id: Uuid,
    epoch: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO range_events (shard_key, event_id, kind, range_id, start_key, end_key,
                                   epoch, move_id, source_shard, target_shard)
         VALUES ($1, $2, $3, $4, $1, $5, $6, $7, $8, $9)",
    )
    .bind(m.start_key)
    .bind(event_id)
    .bind(kind)
    .bind(m.range_id)
    .bind(m.end_key)
    .bind(epoch)
    .bind(m.id)
    .bind(&m.source_shard)
    .bind(&m.target_shard)
    .execute(exec)
    .await?;
    Ok(())
}

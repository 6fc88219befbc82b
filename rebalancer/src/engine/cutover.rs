//! The cutover: the write pause, from the freeze of the range on the source to the
//! catalog flip. Everything the pause runs goes over three connections taken
//! before the freeze (source, target, catalog) on which every statement of the
//! pause was prepared and the frozen read ran once, so the pause pays round trips
//! only: no connection set-up, no parse, no cold backend caches. Round trips in
//! the pause: freeze + marker (one statement); change log + read on the source
//! while the target is polled for the marker; read on the target; BEGIN, flip,
//! activate (target), switched + event, COMMIT.

use std::sync::LazyLock;

use sqlx::pool::PoolConnection;
use sqlx::{Acquire, AssertSqlSafe, Executor, Postgres, SqlSafeStr};

use super::*;
use crate::verify::frozen;

/// `INSERT` of a `range_events` row of kind `kind` for each row of `from`, with
/// the binds of [`bind_event`]. Its shard key is the range's start key, so the
/// move's row-filtered publication and the shard's CDC stream both carry it.
fn event_insert(kind: &str, from: &str) -> String {
    format!(
        "INSERT INTO range_events (shard_key, event_id, kind, range_id, start_key, end_key,
                                   epoch, move_id, source_shard, target_shard)
         SELECT $1::bigint, $2::uuid, '{kind}', $3::bigint, $1::bigint, $4::bigint, $5::bigint,
                $6::uuid, $7::text, $8::text
           FROM {from}"
    )
}

/// Freeze the range on the source (waits for its in-flight writers; new ones get
/// SLF02) and write the cutover marker in the same transaction: the marker
/// commits after every write to the range, so its arrival on the target proves
/// they were all applied.
static FREEZE_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH f AS (SELECT shardline_set_range_state($3::bigint, 'frozen')) {}",
        event_insert("cutover_marker", "f")
    )
});

/// Activate the range on the target and write a `moved_in` marker in one
/// transaction: in the target's CDC stream the marker precedes every write the
/// target makes to the range as its owner (edges order the range's rows by it).
static ACTIVATE_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH a AS (UPDATE owned_ranges SET state = 'active', epoch = $5::bigint
                     WHERE id = $3::bigint RETURNING id) {}",
        event_insert("moved_in", "a")
    )
});

const MARKER_SEEN_SQL: &str =
    "SELECT 1 FROM range_events WHERE shard_key = $1::bigint AND event_id = $2::uuid";

/// The catalog flip, first statement of its transaction: lock the move (still in
/// `cutover`, no abort requested: an abort request waits for this transaction and
/// then finds the move switched) and move the range to the target with a new
/// epoch. Returns (abort requested, new epoch); NULLs when the move or the range
/// is not as expected.
const FLIP_SQL: &str = "WITH mv AS (SELECT abort_requested FROM moves
                  WHERE id = $4::uuid AND state = 'cutover' FOR UPDATE),
     r AS (UPDATE ranges SET shard_id = $2::text, state = 'active'
            WHERE id = $1::bigint AND shard_id = $3::text
              AND EXISTS (SELECT 1 FROM mv WHERE NOT abort_requested)
           RETURNING epoch)
SELECT (SELECT abort_requested FROM mv), (SELECT epoch FROM r)";

const SWITCHED_SQL: &str =
    "WITH u AS (UPDATE moves SET state = 'switched', cutover_lsn = $2::text::pg_lsn,
                         phase_ms = phase_ms || $3::jsonb, updated_at = now()
                   WHERE id = $1::uuid AND state = 'cutover' RETURNING id)
INSERT INTO move_events (move_id, from_state, to_state, detail)
SELECT id, 'cutover', 'switched', $4::jsonb FROM u";

fn bind_event<'q>(
    q: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    m: &'q MoveRow,
    event_id: Uuid,
    epoch: i64,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    q.bind(m.start_key)
        .bind(event_id)
        .bind(m.range_id)
        .bind(m.end_key)
        .bind(epoch)
        .bind(m.id)
        .bind(&m.source_shard)
        .bind(&m.target_shard)
}

/// The connections of the pause.
struct Conns {
    src: PoolConnection<Postgres>,
    dst: PoolConnection<Postgres>,
    catalog: PoolConnection<Postgres>,
    /// The target's activation was sent (it may have committed).
    activated: bool,
}

/// What [`Engine::prepare_cutover`] readies for the pause.
pub(super) struct Prepared {
    conns: Conns,
    /// The range's catalog epoch (fixed while the move is in `cutover`).
    epoch: i64,
    warm: Duration,
}

/// Durations inside the pause, in milliseconds.
#[derive(Default)]
struct Window {
    freeze: f64,
    marker_wait: f64,
    source_scope: f64,
    source_read: f64,
    final_check: f64,
    final_check_target: f64,
    range_flip: f64,
    activate: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Engine {
    /// Before the cutover, in `verifying`: a last delta pass, so the check inside
    /// the pause covers only the rows written since it began (milliseconds), not
    /// since the money pass; then the pause's connections, warmed.
    pub(super) async fn prepare_cutover(
        &self,
        m: &MoveRow,
        report: &mut PassReport,
    ) -> Result<Prepared> {
        let src = self.shard(&m.source_shard).await?;
        let dst = self.shard(&m.target_shard).await?;
        let (passes, delay) = (
            self.config.verify_max_passes,
            self.config.verify_recheck_delay,
        );
        verify::delta_pass(&src.pool, &dst.pool, m.id, report, passes, delay).await?;
        let t = Instant::now();
        let epoch: i64 = sqlx::query_scalar("SELECT epoch FROM ranges WHERE id = $1")
            .bind(m.range_id)
            .fetch_one(&self.catalog)
            .await?;
        let conns = self.pause_conns(&src, &dst, m, report).await?;
        Ok(Prepared {
            conns,
            epoch,
            warm: t.elapsed(),
        })
    }

    /// Fence the source, prove the target applied everything (marker row), check
    /// what changed since the last pass, activate the target and flip the catalog.
    pub(super) async fn cutover(
        &self,
        m: &mut MoveRow,
        report: &PassReport,
        mut p: Prepared,
    ) -> Result<()> {
        fail_point("move-before-cutover-freeze").await?;
        let result = self.pause(m, report, &mut p).await;
        if let Err(e) = &result
            && !matches!(e, Error::Crashed(_))
        {
            self.release_after_failed_pause(m, p.conns.activated).await;
        }
        result
    }

    /// After a pause failed before the flip committed (the move stays in
    /// `cutover`; the abort follows): unfreeze the source at once. If the target
    /// may be active already (its activation commits before the catalog flip),
    /// it goes back to `incoming` first; if that fails, both stay as they are
    /// for the rollback, which deletes the target's range before it unfreezes
    /// the source. Never are both `active`.
    async fn release_after_failed_pause(&self, m: &MoveRow, activated: bool) {
        let st = self.load(m.id).await.ok().and_then(|r| r.state().ok());
        if st != Some(MoveState::Cutover) {
            return;
        }
        if activated {
            let Ok(dst) = self.shard(&m.target_shard).await else {
                return;
            };
            if set_owned_state(&dst.pool, m.range_id, "incoming")
                .await
                .is_err()
            {
                return;
            }
        }
        if let Ok(src) = self.shard(&m.source_shard).await {
            let _ = set_owned_state(&src.pool, m.range_id, "active").await;
        }
    }

    /// Take the pause's connections and run each of its statements there once
    /// (prepared, or executed harmlessly: the frozen read with the current scope,
    /// a marker lookup that finds nothing).
    async fn pause_conns(
        &self,
        src: &ShardConn,
        dst: &ShardConn,
        m: &MoveRow,
        report: &PassReport,
    ) -> Result<Conns> {
        let (mut c_src, mut c_dst, mut c_cat) = tokio::try_join!(
            src.pool.acquire(),
            dst.pool.acquire(),
            self.catalog.acquire()
        )?;
        // Plan the pause's reads once, here: generic plans, built by the warm-up
        // run. Their row estimates for the key arrays are fixed (not the real
        // sizes), so a branch scans a table instead of probing its index only
        // when that table is about as cheap to scan as a hundred probes. The
        // setting stays with these two connections: they are closed, not
        // returned to the pool, when the cutover is over (or dropped).
        for c in [&mut c_src, &mut c_dst] {
            c.close_on_drop();
            sqlx::query("SET plan_cache_mode = force_generic_plan")
                .execute(&mut **c)
                .await?;
        }
        let scope = frozen::scope(&mut c_src, m.id, report).await?;
        let warm_src = async {
            frozen::read(&mut c_src, &scope).await?;
            c_src
                .prepare(AssertSqlSafe(FREEZE_SQL.as_str()).into_sql_str())
                .await?;
            Ok::<_, Error>(())
        };
        let warm_dst = async {
            frozen::read(&mut c_dst, &scope).await?;
            sqlx::query(MARKER_SEEN_SQL)
                .bind(m.start_key)
                .bind(Uuid::nil())
                .fetch_optional(&mut *c_dst)
                .await?;
            c_dst
                .prepare(AssertSqlSafe(ACTIVATE_SQL.as_str()).into_sql_str())
                .await?;
            Ok::<_, Error>(())
        };
        let warm_cat = async {
            c_cat.prepare(FLIP_SQL.into_sql_str()).await?;
            c_cat.prepare(SWITCHED_SQL.into_sql_str()).await?;
            Ok::<_, Error>(())
        };
        tokio::try_join!(warm_src, warm_dst, warm_cat)?;
        Ok(Conns {
            src: c_src,
            dst: c_dst,
            catalog: c_cat,
            activated: false,
        })
    }

    async fn pause(&self, m: &mut MoveRow, report: &PassReport, p: &mut Prepared) -> Result<()> {
        let (c, epoch, warm) = (&mut p.conns, p.epoch, p.warm);
        let mut w = Window::default();
        let t0 = Instant::now();
        // (1) freeze + marker
        let event_id = Uuid::now_v7();
        let n = bind_event(
            sqlx::query(AssertSqlSafe(FREEZE_SQL.as_str())),
            m,
            event_id,
            epoch,
        )
        .execute(&mut *c.src)
        .await?
        .rows_affected();
        if n != 1 {
            return Err(Error::Inconsistent(
                "the cutover marker was not written".into(),
            ));
        }
        w.freeze = ms(t0.elapsed());
        fail_point("move-after-cutover-frozen").await?;
        // (2) read the frozen source (it cannot change any more): the change log
        // gives the scope, then one read. The target, once it applied the marker,
        // reads the same scope: both reads overlap.
        let t_marker = Instant::now();
        let deadline = t_marker + self.config.marker_timeout;
        let (c_src, c_dst) = (&mut c.src, &mut c.dst);
        let (scope_tx, scope_rx) = tokio::sync::oneshot::channel();
        let source_side = async {
            let scope = frozen::scope(c_src, m.id, report).await?;
            let _ = scope_tx.send(scope.clone());
            let t_scope = t_marker.elapsed();
            let read = frozen::read(c_src, &scope).await?;
            let t_read = t_marker.elapsed();
            // the source's WAL position after the marker committed (recorded as
            // `cutover_lsn`): no write of the range follows it
            let lsn: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
                .fetch_one(&mut **c_src)
                .await?;
            Ok::<_, Error>((scope, read, lsn, t_scope, t_read))
        };
        let target_side = async {
            loop {
                let seen: Option<i32> = sqlx::query_scalar(MARKER_SEEN_SQL)
                    .bind(m.start_key)
                    .bind(event_id)
                    .fetch_optional(&mut **c_dst)
                    .await?;
                if seen.is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(timeout("waiting for the cutover marker on the target"));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let marker_wait = t_marker.elapsed();
            let Ok(scope) = scope_rx.await else {
                // the source side failed: its error is the one returned
                return Ok::<_, Error>(None);
            };
            let t_read = Instant::now();
            let read = frozen::read(c_dst, &scope).await?;
            Ok(Some((marker_wait, read, t_read.elapsed())))
        };
        let ((scope, src_read, lsn, source_scope, source_read), dst) =
            tokio::try_join!(source_side, target_side)?;
        let (marker_wait, dst_read, target_read) =
            dst.ok_or_else(|| Error::Inconsistent("the frozen source read was lost".into()))?;
        // (3) rows written since the last pass and money since H: equal?
        frozen::check(&src_read, &dst_read)?;
        w.marker_wait = ms(marker_wait);
        w.source_read = ms(source_read);
        w.source_scope = ms(source_scope);
        w.final_check_target = ms(target_read);
        w.final_check = ms(t_marker.elapsed());
        // (4) flip the catalog and activate the target in one catalog transaction
        let t_flip = Instant::now();
        let mut tx = (&mut *c.catalog).begin().await?;
        let (abort, new_epoch): (Option<bool>, Option<i64>) = sqlx::query_as(FLIP_SQL)
            .bind(m.range_id)
            .bind(&m.target_shard)
            .bind(&m.source_shard)
            .bind(m.id)
            .fetch_one(&mut *tx)
            .await?;
        let new_epoch = match (abort, new_epoch) {
            (Some(true), _) => return Err(Error::AbortRequested),
            (None, _) => {
                return Err(Error::Conflict {
                    id: m.id,
                    expected: MoveState::Cutover,
                });
            }
            (Some(false), None) => {
                return Err(Error::Inconsistent(format!(
                    "range {} no longer on {}",
                    m.range_id, m.source_shard
                )));
            }
            (Some(false), Some(e)) => e,
        };
        w.range_flip = ms(t_flip.elapsed());
        let t_act = Instant::now();
        c.activated = true;
        let n = bind_event(
            sqlx::query(AssertSqlSafe(ACTIVATE_SQL.as_str())),
            m,
            Uuid::now_v7(),
            new_epoch,
        )
        .execute(&mut *c.dst)
        .await?
        .rows_affected();
        if n != 1 {
            return Err(Error::Inconsistent(format!(
                "range {} is not held by target {}",
                m.range_id, m.target_shard
            )));
        }
        w.activate = ms(t_act.elapsed());
        fail_point("move-after-target-activated").await?;
        let phases = json!({
            "pause_warm_ms": ms(warm),
            "freeze_ms": w.freeze,
            "marker_wait_ms": w.marker_wait,
            "source_scope_ms": w.source_scope,
            "source_read_ms": w.source_read,
            "frozen_rows": scope.rows(),
            "frozen_post_h_keys": scope.post_h_keys(),
            "frozen_merchants": scope.merchants(),
            "final_check_ms": w.final_check,
            "final_check_target_ms": w.final_check_target,
            "range_flip_ms": w.range_flip,
            "activate_ms": w.activate,
            "pause_ms": ms(t0.elapsed()),
        });
        let detail = json!({"epoch": new_epoch, "cutover_lsn": lsn,
                            "changed_rows_checked": scope.rows(), "phase_ms": phases});
        let n = sqlx::query(SWITCHED_SQL)
            .bind(m.id)
            .bind(&lsn)
            .bind(&phases)
            .bind(&detail)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        exactly_one(n, m.id, MoveState::Cutover)?;
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

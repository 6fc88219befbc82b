//! Catalog-level entry points any process may call, and the engine as a service.

use super::*;

/// Record a move of `subject` to shard `to` in state `planned`; returns its id.
pub async fn plan_move(catalog: &PgPool, subject: Subject, to: &str, reason: &str) -> Result<Uuid> {
    let range: Option<(i64, i64, i64, String)> = match &subject {
        Subject::Range(id) => {
            sqlx::query_as("SELECT id, start_key, end_key, shard_id FROM ranges WHERE id = $1")
                .bind(id)
                .fetch_optional(catalog)
                .await?
        }
        Subject::Merchant(m) => {
            let key = i64::from(shardline_core::shard_key(m));
            sqlx::query_as(
                "SELECT id, start_key, end_key, shard_id FROM ranges
                  WHERE start_key <= $1 AND end_key > $1",
            )
            .bind(key)
            .fetch_optional(catalog)
            .await?
        }
    };
    let (range_id, start, end, from) =
        range.ok_or_else(|| Error::Invalid(format!("no range for {subject:?}")))?;
    if from == to {
        return Err(Error::Invalid(format!(
            "range {range_id} is already on {to}"
        )));
    }
    let target_state: Option<String> = sqlx::query_scalar("SELECT state FROM shards WHERE id = $1")
        .bind(to)
        .fetch_optional(catalog)
        .await?;
    match target_state.as_deref() {
        None => return Err(Error::UnknownShard(to.to_owned())),
        Some("active") => {}
        Some(s) => return Err(Error::Invalid(format!("target shard {to} is {s}"))),
    }
    let id = Uuid::now_v7();
    let name = object_name(id);
    let mut tx = catalog.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO moves (id, range_id, start_key, end_key, source_shard, target_shard,
                            reason, publication, slot, subscription)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $8)",
    )
    .bind(id)
    .bind(range_id)
    .bind(start)
    .bind(end)
    .bind(&from)
    .bind(to)
    .bind(reason)
    .bind(&name)
    .execute(&mut *tx)
    .await;
    if let Err(e) = inserted {
        if e.as_database_error()
            .is_some_and(|d| d.code().as_deref() == Some("23505"))
        {
            return Err(Error::Invalid(format!(
                "range {range_id} already has an unfinished move"
            )));
        }
        return Err(e.into());
    }
    sqlx::query(
        "INSERT INTO move_events (move_id, from_state, to_state, detail) VALUES ($1, NULL, 'planned', $2)",
    )
    .bind(id)
    .bind(json!({"range_id": range_id, "start_key": start, "end_key": end,
                 "source": from, "target": to, "reason": reason}))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(move_id = %id, range_id, %from, %to, "move planned");
    Ok(id)
}

/// Ask a move to roll back (any process may; the leader engine acts on it). Returns false when it is past the point of no
/// return (`switched` or later) or already finished.
pub async fn request_abort(catalog: &PgPool, id: Uuid) -> Result<bool> {
    let mut tx = catalog.begin().await?;
    let st: Option<String> = sqlx::query_scalar(
        "UPDATE moves SET abort_requested = true, updated_at = now()
          WHERE id = $1 AND state IN ('planned','copying','catching_up','verifying','cutover','aborting')
          RETURNING state",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(st) = st else {
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM moves WHERE id = $1")
            .bind(id)
            .fetch_optional(catalog)
            .await?;
        return exists.map(|_| false).ok_or(Error::NotFound(id));
    };
    sqlx::query(
        "INSERT INTO move_events (move_id, from_state, to_state, detail) VALUES ($1, $2, $2, $3)",
    )
    .bind(id)
    .bind(&st)
    .bind(json!({"abort_requested": true}))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// The engine as a service: become leader (waiting while another engine leads),
/// reconcile orphans, then drive every unfinished move until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    let catalog = PgPoolOptions::new()
        .max_connections(8)
        .connect(&config.catalog_url)
        .await?;
    let poll = config.poll_interval;
    let engine = loop {
        match Engine::new(catalog.clone(), config.clone()).await {
            Ok(e) => break e,
            Err(Error::NotLeader) => {
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(poll) => {}
                }
            }
            Err(e) => return Err(e),
        }
    };
    tracing::info!("rebalancer engine is the leader");
    // The policy loop runs only while this engine leads; it stops with it.
    let policy_stop = shutdown.child_token();
    let _stop_policy = policy_stop.clone().drop_guard();
    if let Some(cfg) = config.policy.clone() {
        match crate::autopilot::PolicyLoop::new(catalog.clone(), cfg) {
            Ok(l) => {
                tokio::spawn(l.run(policy_stop));
            }
            Err(e) => return Err(Error::Invalid(format!("policy configuration: {e}"))),
        }
    }
    let mut reconcile = true;
    while !shutdown.is_cancelled() {
        if reconcile {
            if let Err(e) = engine.reconcile_orphans().await {
                tracing::warn!(error = %e, "orphan reconciliation failed");
            }
            reconcile = false;
        }
        let ids = match engine.unfinished().await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "listing moves failed");
                Vec::new()
            }
        };
        for id in ids {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                r = engine.run_move(id) => match r {
                    Ok(st) => {
                        tracing::info!(move_id = %id, state = %st, "move finished");
                        reconcile = true;
                    }
                    Err(e) => tracing::warn!(move_id = %id, error = %e, "move did not finish"),
                },
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(poll) => {}
        }
    }
    Ok(())
}

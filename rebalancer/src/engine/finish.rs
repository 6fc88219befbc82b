//! Cleanup after the switch, abort, crash recovery and orphan reconciliation.

use super::*;

impl Engine {
    pub(super) async fn drop_replication(
        &self,
        m: &MoveRow,
        src: &ShardConn,
        dst: &ShardConn,
    ) -> Result<()> {
        if let Some(oid) = repl::drop_subscription(&dst.pool, &m.subscription).await? {
            repl::drop_sync_slots(&src.pool, oid).await?;
        }
        repl::drop_slot(&src.pool, &m.slot).await?;
        repl::drop_publication(&src.pool, &m.publication).await?;
        repl::drop_change_log(&src.pool, &m.publication, m.id).await?;
        Ok(())
    }

    /// After the flip: replication away, source rows and owned range gone.
    pub(super) async fn cleanup(&self, m: &MoveRow) -> Result<u64> {
        let src = self.shard(&m.source_shard).await?;
        let dst = self.shard(&m.target_shard).await?;
        self.drop_replication(m, &src, &dst).await?;
        let origin = object_name(m.id);
        let deleted = repl::delete_range(
            &src.dsn,
            m.start_key,
            m.end_key,
            self.config.delete_batch,
            Some(&origin),
        )
        .await?;
        sqlx::query("DELETE FROM owned_ranges WHERE id = $1")
            .bind(m.range_id)
            .execute(&src.pool)
            .await?;
        Ok(deleted)
    }

    /// Roll back: replication away, copied rows and the owned range gone from the
    /// target, the source range active again.
    pub(super) async fn teardown(&self, m: &MoveRow) -> Result<u64> {
        let owner: String = sqlx::query_scalar("SELECT shard_id FROM ranges WHERE id = $1")
            .bind(m.range_id)
            .fetch_one(&self.catalog)
            .await?;
        if owner != m.source_shard {
            return Err(Error::Inconsistent(format!(
                "refusing to roll back: range {} is owned by {owner}",
                m.range_id
            )));
        }
        let src = self.shard(&m.source_shard).await?;
        let dst = self.shard(&m.target_shard).await?;
        self.drop_replication(m, &src, &dst).await?;
        let deleted = repl::delete_range(
            &dst.dsn,
            m.start_key,
            m.end_key,
            self.config.delete_batch,
            None,
        )
        .await?;
        sqlx::query("DELETE FROM owned_ranges WHERE id = $1")
            .bind(m.range_id)
            .execute(&dst.pool)
            .await?;
        set_owned_state(&src.pool, m.range_id, "active").await?;
        Ok(deleted)
    }

    pub(super) async fn finish_abort(&self, m: &mut MoveRow, deleted: u64) -> Result<()> {
        let mut tx = self.catalog.begin().await?;
        // A new epoch releases requests routers hold for this range.
        sqlx::query("UPDATE ranges SET state = 'active' WHERE id = $1 AND shard_id = $2")
            .bind(m.range_id)
            .bind(&m.source_shard)
            .execute(&mut *tx)
            .await?;
        let n = sqlx::query(
            "UPDATE moves SET state = 'aborted', updated_at = now(), finished_at = now()
              WHERE id = $1 AND state = 'aborting'",
        )
        .bind(m.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        exactly_one(n, m.id, MoveState::Aborting)?;
        self.event(
            &mut tx,
            m.id,
            Some(MoveState::Aborting),
            MoveState::Aborted,
            json!({"target_rows_deleted": deleted}),
        )
        .await?;
        tx.commit().await?;
        m.state = MoveState::Aborted.as_str().to_owned();
        tracing::info!(move_id = %m.id, "move aborted");
        Ok(())
    }

    /// Ids of every move not yet `done`/`aborted`, oldest first.
    pub async fn unfinished(&self) -> Result<Vec<Uuid>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM moves WHERE state NOT IN ('done', 'aborted') ORDER BY created_at",
        )
        .fetch_all(&self.catalog)
        .await?)
    }

    /// Resume (or roll back) every unfinished move; returns where each ended or why
    /// it could not proceed.
    pub async fn resume_all(&self) -> Result<Vec<(Uuid, Result<MoveState>)>> {
        let mut out = Vec::new();
        for id in self.unfinished().await? {
            let r = self.run_move(id).await;
            if let Err(e) = &r {
                tracing::warn!(move_id = %id, error = %e, "resume failed");
            }
            out.push((id, r));
        }
        Ok(out)
    }

    /// Drop every `sl_mv_%` publication, slot, subscription and replication origin
    /// on any shard whose move is finished or unknown. Returns what it dropped.
    pub async fn reconcile_orphans(&self) -> Result<Vec<String>> {
        let shard_ids: Vec<String> = sqlx::query_scalar("SELECT id FROM shards ORDER BY id")
            .fetch_all(&self.catalog)
            .await?;
        let mut states: HashMap<Uuid, Option<MoveState>> = HashMap::new();
        let mut listed = Vec::new();
        for id in &shard_ids {
            let s = self.shard(id).await?;
            let objs = repl::list_move_objects(&s.pool).await?;
            listed.push((id.clone(), s, objs));
        }
        let mut dropped = Vec::new();
        // subscriptions first (they hold walsenders on the slots)
        for phase in 0..2 {
            for (shard, s, (pubs, slots, subs, origins)) in &listed {
                let names: Vec<(&str, &String)> = if phase == 0 {
                    subs.iter().map(|n| ("subscription", n)).collect()
                } else {
                    slots
                        .iter()
                        .map(|n| ("slot", n))
                        .chain(pubs.iter().map(|n| ("publication", n)))
                        .chain(origins.iter().map(|n| ("origin", n)))
                        .collect()
                };
                for (kind, name) in names {
                    let is_orphan = match move_id_of(name) {
                        None => true,
                        Some(mid) => {
                            if let std::collections::hash_map::Entry::Vacant(e) = states.entry(mid)
                            {
                                let st: Option<String> =
                                    sqlx::query_scalar("SELECT state FROM moves WHERE id = $1")
                                        .bind(mid)
                                        .fetch_optional(&self.catalog)
                                        .await?;
                                e.insert(st.map(|s| s.parse()).transpose()?);
                            }
                            states[&mid].is_none_or(|st| st.is_terminal())
                        }
                    };
                    if !is_orphan {
                        continue;
                    }
                    tracing::warn!(%shard, kind, name = %name, "dropping orphaned replication object");
                    match kind {
                        "subscription" => {
                            repl::drop_subscription(&s.pool, name).await?;
                        }
                        "slot" => repl::drop_slot(&s.pool, name).await?,
                        "publication" => repl::drop_publication(&s.pool, name).await?,
                        _ => repl::drop_origin_pool(&s.pool, name).await?,
                    }
                    dropped.push(format!("{shard}:{kind}:{name}"));
                }
            }
        }
        // change logs of finished or unknown moves
        for (shard, s, _) in &listed {
            for mid in repl::list_change_logs(&s.pool).await? {
                let st: Option<String> =
                    sqlx::query_scalar("SELECT state FROM moves WHERE id = $1")
                        .bind(mid)
                        .fetch_optional(&self.catalog)
                        .await?;
                let st: Option<MoveState> = st.map(|s| s.parse()).transpose()?;
                if st.is_none_or(|st| st.is_terminal()) {
                    tracing::warn!(%shard, move_id = %mid, "dropping orphaned change log");
                    repl::drop_change_log(&s.pool, &object_name(mid), mid).await?;
                    dropped.push(format!("{shard}:change_log:{}", object_name(mid)));
                }
            }
        }
        Ok(dropped)
    }
}

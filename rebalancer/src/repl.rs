//! Idempotent replication plumbing on the shard clusters: publication and slot on
//! the source, subscription on the target, teardown, and batched range deletes.
//! Every "create" checks the catalog views first (`IF NOT EXISTS` semantics).

use std::time::{Duration, Instant};

use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};

use crate::model::{Error, Result, move_id_of};

/// The shard-data tables a move carries, with their primary-key columns.
pub const TABLES: [(&str, &str); 7] = [
    ("merchants", "shard_key, merchant_id"),
    ("payments", "shard_key, merchant_id, payment_id"),
    ("refunds", "shard_key, merchant_id, refund_id"),
    ("ledger_entries", "shard_key, journal_id, line"),
    ("balances", "shard_key, merchant_id, currency, account"),
    ("idempotency_keys", "shard_key, merchant_id, idem_key"),
    ("range_events", "shard_key, event_id"),
];

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

pub async fn publication_exists(pool: &PgPool, name: &str) -> Result<bool> {
    Ok(
        sqlx::query_scalar::<_, i32>("SELECT 1 FROM pg_publication WHERE pubname = $1")
            .bind(name)
            .fetch_optional(pool)
            .await?
            .is_some(),
    )
}

/// `CREATE PUBLICATION name FOR TABLE t WHERE (shard_key in [s, e)), ...` unless it exists.
pub async fn ensure_publication(pool: &PgPool, name: &str, start: i64, end: i64) -> Result<bool> {
    if publication_exists(pool, name).await? {
        return Ok(false);
    }
    let tables = TABLES
        .iter()
        .map(|(t, _)| format!("{t} WHERE (shard_key >= {start} AND shard_key < {end})"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "CREATE PUBLICATION {} FOR TABLE {tables}",
        quote_ident(name)
    );
    sqlx::raw_sql(AssertSqlSafe(sql)).execute(pool).await?;
    Ok(true)
}

pub async fn drop_publication(pool: &PgPool, name: &str) -> Result<()> {
    let sql = format!("DROP PUBLICATION IF EXISTS {}", quote_ident(name));
    sqlx::raw_sql(AssertSqlSafe(sql)).execute(pool).await?;
    Ok(())
}

pub async fn slot_exists(pool: &PgPool, name: &str) -> Result<bool> {
    Ok(
        sqlx::query_scalar::<_, i32>("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1")
            .bind(name)
            .fetch_optional(pool)
            .await?
            .is_some(),
    )
}

pub async fn ensure_slot(pool: &PgPool, name: &str) -> Result<bool> {
    if slot_exists(pool, name).await? {
        return Ok(false);
    }
    sqlx::query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')")
        .bind(name)
        .execute(pool)
        .await?;
    Ok(true)
}

/// Drop a slot, waiting (bounded) for a walsender that still uses it to go away.
pub async fn drop_slot(pool: &PgPool, name: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let active: Option<(bool, Option<i32>)> = sqlx::query_as(
            "SELECT active, active_pid FROM pg_replication_slots WHERE slot_name = $1",
        )
        .bind(name)
        .fetch_optional(pool)
        .await?;
        match active {
            None => return Ok(()),
            Some((false, _)) => {
                match sqlx::query("SELECT pg_drop_replication_slot($1)")
                    .bind(name)
                    .execute(pool)
                    .await
                {
                    Ok(_) => return Ok(()),
                    // raced with a walsender (re)attaching, or another dropper
                    Err(e) if Instant::now() < deadline => {
                        tracing::debug!(slot = name, error = %e, "slot drop retry");
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Some((true, pid)) => {
                if Instant::now() > deadline {
                    // A walsender whose subscriber is gone: end it.
                    if let Some(pid) = pid {
                        sqlx::query("SELECT pg_terminate_backend($1)")
                            .bind(pid)
                            .execute(pool)
                            .await?;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Drop the table-sync slots a subscription (by oid) may have left on its publisher.
pub async fn drop_sync_slots(pool: &PgPool, suboid: i64) -> Result<()> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT slot_name::text FROM pg_replication_slots WHERE slot_name LIKE $1",
    )
    .bind(format!("pg_{suboid}_sync_%"))
    .fetch_all(pool)
    .await?;
    for n in names {
        drop_slot(pool, &n).await?;
    }
    Ok(())
}

pub async fn subscription_oid(pool: &PgPool, name: &str) -> Result<Option<i64>> {
    Ok(
        sqlx::query_scalar::<_, i64>("SELECT oid::bigint FROM pg_subscription WHERE subname = $1")
            .bind(name)
            .fetch_optional(pool)
            .await?,
    )
}

/// `CREATE SUBSCRIPTION` on the target against an existing slot, with initial copy.
pub async fn ensure_subscription(
    pool: &PgPool,
    name: &str,
    source_conninfo: &str,
    publication: &str,
    slot: &str,
) -> Result<bool> {
    if subscription_oid(pool, name).await?.is_some() {
        return Ok(false);
    }
    let sql = format!(
        "CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} \
         WITH (create_slot = false, slot_name = {}, copy_data = true)",
        quote_ident(name),
        quote_literal(source_conninfo),
        quote_ident(publication),
        quote_literal(slot),
    );
    sqlx::raw_sql(AssertSqlSafe(sql)).execute(pool).await?;
    Ok(true)
}

/// Detach and drop a subscription without touching its publisher (the slot is
/// dropped separately on the source). Returns the oid it had, if it existed.
pub async fn drop_subscription(pool: &PgPool, name: &str) -> Result<Option<i64>> {
    let Some(oid) = subscription_oid(pool, name).await? else {
        return Ok(None);
    };
    let q = quote_ident(name);
    sqlx::raw_sql(AssertSqlSafe(format!("ALTER SUBSCRIPTION {q} DISABLE")))
        .execute(pool)
        .await?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "ALTER SUBSCRIPTION {q} SET (slot_name = NONE)"
    )))
    .execute(pool)
    .await?;
    sqlx::raw_sql(AssertSqlSafe(format!("DROP SUBSCRIPTION IF EXISTS {q}")))
        .execute(pool)
        .await?;
    Ok(Some(oid))
}

/// (tables known to the subscription, tables not yet in state 'r').
pub async fn sync_state(pool: &PgPool, subscription: &str) -> Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE sr.srsubstate <> 'r')
           FROM pg_subscription_rel sr JOIN pg_subscription s ON s.oid = sr.srsubid
          WHERE s.subname = $1",
    )
    .bind(subscription)
    .fetch_one(pool)
    .await?)
}

/// A slot's progress (see [`slot_state`]).
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct SlotState {
    /// Bytes of WAL the consumer has not confirmed yet.
    pub lag: Option<i64>,
    /// A consumer (walsender) is attached.
    pub active: bool,
    /// The confirmed position, in bytes from 0/0.
    pub confirmed: Option<i64>,
}

/// The slot's lag, consumer and confirmed position; `None`: no such slot.
pub async fn slot_state(pool: &PgPool, slot: &str) -> Result<Option<SlotState>> {
    Ok(sqlx::query_as(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint AS lag, active,
                pg_wal_lsn_diff(confirmed_flush_lsn, '0/0')::bigint AS confirmed
           FROM pg_replication_slots WHERE slot_name = $1",
    )
    .bind(slot)
    .fetch_optional(pool)
    .await?)
}

/// Whether the subscription's apply worker runs on the target.
pub async fn apply_worker_running(pool: &PgPool, subscription: &str) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_stat_subscription
                         WHERE subname = $1 AND relid IS NULL AND pid IS NOT NULL)",
    )
    .bind(subscription)
    .fetch_one(pool)
    .await?)
}

/// Rows of the range on a shard, all tables.
pub async fn range_row_count(pool: &PgPool, start: i64, end: i64) -> Result<i64> {
    let mut total = 0;
    for (t, _) in TABLES {
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM {t} WHERE shard_key >= $1 AND shard_key < $2"
        )))
        .bind(start)
        .bind(end)
        .fetch_one(pool)
        .await?;
        total += n;
    }
    Ok(total)
}

/// Delete every row of `[start, end)` from a shard in batches, in a session with
/// `session_replication_role = replica` (bypasses the fence and the ledger
/// immutability trigger) and, when `origin` is given, under that replication
/// origin so change-data-capture readers can tell these deletes from user writes.
pub async fn delete_range(
    dsn: &str,
    start: i64,
    end: i64,
    batch: i64,
    origin: Option<&str>,
) -> Result<u64> {
    let mut conn = PgConnection::connect(dsn).await?;
    sqlx::raw_sql("SET session_replication_role = replica")
        .execute(&mut conn)
        .await?;
    if let Some(o) = origin {
        sqlx::query(
            "SELECT pg_replication_origin_create($1)
              WHERE NOT EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = $1)",
        )
        .bind(o)
        .execute(&mut conn)
        .await?;
        sqlx::query("SELECT pg_replication_origin_session_setup($1)")
            .bind(o)
            .execute(&mut conn)
            .await?;
    }
    let mut deleted = 0u64;
    for (t, _) in TABLES {
        let sql = format!(
            "DELETE FROM {t} WHERE ctid = ANY(ARRAY(
                SELECT ctid FROM {t} WHERE shard_key >= $1 AND shard_key < $2 LIMIT $3))"
        );
        loop {
            let n = sqlx::query(AssertSqlSafe(sql.clone()))
                .bind(start)
                .bind(end)
                .bind(batch)
                .execute(&mut conn)
                .await?
                .rows_affected();
            deleted += n;
            if n == 0 {
                break;
            }
        }
    }
    if let Some(o) = origin {
        sqlx::raw_sql("SELECT pg_replication_origin_session_reset()")
            .execute(&mut conn)
            .await?;
        drop_origin(&mut conn, o).await?;
    }
    conn.close().await?;
    Ok(deleted)
}

async fn drop_origin(conn: &mut PgConnection, name: &str) -> Result<()> {
    sqlx::query(
        "SELECT pg_replication_origin_drop($1)
          WHERE EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = $1)",
    )
    .bind(name)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Drop a replication origin left by an interrupted cleanup (not in use).
pub async fn drop_origin_pool(pool: &PgPool, name: &str) -> Result<()> {
    let mut conn = pool.acquire().await?;
    drop_origin(&mut conn, name).await
}

/// Names of `sl_mv_%` objects on a shard: (publications, slots, subscriptions, origins).
pub async fn list_move_objects(
    pool: &PgPool,
) -> Result<(Vec<String>, Vec<String>, Vec<String>, Vec<String>)> {
    let pubs = sqlx::query_scalar(
        "SELECT pubname::text FROM pg_publication WHERE pubname LIKE 'sl\\_mv\\_%'",
    )
    .fetch_all(pool)
    .await?;
    let slots = sqlx::query_scalar(
        "SELECT slot_name::text FROM pg_replication_slots WHERE slot_name LIKE 'sl\\_mv\\_%'",
    )
    .fetch_all(pool)
    .await?;
    let subs = sqlx::query_scalar(
        "SELECT subname::text FROM pg_subscription WHERE subname LIKE 'sl\\_mv\\_%'",
    )
    .fetch_all(pool)
    .await?;
    let origins = sqlx::query_scalar(
        "SELECT roname::text FROM pg_replication_origin WHERE roname LIKE 'sl\\_mv\\_%'",
    )
    .fetch_all(pool)
    .await?;
    Ok((pubs, slots, subs, origins))
}

/// Trigger names of a move's change log on one table.
fn log_triggers(name: &str) -> [String; 2] {
    [format!("{name}_iu"), format!("{name}_d")]
}

/// Run `sql` (DDL on one table) in its own transaction with a short lock timeout,
/// retried while the lock is busy: waiting in the lock queue would stall every
/// writer of the table behind it, and one table per transaction cannot deadlock
/// with writers that hold locks on several.
async fn table_ddl(pool: &PgPool, sql: &str) -> Result<()> {
    let mut delay = Duration::from_millis(20);
    for attempt in 0.. {
        match table_ddl_once(pool, sql).await {
            Ok(()) => return Ok(()),
            Err(e)
                if attempt < 50
                    && e.as_database_error()
                        .and_then(|d| d.code())
                        .is_some_and(|c| c == "55P03" || c == "40P01") =>
            {
                tracing::debug!(error = %e, "table DDL: lock busy, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(500));
            }
            Err(e) => return Err(e.into()),
        }
    }
    unreachable!("the loop returns")
}

/// One attempt, in a transaction that is rolled back when any statement fails
/// (a `BEGIN; ...; COMMIT;` string would leave the pooled connection inside an
/// aborted transaction after a lock timeout, failing every later query on it).
async fn table_ddl_once(pool: &PgPool, sql: &str) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::raw_sql("SET LOCAL lock_timeout = '200ms'")
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Create (or replace) the move's change-log triggers on every moved table of the
/// source: rows of `[start, end)` written from now on are recorded in
/// `move_changes` with the writer's transaction id. One table at a time: the DDL
/// waits for the table's in-flight writers, so every write it does not log
/// belongs to a transaction that committed before the trigger existed.
pub async fn ensure_change_log(
    pool: &PgPool,
    name: &str,
    move_id: uuid::Uuid,
    start: i64,
    end: i64,
) -> Result<()> {
    let [iu, d] = log_triggers(name);
    for (t, pk) in TABLES {
        let pk = pk.replace(' ', "");
        let args = format!(
            "{}, {}",
            quote_literal(&move_id.to_string()),
            quote_literal(&pk)
        );
        table_ddl(
            pool,
            &format!(
                "CREATE OR REPLACE TRIGGER {} AFTER INSERT OR UPDATE ON {t} FOR EACH ROW
                   WHEN (NEW.shard_key >= {start} AND NEW.shard_key < {end})
                   EXECUTE FUNCTION shardline_move_log({args});
                 CREATE OR REPLACE TRIGGER {} AFTER DELETE ON {t} FOR EACH ROW
                   WHEN (OLD.shard_key >= {start} AND OLD.shard_key < {end})
                   EXECUTE FUNCTION shardline_move_log({args})",
                quote_ident(&iu),
                quote_ident(&d)
            ),
        )
        .await?;
    }
    Ok(())
}

/// Drop the move's change-log triggers (a table at a time) and its logged rows.
pub async fn drop_change_log(pool: &PgPool, name: &str, move_id: uuid::Uuid) -> Result<()> {
    let [iu, d] = log_triggers(name);
    for (t, _) in TABLES {
        table_ddl(
            pool,
            &format!(
                "DROP TRIGGER IF EXISTS {} ON {t}; DROP TRIGGER IF EXISTS {} ON {t}",
                quote_ident(&iu),
                quote_ident(&d)
            ),
        )
        .await?;
    }
    sqlx::query("DELETE FROM move_changes WHERE move_id = $1")
        .bind(move_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Moves that have change-log triggers or logged rows on a shard (by the move id
/// in the trigger name or the rows).
pub async fn list_change_logs(pool: &PgPool) -> Result<Vec<uuid::Uuid>> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT regexp_replace(tgname::text, '_(iu|d)$', '') FROM pg_trigger
          WHERE tgname LIKE 'sl\\_mv\\_%'",
    )
    .fetch_all(pool)
    .await?;
    let mut ids: Vec<uuid::Uuid> = names.iter().filter_map(|n| move_id_of(n)).collect();
    let logged: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT DISTINCT move_id FROM move_changes")
        .fetch_all(pool)
        .await?;
    ids.extend(logged);
    ids.sort();
    ids.dedup();
    Ok(ids)
}

pub(crate) fn timeout(what: impl Into<String>) -> Error {
    Error::Timeout(what.into())
}

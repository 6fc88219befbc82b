//! The shard schema against a real PostgreSQL: database-enforced fencing, balanced
//! ledger, versions, and that replication apply bypasses the fence. Every test runs
//! with the native fence (skipped when the extension is missing) and the PL/pgSQL one.

mod common;

use common::{Db, sqlstate, wait_until_blocked};
use shardline_core::fence::{self, FenceMode};
use tokio_postgres::Client;
use uuid::Uuid;

/// Owned: range 1 = [0, 1000) active, range 2 = [1000, 2000) frozen,
/// range 3 = [2000, 3000) incoming; keys >= 3000 are not owned.
async fn shard(mode: FenceMode) -> Option<Db> {
    let db = Db::shard(mode).await?;
    db.client()
        .await
        .batch_execute(
            "INSERT INTO owned_ranges (id, start_key, end_key, epoch, state) VALUES
               (1, 0, 1000, 1, 'active'), (2, 1000, 2000, 2, 'frozen'), (3, 2000, 3000, 3, 'incoming')",
        )
        .await
        .unwrap();
    Some(db)
}

both_fences!(
    writes_outside_active_owned_ranges_fail_with_dedicated_sqlstates,
    replication_apply_bypasses_the_fence,
    freezing_waits_for_in_flight_writers_and_blocks_new_ones,
    repeatable_read_writers_cannot_slip_past_a_freeze,
    a_writer_waiting_across_a_split_rechecks_its_range,
    ledger_entries_are_fenced_at_commit_per_key_of_a_journal,
    unbalanced_ledger_journals_are_rejected_at_commit,
    versions_increment_and_keys_are_immutable,
    shard_migrations_are_idempotent,
);

/// One INSERT per data table for key `k` (each a valid row on its own).
fn inserts(k: i64) -> Vec<(&'static str, String)> {
    let m = Uuid::now_v7();
    let p = Uuid::now_v7();
    let j = Uuid::now_v7();
    vec![
        (
            "merchants",
            format!(
                "INSERT INTO merchants (shard_key, merchant_id, name, default_currency) VALUES ({k}, '{m}', 'm', 'USD')"
            ),
        ),
        (
            "payments",
            format!(
                "INSERT INTO payments (shard_key, merchant_id, payment_id, currency, amount, status) VALUES ({k}, '{m}', '{p}', 'USD', 10, 'authorized')"
            ),
        ),
        (
            "refunds",
            format!(
                "INSERT INTO refunds (shard_key, merchant_id, refund_id, payment_id, currency, amount) VALUES ({k}, '{m}', '{}', '{p}', 'USD', 1)",
                Uuid::now_v7()
            ),
        ),
        (
            "ledger_entries",
            format!(
                "INSERT INTO ledger_entries (shard_key, merchant_id, journal_id, line, payment_id, account, currency, amount, kind) VALUES ({k}, '{m}', '{j}', 0, '{p}', 'authorized', 'USD', 5, 'authorize'), ({k}, '{m}', '{j}', 1, '{p}', 'processor_hold', 'USD', -5, 'authorize')"
            ),
        ),
        (
            "balances",
            format!(
                "INSERT INTO balances (shard_key, merchant_id, currency, account, amount) VALUES ({k}, '{m}', 'USD', 'authorized', 5)"
            ),
        ),
        (
            "idempotency_keys",
            format!(
                "INSERT INTO idempotency_keys (shard_key, merchant_id, idem_key, request_hash, method, path, state, expires_at) VALUES ({k}, '{m}', 'k-{p}', '\\x00', 'POST', '/x', 'in_flight', now() + interval '1 day')"
            ),
        ),
    ]
}

async fn expect_code(c: &Client, sql: &str, code: &str, what: &str) {
    let err = c.batch_execute(sql).await.expect_err(what);
    assert_eq!(sqlstate(&err), code, "{what}: {err}");
}

async fn writes_outside_active_owned_ranges_fail_with_dedicated_sqlstates(mode: FenceMode) {
    let Some(db) = shard(mode).await else { return };
    let c = db.client().await;
    for (table, sql) in inserts(10) {
        c.batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("owned insert into {table}: {e}"));
    }
    for (key, code, why) in [
        (5000, fence::NOT_OWNED, "unowned"),
        (1500, fence::RANGE_FROZEN, "frozen"),
        (2500, fence::RANGE_FROZEN, "incoming"),
    ] {
        for (table, sql) in inserts(key) {
            expect_code(&c, &sql, code, &format!("{why} insert into {table}")).await;
        }
    }
    // Updates and deletes are fenced too: freeze range 1 and touch its rows.
    c.batch_execute("SELECT shardline_set_range_state(1, 'frozen')")
        .await
        .unwrap();
    for table in [
        "merchants",
        "payments",
        "refunds",
        "balances",
        "idempotency_keys",
    ] {
        expect_code(
            &c,
            &format!("UPDATE {table} SET version = version WHERE shard_key = 10"),
            fence::RANGE_FROZEN,
            &format!("update {table} in frozen range"),
        )
        .await;
        expect_code(
            &c,
            &format!("DELETE FROM {table} WHERE shard_key = 10"),
            fence::RANGE_FROZEN,
            &format!("delete from {table} in frozen range"),
        )
        .await;
    }
    // Dropping the range entirely: writes now fail as not owned.
    c.batch_execute("DELETE FROM owned_ranges WHERE id = 1")
        .await
        .unwrap();
    for (table, sql) in inserts(10) {
        expect_code(
            &c,
            &sql,
            fence::NOT_OWNED,
            &format!("insert into {table} after range removal"),
        )
        .await;
    }
}

async fn replication_apply_bypasses_the_fence(mode: FenceMode) {
    let Some(db) = shard(mode).await else { return };
    let c = db.client().await;
    // Subscription apply workers run with session_replication_role = replica, which
    // skips ENABLE ORIGIN triggers (the default) like the fence.
    c.batch_execute("SET session_replication_role = replica")
        .await
        .unwrap();
    for (table, sql) in inserts(2500) {
        c.batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("apply-mode insert into incoming range, {table}: {e}"));
    }
    for (table, sql) in inserts(9999) {
        c.batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("apply-mode insert into unowned range, {table}: {e}"));
    }
}

async fn freezing_waits_for_in_flight_writers_and_blocks_new_ones(mode: FenceMode) {
    let Some(db) = shard(mode).await else { return };
    let writer = db.client().await;
    let freezer = db.client().await;
    let late = db.client().await;
    let observer = db.client().await;
    let m = Uuid::now_v7();

    // An in-flight writer holds the range's shared lock.
    writer.batch_execute("BEGIN").await.unwrap();
    writer
        .batch_execute(&format!(
            "INSERT INTO merchants (shard_key, merchant_id, name, default_currency) VALUES (7, '{m}', 'first', 'USD')"
        ))
        .await
        .unwrap();

    let freezer_pid: i32 = freezer
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let late_pid: i32 = late
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let freeze = tokio::spawn(async move {
        freezer
            .query_one("SELECT (shardline_set_range_state(1, 'frozen')).state", &[])
            .await
            .map(|r| r.get::<_, String>(0))
    });
    wait_until_blocked(&observer, freezer_pid).await;
    assert!(
        !freeze.is_finished(),
        "freeze must wait for the in-flight writer"
    );

    // A writer arriving now queues behind the freeze.
    let late_insert = tokio::spawn(async move {
        late.batch_execute(&format!(
            "INSERT INTO merchants (shard_key, merchant_id, name, default_currency) VALUES (8, '{}', 'late', 'USD')",
            Uuid::now_v7()
        ))
        .await
    });
    wait_until_blocked(&observer, late_pid).await;

    // The in-flight writer commits; the freeze completes; the late writer is fenced.
    writer.batch_execute("COMMIT").await.unwrap();
    assert_eq!(freeze.await.unwrap().unwrap(), "frozen");
    let err = late_insert
        .await
        .unwrap()
        .expect_err("late writer must be fenced");
    assert_eq!(sqlstate(&err), fence::RANGE_FROZEN, "{err}");

    let rows: Vec<String> = observer
        .query("SELECT name FROM merchants ORDER BY name", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows, vec!["first".to_owned()]);
}

async fn repeatable_read_writers_cannot_slip_past_a_freeze(mode: FenceMode) {
    let Some(db) = shard(mode).await else { return };
    let writer = db.client().await;
    let freezer = db.client().await;
    // The writer's snapshot predates the freeze...
    writer
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await
        .unwrap();
    writer
        .query("SELECT count(*) FROM merchants", &[])
        .await
        .unwrap();
    freezer
        .batch_execute("SELECT shardline_set_range_state(1, 'frozen')")
        .await
        .unwrap();
    // ...but its write still fails: the fence re-reads the range with a row lock.
    let err = writer
        .batch_execute(&format!(
            "INSERT INTO merchants (shard_key, merchant_id, name, default_currency) VALUES (7, '{}', 'x', 'USD')",
            Uuid::now_v7()
        ))
        .await
        .expect_err("stale repeatable-read writer must fail");
    let code = sqlstate(&err);
    assert!(code == "40001" || code == fence::RANGE_FROZEN, "{err}");
    writer.batch_execute("ROLLBACK").await.unwrap();
}

async fn a_writer_waiting_across_a_split_rechecks_its_range(mode: FenceMode) {
    let Some(db) = shard(mode).await else { return };
    let splitter = db.client().await;
    let writer = db.client().await;
    let observer = db.client().await;
    // Split range 1 = [0,1000) into 1 = [0,500) and 4 = [500,1000) frozen while a
    // writer for key 700 waits: the split's UPDATE takes the bucket locks itself.
    splitter
        .batch_execute("BEGIN; UPDATE owned_ranges SET end_key = 500 WHERE id = 1")
        .await
        .unwrap();
    let writer_pid: i32 = writer
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let write = tokio::spawn(async move {
        writer
            .batch_execute(&format!(
                "INSERT INTO merchants (shard_key, merchant_id, name, default_currency) VALUES (700, '{}', 'x', 'USD')",
                Uuid::now_v7()
            ))
            .await
    });
    wait_until_blocked(&observer, writer_pid).await;
    splitter
        .batch_execute(
            "INSERT INTO owned_ranges (id, start_key, end_key, epoch, state) VALUES (4, 500, 1000, 4, 'frozen');
             COMMIT",
        )
        .await
        .unwrap();
    let err = write
        .await
        .unwrap()
        .expect_err("key 700 now lies in a frozen range");
    assert_eq!(sqlstate(&err), fence::RANGE_FROZEN, "{err}");
}

async fn ledger_entries_are_fenced_at_commit_per_key_of_a_journal(mode: FenceMode) {
    let Some(db) = shard(mode).await else { return };
    let c = db.client().await;
    let m = Uuid::now_v7();
    let ledger = |k: i64, j: Uuid| {
        format!(
            "INSERT INTO ledger_entries (shard_key, merchant_id, journal_id, line, account, currency, amount, kind) VALUES
             ({k}, '{m}', '{j}', 0, 'authorized', 'USD', 5, 'authorize'),
             ({k}, '{m}', '{j}', 1, 'processor_hold', 'USD', -5, 'authorize')"
        )
    };
    // Ledger rows alone (no payment checked the key first): the deferred balance
    // trigger fences them at COMMIT.
    for (key, code) in [(5000, fence::NOT_OWNED), (1500, fence::RANGE_FROZEN)] {
        c.batch_execute("BEGIN").await.unwrap();
        c.batch_execute(&ledger(key, Uuid::now_v7()))
            .await
            .expect("fenced at commit, not at insert");
        let err = c.batch_execute("COMMIT").await.expect_err("fenced");
        assert_eq!(sqlstate(&err), code, "key {key}: {err}");
    }
    // One journal spread over an owned and an unowned key: the owned key's
    // payment does not vouch for the other key.
    let j = Uuid::now_v7();
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute(&format!(
        "INSERT INTO payments (shard_key, merchant_id, payment_id, currency, amount, status) VALUES (10, '{m}', '{}', 'USD', 10, 'authorized')",
        Uuid::now_v7()
    ))
    .await
    .unwrap();
    c.batch_execute(&ledger(10, j)).await.unwrap();
    c.batch_execute(&ledger(5000, j)).await.unwrap();
    let err = c.batch_execute("COMMIT").await.expect_err("fenced");
    assert_eq!(sqlstate(&err), fence::NOT_OWNED, "{err}");
    // Nothing of it landed; the owned key alone commits.
    c.batch_execute(&ledger(10, Uuid::now_v7())).await.unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM ledger_entries", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
}

async fn unbalanced_ledger_journals_are_rejected_at_commit(mode: FenceMode) {
    let Some(db) = shard(mode).await else { return };
    let c = db.client().await;
    let m = Uuid::now_v7();
    let j = Uuid::now_v7();
    // One-sided entry: rejected at COMMIT (deferred), not at INSERT.
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute(&format!(
        "INSERT INTO ledger_entries (shard_key, merchant_id, journal_id, line, account, currency, amount, kind)
         VALUES (1, '{m}', '{j}', 0, 'authorized', 'USD', 5, 'authorize')"
    ))
    .await
    .expect("the entry itself is accepted until commit");
    let err = c
        .batch_execute("COMMIT")
        .await
        .expect_err("unbalanced journal");
    assert_eq!(sqlstate(&err), fence::LEDGER_UNBALANCED, "{err}");

    // Balanced in one currency but not in another.
    let j = Uuid::now_v7();
    let err = c
        .batch_execute(&format!(
            "INSERT INTO ledger_entries (shard_key, merchant_id, journal_id, line, account, currency, amount, kind) VALUES
             (1, '{m}', '{j}', 0, 'authorized', 'USD', 5, 'authorize'),
             (1, '{m}', '{j}', 1, 'processor_hold', 'USD', -5, 'authorize'),
             (1, '{m}', '{j}', 2, 'authorized', 'EUR', 3, 'authorize')"
        ))
        .await
        .expect_err("unbalanced EUR");
    assert_eq!(sqlstate(&err), fence::LEDGER_UNBALANCED, "{err}");

    // Balanced: accepted; then immutable.
    let j = Uuid::now_v7();
    c.batch_execute(&format!(
        "INSERT INTO ledger_entries (shard_key, merchant_id, journal_id, line, account, currency, amount, kind) VALUES
         (1, '{m}', '{j}', 0, 'authorized', 'JPY', 500, 'authorize'),
         (1, '{m}', '{j}', 1, 'processor_hold', 'JPY', -500, 'authorize')"
    ))
    .await
    .unwrap();
    expect_code(
        &c,
        "UPDATE ledger_entries SET amount = 1",
        fence::LEDGER_IMMUTABLE,
        "update ledger",
    )
    .await;
    expect_code(
        &c,
        "DELETE FROM ledger_entries",
        fence::LEDGER_IMMUTABLE,
        "delete ledger",
    )
    .await;
    let n: i64 = c
        .query_one("SELECT count(*) FROM ledger_entries", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
}

async fn versions_increment_and_keys_are_immutable(mode: FenceMode) {
    let Some(db) = shard(mode).await else { return };
    let c = db.client().await;
    let m = Uuid::now_v7();
    c.batch_execute(&format!(
        "INSERT INTO merchants (shard_key, merchant_id, name, default_currency) VALUES (3, '{m}', 'a', 'USD')"
    ))
    .await
    .unwrap();
    for expected in 2..=4_i64 {
        // Whatever the caller writes into version, the database sets old + 1.
        let v: i64 = c
            .query_one("UPDATE merchants SET name = 'b', version = 100 WHERE shard_key = 3 RETURNING version", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(v, expected);
    }
    expect_code(
        &c,
        "UPDATE merchants SET shard_key = 4",
        fence::KEY_IMMUTABLE,
        "move a row's key",
    )
    .await;
}

async fn shard_migrations_are_idempotent(mode: FenceMode) {
    let Some(db) = shard(mode).await else { return };
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    // Re-running keeps the fence that was chosen (no DDL); auto re-installs native
    // when available.
    for _ in 0..2 {
        shardline_core::migrations::run_shard(&db.pool, mode)
            .await
            .unwrap();
    }
    let kind = fence::active_kind(&db.pool).await.unwrap();
    assert_eq!(kind, format!("{mode:?}").to_lowercase());
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(before, after);
    assert_eq!(
        after as usize,
        shardline_core::migrations::SHARD.iter().count()
    );
}

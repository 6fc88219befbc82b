//! The two fences (native C extension and PL/pgSQL) against a real PostgreSQL:
//! which one is active, and the cases where a per-transaction cache could go wrong
//! (savepoints, snapshots older than a freeze, every isolation level).

mod common;

use common::{Db, sqlstate, wait_until_blocked};
use shardline_core::fence::{self, FenceKind, FenceMode};
use shardline_core::migrations;
use tokio_postgres::Client;
use uuid::Uuid;

/// Range 1 = [0, 1000) active.
async fn shard(mode: FenceMode) -> Option<Db> {
    let db = Db::shard(mode).await?;
    db.client()
        .await
        .batch_execute(
            "INSERT INTO owned_ranges (id, start_key, end_key, epoch, state) VALUES (1, 0, 1000, 1, 'active')",
        )
        .await
        .unwrap();
    Some(db)
}

fn merchant(k: i64) -> String {
    format!(
        "INSERT INTO merchants (shard_key, merchant_id, name, default_currency) VALUES ({k}, '{}', 'm', 'USD')",
        Uuid::now_v7()
    )
}

both_fences!(
    both_fences_raise_the_same_errors,
    a_savepoint_rollback_drops_the_lock_and_the_next_insert_takes_it_again,
    a_snapshot_older_than_a_freeze_cannot_write_at_any_isolation_level,
);

#[tokio::test]
async fn the_native_fence_is_active_when_installed_and_switchable() {
    let Some(db) = Db::shard(FenceMode::Auto).await else {
        return;
    };
    let available = fence::native_available(&db.pool).await.unwrap();
    let expected = if available { "native" } else { "plpgsql" };
    assert_eq!(fence::active_kind(&db.pool).await.unwrap(), expected);
    if !available {
        eprintln!("SKIPPED (partly): the shardline_fence extension is not installed");
        return;
    }
    // Switch back and forth; re-running the migrations keeps the chosen fence.
    for (mode, kind) in [
        (FenceMode::Plpgsql, FenceKind::Plpgsql),
        (FenceMode::Native, FenceKind::Native),
        (FenceMode::Plpgsql, FenceKind::Plpgsql),
    ] {
        assert_eq!(fence::install(&db.pool, mode).await.unwrap(), kind);
        assert_eq!(migrations::run_shard(&db.pool, mode).await.unwrap(), kind);
        assert_eq!(fence::active_kind(&db.pool).await.unwrap(), kind.as_str());
        let native_triggers: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
              WHERE p.proname = 'shardline_fence_native_insert'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        let expected = if kind == FenceKind::Native { 5 } else { 0 };
        assert_eq!(native_triggers, expected, "{kind}");
    }
    assert!(matches!(
        "c".parse::<FenceMode>(),
        Err(fence::FenceError::BadMode(_))
    ));
}

async fn both_fences_raise_the_same_errors(mode: FenceMode) {
    let Some(db) = shard(mode).await else { return };
    let c = db.client().await;
    c.batch_execute(
        "INSERT INTO owned_ranges (id, start_key, end_key, epoch, state) VALUES (2, 1000, 2000, 2, 'frozen')",
    )
    .await
    .unwrap();
    for (key, code, message, hint) in [
        (
            5000,
            fence::NOT_OWNED,
            "shard_key 5000 is not in a range owned by this shard",
            "refresh the range map and retry on the owner",
        ),
        (
            1500,
            fence::RANGE_FROZEN,
            "range 2 [1000, 2000) holding shard_key 1500 is frozen",
            "the range is moving: retry after the map changes",
        ),
    ] {
        let err = c.batch_execute(&merchant(key)).await.expect_err("fenced");
        let db_err = err.as_db_error().expect("a database error");
        assert_eq!(db_err.code().code(), code, "{err}");
        assert_eq!(db_err.message(), message);
        assert_eq!(db_err.hint(), Some(hint));
    }
}

/// Shared fence locks `pid` holds (pg_advisory_xact_lock_shared(1397245510, b)).
async fn fence_locks(observer: &Client, pid: i32) -> i64 {
    observer
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1
                AND classid::bigint = 1397245510 AND objsubid = 2 AND mode = 'ShareLock' AND granted",
            &[&pid],
        )
        .await
        .unwrap()
        .get(0)
}

async fn a_savepoint_rollback_drops_the_lock_and_the_next_insert_takes_it_again(mode: FenceMode) {
    let Some(db) = shard(mode).await else { return };
    let writer = db.client().await;
    let freezer = db.client().await;
    let observer = db.client().await;
    let writer_pid: i32 = writer
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let freezer_pid: i32 = freezer
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);

    writer
        .batch_execute(&format!("BEGIN; SAVEPOINT s; {}", merchant(7)))
        .await
        .unwrap();
    assert_eq!(fence_locks(&observer, writer_pid).await, 1);
    // The aborted savepoint releases the lock it took...
    writer
        .batch_execute("ROLLBACK TO SAVEPOINT s")
        .await
        .unwrap();
    assert_eq!(fence_locks(&observer, writer_pid).await, 0);
    // ...so the next insert of the same key must not trust a cached verdict.
    writer.batch_execute(&merchant(7)).await.unwrap();
    assert_eq!(fence_locks(&observer, writer_pid).await, 1);
    // A savepoint released (not rolled back) keeps the lock with the transaction.
    writer
        .batch_execute(&format!(
            "SAVEPOINT t; {}; RELEASE SAVEPOINT t",
            merchant(8)
        ))
        .await
        .unwrap();
    assert_eq!(fence_locks(&observer, writer_pid).await, 1);

    let freeze = tokio::spawn(async move {
        freezer
            .batch_execute("SELECT shardline_set_range_state(1, 'frozen')")
            .await
    });
    wait_until_blocked(&observer, freezer_pid).await;
    assert!(!freeze.is_finished(), "the freeze must wait for the writer");
    writer.batch_execute("COMMIT").await.unwrap();
    freeze.await.unwrap().unwrap();
    let n: i64 = observer
        .query_one("SELECT count(*) FROM merchants", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    // And after the freeze the key is fenced.
    let err = writer
        .batch_execute(&merchant(7))
        .await
        .expect_err("frozen");
    assert_eq!(sqlstate(&err), fence::RANGE_FROZEN, "{err}");
}

async fn a_snapshot_older_than_a_freeze_cannot_write_at_any_isolation_level(mode: FenceMode) {
    let Some(db) = shard(mode).await else { return };
    let writer = db.client().await;
    let admin = db.client().await;
    for level in ["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"] {
        admin
            .batch_execute("SELECT shardline_set_range_state(1, 'active')")
            .await
            .unwrap();
        writer
            .batch_execute(&format!("BEGIN ISOLATION LEVEL {level}"))
            .await
            .unwrap();
        // The transaction's snapshot predates the freeze.
        writer
            .query("SELECT count(*) FROM owned_ranges", &[])
            .await
            .unwrap();
        admin
            .batch_execute("SELECT shardline_set_range_state(1, 'frozen')")
            .await
            .unwrap();
        let err = writer
            .batch_execute(&merchant(7))
            .await
            .expect_err("a write after the freeze committed");
        let code = sqlstate(&err);
        assert!(
            code == fence::RANGE_FROZEN || code == "40001",
            "{level}: {err}"
        );
        writer.batch_execute("ROLLBACK").await.unwrap();
    }
}

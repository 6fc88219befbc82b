//! The move change log records every row of the range a writer touches (insert,
//! update, delete) under exactly the key text verification looks rows up by, with
//! the writer's transaction id, and nothing outside the range.

mod common;

use common::Cluster;
use shardline_rebalancer::repl::{self, TABLES};
use shardline_rebalancer::verify::key_expr;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_log_records_range_writes_under_verification_keys() {
    let c = Cluster::start(1).await;
    let stop = CancellationToken::new();
    let r = c.router(c.config(), &stop).await;
    let p = c.shard("s1");
    let id = uuid::Uuid::now_v7();
    let name = shardline_rebalancer::object_name(id);
    let before: i64 = sqlx::query_scalar("SELECT txid_current()")
        .fetch_one(p)
        .await
        .unwrap();
    // the whole key space: everything written below is in the range
    repl::ensure_change_log(p, &name, id, 0, 1 << 32)
        .await
        .unwrap();
    repl::ensure_change_log(p, &name, id, 0, 1 << 32)
        .await
        .unwrap(); // idempotent

    let m = r.merchant("EUR").await;
    let a = r.authorize(&m, "10.00", "EUR", "a1").await;
    assert!(a.status.is_success(), "{a:?}");
    let pid = a.body["id"].as_str().unwrap().to_owned();
    let cap = r
        .post(
            &format!("/v1/merchants/{m}/payments/{pid}/capture"),
            Some("c1"),
            serde_json::json!({}),
        )
        .await;
    assert!(cap.status.is_success(), "{cap:?}");
    let rf = r
        .post(
            &format!("/v1/merchants/{m}/payments/{pid}/refunds"),
            Some("r1"),
            serde_json::json!({"amount": "2.50"}),
        )
        .await;
    assert!(rf.status.is_success(), "{rf:?}");

    // every row now in a data table was written after the log began: each has its
    // key logged, and every logged key of a live row resolves to that row
    for (t, pk) in TABLES {
        if t == "range_events" {
            continue;
        }
        let k = key_expr(pk, "t");
        let (rows, missing): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT count(*), count(*) FILTER (WHERE NOT EXISTS (
                 SELECT 1 FROM move_changes c WHERE c.move_id = $1 AND c.tbl = '{t}' AND c.k = {k}))
               FROM {t} t"
        )))
        .bind(id)
        .fetch_one(p)
        .await
        .unwrap();
        assert!(rows > 0, "{t} has rows");
        assert_eq!(missing, 0, "{t}: rows without a logged key");
    }
    let bad_xid: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM move_changes WHERE move_id = $1 AND (xid <= $2 OR merchant_id IS NULL)",
    )
    .bind(id)
    .bind(before)
    .fetch_one(p)
    .await
    .unwrap();
    assert_eq!(bad_xid, 0, "entries carry the writer's txid and merchant");

    // a delete is logged too (idempotency keys are the deletable table)
    sqlx::query("DELETE FROM move_changes WHERE move_id = $1")
        .bind(id)
        .execute(p)
        .await
        .unwrap();
    sqlx::query("DELETE FROM idempotency_keys WHERE idem_key = 'a1'")
        .execute(p)
        .await
        .unwrap();
    let logged: Vec<String> = sqlx::query_scalar("SELECT tbl FROM move_changes WHERE move_id = $1")
        .bind(id)
        .fetch_all(p)
        .await
        .unwrap();
    assert_eq!(logged, vec!["idempotency_keys".to_owned()]);

    // outside the range nothing is logged
    let other = uuid::Uuid::now_v7();
    repl::ensure_change_log(p, &shardline_rebalancer::object_name(other), other, 0, 1)
        .await
        .unwrap();
    let b = r.authorize(&m, "1.00", "EUR", "a2").await;
    assert!(b.status.is_success(), "{b:?}");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM move_changes WHERE move_id = $1")
        .bind(other)
        .fetch_one(p)
        .await
        .unwrap();
    assert_eq!(n, 0);

    for mid in [id, other] {
        repl::drop_change_log(p, &shardline_rebalancer::object_name(mid), mid)
            .await
            .unwrap();
    }
    assert!(repl::list_change_logs(p).await.unwrap().is_empty());
    stop.cancel();
}

/// A lock timeout while installing the change log is retried on a clean
/// connection: the failed attempt's transaction is rolled back, so the pool's
/// (only) connection is usable afterwards. (A `BEGIN; ...; COMMIT;` string left
/// it inside an aborted transaction and every later query failed with 25P02:
/// moves of the hotspot loadtest got stuck in `cleaning` and `aborting`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_timeout_during_ddl_leaves_the_connection_usable() {
    let c = Cluster::start(1).await;
    let url: String = sqlx::query_scalar("SELECT dsn FROM shards WHERE id = 's1'")
        .fetch_one(&c.catalog_pool)
        .await
        .unwrap();
    let one = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    // Another session holds the table for longer than the 200 ms lock timeout.
    let mut holder = c.shard("s1").begin().await.unwrap();
    sqlx::query("LOCK TABLE payments IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        holder.rollback().await.unwrap();
    });
    let id = uuid::Uuid::now_v7();
    let name = shardline_rebalancer::object_name(id);
    repl::ensure_change_log(&one, &name, id, 0, 1 << 32)
        .await
        .expect("retried after the lock timeouts");
    release.await.unwrap();
    let status: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&one)
        .await
        .unwrap();
    assert_eq!(status, 1);
    repl::drop_change_log(&one, &name, id).await.unwrap();
}

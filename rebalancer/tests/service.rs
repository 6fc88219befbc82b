//! The engine as a service: `run` takes the leader lock, picks up planned moves
//! and drives them to `done`; another engine cannot lead meanwhile; shutdown stops it.
//! Also: orphaned replication objects are reconciled away.

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, assert_no_move_objects, range_rows};
use shardline_rebalancer::{Engine, Error, Subject, object_name, plan_move, request_abort};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_drives_planned_moves_until_shutdown() {
    let c = Cluster::start(2).await;
    let stop = CancellationToken::new();
    let r = c.router(c.config(), &stop).await;
    let m = r.merchant("EUR").await;
    for i in 0..30 {
        let a = r.authorize(&m, "2.00", "EUR", &format!("p{i}")).await;
        assert!(a.status.is_success(), "{a:?}");
    }
    let (source, range_id) = c.owner(&m).await;
    let target = if source == "s1" { "s2" } else { "s1" };
    let (start, end, _, _) = common::range(&c, range_id).await;

    let mut cfg = common::engine_config(&c);
    cfg.poll_interval = Duration::from_millis(100);
    let engine_stop = CancellationToken::new();
    let service = tokio::spawn(shardline_rebalancer::run(cfg, engine_stop.clone()));

    // wait until the service leads
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Engine::new(c.catalog_pool.clone(), common::engine_config(&c)).await {
            Err(Error::NotLeader) => break,
            Ok(e) => drop(e),
            Err(e) => panic!("{e}"),
        }
        assert!(Instant::now() < deadline, "service never became leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let id = plan_move(
        &c.catalog_pool,
        Subject::Merchant(m.parse().unwrap()),
        target,
        "operator",
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st: String = sqlx::query_scalar("SELECT state FROM moves WHERE id = $1")
            .bind(id)
            .fetch_one(&c.catalog_pool)
            .await
            .unwrap();
        if st == "done" {
            break;
        }
        assert!(Instant::now() < deadline, "move stuck in {st}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!request_abort(&c.catalog_pool, id).await.unwrap());
    assert_eq!(range_rows(c.shard(&source), start, end).await, 0);
    assert!(range_rows(c.shard(target), start, end).await > 30);
    assert_no_move_objects(&c).await;
    let a = r.authorize(&m, "1.00", "EUR", "after").await;
    assert!(a.status.is_success(), "{a:?}");

    engine_stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), service)
        .await
        .expect("service stops on shutdown")
        .unwrap()
        .unwrap();
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphaned_replication_objects_are_dropped() {
    let c = Cluster::start(2).await;
    let (_, p1) = &c.shard_pools[0];
    let orphan_id = uuid::Uuid::now_v7();
    let orphan = object_name(orphan_id);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE PUBLICATION {orphan} FOR TABLE merchants"
    )))
    .execute(p1)
    .await
    .unwrap();
    sqlx::query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')")
        .bind(&orphan)
        .execute(p1)
        .await
        .unwrap();
    sqlx::query("SELECT pg_replication_origin_create($1)")
        .bind(&orphan)
        .execute(p1)
        .await
        .unwrap();
    // a change log whose move is unknown: triggers on every moved table, and a row
    shardline_rebalancer::repl::ensure_change_log(p1, &orphan, orphan_id, 0, 1 << 32)
        .await
        .unwrap();
    sqlx::query("INSERT INTO move_changes (move_id, tbl, k) VALUES ($1, 'merchants', '{}')")
        .bind(orphan_id)
        .execute(p1)
        .await
        .unwrap();
    assert_eq!(
        shardline_rebalancer::repl::list_change_logs(p1)
            .await
            .unwrap(),
        vec![orphan_id]
    );
    let e = Engine::new(c.catalog_pool.clone(), common::engine_config(&c))
        .await
        .unwrap();
    let dropped = e.reconcile_orphans().await.unwrap();
    assert_eq!(dropped.len(), 4, "{dropped:?}");
    assert_no_move_objects(&c).await;
    assert!(e.reconcile_orphans().await.unwrap().is_empty());
}

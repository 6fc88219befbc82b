//! Split, merge and isolate keep the map covering, fence by the new bounds, and
//! routers keep writing; an isolated merchant's range moves on its own.

mod common;

use common::{Cluster, assert_no_move_objects};
use shardline_rebalancer::{Engine, MoveState, Subject, ops};
use tokio_util::sync::CancellationToken;

async fn owned(c: &Cluster, shard: &str) -> Vec<(i64, i64, i64, String)> {
    sqlx::query_as("SELECT id, start_key, end_key, state FROM owned_ranges ORDER BY start_key")
        .fetch_all(c.shard(shard))
        .await
        .unwrap()
}

async fn catalog_on(c: &Cluster, shard: &str) -> Vec<(i64, i64, i64, String)> {
    sqlx::query_as(
        "SELECT id, start_key, end_key, 'active'::text FROM ranges WHERE shard_id = $1 ORDER BY start_key",
    )
    .bind(shard)
    .fetch_all(&c.catalog_pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_isolate_move_and_merge() {
    let c = Cluster::start(2).await;
    let stop = CancellationToken::new();
    let r = c.router(c.config(), &stop).await;
    let m = r.merchant("USD").await;
    let a = r.authorize(&m, "5.00", "USD", "before").await;
    assert!(a.status.is_success(), "{a:?}");
    let (source, range_id) = c.owner(&m).await;
    let target = if source == "s1" { "s2" } else { "s1" };

    // isolate: the merchant's key becomes a range of its own, still on the source
    let iso = ops::isolate(&c.catalog_pool, &m.parse().unwrap())
        .await
        .unwrap();
    let (s, e, owner, _) = common::range(&c, iso).await;
    assert_eq!((e - s, owner.as_str()), (1, source.as_str()));
    assert_eq!(owned(&c, &source).await, catalog_on(&c, &source).await);
    let a = r.authorize(&m, "5.00", "USD", "after-split").await;
    assert!(a.status.is_success(), "{a:?}");

    // move only the isolated merchant
    let engine = Engine::new(c.catalog_pool.clone(), common::engine_config(&c))
        .await
        .unwrap();
    let id = engine
        .plan_move(Subject::Range(iso), target, "isolate")
        .await
        .unwrap();
    assert_eq!(engine.run_move(id).await.unwrap(), MoveState::Done);
    let a = r.authorize(&m, "5.00", "USD", "after-move").await;
    assert!(a.status.is_success(), "{a:?}");
    let token = a.headers["shardline-token"].to_str().unwrap().to_owned();
    assert!(token.starts_with(&format!("{target}:")), "{token}");
    assert_eq!(c.count(target, "payments", &m).await, 3);
    assert_eq!(c.count(&source, "payments", &m).await, 0);
    assert_eq!(owned(&c, &source).await, catalog_on(&c, &source).await);
    assert_eq!(owned(&c, target).await, catalog_on(&c, target).await);
    assert_no_move_objects(&c).await;

    // move it back and merge everything on the source back into the original range
    let id = engine
        .plan_move(Subject::Range(iso), &source, "back")
        .await
        .unwrap();
    assert_eq!(engine.run_move(id).await.unwrap(), MoveState::Done);
    loop {
        let on: Vec<(i64, i64, i64, String)> = catalog_on(&c, &source).await;
        // (the seeded map never puts one shard's ranges side by side: only the
        // split parts are adjacent)
        let Some(pair) = on.windows(2).find(|w| w[0].2 == w[1].1) else {
            break;
        };
        ops::merge(&c.catalog_pool, pair[0].0, pair[1].0)
            .await
            .unwrap();
    }
    let (s2, e2, _, _) = common::range(&c, range_id).await;
    assert!(e2 - s2 > 1);
    assert!(s2 <= s && e2 >= e, "merged range covers the merchant again");
    assert_eq!(owned(&c, &source).await, catalog_on(&c, &source).await);
    let a = r.authorize(&m, "5.00", "USD", "after-merge").await;
    assert!(a.status.is_success(), "{a:?}");
    assert_eq!(c.count(&source, "payments", &m).await, 4);
    // merging ranges of different shards is refused
    let other = catalog_on(&c, target).await[0].0;
    assert!(ops::merge(&c.catalog_pool, range_id, other).await.is_err());
    stop.cancel();
}

//! The router while ranges move: a stale map is corrected by the fence (SLF01),
//! writes to a frozen range are held until the map flips and then replayed on the
//! new owner, a hold that outlasts its budget is a 503; load samples reach the
//! catalog.

use std::time::Duration;

use axum::http::StatusCode;
use shardline_testkit::{Cluster, Router, assert_ledger_consistent};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Activate range `range` on `to` and copy merchant `m`'s row there.
async fn activate_on_target(c: &Cluster, range: i64, from: &str, to: &str, m: &str) {
    let (start, end, epoch): (i64, i64, i64) =
        sqlx::query_as("SELECT start_key, end_key, epoch FROM ranges WHERE id = $1")
            .bind(range)
            .fetch_one(&c.catalog_pool)
            .await
            .unwrap();
    sqlx::query("INSERT INTO owned_ranges (id, start_key, end_key, epoch, state) VALUES ($1, $2, $3, $4, 'active')")
        .bind(range).bind(start).bind(end).bind(epoch + 1)
        .execute(c.shard(to)).await.unwrap();
    let (key, name, cur): (i64, String, String) = sqlx::query_as(
        "SELECT shard_key, name, default_currency::text FROM merchants WHERE merchant_id = $1::uuid")
        .bind(m).fetch_one(c.shard(from)).await.unwrap();
    sqlx::query("INSERT INTO merchants (shard_key, merchant_id, name, default_currency) VALUES ($1, $2::uuid, $3, $4)")
        .bind(key).bind(m).bind(name).bind(cur)
        .execute(c.shard(to)).await.unwrap();
}

async fn flip_catalog(catalog: &PgPool, range: i64, to: &str) {
    sqlx::query("UPDATE ranges SET shard_id = $2 WHERE id = $1")
        .bind(range)
        .bind(to)
        .execute(catalog)
        .await
        .unwrap();
}

fn other(c: &Cluster, shard: &str) -> String {
    c.shard_pools
        .iter()
        .map(|(id, _)| id.to_string())
        .find(|id| id != shard)
        .unwrap()
}

async fn setup(c: &Cluster, r: &Router) -> (String, String, String, i64) {
    let m = r.merchant("USD").await;
    let (from, range) = c.owner(&m).await;
    let to = other(c, &from);
    (m, from, to, range)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_map_is_corrected_by_the_fence() {
    let c = Cluster::start(2).await;
    let stop = CancellationToken::new();
    let mut cfg = c.config();
    cfg.map_listen = false;
    cfg.map_refresh_interval = Duration::from_secs(3600);
    let r = c.router(cfg, &stop).await;
    let (m, from, to, range) = setup(&c, &r).await;
    let epoch_before = r.state.map.epoch();

    // Move the range behind the router's back: no notification reaches it.
    activate_on_target(&c, range, &from, &to, &m).await;
    sqlx::query("DELETE FROM owned_ranges WHERE id = $1")
        .bind(range)
        .execute(c.shard(&from))
        .await
        .unwrap();
    flip_catalog(&c.catalog_pool, range, &to).await;
    assert_eq!(
        r.state.map.epoch(),
        epoch_before,
        "router must still hold the old map"
    );

    // The old owner's fence rejects the write; the router refreshes and retries.
    let a = r.authorize(&m, "5.00", "USD", "stale-1").await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    let token = a.headers["shardline-token"].to_str().unwrap();
    assert!(token.starts_with(&format!("{to}:")), "{token}");
    assert!(r.state.map.epoch() > epoch_before);
    assert_eq!(c.count(&to, "payments", &m).await, 1);
    assert_eq!(c.count(&from, "payments", &m).await, 0);
    assert_eq!(c.count(&from, "ledger_entries", &m).await, 0);

    // A direct write on the old shard is fenced with SLF01.
    let err = sqlx::query("INSERT INTO balances (shard_key, merchant_id, currency, account, amount) SELECT shard_key, merchant_id, 'USD', 'x', 0 FROM merchants WHERE merchant_id = $1::uuid")
        .bind(&m)
        .execute(c.shard(&from))
        .await
        .unwrap_err();
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("SLF01")
    );
    // Reads follow the new map as well.
    let p = a.body["id"].as_str().unwrap();
    assert_eq!(
        r.get(&format!("/v1/merchants/{m}/payments/{p}"))
            .await
            .status,
        StatusCode::OK
    );
    assert_ledger_consistent(&c).await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_a_frozen_range_are_held_then_replayed() {
    let c = Cluster::start(2).await;
    let stop = CancellationToken::new();
    let mut cfg = c.config();
    cfg.hold_timeout = Duration::from_secs(15);
    let r = c.router(cfg, &stop).await;
    let (m, from, to, range) = setup(&c, &r).await;

    sqlx::query("SELECT shardline_set_range_state($1, 'frozen')")
        .bind(range)
        .execute(c.shard(&from))
        .await
        .unwrap();
    let held = {
        let r = r.clone();
        let m = m.clone();
        tokio::spawn(async move { r.authorize(&m, "9.99", "USD", "held-1").await })
    };
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!held.is_finished(), "the write must be held, not failed");

    activate_on_target(&c, range, &from, &to, &m).await;
    flip_catalog(&c.catalog_pool, range, &to).await;
    let a = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("held request completes after the flip")
        .unwrap();
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    assert!(
        a.headers["shardline-token"]
            .to_str()
            .unwrap()
            .starts_with(&format!("{to}:"))
    );
    assert_eq!(c.count(&to, "payments", &m).await, 1);
    assert_eq!(c.count(&from, "payments", &m).await, 0);
    assert_ledger_consistent(&c).await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_past_its_budget_is_503() {
    let c = Cluster::start(2).await;
    let stop = CancellationToken::new();
    let mut cfg = c.config();
    cfg.hold_timeout = Duration::from_millis(300);
    let r = c.router(cfg, &stop).await;
    let (m, from, _, range) = setup(&c, &r).await;
    sqlx::query("SELECT shardline_set_range_state($1, 'frozen')")
        .bind(range)
        .execute(c.shard(&from))
        .await
        .unwrap();
    let a = r.authorize(&m, "1.00", "USD", "late-1").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{a:?}");
    assert_eq!(a.code(), "range_moving");
    assert_eq!(a.headers["retry-after"], "1");
    assert!(a.is_problem());
    // Reads of a frozen range are held too.
    let g = r.get(&format!("/v1/merchants/{m}")).await;
    assert_eq!(g.code(), "range_moving");
    assert_eq!(c.count(&from, "payments", &m).await, 0);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_samples_reach_the_catalog() {
    let c = Cluster::start(2).await;
    let stop = CancellationToken::new();
    let mut cfg = c.config();
    cfg.load_flush_interval = Duration::from_millis(200);
    cfg.router_id = "router-test".into();
    let r = c.router(cfg, &stop).await;
    let (m, _, _, range) = setup(&c, &r).await;
    for i in 0..5 {
        let a = r.authorize(&m, "1.00", "USD", &format!("load-{i}")).await;
        assert_eq!(a.status, StatusCode::CREATED);
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (requests, writes, hitters): (i64, i64, serde_json::Value) = sqlx::query_as(
        "SELECT sum(requests)::bigint, sum(writes)::bigint, jsonb_agg(heavy_hitters) FROM load_samples
          WHERE router_id = 'router-test' AND range_id = $1",
    )
    .bind(range)
    .fetch_one(&c.catalog_pool)
    .await
    .unwrap();
    assert_eq!((requests, writes), (6, 6));
    assert!(hitters.to_string().contains(&m), "{hitters}");
    stop.cancel();
}

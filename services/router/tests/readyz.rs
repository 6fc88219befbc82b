//! `/readyz` with shards going down: a router stays ready (status `degraded`,
//! the silent shards listed) while any shard answers, and is unready only when
//! none does. Real PostgreSQL clusters, stopped for real.

use axum::http::{Method, StatusCode};
use shardline_testkit::{Call, Cluster};
use tokio_util::sync::CancellationToken;

async fn readyz(r: &shardline_testkit::Router) -> shardline_testkit::Resp {
    r.send(Call {
        method: Method::GET,
        uri: "/readyz".into(),
        key: None,
        idem: None,
        content_type: None,
        body: None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_stays_ready_while_any_shard_answers() {
    let mut c = Cluster::start(2).await;
    let stop = CancellationToken::new();
    let r = c.router(c.config(), &stop).await;
    let m = r.merchant("USD").await;
    let (owner, _) = c.owner(&m).await;

    let all = readyz(&r).await;
    assert_eq!(all.status, StatusCode::OK, "{all:?}");
    assert_eq!(all.body["status"], "ok");
    assert!(all.body.get("unreachable_shards").is_none(), "{all:?}");

    // Stop the merchant's shard: the router stays ready, says which shard is
    // silent, and that merchant's reads fail while the other shard serves.
    let i = c
        .shard_pools
        .iter()
        .position(|(id, _)| id.as_str() == owner)
        .unwrap();
    let other = c.shard_pools[1 - i].0.to_string();
    c.shards[i].stop();
    let one = readyz(&r).await;
    assert_eq!(one.status, StatusCode::OK, "{one:?}");
    assert_eq!(one.body["status"], "degraded");
    assert_eq!(one.body["unreachable_shards"], serde_json::json!([owner]));
    let read = r.get(&format!("/v1/merchants/{m}")).await;
    assert_eq!(read.status, StatusCode::SERVICE_UNAVAILABLE, "{read:?}");
    assert!(read.is_problem());

    // No shard answers: unready, naming them.
    c.shards[1 - i].stop();
    let none = readyz(&r).await;
    assert_eq!(none.status, StatusCode::SERVICE_UNAVAILABLE, "{none:?}");
    assert_eq!(none.code(), "not_ready");
    let detail = none.body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(&owner) && detail.contains(&other),
        "{detail}"
    );

    // Back: ready again.
    c.shards[i].restart().await.unwrap();
    c.shards[1 - i].restart().await.unwrap();
    let mut back = readyz(&r).await;
    for _ in 0..50 {
        if back.status == StatusCode::OK && back.body["status"] == "ok" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        back = readyz(&r).await;
    }
    assert_eq!(back.body["status"], "ok", "{back:?}");
    stop.cancel();
}

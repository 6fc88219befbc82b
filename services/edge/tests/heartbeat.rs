//! Replicator heartbeats: a `Shardline-Min-Token` beyond the shard's last
//! published transaction (WAL the replicator skips: a move's copy or cleanup under
//! a replication origin, unpublished tables) is reached on a quiet shard, without
//! waiting for the next published write. Real PostgreSQL, nats-server, router.

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{Fixture, metric, scrape};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_past_the_last_published_commit_is_reached_on_a_quiet_shard() {
    let f = Fixture::start(2).await;
    let r = f
        .router_post(
            "/v1/merchants",
            "hb-m",
            json!({"name": "Quiet", "default_currency": "EUR"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let mid = r.body["id"].as_str().unwrap().to_owned();
    let token = r.headers["shardline-token"].to_str().unwrap().to_owned();
    let uri = format!("/v1/merchants/{mid}");
    assert_eq!(f.edge_get(&uri, Some(&token)).await.status, StatusCode::OK);
    // A running edge that has caught up is ready.
    let ready = common::call(&f.edge().app, axum::http::Method::GET, "/readyz", &[], None).await;
    assert_eq!(ready.status, StatusCode::OK, "{ready:?}");

    // WAL on that shard that no published transaction covers: a transaction
    // under a replication origin (skipped) and one on an unpublished table.
    let shard = token.split_once(':').unwrap().0.to_owned();
    let (_, _, pool) = f
        .shards
        .iter()
        .find(|(id, _, _)| *id == shard)
        .expect("the token's shard");
    let mut conn = pool.acquire().await.unwrap();
    for q in [
        "SELECT pg_replication_origin_create('hb_test')",
        "SELECT pg_replication_origin_session_setup('hb_test')",
        "SET session_replication_role = replica",
        "INSERT INTO merchants (shard_key, merchant_id, name, default_currency)
         VALUES (7, '00000000-0000-7000-8000-0000000000b7', 'copied', 'USD')",
        "SELECT pg_replication_origin_session_reset()",
        "SET session_replication_role = origin",
        "CREATE TABLE hb_scratch (x int)",
        "INSERT INTO hb_scratch SELECT generate_series(1, 1000)",
    ] {
        sqlx::query(q).execute(&mut *conn).await.unwrap();
    }
    let flushed: String = sqlx::query_scalar("SELECT pg_current_wal_flush_lsn()::text")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    assert!(
        shardline_replicator::wire::parse_lsn(&flushed)
            > shardline_replicator::wire::parse_lsn(token.split_once(':').unwrap().1),
        "the skipped WAL moved the flush LSN past the merchant's token"
    );

    // No further write reaches this shard: only a heartbeat can tell the edge it
    // has everything up to `flushed`.
    let later = format!("{shard}:{flushed}");
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < Duration::from_secs(15) {
        let e = f.edge_get(&uri, Some(&later)).await;
        if e.status == StatusCode::OK {
            assert_eq!(e.body, r.body);
            last = None;
            break;
        }
        assert_eq!(e.status, StatusCode::GATEWAY_TIMEOUT, "{e:?}");
        last = Some(e);
    }
    assert!(
        last.is_none(),
        "the edge never reached {later}: {last:?} (no heartbeat applied)"
    );
    eprintln!(
        "min-token past the last published commit reached after {:?}",
        started.elapsed()
    );
    let scraped = scrape(&f.edge().app).await;
    assert!(
        metric(
            &scraped,
            "shardline_replicator_heartbeats_total",
            &[("shard", shard.as_str())]
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    // A position no heartbeat can reach still times out.
    let e = f.edge_get(&uri, Some(&format!("{shard}:FF/0"))).await;
    assert_eq!(e.status, StatusCode::GATEWAY_TIMEOUT, "{e:?}");
    f.close().await;
}

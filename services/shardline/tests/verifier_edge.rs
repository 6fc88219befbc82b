//! The loadtest verifier's edge comparison against the whole local system (shards,
//! replicators, NATS, an edge): equal after writes through the router; a change
//! planted on a shard under a replication origin (so the replicator skips it,
//! as it skips move copies) leaves the edge stale, and the verifier reports
//! exactly that payment.

use std::time::Duration;

use serde_json::json;
use shardline::up::{LocalStack, Services, UpConfig};
use shardline_loadtest::http::Client;
use shardline_loadtest::verify::{self, EdgeTarget, Target, Violation, Write};
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verifier_compares_edges_with_shards_and_reports_a_stale_edge() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = UpConfig {
        dir: tmp.path().join("cluster"),
        shards: Some(2),
        ranges_per_shard: 2,
        catalog_port: None,
        nats_port: None,
        edges: 1,
        fresh: true,
    };
    let stack = LocalStack::boot(&cfg).await.unwrap();
    let stop = CancellationToken::new();
    let services = Services::start(&stack, 1, &stop).await.unwrap();
    let key = stack.admin_key.clone();
    let router = Client::new(&services.router_url, &key, Duration::from_secs(10));
    let mut acked = Vec::new();
    for _ in 0..3 {
        let m = router
            .post(
                "/v1/merchants",
                None,
                &json!({"name": "m", "default_currency": "EUR"}),
            )
            .await
            .unwrap();
        assert_eq!(m.status, 201, "{:?}", m.body);
        let mid = m.body["id"].as_str().unwrap().to_owned();
        acked.push(Write::Merchant {
            merchant: mid.parse().unwrap(),
        });
        for _ in 0..2 {
            let p = router
                .post(
                    &format!("/v1/merchants/{mid}/payments"),
                    Some(&Uuid::now_v7().to_string()),
                    &json!({"amount": "5.00", "currency": "EUR"}),
                )
                .await
                .unwrap();
            assert_eq!(p.status, 201, "{:?}", p.body);
            acked.push(Write::Payment {
                merchant: mid.parse().unwrap(),
                payment: p.body["id"].as_str().unwrap().parse().unwrap(),
            });
        }
    }
    let target = Target {
        catalog_url: stack.description.catalog_url.clone(),
        edges: services
            .edge_urls
            .iter()
            .map(|u| EdgeTarget {
                url: u.clone(),
                api_key: key.clone(),
            })
            .collect(),
        edge_wait: Duration::from_secs(10),
    };
    let report = verify::verify(&target, &acked, &[]).await.unwrap();
    assert!(report.passed(), "{:#?}", report.violations);
    // 6 payments + 3 merchants' balances.
    assert_eq!(report.checked.edge_reads, 9);

    // Plant: change one payment's status on its shard without the stream seeing
    // it (a replication origin, like move copies, and no triggers).
    let Write::Payment { merchant, payment } = acked[1].clone() else {
        unreachable!()
    };
    let owner = {
        let cat = PgPoolOptions::new()
            .max_connections(1)
            .connect(&stack.description.catalog_url)
            .await
            .unwrap();
        let map = shardline_core::catalog::load_range_map(&cat).await.unwrap();
        map.lookup_merchant(&merchant).shard.to_string()
    };
    let url = &stack
        .description
        .shards
        .iter()
        .find(|s| s.id == owner)
        .unwrap()
        .url;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    sqlx::raw_sql(
        "SELECT pg_replication_origin_create('verifier_plant');
         SELECT pg_replication_origin_session_setup('verifier_plant');
         SET session_replication_role = replica;",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query("UPDATE payments SET status = 'voided' WHERE payment_id = $1")
        .bind(payment)
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::raw_sql(
        "SELECT pg_replication_origin_session_reset();
         SELECT pg_replication_origin_drop('verifier_plant');",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    drop(conn);
    pool.close().await;

    let target = Target {
        edge_wait: Duration::from_secs(2),
        ..target
    };
    let report = verify::verify(&target, &acked, &[]).await.unwrap();
    assert_eq!(report.violations.len(), 1, "{:#?}", report.violations);
    match &report.violations[0] {
        Violation::EdgeMismatch { path, detail, .. } => {
            assert_eq!(
                path,
                &format!("/v1/merchants/{merchant}/payments/{payment}")
            );
            assert!(
                detail.contains("voided") && detail.contains("authorized"),
                "{detail}"
            );
        }
        v => panic!("expected an edge mismatch, got {v:?}"),
    }
    stop.cancel();
    services.join().await;
    stack.shutdown().await;
}

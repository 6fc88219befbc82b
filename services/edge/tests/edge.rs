//! End to end: router -> shard -> replicator -> JetStream -> edge, with real
//! PostgreSQL and nats-server.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::Fixture;
use serde_json::json;

fn token(r: &common::Resp) -> String {
    r.headers
        .get("shardline-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no Shardline-Token on {r:?}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_writes_appear_on_the_edge_with_identical_content_and_tokens_hold() {
    let f = Fixture::start(2).await;
    let mut latencies = Vec::new();
    let mut merchants = Vec::new();
    for i in 0..6 {
        let r = f
            .router_post(
                "/v1/merchants",
                &format!("m{i}"),
                json!({"name": format!("Shop {i}"), "default_currency": if i % 2 == 0 { "USD" } else { "JPY" }}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        let mid = r.body["id"].as_str().unwrap().to_owned();
        let started = Instant::now();
        let e = f
            .edge_get(&format!("/v1/merchants/{mid}"), Some(&token(&r)))
            .await;
        latencies.push(started.elapsed());
        assert_eq!(e.status, StatusCode::OK, "{e:?}");
        assert_eq!(e.body, r.body, "merchant read after its token");
        assert!(e.headers.contains_key("shardline-staleness-ms"));
        merchants.push((mid, if i % 2 == 0 { "USD" } else { "JPY" }));
    }
    for (n, (mid, cur)) in merchants.iter().enumerate() {
        let amount = if *cur == "JPY" { "1200" } else { "12.50" };
        let r = f
            .router_post(
                &format!("/v1/merchants/{mid}/payments"),
                &format!("a{n}"),
                json!({"amount": amount, "currency": cur, "reference": format!("order-{n}")}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        let pid = r.body["id"].as_str().unwrap().to_owned();
        let uri = format!("/v1/merchants/{mid}/payments/{pid}");
        let e = f.edge_get(&uri, Some(&token(&r))).await;
        assert_eq!(e.status, StatusCode::OK, "{e:?}");
        assert!(e.body["version"].as_i64() >= r.body["version"].as_i64());
        // capture, then refund: each read after the write's token sees that write.
        let r = f
            .router_post(&format!("{uri}/capture"), &format!("c{n}"), json!({}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        let started = Instant::now();
        let e = f.edge_get(&uri, Some(&token(&r))).await;
        latencies.push(started.elapsed());
        assert_eq!(e.body["status"], "captured", "{e:?}");
        assert!(e.body["version"].as_i64() >= r.body["version"].as_i64());
        let refund = if *cur == "JPY" { "200" } else { "2.50" };
        let r = f
            .router_post(
                &format!("{uri}/refunds"),
                &format!("r{n}"),
                json!({"amount": refund}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        let e = f.edge_get(&uri, Some(&token(&r))).await;
        assert_eq!(e.body, r.body["payment"], "payment after refund");
        // identical content to the router's reads
        let rb = f.router_get(&format!("/v1/merchants/{mid}/balance")).await;
        let eb = f
            .edge_get(&format!("/v1/merchants/{mid}/balance"), Some(&token(&r)))
            .await;
        assert_eq!(eb.status, StatusCode::OK, "{eb:?}");
        assert_eq!(eb.body, rb.body, "balance");
        let rp = f.router_get(&uri).await;
        assert_eq!(e.body, rp.body, "payment");
    }
    // Errors: unknown merchant, bad auth, a token the shard never reaches.
    let e = f
        .edge_get("/v1/merchants/00000000-0000-7000-8000-00000000abcd", None)
        .await;
    assert_eq!(e.status, StatusCode::NOT_FOUND);
    let bad = common::call(
        &f.edge().app,
        axum::http::Method::GET,
        &format!("/v1/merchants/{}", merchants[0].0),
        &[],
        None,
    )
    .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert!(bad.headers.contains_key("shardline-staleness-ms"));
    let started = Instant::now();
    let e = f
        .edge_get(
            &format!("/v1/merchants/{}", merchants[0].0),
            Some("s1:FF/0"),
        )
        .await;
    assert_eq!(e.status, StatusCode::GATEWAY_TIMEOUT, "{e:?}");
    assert_eq!(e.headers["content-type"], "application/problem+json");
    assert!(started.elapsed() >= Duration::from_millis(900));
    // A transaction under a replication origin (a move copy) never reaches the edge.
    let (_, _, s1) = &f.shards[0];
    let mut conn = s1.acquire().await.unwrap();
    for q in [
        "SELECT pg_replication_origin_create('edge_test')",
        "SELECT pg_replication_origin_session_setup('edge_test')",
        "SET session_replication_role = replica",
        "INSERT INTO merchants (shard_key, merchant_id, name, default_currency)
         VALUES (1, '00000000-0000-7000-8000-00000000c0e1', 'copied', 'USD')",
        "SELECT pg_replication_origin_session_reset()",
        "SET session_replication_role = origin",
    ] {
        sqlx::query(q).execute(&mut *conn).await.unwrap();
    }
    drop(conn);
    // Commit -> edge latency: sequential authorizations, each read back with its token.
    let mut waits = Vec::new();
    for n in 0..100 {
        let (mid, cur) = &merchants[n % merchants.len()];
        let r = f
            .router_post(
                &format!("/v1/merchants/{mid}/payments"),
                &format!("l{n}"),
                json!({"amount": "100", "currency": cur}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        let started = Instant::now();
        let e = f
            .edge_get(
                &format!(
                    "/v1/merchants/{mid}/payments/{}",
                    r.body["id"].as_str().unwrap()
                ),
                Some(&token(&r)),
            )
            .await;
        waits.push(started.elapsed());
        assert_eq!(e.body, r.body, "payment read with its token");
    }
    waits.sort();
    eprintln!(
        "router response -> edge visible (Min-Token wait + read): p50 {:?} p99 {:?} max {:?} (n={})",
        waits[waits.len() / 2],
        waits[waits.len() * 99 / 100],
        waits[waits.len() - 1],
        waits.len()
    );
    assert!(
        !f.edge_rows()
            .keys()
            .any(|k| k.contains("00000000-0000-7000-8000-00000000c0e1")),
        "origin transaction leaked to the edge"
    );
    // ... and the cleanup delete of that copy (also under the origin) is skipped too.
    let mut conn = f.shards[0].2.acquire().await.unwrap();
    for q in [
        "SELECT pg_replication_origin_session_setup('edge_test')",
        "SET session_replication_role = replica",
        "DELETE FROM merchants WHERE merchant_id = '00000000-0000-7000-8000-00000000c0e1'",
        "SELECT pg_replication_origin_session_reset()",
        "SET session_replication_role = origin",
    ] {
        sqlx::query(q).execute(&mut *conn).await.unwrap();
    }
    drop(conn);
    let st = f.edge_get("/v1/status", None).await;
    eprintln!("commit -> edge applied: {}", st.body["commit_to_apply"]);
    assert!(
        st.body["commit_to_apply"]["samples"].as_u64() > Some(100),
        "{st:?}"
    );
    assert_eq!(st.status, StatusCode::OK);
    assert_eq!(st.body["shards"].as_array().unwrap().len(), 2, "{st:?}");
    f.assert_converges(Duration::from_secs(10)).await;
    latencies.sort();
    eprintln!(
        "write-token -> edge read wait: p50 {:?} max {:?} (n={})",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
        latencies.len()
    );
    for (_, edge_status) in [(0, st)] {
        for s in edge_status.body["shards"].as_array().unwrap() {
            eprintln!("status {s}");
        }
    }
    f.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_equals_shards_after_replicator_nats_and_edge_restarts_during_writes() {
    let mut f = Fixture::start(2).await;
    let mut merchants = Vec::new();
    for i in 0..4 {
        let r = f
            .router_post(
                "/v1/merchants",
                &format!("m{i}"),
                json!({"name": format!("M{i}"), "default_currency": "EUR"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        merchants.push(r.body["id"].as_str().unwrap().to_owned());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writer = {
        let router = f.router.clone();
        let auth = f.auth();
        let stop = stop.clone();
        let writes = writes.clone();
        let merchants = merchants.clone();
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mid = &merchants[(i as usize) % merchants.len()];
                let post = |uri: String, idem: String, body: serde_json::Value| {
                    let router = router.clone();
                    let auth = auth.clone();
                    async move {
                        common::call(
                            &router,
                            axum::http::Method::POST,
                            &uri,
                            &[auth, ("idempotency-key", idem)],
                            Some(body),
                        )
                        .await
                    }
                };
                let r = post(
                    format!("/v1/merchants/{mid}/payments"),
                    format!("w{i}"),
                    json!({"amount": "10.00", "currency": "EUR"}),
                )
                .await;
                assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
                let pid = r.body["id"].as_str().unwrap().to_owned();
                if i.is_multiple_of(2) {
                    let r = post(
                        format!("/v1/merchants/{mid}/payments/{pid}/capture"),
                        format!("wc{i}"),
                        json!({"amount": "7.00"}),
                    )
                    .await;
                    assert_eq!(r.status, StatusCode::OK, "{r:?}");
                    if i.is_multiple_of(4) {
                        let r = post(
                            format!("/v1/merchants/{mid}/payments/{pid}/refunds"),
                            format!("wr{i}"),
                            json!({"amount": "1.00"}),
                        )
                        .await;
                        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
                    }
                }
                writes.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };
    let pause = Duration::from_millis(400);
    tokio::time::sleep(pause).await;
    // 1. kill the replicator of s1 (abort mid-stream) and restart it
    f.restart_replicator(0, pause).await;
    tokio::time::sleep(pause).await;
    // 2. kill NATS (SIGKILL) and restart it with its store
    f.nats.kill();
    tokio::time::sleep(pause).await;
    f.nats.restart().await.expect("nats restart");
    tokio::time::sleep(Duration::from_secs(1)).await;
    // 3. crash the edge (tasks aborted mid-apply) and restart it on its store;
    //    then once more with a graceful stop
    f.kill_edge().await;
    tokio::time::sleep(pause).await;
    f.start_edge().await;
    tokio::time::sleep(pause).await;
    f.stop_edge().await;
    tokio::time::sleep(pause).await;
    f.start_edge().await;
    tokio::time::sleep(pause).await;
    // 4. and the replicator of s2 once more
    f.restart_replicator(1, pause).await;
    tokio::time::sleep(pause).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer");
    eprintln!("writes during faults: {}", writes.load(Ordering::Relaxed));
    assert!(writes.load(Ordering::Relaxed) > 10);
    f.assert_converges(Duration::from_secs(30)).await;
    // No duplicate messages in the stream, no gaps on the edge.
    let client = async_nats::connect(f.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let info = js
        .get_stream(shardline_replicator::STREAM)
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();
    let cursors = f.edge().shared.store.cursors().unwrap();
    let applied: u64 = cursors.values().map(|c| c.applied).sum();
    assert_eq!(info.state.messages, applied, "{cursors:?}");
    assert!(cursors.values().all(|c| c.gaps == 0), "{cursors:?}");
    f.close().await;
}

/// A client's keep-alive connection must not outlive a killed edge: it would go
/// on serving from the dead edge's store and hold the file, so a restart on the
/// same store could not open it (found by the loadtest's `edge-restart`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_closes_open_connections_and_releases_the_store() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut f = Fixture::start(1).await;
    let mut conn = tokio::net::TcpStream::connect(f.edge().addr).await.unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: edge\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = conn.read(&mut buf).await.unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    let killed = Instant::now();
    f.kill_edge().await;
    // kill waits up to 10 s for the store; it must not need to.
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "{:?}",
        killed.elapsed()
    );
    let closed = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
        .await
        .expect("the old connection stays open");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    f.start_edge().await;
    f.close().await;
}

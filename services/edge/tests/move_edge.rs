//! Move interplay. First a move of the range is aborted after its copy (the
//! rollback's deletes on the target reach the edge and must not delete the rows
//! it holds from the source). Then the range moves between shards (the real move engine) while
//! payments flow through the router, with the SOURCE's replicator stopped so that
//! every source message (pre-move writes and the cutover marker) reaches the edge
//! late, after the target's `moved_in` and its writes as owner. The target then
//! deletes idempotency keys the source wrote (as the router's expiry does). The
//! edge must end equal to the shards row for row: no stale resurrection by the
//! late source messages, cleanup deletes ignored.

mod common;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use common::Fixture;
use serde_json::json;
use shardline_core::{MerchantId, shard_key};
use shardline_edge::store::SEP;
use shardline_rebalancer::{Engine, MoveState, Subject};

type Range = (i64, i64, i64, String);

async fn ranges(f: &Fixture) -> Vec<Range> {
    let pool = sqlx::PgPool::connect(&f.catalog_url).await.unwrap();
    let r = sqlx::query_as("SELECT id, start_key, end_key, shard_id FROM ranges ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    r
}

/// Authorize, capture and (every other one) refund a payment; returns the ok count.
async fn flow(router: &axum::Router, auth: &(&'static str, String), mid: &str, tag: &str) -> u64 {
    let post = |uri: String, idem: String, body: serde_json::Value| async move {
        common::call(
            router,
            Method::POST,
            &uri,
            &[auth.clone(), ("idempotency-key", idem)],
            Some(body),
        )
        .await
    };
    let r = post(
        format!("/v1/merchants/{mid}/payments"),
        format!("{tag}-a"),
        json!({"amount": "20.00", "currency": "USD"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let pid = r.body["id"].as_str().unwrap().to_owned();
    let uri = format!("/v1/merchants/{mid}/payments/{pid}");
    let r = post(format!("{uri}/capture"), format!("{tag}-c"), json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let r = post(
        format!("{uri}/refunds"),
        format!("{tag}-r"),
        json!({"amount": "5.00"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    3
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn range_moved_during_writes_ends_correct_on_the_edge_despite_late_source_messages() {
    let mut f = Fixture::start(2).await;
    let started = Instant::now();
    let map = ranges(&f).await;
    // Merchants until one range holds at least three.
    let mut by_range: HashMap<i64, Vec<String>> = HashMap::new();
    for i in 0..40 {
        let r = f
            .router_post(
                "/v1/merchants",
                &format!("mv-m{i}"),
                json!({"name": format!("Mover {i}"), "default_currency": "USD"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        let mid = r.body["id"].as_str().unwrap().to_owned();
        let k = i64::from(shard_key(&MerchantId::from_str(&mid).unwrap()));
        let range = map.iter().find(|(_, s, e, _)| *s <= k && k < *e).unwrap();
        by_range.entry(range.0).or_default().push(mid);
        if by_range.values().any(|v| v.len() >= 3) && i >= 8 {
            break;
        }
    }
    let (&range_id, moved) = by_range.iter().max_by_key(|(_, v)| v.len()).unwrap();
    let moved = moved.clone();
    let others: Vec<String> = by_range
        .iter()
        .filter(|(id, _)| **id != range_id)
        .flat_map(|(_, v)| v.clone())
        .collect();
    let (_, start, end, source) = map.iter().find(|r| r.0 == range_id).unwrap().clone();
    let target = if source == "s1" { "s2" } else { "s1" }.to_owned();
    let src_i = f
        .shards
        .iter()
        .position(|(id, _, _)| *id == source)
        .unwrap();
    let tgt_i = 1 - src_i;
    eprintln!(
        "range {range_id} [{start},{end}) with {} merchants: {source} -> {target}",
        moved.len()
    );

    let catalog = sqlx::PgPool::connect(&f.catalog_url).await.unwrap();
    let engine = Arc::new(
        Engine::new(
            catalog.clone(),
            shardline_rebalancer::Config::new(f.catalog_url.clone()),
        )
        .await
        .unwrap(),
    );

    // 1. An aborted move: its rollback deletes the copies on the target without a
    //    replication origin, so the target publishes those deletes; the edge must
    //    not apply them to the rows it holds from the source.
    for (n, mid) in moved.iter().enumerate() {
        flow(&f.router, &f.auth(), mid, &format!("ab-{n}")).await;
    }
    f.assert_converges(Duration::from_secs(30)).await;
    let rejected = |scraped: &[(String, f64)]| {
        common::metric(
            scraped,
            "shardline_edge_rows_total",
            &[
                ("edge", &f.edge_name()),
                ("shard", &target),
                ("result", "rejected"),
            ],
        )
        .unwrap_or(0.0)
    };
    let rejected_before = rejected(&common::scrape(&f.edge().app).await);
    // Hold a shared fence lock of the range's first bucket on the source: the
    // cutover's freeze (exclusive bucket locks) waits for it, so the move is
    // certainly abortable (copied, not switched) when the abort is asked for;
    // without it a small range can reach `switched` between two polls.
    let mut holder = f.shards[src_i].2.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1, ($2::bigint >> 22)::int)")
        .bind(shardline_core::fence::FENCE_LOCK_CLASS)
        .bind(start)
        .execute(&mut *holder)
        .await
        .unwrap();
    let id = engine
        .plan_move(Subject::Range(range_id), &target, "edge test: abort")
        .await
        .unwrap();
    let run = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.run_move(id).await })
    };
    // Abort once the copy is complete and verified (the freeze is waiting).
    common::wait_until(Duration::from_secs(60), || async {
        let st: String = sqlx::query_scalar("SELECT state FROM moves WHERE id = $1")
            .bind(id)
            .fetch_one(&catalog)
            .await
            .unwrap();
        st == "cutover"
    })
    .await;
    assert!(engine.abort(id).await.unwrap(), "abort refused");
    holder.rollback().await.unwrap();
    assert_eq!(run.await.unwrap().unwrap(), MoveState::Aborted);
    f.assert_converges(Duration::from_secs(30)).await;
    let rejected_after = rejected(&common::scrape(&f.edge().app).await);
    eprintln!(
        "aborted move: {} rollback deletes from {target} rejected",
        rejected_after - rejected_before
    );
    assert!(
        rejected_after > rejected_before,
        "the rollback published no deletes"
    );

    // 2. The source's replicator goes down: from here on its messages arrive late.
    let (token, h) = f.replicators.remove(src_i);
    token.cancel();
    h.await.unwrap();
    for (n, mid) in moved.iter().enumerate() {
        for j in 0..4 {
            flow(&f.router, &f.auth(), mid, &format!("pre-{n}-{j}")).await;
        }
    }

    // Writers keep going through the router during the move.
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (router, auth, stop, ops) = (f.router.clone(), f.auth(), stop.clone(), ops.clone());
            let merchants: Vec<String> = moved.iter().chain(others.iter()).cloned().collect();
            tokio::spawn(async move {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let mid = &merchants[(w + i) % merchants.len()];
                    let n = flow(&router, &auth, mid, &format!("w{w}-{i}")).await;
                    ops.fetch_add(n, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = ops.load(Ordering::Relaxed);
    let t = Instant::now();
    let id = engine
        .plan_move(Subject::Range(range_id), &target, "edge test")
        .await
        .unwrap();
    let state = engine.run_move(id).await.unwrap();
    let took = t.elapsed();
    assert_eq!(
        state,
        MoveState::Done,
        "{:?}",
        engine.load(id).await.unwrap().error
    );
    let during = ops.load(Ordering::Relaxed) - before;
    // The target writes as owner for a while (payments of the moved merchants).
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    eprintln!("move done in {took:?}; {during} router writes during it");
    assert!(during > 0, "no writes during the move");

    // The target expires idempotency keys the source wrote before the move.
    let tgt = &f.shards[tgt_i].2;
    let expired = sqlx::query(
        "DELETE FROM idempotency_keys WHERE shard_key >= $1 AND shard_key < $2 AND idem_key LIKE 'pre-%'",
    )
    .bind(start)
    .bind(end)
    .execute(tgt)
    .await
    .unwrap()
    .rows_affected();
    assert!(expired > 0);
    // Cleanup emptied the source's copy of the range.
    let src_pool = f.shards[src_i].2.clone();
    let (left,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM payments WHERE shard_key >= $1 AND shard_key < $2")
            .bind(start)
            .bind(end)
            .fetch_one(&src_pool)
            .await
            .unwrap();
    assert_eq!(left, 0, "cleanup left rows on the source");
    // Let the edge apply everything of the target before the source's late stream.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let owners = f.edge().shared.store.ranges().unwrap();
    let owner = owners
        .iter()
        .find(|r| r.range_id == range_id)
        .expect("moved_in seen");
    assert_eq!(owner.owner, target);
    assert!(
        !owner.released.contains_key(&source),
        "source marker not yet seen"
    );

    // The source's replicator comes back: pre-move writes and its marker arrive late.
    let r = f.spawn_replicator(src_i);
    f.replicators.insert(src_i, r);
    f.assert_converges(Duration::from_secs(60)).await;

    let owners = f.edge().shared.store.ranges().unwrap();
    let owner = owners
        .iter()
        .find(|r| r.range_id == range_id)
        .unwrap()
        .clone();
    let released = *owner
        .released
        .get(&source)
        .expect("source released by its marker");
    eprintln!("edge range record: {owner:?}");
    // Every live edge row of the range: on the target, and anything still
    // attributed to the source predates its cutover marker.
    let mut in_range = 0;
    let mut from_source = 0;
    for table in common::TABLES {
        for (k, row) in f
            .edge()
            .shared
            .store
            .scan(&format!("{table}{SEP}"))
            .unwrap()
        {
            let key: i64 = row.get("shard_key").unwrap().parse().unwrap();
            if key < start || key >= end {
                continue;
            }
            // The read cache (filled by the applies and the reads above)
            // holds what redb holds, tombstones included.
            let cached = f.edge().shared.store.get(&k).unwrap();
            assert_eq!(cached.as_deref(), Some(&row), "{k}: cache differs");
            if row.shard == source {
                assert!(
                    row.commit_lsn <= released,
                    "{k}: source change after its marker"
                );
                from_source += usize::from(!row.deleted);
            }
            if !row.deleted {
                in_range += 1;
            }
        }
    }
    assert!(in_range > 0);
    // The keys the target deleted stay deleted (tombstones from the target).
    let pre_keys = f
        .edge_rows()
        .keys()
        .filter(|k| k.starts_with("idempotency_keys") && k.contains(&format!("{SEP}pre-")))
        .filter(|k| {
            let sk: i64 = k.split(SEP).nth(1).unwrap().parse().unwrap();
            sk >= start && sk < end
        })
        .count();
    assert_eq!(pre_keys, 0, "expired keys resurrected on the edge");
    let cursors = f.edge().shared.store.cursors().unwrap();
    assert!(cursors.values().all(|c| c.gaps == 0), "{cursors:?}");
    eprintln!(
        "edge == shards: {in_range} live rows in the moved range ({from_source} last written \
         by the source before the move), {expired} keys expired on the target; test {:?}",
        started.elapsed()
    );
    catalog.close().await;
    f.close().await;
}

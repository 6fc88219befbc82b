//! The main property: a range holding thousands of payments moves to another shard
//! while concurrent clients keep creating, capturing and refunding payments through
//! the router; nothing is lost, duplicated or left behind, money verifies, and no
//! client sees an error.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{
    Acked, Cluster, Router, assert_ledger_consistent, assert_no_move_objects, range_rows,
};
use serde_json::json;
use shardline_rebalancer::{Engine, MoveState, Subject};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

const CLIENTS: usize = 6;
const SEED_PAYMENTS: usize = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn range_moves_under_concurrent_payment_traffic() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let c = Cluster::start(3).await;
    let stop_router = CancellationToken::new();
    let mut cfg = c.config();
    cfg.hold_timeout = Duration::from_secs(5);
    let r = c.router(cfg, &stop_router).await;

    // Merchants; pick the range holding the most of them.
    let mut by_range: HashMap<i64, (String, Vec<String>)> = HashMap::new();
    for _ in 0..24 {
        let m = r.merchant("USD").await;
        let (owner, range) = c.owner(&m).await;
        by_range
            .entry(range)
            .or_insert((owner, Vec::new()))
            .1
            .push(m);
    }
    let (&range_id, (source, merchants)) =
        by_range.iter().max_by_key(|(_, (_, ms))| ms.len()).unwrap();
    let source = source.clone();
    let merchants = merchants.clone();
    let target = ["s1", "s2", "s3"]
        .into_iter()
        .find(|s| *s != source)
        .unwrap()
        .to_owned();
    let (start, end, _, _) = common::range(&c, range_id).await;
    eprintln!(
        "moving range {range_id} [{start},{end}) with {} merchants from {source} to {target}",
        merchants.len()
    );

    let acked: Arc<Mutex<HashMap<String, Acked>>> = Arc::default();
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();

    // Thousands of payments before the move (half captured).
    let t = Instant::now();
    let seeders = (0..8).map(|w| {
        let (r, merchants, acked, errors) =
            (r.clone(), merchants.clone(), acked.clone(), errors.clone());
        tokio::spawn(async move {
            for i in (w..SEED_PAYMENTS).step_by(8) {
                let m = &merchants[i % merchants.len()];
                let capture = i % 2 == 0;
                payment_flow(&r, m, &format!("seed-{i}"), capture, 0, &acked, &errors).await;
            }
        })
    });
    futures_util::future::join_all(seeders).await;
    eprintln!("seeded {SEED_PAYMENTS} payments in {:?}", t.elapsed());
    assert!(errors.lock().await.is_empty(), "{:?}", errors.lock().await);

    // Clients keep going during the move.
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|w| {
            let (r, merchants, acked, errors, stop, ops) = (
                r.clone(),
                merchants.clone(),
                acked.clone(),
                errors.clone(),
                stop.clone(),
                ops.clone(),
            );
            tokio::spawn(async move {
                let mut i = 0usize;
                let mut max_latency = Duration::ZERO;
                while !stop.load(Ordering::Relaxed) {
                    let m = &merchants[(w + i) % merchants.len()];
                    let t = Instant::now();
                    payment_flow(
                        &r,
                        m,
                        &format!("c{w}-{i}"),
                        true,
                        1 + (i % 2) as u32,
                        &acked,
                        &errors,
                    )
                    .await;
                    max_latency = max_latency.max(t.elapsed());
                    ops.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                max_latency
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(300)).await;
    let engine = Engine::new(c.catalog_pool.clone(), common::engine_config(&c))
        .await
        .unwrap();
    let before = ops.load(Ordering::Relaxed);
    let t = Instant::now();
    let id = engine
        .plan_move(Subject::Range(range_id), &target, "test")
        .await
        .unwrap();
    let end_state = engine.run_move(id).await.unwrap();
    let took = t.elapsed();
    let during = ops.load(Ordering::Relaxed) - before;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut max_latency = Duration::ZERO;
    for cl in clients {
        max_latency = max_latency.max(cl.await.unwrap());
    }
    let mv = engine.load(id).await.unwrap();
    eprintln!(
        "move {id}: {end_state} in {took:?}; {during} client flows during the move; \
         max client flow latency {max_latency:?}; phase_ms {}",
        mv.phase_ms
    );
    assert_eq!(end_state, MoveState::Done, "error: {:?}", mv.error);
    assert!(during > 0, "clients made no progress during the move");
    let errs = errors.lock().await.clone();
    assert!(
        errs.is_empty(),
        "{} client errors: {:?}",
        errs.len(),
        &errs[..errs.len().min(5)]
    );

    // The catalog points at the target; the target owns the range actively.
    let (_, _, owner, state) = common::range(&c, range_id).await;
    assert_eq!(
        (owner.as_str(), state.as_str()),
        (target.as_str(), "active")
    );
    assert_eq!(
        common::owned_state(c.shard(&target), range_id)
            .await
            .as_deref(),
        Some("active")
    );
    assert_eq!(common::owned_state(c.shard(&source), range_id).await, None);
    // Nothing of the range is left on the source (nor anywhere but the target).
    for (sid, p) in &c.shard_pools {
        if sid.as_str() != target {
            assert_eq!(range_rows(p, start, end).await, 0, "rows left on {sid}");
        }
    }

    // Every acknowledged payment exists exactly once on the new owner, as acked.
    let acked = acked.lock().await.clone();
    common::assert_payments_as_acked(c.shard(&target), start, end, &acked, &target).await;
    eprintln!("{} acknowledged payments verified on {target}", acked.len());
    assert_ledger_consistent(&c).await;
    assert_no_move_objects(&c).await;

    let stats: serde_json::Value = sqlx::query_scalar("SELECT stats FROM moves WHERE id = $1")
        .bind(id)
        .fetch_one(&c.catalog_pool)
        .await
        .unwrap();
    eprintln!("verification: {stats}");
    let pause = mv.phase_ms["pause_ms"].as_f64().unwrap();
    eprintln!("pause_ms = {pause:.2}");
    assert!(pause < 2000.0, "pause {pause} ms");
    stop_router.cancel();
}

/// authorize (+ capture in full) (+ `refunds` refunds of 1.00); records what was acked.
async fn payment_flow(
    r: &Router,
    m: &str,
    tag: &str,
    capture: bool,
    refunds: u32,
    acked: &Mutex<HashMap<String, Acked>>,
    errors: &Mutex<Vec<String>>,
) {
    let a = r.authorize(m, "10.00", "USD", &format!("{tag}-a")).await;
    if !a.status.is_success() {
        errors
            .lock()
            .await
            .push(format!("authorize {tag}: {} {}", a.status, a.body));
        return;
    }
    let pid = a.body["id"].as_str().unwrap().to_owned();
    let mut rec = Acked {
        merchant: m.to_owned(),
        captured: false,
        refunds: 0,
    };
    acked.lock().await.insert(pid.clone(), rec.clone());
    if !capture {
        return;
    }
    let base = format!("/v1/merchants/{m}/payments/{pid}");
    let cap = r
        .post(
            &format!("{base}/capture"),
            Some(&format!("{tag}-c")),
            json!({}),
        )
        .await;
    if !cap.status.is_success() {
        errors
            .lock()
            .await
            .push(format!("capture {tag}: {} {}", cap.status, cap.body));
        return;
    }
    rec.captured = true;
    acked.lock().await.insert(pid.clone(), rec.clone());
    for k in 0..refunds {
        let rf = r
            .post(
                &format!("{base}/refunds"),
                Some(&format!("{tag}-r{k}")),
                json!({"amount": "1.00"}),
            )
            .await;
        if !rf.status.is_success() {
            errors
                .lock()
                .await
                .push(format!("refund {tag}: {} {}", rf.status, rf.body));
            return;
        }
        rec.refunds += 1;
        acked.lock().await.insert(pid.clone(), rec.clone());
    }
}

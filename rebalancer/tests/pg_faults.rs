//! Shard faults during a move, under payment traffic: (a) the source shard's
//! PostgreSQL is shut down while the move is `copying` and started again 12 s
//! later; (b) the target shard's PostgreSQL is killed (SIGKILL) while the move is
//! `catching_up` and started again 12 s later. The engine runs as the service
//! (`shardline_rebalancer::run`) and retries steps that fail transiently. Either way the move ends `done` or
//! `aborted`, every acknowledged write is on the owner exactly once, money
//! verifies and no replication object is left. Fail points hold the engine at the
//! right state (`failpoints` feature); each test holds the process-wide
//! `FailScenario`, so they run one after the other.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{
    Acked, Cluster, Gate, Router, assert_ledger_consistent, assert_no_move_objects, range_rows,
};
use fail::FailScenario;
use serde_json::json;
use shardline_rebalancer::{MoveState, Subject, plan_move};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const CLIENTS: usize = 4;
const SEED_FLOWS: usize = 200;

type AckMap = Arc<Mutex<HashMap<String, Acked>>>;
type Errors = Arc<Mutex<Vec<String>>>;

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Fast shutdown of the source, then start it again.
    RestartSource,
    /// SIGKILL the target's postmaster, then start it again (crash recovery).
    KillTarget,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn source_restart_while_copying() {
    let scenario = FailScenario::setup();
    move_through_fault("move-during-copy", Fault::RestartSource).await;
    scenario.teardown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn target_killed_while_catching_up() {
    let scenario = FailScenario::setup();
    move_through_fault("move-during-catch-up", Fault::KillTarget).await;
    scenario.teardown();
}

async fn move_through_fault(fail_point: &'static str, fault: Fault) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let t_test = Instant::now();
    let mut c = Cluster::start(2).await;
    let stop_router = CancellationToken::new();
    let mut rcfg = c.config();
    rcfg.hold_timeout = Duration::from_secs(5);
    let r = c.router(rcfg, &stop_router).await;

    // Merchants; move the range holding the most of them.
    let mut by_range: HashMap<i64, (String, Vec<String>)> = HashMap::new();
    for _ in 0..8 {
        let m = r.merchant("USD").await;
        let (owner, range) = c.owner(&m).await;
        let e = by_range.entry(range).or_insert((owner, Vec::new()));
        e.1.push(m);
    }
    let (&range_id, (source, merchants)) =
        by_range.iter().max_by_key(|(_, (_, ms))| ms.len()).unwrap();
    let (source, merchants) = (source.clone(), merchants.clone());
    let target = if source == "s1" { "s2" } else { "s1" }.to_owned();
    let idx = |s: &str| if s == "s1" { 0 } else { 1 };
    let (start, end, _, _) = common::range(&c, range_id).await;

    let acked: AckMap = Arc::default();
    let errors: Errors = Arc::default();
    for i in 0..SEED_FLOWS {
        let m = &merchants[i % merchants.len()];
        payment_flow(&r, m, &format!("seed-{i}"), i % 2, &acked, &errors).await;
    }
    assert!(errors.lock().await.is_empty(), "{:?}", errors.lock().await);

    let stop = Arc::new(AtomicBool::new(false));
    let clients = start_clients(&r, &merchants, &acked, &errors, &stop);

    // The engine as a service; the gate holds it at the fail point.
    let mut gate = Gate::new(fail_point);
    let mut ecfg = common::engine_config(&c);
    ecfg.poll_interval = Duration::from_millis(100);
    ecfg.sync_timeout = Duration::from_secs(90);
    let engine_stop = CancellationToken::new();
    let service = tokio::spawn(shardline_rebalancer::run(ecfg, engine_stop.clone()));
    let id = plan_move(&c.catalog_pool, Subject::Range(range_id), &target, "fault")
        .await
        .unwrap();
    gate.reached().await;
    let held_in = move_state(&c, id).await;
    eprintln!("engine held at {fail_point} in state {held_in}");
    let t_fault = Instant::now();
    match fault {
        Fault::RestartSource => {
            assert_eq!(held_in, "copying");
            let src = &mut c.shards[idx(&source)];
            src.stop();
            // The engine goes on while the source is down, longer than a shard
            // pool waits for a connection (10 s).
            gate.release();
            tokio::time::sleep(Duration::from_secs(12)).await;
            src.restart().await.expect("restart source");
        }
        Fault::KillTarget => {
            assert_eq!(held_in, "catching_up");
            let dst = &mut c.shards[idx(&target)];
            dst.kill();
            // The engine goes on while the target is down (catch-up waits for the
            // subscriber to come back).
            gate.release();
            tokio::time::sleep(Duration::from_secs(12)).await;
            dst.restart().await.expect("restart target");
        }
    }
    eprintln!("{fault:?} took {:?}", t_fault.elapsed());

    let deadline = Instant::now() + Duration::from_secs(240);
    let end_state = loop {
        let st = move_state(&c, id).await;
        if st == "done" || st == "aborted" {
            break st;
        }
        assert!(Instant::now() < deadline, "move stuck in {st}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for cl in clients {
        cl.await.unwrap();
    }
    engine_stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), service)
        .await
        .expect("service stops")
        .unwrap()
        .unwrap();
    let (error, events): (Option<String>, Vec<String>) = (
        sqlx::query_scalar("SELECT error FROM moves WHERE id = $1")
            .bind(id)
            .fetch_one(&c.catalog_pool)
            .await
            .unwrap(),
        sqlx::query_scalar("SELECT to_state FROM move_events WHERE move_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(&c.catalog_pool)
            .await
            .unwrap(),
    );
    eprintln!("move {id}: {end_state} (error {error:?}); events {events:?}");
    if end_state != MoveState::Done.as_str() {
        for (i, sh) in c.shards.iter().enumerate() {
            let log = std::fs::read_to_string(sh.log_path()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "--- s{} log tail:\n{}",
                i + 1,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }

    let errs = errors.lock().await.clone();
    assert!(errs.is_empty(), "client errors: {errs:?}");
    let owner = if end_state == MoveState::Done.as_str() {
        target.clone()
    } else {
        source.clone()
    };
    let other = if owner == "s1" { "s2" } else { "s1" };
    let (_, _, cat_owner, cat_state) = common::range(&c, range_id).await;
    assert_eq!(
        (cat_owner.as_str(), cat_state.as_str()),
        (owner.as_str(), "active")
    );
    assert_eq!(
        common::owned_state(c.shard(&owner), range_id)
            .await
            .as_deref(),
        Some("active")
    );
    assert_eq!(common::owned_state(c.shard(other), range_id).await, None);
    assert_eq!(
        range_rows(c.shard(other), start, end).await,
        0,
        "rows left on {other}"
    );

    // Every acknowledged payment exactly once on the owner, as acknowledged; and
    // nothing else (clients retry each request until it is acknowledged).
    let acked = acked.lock().await.clone();
    common::assert_payments_as_acked(c.shard(&owner), start, end, &acked, &owner).await;
    assert_ledger_consistent(&c).await;
    assert_no_move_objects(&c).await;
    // the owner takes writes
    let a = r
        .authorize(&merchants[0], "1.00", "USD", "after-fault")
        .await;
    assert!(a.status.is_success(), "{a:?}");
    let token = a.headers["shardline-token"].to_str().unwrap().to_owned();
    assert!(token.starts_with(&format!("{owner}:")), "{token}");
    eprintln!(
        "{fault:?}: {end_state}; {} acknowledged payments verified on {owner}; test took {:?}",
        acked.len(),
        t_test.elapsed()
    );
    stop_router.cancel();
}

async fn move_state(c: &Cluster, id: uuid::Uuid) -> String {
    sqlx::query_scalar("SELECT state FROM moves WHERE id = $1")
        .bind(id)
        .fetch_one(&c.catalog_pool)
        .await
        .unwrap()
}

fn start_clients(
    r: &Router,
    merchants: &[String],
    acked: &AckMap,
    errors: &Errors,
    stop: &Arc<AtomicBool>,
) -> Vec<JoinHandle<()>> {
    (0..CLIENTS)
        .map(|w| {
            let (r, merchants, acked, errors, stop) = (
                r.clone(),
                merchants.to_vec(),
                acked.clone(),
                errors.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let m = &merchants[(w + i) % merchants.len()];
                    payment_flow(&r, m, &format!("c{w}-{i}"), 1, &acked, &errors).await;
                    i += 1;
                }
            })
        })
        .collect()
}

/// POST until acknowledged, retrying with the same idempotency key on 5xx and 409
/// (shard down, hold expired, request with that key in flight) for up to 60 s.
async fn post(
    r: &Router,
    uri: &str,
    idem: &str,
    body: serde_json::Value,
    errors: &Errors,
) -> Option<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let resp = r.post(uri, Some(idem), body.clone()).await;
        if resp.status.is_success() {
            return Some(resp.body);
        }
        let retry = resp.status.is_server_error() || resp.status.as_u16() == 409;
        if !retry || Instant::now() > deadline {
            errors
                .lock()
                .await
                .push(format!("{uri} {idem}: {} {}", resp.status, resp.body));
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// authorize, then (when `refunds > 0`) capture in full and refund 1.00 `refunds`
/// times; records what was acknowledged.
async fn payment_flow(
    r: &Router,
    m: &str,
    tag: &str,
    refunds: usize,
    acked: &AckMap,
    errors: &Errors,
) {
    let uri = format!("/v1/merchants/{m}/payments");
    let body = json!({"amount": "10.00", "currency": "USD"});
    let Some(a) = post(r, &uri, &format!("{tag}-a"), body, errors).await else {
        return;
    };
    let pid = a["id"].as_str().unwrap().to_owned();
    let mut rec = Acked {
        merchant: m.to_owned(),
        captured: false,
        refunds: 0,
    };
    acked.lock().await.insert(pid.clone(), rec.clone());
    if refunds == 0 {
        return;
    }
    let base = format!("{uri}/{pid}");
    if post(
        r,
        &format!("{base}/capture"),
        &format!("{tag}-c"),
        json!({}),
        errors,
    )
    .await
    .is_none()
    {
        return;
    }
    rec.captured = true;
    acked.lock().await.insert(pid.clone(), rec.clone());
    for k in 0..refunds {
        let body = json!({"amount": "1.00"});
        if post(
            r,
            &format!("{base}/refunds"),
            &format!("{tag}-r{k}"),
            body,
            errors,
        )
        .await
        .is_none()
        {
            return;
        }
        rec.refunds += 1;
        acked.lock().await.insert(pid.clone(), rec.clone());
    }
}

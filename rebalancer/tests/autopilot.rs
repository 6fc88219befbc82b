//! The policy loop against a real catalog and shards.
//!
//! * `round_*`: one round at a time over planted load samples: dry-run stores
//!   decisions and executes nothing, active isolates and plans the move, paused
//!   stores nothing; the admin API shows the mode and the decisions.
//! * `skewed_load_*` (needs `failpoints`): real load through the router with one
//!   hot merchant; the leader's loop isolates it and moves it to a cooler shard on
//!   its own with zero client errors; the leader is killed mid-move and the
//!   standby finishes the move. Invariants are checked row by row.

// The load generator and invariant checks serve the failpoints-only test.
#![cfg_attr(not(feature = "failpoints"), allow(dead_code, unused_imports))]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{Acked, Cluster, assert_ledger_consistent, assert_no_move_objects};
use http_body_util::BodyExt;
use serde_json::Value;
use shardline_rebalancer::admin::{AdminState, app};
use shardline_rebalancer::autopilot::{
    DecisionFilter, LoopConfig, PolicyLoop, PolicyMode, list_decisions, state,
};
use shardline_rebalancer::policy::PolicyConfig;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Knobs for second-scale tests: 1 s intervals, 3 sustained, low floor, no merges.
fn fast_policy() -> PolicyConfig {
    PolicyConfig {
        interval: Duration::from_secs(1),
        history_intervals: 20,
        sustained_intervals: 3,
        tolerance: 0.2,
        min_shard_load: 5.0,
        range_cooldown: Duration::from_secs(300),
        merge_cold_load: 0.0,
        max_concurrent_moves: 1,
        ..PolicyConfig::default()
    }
}

fn loop_config(identity: &str) -> LoopConfig {
    let mut c = LoopConfig::new(fast_policy());
    c.round_delay = Duration::from_millis(100);
    c.identity = identity.to_owned();
    c
}

/// Plant `n` complete 1 s intervals of load: `hot` (merchant, key, range) with
/// 60 of its range's 100 req/s, every other range at 30 req/s. Its shard carries
/// 130/s, the others 60/s: isolating it to one of them gives 70 and 120.
async fn plant_samples(c: &Cluster, hot: (&str, i64, i64), n: i64) {
    let ranges = shardline_core::catalog::list_ranges(&c.catalog_pool)
        .await
        .unwrap();
    for j in 1..=n {
        for r in &ranges {
            let (req, hh) = if r.id == hot.2 {
                (
                    100,
                    serde_json::json!([{"merchant_id": hot.0, "shard_key": hot.1, "count": 60, "error": 0}]),
                )
            } else {
                (30, serde_json::json!([]))
            };
            sqlx::query(
                "INSERT INTO load_samples (router_id, at, interval_ms, range_id, start_key, end_key,
                    shard_id, requests, heavy_hitters)
                 VALUES ('r1', now() - make_interval(secs => $1), 1000, $2, $3, $4, $5, $6, $7)",
            )
            .bind(j as f64 - 0.5)
            .bind(r.id)
            .bind(r.start_key)
            .bind(r.end_key)
            .bind(&r.shard_id)
            .bind(req)
            .bind(hh)
            .execute(&c.catalog_pool)
            .await
            .unwrap();
        }
    }
}

async fn admin(c: &Cluster, method: &str, uri: &str) -> (StatusCode, Value) {
    let resp = app(AdminState::new(c.catalog_pool.clone()))
        .oneshot(
            Request::builder()
                .method(method)
                .uri(uri)
                .header("authorization", format!("Bearer {}", c.admin_key))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_honour_dry_run_active_and_paused() {
    let c = Cluster::start(3).await;
    let stop = CancellationToken::new();
    let r = c.router(c.config(), &stop).await;
    let m = r.merchant("EUR").await;
    let a = r.authorize(&m, "5.00", "EUR", "p1").await;
    assert!(a.status.is_success(), "{a:?}");
    let (source, range_id) = c.owner(&m).await;
    let key = i64::from(shardline_core::shard_key(&m.parse().unwrap()));
    plant_samples(&c, (&m, key, range_id), 8).await;
    let mut lp = PolicyLoop::new(c.catalog_pool.clone(), loop_config("t1")).unwrap();

    // dry run: the isolation is decided and stored, nothing is executed
    let (st, v) = admin(&c, "POST", "/v1/policy/dry-run").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["mode"], "dry_run");
    let rep = lp.round().await.unwrap();
    let taken: Vec<_> = rep.decisions.iter().filter(|d| d.taken).collect();
    assert_eq!(taken.len(), 1, "{:#?}", rep.decisions);
    assert_eq!(taken[0].reason.code(), "isolate_dominant_merchant");
    assert!(rep.moves.is_empty());
    let stored = list_decisions(
        &c.catalog_pool,
        &DecisionFilter {
            limit: 100,
            ..DecisionFilter::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(stored.len(), rep.decisions.len());
    assert!(stored.iter().all(|d| d.dry_run && d.move_id.is_none()));
    let n_moves: i64 = sqlx::query_scalar("SELECT count(*) FROM moves")
        .fetch_one(&c.catalog_pool)
        .await
        .unwrap();
    assert_eq!(n_moves, 0);
    assert_eq!(c.owner(&m).await, (source.clone(), range_id));

    // paused: no round, nothing stored
    let (_, v) = admin(&c, "POST", "/v1/policy/pause").await;
    assert_eq!(v["mode"], "paused");
    let rep = lp.round().await.unwrap();
    assert!(rep.decisions.is_empty());
    let (_, list) = admin(&c, "GET", "/v1/decisions?limit=1000").await;
    assert_eq!(list.as_array().unwrap().len(), stored.len());

    // active: the merchant's key becomes a range of its own with a planned move
    let (_, v) = admin(&c, "POST", "/v1/policy/resume").await;
    assert_eq!(v["mode"], "active");
    let rep = lp.round().await.unwrap();
    assert_eq!(rep.moves.len(), 1, "{:#?} {:?}", rep.decisions, rep.failed);
    let (start, end, shard, to): (i64, i64, String, String) = sqlx::query_as(
        "SELECT start_key, end_key, source_shard, target_shard FROM moves WHERE id = $1",
    )
    .bind(rep.moves[0])
    .fetch_one(&c.catalog_pool)
    .await
    .unwrap();
    assert_eq!(
        (start, end, shard.as_str()),
        (key, key + 1, source.as_str())
    );
    assert_ne!(to, source);
    let (_, taken) = admin(&c, "GET", "/v1/decisions?taken=true&limit=10").await;
    let taken = taken.as_array().unwrap();
    assert_eq!(taken[0]["move_id"], rep.moves[0].to_string());
    assert_eq!(taken[0]["reason"], "isolate_dominant_merchant");
    assert!(taken[0]["decision"]["explanation"].as_str().unwrap().len() > 20);
    // the move in flight is projected: the next round takes nothing more
    let rep = lp.round().await.unwrap();
    assert!(rep.moves.is_empty(), "{:#?}", rep.decisions);

    // bad input is a problem, not a 500
    let (st, v) = admin(&c, "GET", "/v1/decisions?limit=0").await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_query"))
    );
    let (st, _) = admin(&c, "GET", "/v1/decisions?reason=nope").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let s = state::get(&c.catalog_pool).await.unwrap();
    assert_eq!(s.mode, PolicyMode::Active);
    stop.cancel();
}

/// Client load: `n` background merchants at a few req/s each and one hot
/// merchant with `hot_workers` tight loops. Every acknowledged payment is kept;
/// any non-2xx answer is an error.
struct Load {
    acked: Arc<Mutex<HashMap<String, Acked>>>,
    errors: Arc<Mutex<Vec<String>>>,
    requests: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(r: &common::Router, background: &[String], hot: &str, hot_workers: usize) -> Load {
        let l = Load {
            acked: Arc::default(),
            errors: Arc::default(),
            requests: Arc::default(),
            stop: Arc::default(),
            tasks: Vec::new(),
        };
        let mut tasks = Vec::new();
        let mut spawn = |m: String, pause: Duration, tag: String| {
            let (r, acked, errors, requests, stop) = (
                r.clone(),
                l.acked.clone(),
                l.errors.clone(),
                l.requests.clone(),
                l.stop.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let a = r.authorize(&m, "1.25", "EUR", &format!("{tag}-{i}")).await;
                    requests.fetch_add(1, Ordering::Relaxed);
                    if a.status.is_success() {
                        let pid = a.body["id"].as_str().unwrap().to_owned();
                        let rec = Acked {
                            merchant: m.clone(),
                            captured: false,
                            refunds: 0,
                        };
                        acked.lock().await.insert(pid, rec);
                    } else {
                        errors
                            .lock()
                            .await
                            .push(format!("{tag}: {} {}", a.status, a.body));
                    }
                    tokio::time::sleep(pause).await;
                }
            }));
        };
        for (i, m) in background.iter().enumerate() {
            spawn(m.clone(), Duration::from_millis(250), format!("bg{i}"));
        }
        for w in 0..hot_workers {
            spawn(hot.to_owned(), Duration::from_millis(3), format!("hot{w}"));
        }
        Load { tasks, ..l }
    }

    async fn stop(self) -> (HashMap<String, Acked>, Vec<String>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let acked = std::mem::take(&mut *self.acked.lock().await);
        let errors = std::mem::take(&mut *self.errors.lock().await);
        (acked, errors, self.requests.load(Ordering::Relaxed))
    }
}

async fn wait_leader(c: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match shardline_rebalancer::Engine::new(c.catalog_pool.clone(), common::engine_config(c))
            .await
        {
            Err(shardline_rebalancer::Error::NotLeader) => return,
            Ok(e) => drop(e),
            Err(e) => panic!("{e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no rebalancer became leader");
}

#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skewed_load_makes_the_leader_move_the_hot_merchant_and_the_standby_finishes_it() {
    let scenario = fail::FailScenario::setup();
    let c = Cluster::start(3).await;
    let stop = CancellationToken::new();
    let mut rcfg = c.config();
    rcfg.load_flush_interval = Duration::from_millis(250);
    let r = c.router(rcfg, &stop).await;
    // The hot merchant's shard also carries most of the background (8 merchants
    // at ~4 req/s), the others one each: isolating the hot merchant onto a
    // cooler shard lowers the cluster's maximum (on equal shards it could not).
    let hot = r.merchant("EUR").await;
    let (source, _) = c.owner(&hot).await;
    let mut background = Vec::new();
    let mut per_shard: HashMap<String, usize> = HashMap::new();
    while background.len() < 10 {
        let m = r.merchant("EUR").await;
        let (owner, _) = c.owner(&m).await;
        let want = if owner == source { 8 } else { 1 };
        let n = per_shard.entry(owner).or_default();
        if *n < want {
            *n += 1;
            background.push(m);
        }
    }
    let key = i64::from(shardline_core::shard_key(&hot.parse().unwrap()));

    // Hold the leader's first move after its copy: that is where it gets killed.
    let mut gate = common::Gate::new("move-after-copying");
    let engine_cfg = |id: &str| {
        let mut e = common::engine_config(&c);
        e.poll_interval = Duration::from_millis(100);
        e.policy = Some(loop_config(id));
        e
    };
    let leader_stop = CancellationToken::new();
    let leader = tokio::spawn(shardline_rebalancer::run(
        engine_cfg("leader"),
        leader_stop.clone(),
    ));
    wait_leader(&c).await;
    let standby_stop = CancellationToken::new();
    let standby = tokio::spawn(shardline_rebalancer::run(
        engine_cfg("standby"),
        standby_stop.clone(),
    ));

    let onset = Instant::now();
    let load = Load::start(&r, &background, &hot, 2);
    tokio::time::timeout(Duration::from_secs(90), gate.reached())
        .await
        .expect("the policy never moved the hot merchant");
    let decided_after = onset.elapsed();
    // The leader dies mid-move (its task and its catalog session with the lock).
    leader.abort();
    let _ = leader.await;
    gate.release();

    let move_id: uuid::Uuid = sqlx::query_scalar(
        "SELECT move_id FROM decisions WHERE taken AND reason = 'isolate_dominant_merchant'
            AND move_id IS NOT NULL ORDER BY id LIMIT 1",
    )
    .fetch_one(&c.catalog_pool)
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let st: String = sqlx::query_scalar("SELECT state FROM moves WHERE id = $1")
            .bind(move_id)
            .fetch_one(&c.catalog_pool)
            .await
            .unwrap();
        if st == "done" {
            break;
        }
        assert!(st != "aborted", "the standby aborted the move");
        assert!(
            Instant::now() < deadline,
            "the standby never finished the move ({st})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let moved_after = onset.elapsed();
    // Stop deciding and let any other move the policy started finish.
    state::set_mode(&c.catalog_pool, PolicyMode::Paused, "test")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM moves WHERE state NOT IN ('done', 'aborted')")
                .fetch_one(&c.catalog_pool)
                .await
                .unwrap();
        if n == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{n} moves never finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Keep the load on a little after the move, then stop it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (acked, errors, requests) = load.stop().await;
    assert!(errors.is_empty(), "client errors: {errors:?}");
    let (owner, range_id) = c.owner(&hot).await;
    assert_ne!(owner, source, "the hot merchant is still on its shard");
    let (start, end, _, state) = common::range(&c, range_id).await;
    assert_eq!((start, end, state.as_str()), (key, key + 1, "active"));
    let leader_identity: Option<String> =
        sqlx::query_scalar("SELECT requested_by FROM moves WHERE id = $1")
            .bind(move_id)
            .fetch_one(&c.catalog_pool)
            .await
            .unwrap();
    assert_eq!(leader_identity.as_deref(), Some("leader"));
    let finisher: String = sqlx::query_scalar("SELECT leader FROM policy_state")
        .fetch_one(&c.catalog_pool)
        .await
        .unwrap();
    assert_eq!(
        finisher, "standby",
        "the standby's loop runs after the takeover"
    );

    // Every acknowledged payment exactly once, on the shard owning its key.
    let map = shardline_core::catalog::load_range_map(&c.catalog_pool)
        .await
        .unwrap();
    for (id, pool) in &c.shard_pools {
        for rg in map.ranges_of(id) {
            let mine: HashMap<String, Acked> = acked
                .iter()
                .filter(|(_, a)| {
                    rg.range
                        .contains(shardline_core::shard_key(&a.merchant.parse().unwrap()))
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            common::assert_payments_as_acked(
                pool,
                rg.range.start() as i64,
                rg.range.end() as i64,
                &mine,
                id.as_str(),
            )
            .await;
        }
    }
    assert_ledger_consistent(&c).await;
    standby_stop.cancel();
    standby.await.unwrap().unwrap();
    assert_no_move_objects(&c).await;
    eprintln!(
        "autopilot e2e: {requests} requests, 0 errors; hot merchant's move decided and held \
         after {:.1} s, finished by the standby after {:.1} s",
        decided_after.as_secs_f64(),
        moved_after.as_secs_f64()
    );
    stop.cancel();
    scenario.teardown();
}

//! Crash safety: the engine stops dead after each step (fail point
//! `move-after-<step>` set to `return`), a fresh engine takes the leader lock,
//! resumes every unfinished move and ends it `done` or `aborted` with the
//! invariants holding. Also: only one engine leads. Needs the `failpoints` feature.

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, assert_ledger_consistent, assert_no_move_objects, range_rows};
use fail::FailScenario;
use shardline_rebalancer::{Config, Engine, Error, FAIL_POINTS, MoveState, Subject};
use tokio_util::sync::CancellationToken;

/// Make the engine stop dead at fail point `name`; returns the step it reports.
fn crash_at(name: &str) -> &'static str {
    fail::cfg(name, "return").unwrap();
    FAIL_POINTS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("unknown fail point {name}"))
        .1
}

fn clear() {
    for (name, _) in FAIL_POINTS {
        fail::remove(name);
    }
}

async fn leader(c: &Cluster, cfg: Config) -> Engine {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Engine::new(c.catalog_pool.clone(), cfg.clone()).await {
            Ok(e) => return e,
            Err(Error::NotLeader) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("engine: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_engine_finishes_or_rolls_back_after_a_crash_at_each_step() {
    let scenario = FailScenario::setup();
    let c = Cluster::start(2).await;
    let stop = CancellationToken::new();
    let r = c.router(c.config(), &stop).await;
    let m = r.merchant("USD").await;
    for i in 0..40 {
        let a = r.authorize(&m, "3.00", "USD", &format!("p{i}")).await;
        assert!(a.status.is_success(), "{a:?}");
    }
    let (_, range_id) = c.owner(&m).await;
    let (start, end, _, _) = common::range(&c, range_id).await;
    let total = range_rows(c.shard(&c.owner(&m).await.0), start, end).await;

    // (first crash, second crash, expected end); every fail point is hit
    let cases: [(&'static str, Option<&'static str>, MoveState); 13] = [
        ("move-during-copy", None, MoveState::Done),
        ("move-after-copying", None, MoveState::Done),
        ("move-during-catch-up", None, MoveState::Done),
        ("move-after-catching-up", None, MoveState::Done),
        ("move-before-money-pass", None, MoveState::Done),
        ("move-after-verifying", None, MoveState::Done),
        ("move-before-cutover-freeze", None, MoveState::Aborted),
        ("move-after-cutover-frozen", None, MoveState::Aborted),
        ("move-after-target-activated", None, MoveState::Aborted),
        (
            "move-after-cutover-frozen",
            Some("move-after-aborting"),
            MoveState::Aborted,
        ),
        ("move-after-switched", None, MoveState::Done),
        ("move-after-cleaning", None, MoveState::Done),
        (
            "move-after-copying",
            Some("move-after-cleaning"),
            MoveState::Done,
        ),
    ];
    for (first, second, want) in cases {
        let (source, _) = c.owner(&m).await;
        let target = if source == "s1" { "s2" } else { "s1" };
        let step = crash_at(first);
        let e1 = leader(&c, common::engine_config(&c)).await;
        // a second engine cannot lead while the first lives
        assert!(matches!(
            Engine::new(c.catalog_pool.clone(), common::engine_config(&c)).await,
            Err(Error::NotLeader)
        ));
        let id = e1
            .plan_move(Subject::Range(range_id), target, "test")
            .await
            .unwrap();
        let err = e1.run_move(id).await.unwrap_err();
        assert!(matches!(err, Error::Crashed(s) if s == step), "{err}");
        drop(e1);
        clear();
        if let Some(second) = second {
            let step = crash_at(second);
            let e2 = leader(&c, common::engine_config(&c)).await;
            let res = e2.resume_all().await.unwrap();
            assert!(matches!(res[0].1, Err(Error::Crashed(s)) if s == step));
            drop(e2);
        }
        clear();
        let e3 = leader(&c, common::engine_config(&c)).await;
        e3.reconcile_orphans().await.unwrap();
        let res = e3.resume_all().await.unwrap();
        assert_eq!(res.len(), 1);
        let got = res[0].1.as_ref().map_err(|e| e.to_string()).cloned();
        eprintln!("crash after {first} / {second:?}: {got:?}");
        assert_eq!(got, Ok(want), "crash after {first}/{second:?}");
        drop(e3);

        let owner = if want == MoveState::Done {
            target
        } else {
            source.as_str()
        };
        let other = if owner == "s1" { "s2" } else { "s1" };
        let (_, _, cat_owner, cat_state) = common::range(&c, range_id).await;
        assert_eq!((cat_owner.as_str(), cat_state.as_str()), (owner, "active"));
        assert_eq!(
            common::owned_state(c.shard(owner), range_id)
                .await
                .as_deref(),
            Some("active")
        );
        assert_eq!(common::owned_state(c.shard(other), range_id).await, None);
        let rows = range_rows(c.shard(owner), start, end).await;
        // done moves leave one cutover marker per move on the new owner
        assert!(rows >= total, "{rows} < {total}");
        assert_eq!(range_rows(c.shard(other), start, end).await, 0);
        assert_no_move_objects(&c).await;
        assert_ledger_consistent(&c).await;
        // the router writes to the owner
        let a = r
            .authorize(&m, "1.00", "USD", &format!("after-{first}-{second:?}"))
            .await;
        assert!(a.status.is_success(), "{a:?}");
        let token = a.headers["shardline-token"].to_str().unwrap().to_owned();
        assert!(token.starts_with(&format!("{owner}:")), "{token}");
    }
    stop.cancel();
    scenario.teardown();
}

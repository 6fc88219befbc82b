//! Verification gates the flip: a row corrupted on the target after the copy (same
//! version, different amount) is caught, and the move ends `aborted` with the source
//! intact and active and nothing left on the target. Also: an operator abort, after
//! the copy and right before the freeze (honoured by the catalog flip itself);
//! and a failure after the target's activation committed, before the flip.
//! The test acts while the engine is held at a fail point (`failpoints` feature).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Cluster, Gate, assert_no_move_objects, range_rows};
use fail::FailScenario;
use shardline_rebalancer::{Engine, MoveState, Subject};
use sqlx::Connection;
use tokio_util::sync::CancellationToken;

/// Two shard clusters, a router, and a merchant with `n` payments; the move
/// goes from the shard owning its range to the other one.
struct Fixture {
    c: Cluster,
    stop: CancellationToken,
    r: common::Router,
    m: String,
    range_id: i64,
    source: String,
    target: String,
    start: i64,
    end: i64,
    /// Rows of the range on the source before the move.
    src_rows: i64,
}

impl Fixture {
    async fn start(n: usize) -> Fixture {
        let c = Cluster::start(2).await;
        let stop = CancellationToken::new();
        let r = c.router(c.config(), &stop).await;
        let m = r.merchant("USD").await;
        for i in 0..n {
            let a = r.authorize(&m, "12.50", "USD", &format!("p{i}")).await;
            assert!(a.status.is_success(), "{a:?}");
        }
        let (source, range_id) = c.owner(&m).await;
        let target = if source == "s1" { "s2" } else { "s1" }.to_owned();
        let (start, end, _, _) = common::range(&c, range_id).await;
        let src_rows = range_rows(c.shard(&source), start, end).await;
        Fixture {
            c,
            stop,
            r,
            m,
            range_id,
            source,
            target,
            start,
            end,
            src_rows,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_target_row_aborts_the_move() {
    let _scenario = FailScenario::setup();
    let Fixture {
        c,
        stop,
        r,
        m,
        range_id,
        source,
        target,
        start,
        end,
        src_rows,
    } = Fixture::start(50).await;

    // After catch-up, before verification: change a payment amount on the target
    // the way only a bug could (replica role: no fence, no version bump).
    let target_url = c.shards[if target == "s1" { 0 } else { 1 }].url("shard");
    let mut gate = Gate::new("move-after-catching-up");
    let mut cfg = common::engine_config(&c);
    cfg.verify_max_passes = 5;
    let (engine, id, run) = common::spawn_move(&c, cfg, range_id, &target).await;
    gate.reached().await;
    let mut conn = sqlx::PgConnection::connect(&target_url).await.unwrap();
    sqlx::raw_sql("SET session_replication_role = replica")
        .execute(&mut conn)
        .await
        .unwrap();
    let n = sqlx::query(
        "UPDATE payments SET amount = amount + 1 WHERE payment_id =
            (SELECT payment_id FROM payments WHERE merchant_id = $1::uuid LIMIT 1)",
    )
    .bind(&m)
    .execute(&mut conn)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(n, 1);
    gate.release();
    let st = run.await.unwrap().unwrap();
    let mv = engine.load(id).await.unwrap();
    eprintln!("ended {st}: {:?}", mv.error);
    assert_eq!(st, MoveState::Aborted);
    assert!(
        mv.error
            .as_deref()
            .unwrap_or("")
            .contains("verification failed"),
        "{:?}",
        mv.error
    );

    // Source intact and active, catalog unchanged, target clean.
    common::assert_owned_only_by(&c, range_id, &source, &target).await;
    assert_eq!(range_rows(c.shard(&source), start, end).await, src_rows);
    // Writes keep working on the source.
    let a = r.authorize(&m, "1.00", "USD", "after-abort").await;
    assert!(a.status.is_success(), "{a:?}");
    let events = common::move_states(&c, id).await;
    assert_eq!(
        events,
        [
            "planned",
            "copying",
            "catching_up",
            "verifying",
            "aborting",
            "aborted"
        ]
    );
    stop.cancel();
}

/// Run a move of `range_id` to `target` held at fail point `gate`, request an
/// abort there, release it, and expect the move to end `aborted`.
async fn abort_held_at(
    c: &Cluster,
    gate: &'static str,
    range_id: i64,
    target: &str,
) -> (Arc<Engine>, uuid::Uuid) {
    let mut gate = Gate::new(gate);
    let (engine, id, run) = common::spawn_move(c, common::engine_config(c), range_id, target).await;
    gate.reached().await;
    assert!(engine.abort(id).await.unwrap());
    gate.release();
    assert_eq!(run.await.unwrap().unwrap(), MoveState::Aborted);
    (engine, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_abort_rolls_back() {
    let _scenario = FailScenario::setup();
    let Fixture {
        c,
        stop,
        r: _r,
        m: _,
        range_id,
        source,
        target,
        start,
        end,
        src_rows,
    } = Fixture::start(20).await;
    // The operator aborts once the copy is done, before catching up.
    let (engine, id) = abort_held_at(&c, "move-after-copying", range_id, &target).await;
    assert!(
        !engine.abort(id).await.unwrap(),
        "finished moves cannot be aborted"
    );
    assert_eq!(range_rows(c.shard(&source), start, end).await, src_rows);
    assert_eq!(range_rows(c.shard(&target), start, end).await, 0);
    assert_eq!(
        common::owned_state(c.shard(&source), range_id)
            .await
            .as_deref(),
        Some("active")
    );
    assert_no_move_objects(&c).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_abort_right_before_the_freeze_is_honoured_by_the_flip() {
    let _scenario = FailScenario::setup();
    let Fixture {
        c,
        stop,
        r,
        m,
        range_id,
        source,
        target,
        start,
        end,
        src_rows,
    } = Fixture::start(20).await;
    // Held in `cutover` after the last delta pass: the abort is requested before
    // the pause begins; the pause runs (freeze, marker, frozen check) and the
    // flip statement, which locks the move, sees the request and refuses.
    let (_, id) = abort_held_at(&c, "move-before-cutover-freeze", range_id, &target).await;
    let markers: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM range_events WHERE move_id = $1 AND kind = 'cutover_marker'",
    )
    .bind(id)
    .fetch_one(c.shard(&source))
    .await
    .unwrap();
    assert_eq!(
        markers, 1,
        "the pause began (freeze + marker) before the flip refused"
    );
    common::assert_owned_only_by(&c, range_id, &source, &target).await;
    assert_eq!(range_rows(c.shard(&source), start, end).await, src_rows + 1);
    let events = common::move_states(&c, id).await;
    assert!(
        events.ends_with(&[
            "cutover".into(),
            "cutover".into(),
            "aborting".into(),
            "aborted".into()
        ]),
        "{events:?}"
    );
    // Writes keep working on the source.
    let a = r.authorize(&m, "1.00", "USD", "after-abort").await;
    assert!(a.status.is_success(), "{a:?}");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_after_the_target_activated_rolls_back_with_one_owner() {
    let scenario = FailScenario::setup();
    let Fixture {
        c,
        stop,
        r,
        m,
        range_id,
        source,
        target,
        start,
        end,
        src_rows,
    } = Fixture::start(20).await;
    // The target's range is active (its transaction committed), the catalog
    // flip has not committed, and the pause fails as on a lost connection.
    fail::cfg("move-after-target-activated", "return(error)").unwrap();
    let engine = Engine::new(c.catalog_pool.clone(), common::engine_config(&c))
        .await
        .unwrap();
    let id = engine
        .plan_move(Subject::Range(range_id), &target, "test")
        .await
        .unwrap();
    assert_eq!(engine.run_move(id).await.unwrap(), MoveState::Aborted);
    fail::remove("move-after-target-activated");
    let mv = engine.load(id).await.unwrap();
    assert!(
        mv.error.as_deref().unwrap_or("").contains("injected error"),
        "{:?}",
        mv.error
    );
    common::assert_owned_only_by(&c, range_id, &source, &target).await;
    // the source keeps its rows plus the cutover marker
    assert_eq!(range_rows(c.shard(&source), start, end).await, src_rows + 1);
    let a = r.authorize(&m, "1.00", "USD", "after-abort").await;
    assert!(a.status.is_success(), "{a:?}");
    stop.cancel();
    drop(scenario);
}

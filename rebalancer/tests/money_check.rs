//! The money part of the frozen check, split at the money pass horizon H
//! (docs/moves.md, "Verification"), can fail both ways:
//! * a ledger row written after H, corrupted on the target after the money pass,
//!   is caught by the post-H sums (by key) inside the pause;
//! * a ledger row written before H, corrupted on the target after the row passes
//!   (so no row check looks at it again), makes its merchant a suspect in the money
//!   pass, and the full per-merchant comparison inside the pause catches it.
//!
//! The row part of that check catches a row written after the last delta pass
//! and corrupted on the target right before the freeze.
//!
//! Every way the move aborts at the cutover, never flips, and leaves the source
//! intact and active. The corruption is made the way only a bug could
//! (`session_replication_role = replica`: no fence, no immutability trigger).

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, Gate, range_rows};
use fail::FailScenario;
use shardline_rebalancer::{Engine, MoveState};
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

async fn replica_conn(url: &str) -> PgConnection {
    let mut conn = PgConnection::connect(url).await.unwrap();
    sqlx::raw_sql("SET session_replication_role = replica")
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

/// Wait until the target holds ledger row (journal, line).
async fn wait_for_ledger_row(target: &PgPool, journal: Uuid, line: i16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM ledger_entries WHERE journal_id = $1 AND line = $2",
        )
        .bind(journal)
        .bind(line)
        .fetch_one(target)
        .await
        .unwrap();
        if n == 1 {
            return;
        }
        assert!(Instant::now() < deadline, "ledger row never replicated");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Add 1 to the amount of ledger row (journal, line) on `url`'s shard.
async fn corrupt_ledger_row(url: &str, journal: Uuid, line: i16) {
    let mut conn = replica_conn(url).await;
    let n = sqlx::query(
        "UPDATE ledger_entries SET amount = amount + 1 WHERE journal_id = $1 AND line = $2",
    )
    .bind(journal)
    .bind(line)
    .execute(&mut conn)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(n, 1);
}

/// The newest ledger row of a payment: (journal, line).
async fn ledger_row_of(p: &PgPool, payment: &str) -> (Uuid, i16) {
    sqlx::query_as(
        "SELECT journal_id, line FROM ledger_entries WHERE payment_id = $1::uuid
          ORDER BY created_at DESC, line LIMIT 1",
    )
    .bind(payment)
    .fetch_one(p)
    .await
    .unwrap()
}

struct Setup {
    c: Cluster,
    r: common::Router,
    stop: CancellationToken,
    merchant: String,
    first_payment: String,
    range_id: i64,
    source: String,
    target: String,
}

async fn setup() -> Setup {
    let c = Cluster::start(2).await;
    let stop = CancellationToken::new();
    let r = c.router(c.config(), &stop).await;
    let merchant = r.merchant("USD").await;
    let mut first_payment = String::new();
    for i in 0..30 {
        let a = r
            .authorize(&merchant, "12.50", "USD", &format!("p{i}"))
            .await;
        assert!(a.status.is_success(), "{a:?}");
        if i == 0 {
            first_payment = a.body["id"].as_str().unwrap().to_owned();
        }
    }
    let (source, range_id) = c.owner(&merchant).await;
    let target = if source == "s1" { "s2" } else { "s1" }.to_owned();
    Setup {
        c,
        r,
        stop,
        merchant,
        first_payment,
        range_id,
        source,
        target,
    }
}

fn shard_url(s: &Setup, shard: &str) -> String {
    s.c.shards[if shard == "s1" { 0 } else { 1 }].url("shard")
}

/// Run the move held at `gate`, let `act` corrupt the target, and check that it
/// aborted at the cutover with `want` in its error and nothing lost.
async fn move_aborts_at_cutover(
    s: &Setup,
    gate: &'static str,
    act: impl AsyncFnOnce(&Setup, &Engine, Uuid),
    want: &str,
) {
    let (start, end, _, _) = common::range(&s.c, s.range_id).await;
    let src_rows_before = range_rows(s.c.shard(&s.source), start, end).await;
    let mut gate = Gate::new(gate);
    let (engine, id, run) =
        common::spawn_move(&s.c, common::engine_config(&s.c), s.range_id, &s.target).await;
    gate.reached().await;
    act(s, &engine, id).await;
    gate.release();
    let st = run.await.unwrap().unwrap();
    let mv = engine.load(id).await.unwrap();
    eprintln!("ended {st}: {:?}", mv.error);
    assert_eq!(st, MoveState::Aborted, "{:?}", mv.error);
    let err = mv.error.as_deref().unwrap_or("");
    assert!(err.contains(want), "{err}");
    let events = common::move_states(&s.c, id).await;
    assert_eq!(
        events,
        [
            "planned",
            "copying",
            "catching_up",
            "verifying",
            "cutover",
            "aborting",
            "aborted"
        ]
    );
    // Source intact and active, catalog unchanged, target clean.
    common::assert_owned_only_by(&s.c, s.range_id, &s.source, &s.target).await;
    assert!(range_rows(s.c.shard(&s.source), start, end).await >= src_rows_before);
    let a =
        s.r.authorize(&s.merchant, "1.00", "USD", "after-abort")
            .await;
    assert!(a.status.is_success(), "{a:?}");
}

async fn verify_stats(s: &Setup, id: Uuid) -> serde_json::Value {
    sqlx::query_scalar("SELECT stats -> 'verify' FROM moves WHERE id = $1")
        .bind(id)
        .fetch_one(&s.c.catalog_pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_h_ledger_row_corrupted_on_the_target_aborts_at_cutover() {
    let _scenario = FailScenario::setup();
    let s = setup().await;
    // Held right before the freeze (money pass and last delta pass done): the
    // merchant pays again (ledger rows at or above H), the target applies them,
    // then one is corrupted there. Only the check inside the pause can see it,
    // and its money part reports first.
    let act = async |s: &Setup, _: &Engine, id: Uuid| {
        let stats = verify_stats(s, id).await;
        assert_eq!(stats["money_suspect_count"], 0, "{stats}");
        assert!(stats["money_equal"].as_u64().unwrap() >= 1, "{stats}");
        let a =
            s.r.authorize(&s.merchant, "7.25", "USD", "after-money-pass")
                .await;
        assert!(a.status.is_success(), "{a:?}");
        let payment = a.body["id"].as_str().unwrap();
        let (journal, line) = ledger_row_of(s.c.shard(&s.source), payment).await;
        wait_for_ledger_row(s.c.shard(&s.target), journal, line).await;
        corrupt_ledger_row(&shard_url(s, &s.target), journal, line).await;
    };
    move_aborts_at_cutover(
        &s,
        "move-before-cutover-freeze",
        act,
        &format!(
            "ledger sums since the money pass of merchant {}",
            s.merchant
        ),
    )
    .await;
    s.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_written_after_the_last_pass_corrupted_on_the_target_aborts_at_cutover() {
    let _scenario = FailScenario::setup();
    let s = setup().await;
    // Held right before the freeze: a new payment, replicated, then its row is
    // changed on the target at the same version (money untouched).
    let act = async |s: &Setup, _: &Engine, _: Uuid| {
        let a =
            s.r.authorize(&s.merchant, "3.10", "USD", "after-last-pass")
                .await;
        assert!(a.status.is_success(), "{a:?}");
        let payment = a.body["id"].as_str().unwrap().to_owned();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut conn = replica_conn(&shard_url(s, &s.target)).await;
        loop {
            let n = sqlx::query(
                "UPDATE payments SET reference = 'tampered' WHERE payment_id = $1::uuid",
            )
            .bind(&payment)
            .execute(&mut conn)
            .await
            .unwrap()
            .rows_affected();
            if n == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "payment never replicated");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    move_aborts_at_cutover(&s, "move-before-cutover-freeze", act, "payments row").await;
    s.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_h_ledger_row_corrupted_on_the_target_makes_a_suspect_and_aborts() {
    let _scenario = FailScenario::setup();
    let s = setup().await;
    // Held after the row passes, before the money pass: an old ledger row (not
    // written since, so no row check looks at it again) is corrupted on the target.
    let act = async |s: &Setup, _: &Engine, _: Uuid| {
        let (journal, line) = ledger_row_of(s.c.shard(&s.source), &s.first_payment).await;
        corrupt_ledger_row(&shard_url(s, &s.target), journal, line).await;
    };
    move_aborts_at_cutover(
        &s,
        "move-before-money-pass",
        act,
        &format!("ledger sums or balances of merchant {}", s.merchant),
    )
    .await;
    let id: Uuid = sqlx::query_scalar("SELECT id FROM moves ORDER BY created_at DESC LIMIT 1")
        .fetch_one(&s.c.catalog_pool)
        .await
        .unwrap();
    let stats = verify_stats(&s, id).await;
    assert_eq!(stats["money_suspect_count"], 1, "{stats}");
    s.stop.cancel();
}

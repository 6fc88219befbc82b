//! The verifier against real shards: a clean run passes, and each planted fault
//! (lost row, duplicate, unbalanced ledger, orphan slot) is reported as exactly
//! the violation it is.

use std::time::Duration;

use serde_json::json;
use shardline_loadtest::verify::{self, Target, Violation, Write};
use shardline_testkit::{Cluster, Router};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

struct Run {
    cluster: Cluster,
    _router: Router,
    shutdown: CancellationToken,
    acked: Vec<Write>,
}

impl Drop for Run {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Two shards; four merchants with two captured payments each (and a refund on
/// one), all through the router.
async fn run() -> Run {
    let cluster = Cluster::start(2).await;
    let shutdown = CancellationToken::new();
    let router = cluster.router(cluster.config(), &shutdown).await;
    let mut acked = Vec::new();
    for _ in 0..4 {
        let m = router.merchant("EUR").await;
        let merchant = m.parse().unwrap();
        acked.push(Write::Merchant { merchant });
        for _ in 0..2 {
            let r = router
                .authorize(&m, "10.00", "EUR", &Uuid::now_v7().to_string())
                .await;
            assert_eq!(r.status, 201, "{r:?}");
            let p: Uuid = r.body["id"].as_str().unwrap().parse().unwrap();
            let c = router
                .post(
                    &format!("/v1/merchants/{m}/payments/{p}/capture"),
                    Some(&Uuid::now_v7().to_string()),
                    json!({"amount": "10.00"}),
                )
                .await;
            assert_eq!(c.status, 200, "{c:?}");
            acked.push(Write::Payment {
                merchant: m.parse().unwrap(),
                payment: p,
            });
        }
    }
    let Some(Write::Payment { merchant, payment }) = acked.last().cloned() else {
        unreachable!()
    };
    let r = router
        .post(
            &format!("/v1/merchants/{merchant}/payments/{payment}/refunds"),
            Some(&Uuid::now_v7().to_string()),
            json!({"amount": "4.00"}),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    acked.push(Write::Refund {
        merchant,
        payment,
        refund: r.body["id"].as_str().unwrap().parse().unwrap(),
    });
    Run {
        cluster,
        _router: router,
        shutdown,
        acked,
    }
}

fn target(c: &Cluster) -> Target {
    Target {
        catalog_url: c.catalog_url.clone(),
        edges: Vec::new(),
        edge_wait: Duration::from_secs(1),
    }
}

/// Owner pool and the other shard's pool for a payment write.
async fn owner_and_other<'a>(c: &'a Cluster, w: &Write) -> (&'a PgPool, &'a PgPool, String) {
    let (owner, _) = c.owner(&w.merchant().to_string()).await;
    let other = c
        .shard_pools
        .iter()
        .find(|(id, _)| id.as_str() != owner)
        .unwrap();
    (c.shard(&owner), &other.1, other.0.to_string())
}

/// Plant with the fence and the ledger triggers off, as a buggy tool would.
async fn plant(pool: &PgPool, sql: &str, id: Uuid) {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

fn payment(acked: &[Write]) -> Write {
    acked
        .iter()
        .find(|w| matches!(w, Write::Payment { .. }))
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_run_passes() {
    let r = run().await;
    let report = verify::verify(&target(&r.cluster), &r.acked, &[])
        .await
        .unwrap();
    assert!(report.passed(), "{:#?}", report.violations);
    assert_eq!(report.checked.acked, r.acked.len());
    assert_eq!(report.checked.rows_by_table["payments"], 8);
    assert_eq!(report.checked.rows_by_table["refunds"], 1);
    // 8 authorizations, 8 captures, 1 refund.
    assert_eq!(report.checked.journals, 17);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_row_is_reported() {
    let r = run().await;
    let w = payment(&r.acked);
    let Write::Payment { payment: p, .. } = w else {
        unreachable!()
    };
    let (owner, _, _) = owner_and_other(&r.cluster, &w).await;
    plant(owner, "DELETE FROM payments WHERE payment_id = $1", p).await;
    let report = verify::verify(&target(&r.cluster), &r.acked, &[])
        .await
        .unwrap();
    assert_eq!(report.violations.len(), 1, "{:#?}", report.violations);
    assert!(
        matches!(&report.violations[0], Violation::Lost { write, .. } if *write == w),
        "{:#?}",
        report.violations
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_on_another_shard_is_reported() {
    let r = run().await;
    let w = payment(&r.acked);
    let Write::Payment { payment: p, .. } = w else {
        unreachable!()
    };
    let (owner, other, other_id) = owner_and_other(&r.cluster, &w).await;
    let (row,): (serde_json::Value,) =
        sqlx::query_as("SELECT row_to_json(p)::jsonb FROM payments p WHERE payment_id = $1")
            .bind(p)
            .fetch_one(owner)
            .await
            .unwrap();
    let mut tx = other.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("INSERT INTO payments SELECT * FROM jsonb_populate_record(NULL::payments, $1)")
        .bind(row)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let report = verify::verify(&target(&r.cluster), &r.acked, &[])
        .await
        .unwrap();
    assert!(
        report
            .violations
            .iter()
            .any(|v| matches!(v, Violation::Duplicate { write, copies } if *write == w && copies.len() == 2)),
        "{:#?}",
        report.violations
    );
    assert!(
        report.violations.iter().any(|v| matches!(v,
            Violation::Misplaced { shard, table, rows: 1, .. } if *shard == other_id && table == "payments")),
        "{:#?}",
        report.violations
    );
    assert_eq!(report.violations.len(), 2, "{:#?}", report.violations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbalanced_ledger_is_reported() {
    let r = run().await;
    let w = payment(&r.acked);
    let (owner, _, _) = owner_and_other(&r.cluster, &w).await;
    let (sk, m): (i64, Uuid) =
        sqlx::query_as("SELECT shard_key, merchant_id FROM merchants WHERE merchant_id = $1")
            .bind(w.merchant().as_uuid())
            .fetch_one(owner)
            .await
            .unwrap();
    let journal = Uuid::now_v7();
    plant(
        owner,
        &format!(
            "INSERT INTO ledger_entries (shard_key, merchant_id, journal_id, line, account, currency, amount, kind)
             VALUES ({sk}, '{m}', $1, 0, 'available', 'EUR', 1.00, 'capture')"
        ),
        journal,
    )
    .await;
    let report = verify::verify(&target(&r.cluster), &r.acked, &[])
        .await
        .unwrap();
    assert!(
        report.violations.iter().any(|v| matches!(v,
            Violation::UnbalancedJournal { journal: j, currency, sum, .. }
                if *j == journal && currency == "EUR" && sum.parse::<f64>() == Ok(1.0))),
        "{:#?}",
        report.violations
    );
    // The balance row no longer equals the ledger's sum either.
    assert!(
        report.violations.iter().any(|v| matches!(v,
            Violation::BalanceMismatch { merchant, account, .. } if *merchant == m && account == "available")),
        "{:#?}",
        report.violations
    );
    assert_eq!(report.violations.len(), 2, "{:#?}", report.violations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphan_slot_is_reported_and_unacked_writes_are_listed_apart() {
    let r = run().await;
    let (id, pool) = &r.cluster.shard_pools[0];
    let name = format!("sl_mv_{}", Uuid::now_v7().simple());
    sqlx::query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')")
        .bind(&name)
        .execute(pool)
        .await
        .unwrap();
    // An unacknowledged write that never landed, and one that did (the first
    // acknowledged payment, as if its response had been lost).
    let never = Write::Payment {
        merchant: *r.acked[0].merchant(),
        payment: Uuid::now_v7(),
    };
    let landed = payment(&r.acked);
    let report = verify::verify(
        &target(&r.cluster),
        &r.acked,
        &[never.clone(), landed.clone()],
    )
    .await
    .unwrap();
    assert_eq!(
        report.violations,
        vec![Violation::Orphan {
            shard: id.to_string(),
            object: "slot".into(),
            name: name.clone(),
        }]
    );
    assert_eq!(report.unacked.len(), 2);
    assert_eq!(report.unacked[0].write, never);
    assert_eq!(report.unacked[0].copies, 0);
    assert_eq!(report.unacked[1].write, landed);
    assert_eq!(report.unacked[1].copies, 1);
    sqlx::query("SELECT pg_drop_replication_slot($1)")
        .bind(&name)
        .execute(pool)
        .await
        .unwrap();
}

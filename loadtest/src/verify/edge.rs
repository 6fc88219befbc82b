//! Invariant 4: each edge serves what the owning shard holds, for every
//! acknowledged payment (status, amounts, version) and every touched merchant's
//! balances. An edge is eventually consistent, so each read is retried until it
//! matches or `wait` runs out; only then is it a violation.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::time::{Duration, Instant};

use hyper::StatusCode;
use rust_decimal::Decimal;
use serde_json::Value;
use shardline_core::MerchantId;
use uuid::Uuid;

use super::{VerifyError, Violation, World, Write, db};
use crate::http::Client;

/// An edge's read API and a key it accepts.
#[derive(Debug, Clone)]
pub struct EdgeTarget {
    /// e.g. `http://127.0.0.1:8090`
    pub url: String,
    pub api_key: String,
}

async fn get(http: &Client, path: &str) -> Result<(StatusCode, Value), VerifyError> {
    let r = http.get(path).await.map_err(|e| VerifyError::Edge {
        url: http.base().to_owned(),
        detail: e.to_string(),
    })?;
    Ok((r.status, r.body))
}

/// Read `path` until `facts` of the answer equal `want` or `deadline` passes;
/// then record a mismatch.
async fn until_equal<T: PartialEq + std::fmt::Debug>(
    http: &Client,
    path: &str,
    want: &T,
    facts: impl Fn(StatusCode, &Value) -> T,
    deadline: Instant,
    violations: &mut Vec<Violation>,
) -> Result<(), VerifyError> {
    loop {
        let (status, body) = get(http, path).await?;
        let got = facts(status, &body);
        if got == *want {
            return Ok(());
        }
        if Instant::now() >= deadline {
            violations.push(Violation::EdgeMismatch {
                edge: http.base().to_owned(),
                path: path.to_owned(),
                detail: format!("edge {status} {got:?}, shard {want:?}"),
            });
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn dec(v: &Value) -> Option<Decimal> {
    v.as_str().and_then(|s| Decimal::from_str(s.trim()).ok())
}

/// What the shard says a payment looks like: (status, amount, captured,
/// refunded, version).
type PaymentFacts = (String, Decimal, Decimal, Decimal, i64);

fn payment_facts(v: &Value) -> Option<PaymentFacts> {
    Some((
        v["status"].as_str()?.to_owned(),
        dec(&v["amount"])?,
        dec(&v["captured_amount"])?,
        dec(&v["refunded_amount"])?,
        v["version"].as_i64()?,
    ))
}

/// currency -> (authorized, available, refunded)
type BalanceFacts = BTreeMap<String, (Decimal, Decimal, Decimal)>;

fn balance_facts(v: &Value) -> Option<BalanceFacts> {
    let mut out = BTreeMap::new();
    for b in v["balances"].as_array()? {
        out.insert(
            b["currency"].as_str()?.to_owned(),
            (
                dec(&b["authorized"])?,
                dec(&b["available"])?,
                dec(&b["refunded"])?,
            ),
        );
    }
    Some(out)
}

async fn shard_payment(
    world: &World,
    merchant: &MerchantId,
    payment: Uuid,
) -> Result<Option<PaymentFacts>, VerifyError> {
    let owner = world.map.lookup_merchant(merchant).shard.to_string();
    let Some((_, pool)) = world.shards.iter().find(|(s, _)| *s == owner) else {
        return Ok(None);
    };
    let row: Option<(String, Decimal, Decimal, Decimal, i64)> = sqlx::query_as(
        "SELECT status, amount, captured_amount, refunded_amount, version
           FROM payments WHERE merchant_id = $1 AND payment_id = $2",
    )
    .bind(merchant.as_uuid())
    .bind(payment)
    .fetch_optional(pool)
    .await
    .map_err(db(format!("read payment on {owner}")))?;
    Ok(row)
}

async fn shard_balances(world: &World, merchant: &MerchantId) -> Result<BalanceFacts, VerifyError> {
    let owner = world.map.lookup_merchant(merchant).shard.to_string();
    let mut out = BalanceFacts::new();
    let Some((_, pool)) = world.shards.iter().find(|(s, _)| *s == owner) else {
        return Ok(out);
    };
    let rows: Vec<(String, String, Decimal)> = sqlx::query_as(
        "SELECT currency::text, account, amount FROM balances
          WHERE merchant_id = $1 AND account IN ('authorized', 'available', 'refunded')",
    )
    .bind(merchant.as_uuid())
    .fetch_all(pool)
    .await
    .map_err(db(format!("read balances on {owner}")))?;
    for (cur, account, amount) in rows {
        let e = out
            .entry(cur)
            .or_insert((Decimal::ZERO, Decimal::ZERO, Decimal::ZERO));
        match account.as_str() {
            "authorized" => e.0 += amount,
            "available" => e.1 += amount,
            _ => e.2 += amount,
        }
    }
    Ok(out)
}

/// Compare one edge; returns how many reads matched or were judged.
pub(super) async fn compare(
    edge: &EdgeTarget,
    world: &World,
    acked: &[Write],
    wait: Duration,
    violations: &mut Vec<Violation>,
) -> Result<usize, VerifyError> {
    let http = Client::new(&edge.url, &edge.api_key, Duration::from_secs(10));
    let deadline = Instant::now() + wait;
    let mut reads = 0;
    let mut merchants = BTreeSet::new();
    for w in acked {
        merchants.insert(*w.merchant());
        let Write::Payment { merchant, payment } = w else {
            continue;
        };
        let path = format!("/v1/merchants/{merchant}/payments/{payment}");
        let want = shard_payment(world, merchant, *payment).await?;
        let facts = |status: StatusCode, body: &Value| {
            (status == StatusCode::OK)
                .then(|| payment_facts(body))
                .flatten()
        };
        until_equal(&http, &path, &want, facts, deadline, violations).await?;
        reads += 1;
    }
    for m in merchants {
        let path = format!("/v1/merchants/{m}/balance");
        let want = shard_balances(world, &m).await?;
        let facts = |status: StatusCode, body: &Value| {
            if status == StatusCode::OK {
                balance_facts(body).unwrap_or_default()
            } else {
                BalanceFacts::new()
            }
        };
        until_equal(&http, &path, &want, facts, deadline, violations).await?;
        reads += 1;
    }
    Ok(reads)
}

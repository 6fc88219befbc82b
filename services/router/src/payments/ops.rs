//! The operations themselves (see the module doc of `payments` for their shape).

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use deadpool_postgres::ClientWrapper;
use futures_util::future::join_all;
use rust_decimal::Decimal;
use shardline_core::ids::PaymentId;
use shardline_core::money::{Currency, Money};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, SimpleQueryMessage};
use uuid::Uuid;

use super::ledger::{self, Posting};
use super::reads;
use super::{ExecError, Op, Outcome, PaymentRow, Target, check_owned, render, sql};
use crate::error::AppError;
use crate::idempotency::{self, Check, IdemKey};
use crate::model::{self, Merchant, PaymentStatus};

type Param<'a> = &'a (dyn ToSql + Sync);

/// Run `op` for `t` on a shard connection.
pub async fn execute(c: &ClientWrapper, t: &Target, op: &Op) -> Result<Outcome, ExecError> {
    match op {
        Op::CreateMerchant { name, currency } => create_merchant(c, t, name, *currency).await,
        Op::GetMerchant => reads::get_merchant(c, t).await,
        Op::Authorize {
            amount,
            reference,
            idem,
        } => authorize(c, t, *amount, reference.as_deref(), idem).await,
        Op::Capture {
            payment,
            amount,
            idem,
        } => change(c, t, payment, Change::Capture(amount.as_deref()), idem).await,
        Op::Refund {
            payment,
            amount,
            idem,
        } => change(c, t, payment, Change::Refund(amount), idem).await,
        Op::Void { payment, idem } => change(c, t, payment, Change::Void, idem).await,
        Op::GetPayment { payment } => reads::get_payment(c, t, payment).await,
        Op::ListPayments { limit, after } => {
            reads::list_payments(c, t, *limit, after.as_ref()).await
        }
        Op::Balance => reads::balance(c, t).await,
    }
}

fn first_err<T>(results: Vec<Result<T, tokio_postgres::Error>>) -> Result<Vec<T>, ExecError> {
    // Statement order: the first failure is the cause, later ones are "transaction aborted".
    results
        .into_iter()
        .collect::<Result<Vec<T>, _>>()
        .map_err(ExecError::from)
}

async fn rollback(c: &ClientWrapper) {
    if let Err(e) = c.batch_execute("ROLLBACK").await {
        tracing::debug!(error = %e, "rollback failed");
    }
}

pub(super) fn not_found(what: &'static str, code: &'static str) -> ExecError {
    ExecError::App(AppError::not_found(code, format!("no such {what}")))
}

async fn create_merchant(
    c: &ClientWrapper,
    t: &Target,
    name: &str,
    currency: Currency,
) -> Result<Outcome, ExecError> {
    let ins = c.prepare_cached(sql::INSERT_MERCHANT).await?;
    let lsn = c.prepare_cached(sql::CURRENT_LSN).await?;
    let code = currency.code();
    let uuid = t.uuid();
    // Autocommit insert, then the flush LSN: one round trip.
    let p1: [Param<'_>; 4] = [&t.key, &uuid, &name, &code];
    let p2: [Param<'_>; 0] = [];
    let (row, lsn) = futures_util::join!(c.query_one(&ins, &p1), c.query_one(&lsn, &p2));
    let row = row?;
    let lsn: String = lsn?.try_get(0)?;
    let m = Merchant {
        id: t.merchant.to_string(),
        name: name.to_owned(),
        default_currency: code.to_owned(),
        shard_key: t.key,
        created_at: row.try_get(0)?,
        version: row.try_get(1)?,
    };
    Ok(Outcome {
        status: StatusCode::CREATED,
        body: to_json(&m)?,
        replayed: false,
        lsn: Some(lsn),
        rows: 1,
    })
}

pub(super) fn to_json<T: serde::Serialize>(v: &T) -> Result<serde_json::Value, ExecError> {
    serde_json::to_value(v).map_err(|e| ExecError::App(AppError::internal(e)))
}

pub(super) fn merchant_view(t: &Target, row: &Row) -> Result<Merchant, ExecError> {
    let currency: String = row.try_get(1)?;
    Ok(Merchant {
        id: t.merchant.to_string(),
        name: row.try_get(0)?,
        default_currency: currency.trim().to_owned(),
        shard_key: t.key,
        created_at: row.try_get(2)?,
        version: row.try_get(3)?,
    })
}

/// Result of the first round trip of a money operation.
struct Preamble {
    now: DateTime<Utc>,
    check: Check,
    row: Option<Row>,
}

/// BEGIN; ownership; idempotency lock; stored key; the row the operation needs.
/// Rolls back on any failure.
async fn preamble(
    c: &ClientWrapper,
    t: &Target,
    idem: &IdemKey,
    row_sql: &str,
    row_params: &[Param<'_>],
) -> Result<Preamble, ExecError> {
    let own = c.prepare_cached(sql::OWNED).await?;
    let lock = c.prepare_cached(sql::TRY_LOCK).await?;
    let stored = c.prepare_cached(sql::SELECT_IDEM).await?;
    let target = c.prepare_cached(row_sql).await?;
    let uuid = t.uuid();
    let p13: [Param<'_>; 1] = [&t.key];
    let p14: [Param<'_>; 1] = [&idem.lock_id];
    let p15: [Param<'_>; 3] = [&t.key, &uuid, &idem.key];
    let (begin, own, locked, stored, row) = futures_util::join!(
        c.batch_execute("BEGIN"),
        c.query_one(&own, &p13),
        c.query_one(&lock, &p14),
        c.query_opt(&stored, &p15),
        c.query_opt(&target, row_params)
    );
    let result = (|| {
        begin?;
        let now = check_owned(&own?)?;
        let locked: bool = locked?.try_get(0)?;
        let stored = match stored? {
            Some(r) => Some((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)),
            None => None,
        };
        let check = idempotency::decide(idem, locked, stored)?;
        Ok(Preamble {
            now,
            check,
            row: row?,
        })
    })();
    if result.is_err() {
        rollback(c).await;
    }
    result
}

/// The writes of a money operation, pipelined, then `COMMIT` + flush LSN.
struct Effect<'a> {
    /// The payment insert/update (and the refund insert): statement text + params.
    statements: Vec<(&'static str, Vec<Param<'a>>)>,
    journal_kind: &'static str,
    payment: Uuid,
    currency: Currency,
    postings: Vec<Posting>,
    status: StatusCode,
    body: serde_json::Value,
}

async fn commit_effect(
    c: &ClientWrapper,
    t: &Target,
    idem: &IdemKey,
    e: Effect<'_>,
) -> Result<Outcome, ExecError> {
    let result = write_effect(c, t, idem, &e).await;
    if let Err(err) = result {
        rollback(c).await;
        return Err(err);
    }
    let lsn = commit_lsn(c).await?;
    Ok(Outcome {
        status: e.status,
        body: e.body,
        replayed: false,
        lsn: Some(lsn),
        rows: result.unwrap_or(0),
    })
}

async fn write_effect(
    c: &ClientWrapper,
    t: &Target,
    idem: &IdemKey,
    e: &Effect<'_>,
) -> Result<u64, ExecError> {
    let uuid = t.uuid();
    let journal = Uuid::now_v7();
    let code = e.currency.code();
    let accounts: Vec<&str> = e.postings.iter().map(|p| p.account).collect();
    let amounts: Vec<Decimal> = e.postings.iter().map(|p| p.amount).collect();
    let deltas = ledger::balance_deltas(&e.postings);
    let bal_accounts: Vec<&str> = deltas.iter().map(|(a, _)| *a).collect();
    let bal_amounts: Vec<Decimal> = deltas.iter().map(|(_, d)| *d).collect();
    let status = i16::try_from(e.status.as_u16()).unwrap_or(200);
    let ttl = idem.ttl.as_secs_f64();
    let hash = idem.request_hash.as_slice();

    let mut stmts = Vec::with_capacity(e.statements.len() + 3);
    for (text, _) in &e.statements {
        stmts.push(c.prepare_cached(text).await?);
    }
    let ledger_stmt = c.prepare_cached(sql::INSERT_LEDGER).await?;
    let bal_stmt = c.prepare_cached(sql::UPSERT_BALANCES).await?;
    let idem_stmt = c.prepare_cached(sql::INSERT_IDEM).await?;

    let ledger_params: [Param<'_>; 8] = [
        &t.key,
        &uuid,
        &journal,
        &e.payment,
        &code,
        &e.journal_kind,
        &accounts,
        &amounts,
    ];
    let bal_params: [Param<'_>; 5] = [&t.key, &uuid, &code, &bal_accounts, &bal_amounts];
    let idem_params: [Param<'_>; 9] = [
        &t.key,
        &uuid,
        &idem.key,
        &hash,
        &idem.method,
        &idem.path,
        &status,
        &e.body,
        &ttl,
    ];
    let mut futures = Vec::with_capacity(stmts.len() + 3);
    for (stmt, (_, params)) in stmts.iter().zip(&e.statements) {
        futures.push(c.execute(stmt, params.as_slice()));
    }
    futures.push(c.execute(&ledger_stmt, &ledger_params));
    futures.push(c.execute(&bal_stmt, &bal_params));
    futures.push(c.execute(&idem_stmt, &idem_params));
    let counts = first_err(join_all(futures).await)?;
    // The payment statement must have hit its row (its status was checked under
    // FOR UPDATE, so this only fails on a bug).
    if counts.first() == Some(&0) {
        return Err(ExecError::App(AppError::conflict(
            "invalid_state",
            "the payment changed concurrently",
        )));
    }
    Ok(counts.iter().sum())
}

/// `COMMIT; SELECT pg_current_wal_flush_lsn()` in one simple-query batch.
async fn commit_lsn(c: &ClientWrapper) -> Result<String, ExecError> {
    let msgs = c
        .simple_query("COMMIT; SELECT pg_current_wal_flush_lsn()::text")
        .await?;
    msgs.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .ok_or_else(|| ExecError::App(AppError::internal("no LSN after commit")))
}

fn replay(status: StatusCode, body: serde_json::Value) -> Outcome {
    Outcome {
        status,
        body,
        replayed: true,
        lsn: None,
        rows: 1,
    }
}

async fn authorize(
    c: &ClientWrapper,
    t: &Target,
    amount: Money,
    reference: Option<&str>,
    idem: &IdemKey,
) -> Result<Outcome, ExecError> {
    let uuid = t.uuid();
    let pre = preamble(c, t, idem, sql::SELECT_MERCHANT, &[&t.key, &uuid]).await?;
    if let Check::Replay { status, body } = pre.check {
        rollback(c).await;
        return Ok(replay(status, body));
    }
    if pre.row.is_none() {
        rollback(c).await;
        return Err(not_found("merchant", "merchant_not_found"));
    }
    let payment = PaymentId::new();
    let pid = *payment.as_uuid();
    let currency = amount.currency();
    let code = currency.code();
    let value = amount.amount();
    let view = PaymentRow {
        id: pid,
        currency,
        amount: value,
        captured: Decimal::ZERO,
        refunded: Decimal::ZERO,
        status: PaymentStatus::Authorized,
        reference: reference.map(str::to_owned),
        created_at: pre.now,
        updated_at: pre.now,
        version: 1,
    }
    .view(&t.merchant);
    let effect = Effect {
        statements: vec![(
            sql::INSERT_PAYMENT,
            vec![&t.key, &uuid, &pid, &code, &value, &reference],
        )],
        journal_kind: "authorize",
        payment: pid,
        currency,
        postings: ledger::authorize(value),
        status: StatusCode::CREATED,
        body: to_json(&view)?,
    };
    commit_effect(c, t, idem, effect).await
}

#[derive(Debug, Clone, Copy)]
enum Change<'a> {
    Capture(Option<&'a str>),
    Refund(&'a str),
    Void,
}

fn invalid_state(p: &PaymentRow, action: &str, allowed: &str) -> ExecError {
    ExecError::App(AppError::conflict(
        "invalid_state",
        format!(
            "cannot {action} a payment that is {}; allowed from {allowed}",
            p.status.as_str()
        ),
    ))
}

/// Capture, refund or void: lock the payment, check the transition, write.
async fn change(
    c: &ClientWrapper,
    t: &Target,
    payment: &PaymentId,
    what: Change<'_>,
    idem: &IdemKey,
) -> Result<Outcome, ExecError> {
    let (uuid, pid) = (t.uuid(), *payment.as_uuid());
    let select = sql::select_payment_for_update();
    let pre = preamble(c, t, idem, &select, &[&t.key, &uuid, &pid]).await?;
    if let Check::Replay { status, body } = pre.check {
        rollback(c).await;
        return Ok(replay(status, body));
    }
    let planned = pre
        .row
        .as_ref()
        .ok_or_else(|| not_found("payment", "payment_not_found"))
        .and_then(PaymentRow::from_row)
        .and_then(|p| plan(p, what, pre.now));
    let plan = match planned {
        Ok(plan) => plan,
        Err(e) => {
            rollback(c).await;
            return Err(e);
        }
    };
    let new = &plan.after;
    let (status, expected) = (new.status.as_str(), plan.before.as_str());
    let code = new.currency.code();
    let refund_id = Uuid::now_v7();
    let mut statements: Vec<(&'static str, Vec<Param<'_>>)> = vec![(
        sql::UPDATE_PAYMENT,
        vec![
            &t.key,
            &uuid,
            &pid,
            &status,
            &new.captured,
            &new.refunded,
            &expected,
        ],
    )];
    let mut body = to_json(&new.view(&t.merchant))?;
    let mut http = StatusCode::OK;
    if let Some(amount) = &plan.refund {
        statements.push((
            sql::INSERT_REFUND,
            vec![&t.key, &uuid, &refund_id, &pid, &code, amount],
        ));
        let refund = model::Refund {
            id: refund_id.hyphenated().to_string(),
            payment_id: payment.to_string(),
            amount: render(*amount, new.currency),
            currency: code.to_owned(),
            created_at: pre.now,
            payment: new.view(&t.merchant),
        };
        body = to_json(&refund)?;
        http = StatusCode::CREATED;
    }
    let effect = Effect {
        statements,
        journal_kind: plan.kind,
        payment: pid,
        currency: new.currency,
        postings: plan.postings,
        status: http,
        body,
    };
    commit_effect(c, t, idem, effect).await
}

struct Plan {
    before: PaymentStatus,
    after: PaymentRow,
    kind: &'static str,
    postings: Vec<Posting>,
    refund: Option<Decimal>,
}

/// The state machine: validates the transition and computes the new row.
fn plan(p: PaymentRow, what: Change<'_>, now: DateTime<Utc>) -> Result<Plan, ExecError> {
    let before = p.status;
    let mut after = PaymentRow {
        updated_at: now,
        // The shard's fence trigger bumps the version; we hold the row lock.
        version: p.version + 1,
        ..p.clone()
    };
    let (kind, postings, refund) = match what {
        Change::Capture(amount) => {
            if p.status != PaymentStatus::Authorized {
                return Err(invalid_state(&p, "capture", "authorized"));
            }
            let captured = match amount {
                None => p.amount,
                Some(s) => Money::parse_positive(s, p.currency)
                    .map_err(AppError::from)?
                    .amount(),
            };
            if captured > p.amount {
                return Err(ExecError::App(AppError::unprocessable(
                    "capture_exceeds_authorized",
                    format!(
                        "capture of {} exceeds the authorized {}",
                        render(captured, p.currency),
                        render(p.amount, p.currency)
                    ),
                )));
            }
            after.status = PaymentStatus::Captured;
            after.captured = captured;
            ("capture", ledger::capture(p.amount, captured), None)
        }
        Change::Refund(amount) => {
            if !matches!(
                p.status,
                PaymentStatus::Captured | PaymentStatus::PartiallyRefunded
            ) {
                return Err(invalid_state(
                    &p,
                    "refund",
                    "captured or partially_refunded",
                ));
            }
            let r = Money::parse_positive(amount, p.currency)
                .map_err(AppError::from)?
                .amount();
            let remaining = p.captured - p.refunded;
            if r > remaining {
                return Err(ExecError::App(AppError::unprocessable(
                    "refund_exceeds_captured",
                    format!(
                        "refund of {} exceeds the {} captured and not yet refunded",
                        render(r, p.currency),
                        render(remaining, p.currency)
                    ),
                )));
            }
            after.refunded = p.refunded + r;
            after.status = if after.refunded == p.captured {
                PaymentStatus::Refunded
            } else {
                PaymentStatus::PartiallyRefunded
            };
            ("refund", ledger::refund(r), Some(r))
        }
        Change::Void => {
            if p.status != PaymentStatus::Authorized {
                return Err(invalid_state(&p, "void", "authorized"));
            }
            after.status = PaymentStatus::Voided;
            ("void", ledger::void(p.amount), None)
        }
    };
    Ok(Plan {
        before,
        after,
        kind,
        postings,
        refund,
    })
}

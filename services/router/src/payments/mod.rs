//! Payments on one shard: every operation as one round-trip-lean transaction.
//!
//! A money-moving operation is three round trips: (1) `BEGIN`, the ownership check,
//! the idempotency lock and lookup, and the row it works on (`FOR UPDATE`),
//! pipelined; (2) the payment change, the ledger journal, the balance upserts and
//! the idempotency row, pipelined; (3) `COMMIT; SELECT pg_current_wal_flush_lsn()`
//! as one simple-query batch. Reads pipeline the ownership check with the query.
//! Fencing errors (SLF01/SLF02) surface as [`ExecError::Fence`] for the router to
//! refresh, retry or hold; the transaction is always rolled back first.

pub mod ledger;
mod ops;
mod reads;
pub mod sql;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use shardline_core::fence::{self, FenceVerdict};
use shardline_core::ids::{MerchantId, PaymentId};
use shardline_core::money::{Currency, Money};
use tokio_postgres::Row;
use uuid::Uuid;

use crate::error::AppError;
use crate::idempotency::IdemKey;
use crate::model::{Payment, PaymentStatus};

pub use ops::execute;

/// Why an operation on a shard did not produce a response.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("fenced: {0:?}")]
    Fence(FenceVerdict),
    #[error(transparent)]
    App(#[from] AppError),
    #[error("shard query failed: {0}")]
    Db(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for ExecError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.code().and_then(|c| fence::classify(c.code())) {
            Some(v) => ExecError::Fence(v),
            None => ExecError::Db(e),
        }
    }
}

/// A response produced on a shard.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: StatusCode,
    pub body: serde_json::Value,
    /// Replayed from a stored idempotency key.
    pub replayed: bool,
    /// `pg_current_wal_flush_lsn()` right after the commit (writes only).
    pub lsn: Option<String>,
    /// Rows written or read (load accounting).
    pub rows: u64,
}

/// What a request asks a shard to do.
#[derive(Debug, Clone)]
pub enum Op {
    CreateMerchant {
        name: String,
        currency: Currency,
    },
    GetMerchant,
    Authorize {
        amount: Money,
        reference: Option<String>,
        idem: IdemKey,
    },
    Capture {
        payment: PaymentId,
        amount: Option<String>,
        idem: IdemKey,
    },
    Refund {
        payment: PaymentId,
        amount: String,
        idem: IdemKey,
    },
    Void {
        payment: PaymentId,
        idem: IdemKey,
    },
    GetPayment {
        payment: PaymentId,
    },
    ListPayments {
        limit: i64,
        after: Option<PaymentId>,
    },
    Balance,
}

impl Op {
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Op::CreateMerchant { .. }
                | Op::Authorize { .. }
                | Op::Capture { .. }
                | Op::Refund { .. }
                | Op::Void { .. }
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            Op::CreateMerchant { .. } => "create_merchant",
            Op::GetMerchant => "get_merchant",
            Op::Authorize { .. } => "authorize",
            Op::Capture { .. } => "capture",
            Op::Refund { .. } => "refund",
            Op::Void { .. } => "void",
            Op::GetPayment { .. } => "get_payment",
            Op::ListPayments { .. } => "list_payments",
            Op::Balance => "balance",
        }
    }
}

/// The merchant an operation is about, with its shard key as stored (`bigint`).
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub merchant: MerchantId,
    pub key: i64,
}

impl Target {
    pub fn new(merchant: MerchantId) -> Self {
        Target {
            merchant,
            key: i64::from(shardline_core::shard_key(&merchant)),
        }
    }

    pub fn uuid(&self) -> Uuid {
        *self.merchant.as_uuid()
    }
}

/// Reads the ownership row of [`sql::OWNED`]: the transaction time if the key's
/// range is active here, a fencing verdict otherwise.
pub fn check_owned(row: &Row) -> Result<DateTime<Utc>, ExecError> {
    let state: Option<String> = row.try_get(0)?;
    let now: DateTime<Utc> = row.try_get(1)?;
    match state.as_deref() {
        None => Err(ExecError::Fence(FenceVerdict::NotOwned)),
        Some("active") => Ok(now),
        Some(_) => Err(ExecError::Fence(FenceVerdict::Frozen)),
    }
}

/// A decimal rendered with the currency's exponent.
pub fn render(amount: Decimal, currency: Currency) -> String {
    Money::new(amount, currency).map_or_else(|_| amount.to_string(), |m| m.to_string_canonical())
}

pub fn currency_of(code: &str) -> Result<Currency, ExecError> {
    Currency::from_code(code.trim())
        .map_err(|e| ExecError::App(AppError::internal(format!("stored currency: {e}"))))
}

/// A `payments` row.
#[derive(Debug, Clone)]
pub struct PaymentRow {
    pub id: Uuid,
    pub currency: Currency,
    pub amount: Decimal,
    pub captured: Decimal,
    pub refunded: Decimal,
    pub status: PaymentStatus,
    pub reference: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

impl PaymentRow {
    pub fn from_row(row: &Row) -> Result<Self, ExecError> {
        let status: String = row.try_get(5)?;
        let currency: String = row.try_get(1)?;
        Ok(PaymentRow {
            id: row.try_get(0)?,
            currency: currency_of(&currency)?,
            amount: row.try_get(2)?,
            captured: row.try_get(3)?,
            refunded: row.try_get(4)?,
            status: PaymentStatus::parse(&status).ok_or_else(|| {
                ExecError::App(AppError::internal(format!("stored status {status:?}")))
            })?,
            reference: row.try_get(6)?,
            created_at: row.try_get(7)?,
            updated_at: row.try_get(8)?,
            version: row.try_get(9)?,
        })
    }

    pub fn view(&self, merchant: &MerchantId) -> Payment {
        Payment {
            id: self.id.hyphenated().to_string(),
            merchant_id: merchant.to_string(),
            amount: render(self.amount, self.currency),
            currency: self.currency.code().to_owned(),
            captured_amount: render(self.captured, self.currency),
            refunded_amount: render(self.refunded, self.currency),
            status: self.status,
            reference: self.reference.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            version: self.version,
        }
    }
}

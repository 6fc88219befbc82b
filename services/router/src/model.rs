//! Request and response bodies of the API (also the OpenAPI schemas).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Request bodies that may be sent empty (no body at all means `{}`).
pub trait EmptyBody: Sized {
    fn empty() -> Option<Self> {
        None
    }
}

/// `POST /v1/merchants`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMerchant {
    /// 1 to 200 characters.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// ISO 4217 code, e.g. `USD`.
    #[schema(example = "USD", pattern = "^[A-Z]{3}$")]
    pub default_currency: String,
}
impl EmptyBody for CreateMerchant {}

/// A merchant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Merchant {
    #[schema(format = Uuid)]
    pub id: String,
    pub name: String,
    pub default_currency: String,
    /// The placement hash (0..2^32-1).
    pub shard_key: i64,
    pub created_at: DateTime<Utc>,
    pub version: i64,
}

/// `POST /v1/merchants/{mid}/payments`: authorize an amount.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePayment {
    /// Decimal string with at most the currency's minor-unit digits.
    #[schema(example = "12.50", pattern = "^[0-9]+(\\.[0-9]+)?$")]
    pub amount: String,
    #[schema(example = "USD", pattern = "^[A-Z]{3}$")]
    pub currency: String,
    /// Caller's reference, at most 200 characters.
    #[serde(default)]
    #[schema(max_length = 200)]
    pub reference: Option<String>,
}
impl EmptyBody for CreatePayment {}

/// `POST .../capture`: capture all (no amount) or part of the authorization, once.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Capture {
    #[serde(default)]
    #[schema(example = "10.00", pattern = "^[0-9]+(\\.[0-9]+)?$")]
    pub amount: Option<String>,
}
impl EmptyBody for Capture {
    fn empty() -> Option<Self> {
        Some(Capture::default())
    }
}

/// `POST .../refunds`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRefund {
    #[schema(example = "5.00", pattern = "^[0-9]+(\\.[0-9]+)?$")]
    pub amount: String,
}
impl EmptyBody for CreateRefund {}

/// `POST .../void` takes no fields (an empty body or `{}`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Void {}
impl EmptyBody for Void {
    fn empty() -> Option<Self> {
        Some(Void {})
    }
}

/// Payment lifecycle states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Authorized,
    Captured,
    PartiallyRefunded,
    Refunded,
    Voided,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authorized => "authorized",
            Self::Captured => "captured",
            Self::PartiallyRefunded => "partially_refunded",
            Self::Refunded => "refunded",
            Self::Voided => "voided",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "authorized" => Self::Authorized,
            "captured" => Self::Captured,
            "partially_refunded" => Self::PartiallyRefunded,
            "refunded" => Self::Refunded,
            "voided" => Self::Voided,
            _ => return None,
        })
    }
}

/// A payment. Amounts are decimal strings with the currency's exponent.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Payment {
    #[schema(format = Uuid)]
    pub id: String,
    #[schema(format = Uuid)]
    pub merchant_id: String,
    pub amount: String,
    pub currency: String,
    pub captured_amount: String,
    pub refunded_amount: String,
    pub status: PaymentStatus,
    pub reference: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Row version (incremented by the database on every update).
    pub version: i64,
}

/// A refund and the payment after it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Refund {
    #[schema(format = Uuid)]
    pub id: String,
    #[schema(format = Uuid)]
    pub payment_id: String,
    pub amount: String,
    pub currency: String,
    pub created_at: DateTime<Utc>,
    pub payment: Payment,
}

/// One page of payments, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PaymentPage {
    pub data: Vec<Payment>,
    pub has_more: bool,
    /// Pass as `after` to get the next page (null on the last page).
    #[schema(format = Uuid)]
    pub next_after: Option<String>,
}

/// `GET .../payments` query.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size, 1..=100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// Return payments after this payment id.
    #[param(format = Uuid)]
    pub after: Option<String>,
}

/// Balances of one currency (decimal strings).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CurrencyBalance {
    pub currency: String,
    pub authorized: String,
    pub available: String,
    pub refunded: String,
}

/// `GET .../balance`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Balance {
    #[schema(format = Uuid)]
    pub merchant_id: String,
    pub balances: Vec<CurrencyBalance>,
}

/// `GET /healthz`, `/readyz`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`, or `degraded` (ready, but some shards did not answer).
    pub status: String,
    pub map_epoch: i64,
    /// `/readyz` only: shards that did not answer within 2 s (their merchants'
    /// requests fail with 503 until they are back; the others are served).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreachable_shards: Vec<String>,
}

//! HTTP handlers of DESIGN.md section 5. Each one authenticates, validates its
//! input into an [`Op`], routes it to the merchant's shard and renders the outcome.

use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use shardline_core::MerchantId;
use shardline_core::ids::PaymentId;
use shardline_core::money::{Currency, Money, MoneyError};

use crate::AppState;
use crate::auth::Principal;
use crate::error::{AppError, Problem};
use crate::extract::{JsonBody, merchant_id, payment_id};
use crate::idempotency::{self, IdemKey};
use crate::model::{
    Balance, Capture, CreateMerchant, CreatePayment, CreateRefund, Health, ListQuery, Merchant,
    Payment, PaymentPage, Refund, Void,
};
use crate::payments::Op;
use crate::routing::{Routed, route};

pub const TOKEN_HEADER: &str = "shardline-token";

/// The error responses every authenticated endpoint may return.
#[derive(Debug, utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum Errors {
    /// Malformed request: bad JSON, unknown field, bad id, bad amount syntax.
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// Missing, unknown or revoked API key.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The key may not act on this merchant.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// Unknown merchant, payment or route.
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// Illegal state transition, or the same Idempotency-Key is in flight.
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(Problem),
    /// Body larger than 64 KiB.
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(Problem),
    /// Body is not application/json.
    #[response(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Problem),
    /// Semantically invalid: over-refund, too precise, unknown currency, key reuse.
    #[response(status = 422, content_type = "application/problem+json")]
    Unprocessable(Problem),
    /// Shard unreachable or the hold budget of a moving range ran out (Retry-After).
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// Syntax, sign and size of an amount before its currency is known (the payment's
/// currency decides the precision, checked on the shard).
fn precheck(amount: &str) -> Result<(), AppError> {
    match Money::parse_positive(amount, Currency::CLF) {
        Ok(_) | Err(MoneyError::AmountTooPrecise { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `/v1/merchants/{mid}/payments/{pid}...`: both ids parsed, and the caller allowed
/// to act for the merchant.
fn payment_path(
    path: Result<Path<(String, String)>, PathRejection>,
    principal: &Principal,
) -> Result<(MerchantId, PaymentId), AppError> {
    let Path((mid, pid)) = path.map_err(path_error)?;
    let merchant = merchant_id(&mid)?;
    let payment = payment_id(&pid)?;
    principal.check_merchant(&merchant)?;
    Ok((merchant, payment))
}

fn path_error(e: PathRejection) -> AppError {
    AppError::bad_request("invalid_path", e.body_text())
}

fn respond(routed: Routed) -> Response {
    let o = routed.outcome;
    let body = serde_json::to_vec(&o.body).unwrap_or_default();
    let mut resp = (o.status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(lsn) = o.lsn
        && let Ok(v) = HeaderValue::from_str(&format!("{}:{lsn}", routed.range.shard))
    {
        h.insert(TOKEN_HEADER, v);
    }
    if o.replayed {
        h.insert(
            idempotency::REPLAYED_HEADER,
            HeaderValue::from_static("true"),
        );
    }
    resp
}

fn idem(
    state: &AppState,
    headers: &HeaderMap,
    merchant: &MerchantId,
    path: &str,
    canonical: &serde_json::Value,
) -> Result<IdemKey, AppError> {
    let body = serde_json::to_vec(canonical).map_err(AppError::internal)?;
    IdemKey::from_headers(
        headers,
        merchant,
        "POST",
        path,
        &body,
        state.config.idempotency_ttl,
    )
}

/// Create a merchant (placed on the shard owning its new id's key).
#[utoipa::path(post, path = "/v1/merchants", tag = "merchants", request_body = CreateMerchant,
    security(("bearer" = [])),
    responses((status = 201, body = Merchant, headers(("Shardline-Token" = String, description = "<shard>:<commit lsn>"))), Errors))]
pub async fn create_merchant(
    State(state): State<AppState>,
    principal: Principal,
    body: JsonBody<CreateMerchant>,
) -> Result<Response, AppError> {
    principal.check_create_merchant()?;
    let req = body.value;
    let chars = req.name.chars().count();
    if !(1..=200).contains(&chars) {
        return Err(AppError::bad_request(
            "invalid_name",
            "name must be 1 to 200 characters",
        ));
    }
    let currency = Currency::from_code(&req.default_currency)?;
    let merchant = MerchantId::new();
    let op = Op::CreateMerchant {
        name: req.name,
        currency,
    };
    Ok(respond(route(&state, merchant, &op, body.len).await?))
}

/// A merchant.
#[utoipa::path(get, path = "/v1/merchants/{mid}", tag = "merchants",
    params(("mid" = String, Path, format = Uuid, description = "merchant id")),
    security(("bearer" = [])), responses((status = 200, body = Merchant), Errors))]
pub async fn get_merchant(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, AppError> {
    let Path(mid) = path.map_err(path_error)?;
    let merchant = merchant_id(&mid)?;
    principal.check_merchant(&merchant)?;
    Ok(respond(route(&state, merchant, &Op::GetMerchant, 0).await?))
}

/// Authorize a payment. Requires `Idempotency-Key`.
#[utoipa::path(post, path = "/v1/merchants/{mid}/payments", tag = "payments",
    request_body = CreatePayment,
    params(("mid" = String, Path, format = Uuid, description = "merchant id"),
           ("Idempotency-Key" = String, Header, pattern = "^[!-~]{1,255}$", description = "1-255 visible ASCII characters")),
    security(("bearer" = [])),
    responses((status = 201, body = Payment, headers(("Shardline-Token" = String), ("Idempotent-Replayed" = String))), Errors))]
pub async fn create_payment(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: JsonBody<CreatePayment>,
) -> Result<Response, AppError> {
    let Path(mid) = path.map_err(path_error)?;
    let merchant = merchant_id(&mid)?;
    principal.check_merchant(&merchant)?;
    let req = body.value;
    let currency = Currency::from_code(&req.currency)?;
    let amount = Money::parse_positive(&req.amount, currency)?;
    if req
        .reference
        .as_ref()
        .is_some_and(|r| r.chars().count() > 200)
    {
        return Err(AppError::bad_request(
            "invalid_reference",
            "reference must be at most 200 characters",
        ));
    }
    let canonical = serde_json::json!({
        "amount": amount.to_string_canonical(), "currency": currency.code(), "reference": req.reference,
    });
    let path = format!("/v1/merchants/{merchant}/payments");
    let idem = idem(&state, &headers, &merchant, &path, &canonical)?;
    let op = Op::Authorize {
        amount,
        reference: req.reference,
        idem,
    };
    Ok(respond(route(&state, merchant, &op, body.len).await?))
}

/// Payments of a merchant, oldest first (keyset pagination).
#[utoipa::path(get, path = "/v1/merchants/{mid}/payments", tag = "payments",
    params(("mid" = String, Path, format = Uuid, description = "merchant id"), ListQuery),
    security(("bearer" = [])), responses((status = 200, body = PaymentPage), Errors))]
pub async fn list_payments(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, AppError> {
    let Path(mid) = path.map_err(path_error)?;
    let merchant = merchant_id(&mid)?;
    principal.check_merchant(&merchant)?;
    let Query(q) = query.map_err(|e| AppError::bad_request("invalid_query", e.body_text()))?;
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(AppError::bad_request(
            "invalid_limit",
            "limit must be between 1 and 100",
        ));
    }
    let after = q.after.as_deref().map(payment_id).transpose()?;
    let op = Op::ListPayments { limit, after };
    Ok(respond(route(&state, merchant, &op, 0).await?))
}

/// One payment.
#[utoipa::path(get, path = "/v1/merchants/{mid}/payments/{pid}", tag = "payments",
    params(("mid" = String, Path, format = Uuid, description = "merchant id"),
           ("pid" = String, Path, format = Uuid, description = "payment id")),
    security(("bearer" = [])), responses((status = 200, body = Payment), Errors))]
pub async fn get_payment(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, AppError> {
    let (merchant, payment) = payment_path(path, &principal)?;
    Ok(respond(
        route(&state, merchant, &Op::GetPayment { payment }, 0).await?,
    ))
}

/// Capture an authorized payment: all of it (no amount) or part of it, once.
#[utoipa::path(post, path = "/v1/merchants/{mid}/payments/{pid}/capture", tag = "payments",
    request_body(content = Capture, description = "may be empty"),
    params(("mid" = String, Path, format = Uuid, description = "merchant id"),
           ("pid" = String, Path, format = Uuid, description = "payment id"),
           ("Idempotency-Key" = String, Header, pattern = "^[!-~]{1,255}$", description = "1-255 visible ASCII characters")),
    security(("bearer" = [])),
    responses((status = 200, body = Payment, headers(("Shardline-Token" = String), ("Idempotent-Replayed" = String))), Errors))]
pub async fn capture(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    body: JsonBody<Capture>,
) -> Result<Response, AppError> {
    let (merchant, payment) = payment_path(path, &principal)?;
    let amount = body.value.amount;
    if let Some(a) = &amount {
        precheck(a)?;
    }
    let canonical = serde_json::json!({ "amount": amount });
    let path = format!("/v1/merchants/{merchant}/payments/{payment}/capture");
    let idem = idem(&state, &headers, &merchant, &path, &canonical)?;
    let op = Op::Capture {
        payment,
        amount,
        idem,
    };
    Ok(respond(route(&state, merchant, &op, body.len).await?))
}

/// Refund part or all of what was captured (many refunds allowed).
#[utoipa::path(post, path = "/v1/merchants/{mid}/payments/{pid}/refunds", tag = "payments",
    request_body = CreateRefund,
    params(("mid" = String, Path, format = Uuid, description = "merchant id"),
           ("pid" = String, Path, format = Uuid, description = "payment id"),
           ("Idempotency-Key" = String, Header, pattern = "^[!-~]{1,255}$", description = "1-255 visible ASCII characters")),
    security(("bearer" = [])),
    responses((status = 201, body = Refund, headers(("Shardline-Token" = String), ("Idempotent-Replayed" = String))), Errors))]
pub async fn refund(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    body: JsonBody<CreateRefund>,
) -> Result<Response, AppError> {
    let (merchant, payment) = payment_path(path, &principal)?;
    let amount = body.value.amount;
    precheck(&amount)?;
    let canonical = serde_json::json!({ "amount": amount });
    let path = format!("/v1/merchants/{merchant}/payments/{payment}/refunds");
    let idem = idem(&state, &headers, &merchant, &path, &canonical)?;
    let op = Op::Refund {
        payment,
        amount,
        idem,
    };
    Ok(respond(route(&state, merchant, &op, body.len).await?))
}

/// Void an authorized payment.
#[utoipa::path(post, path = "/v1/merchants/{mid}/payments/{pid}/void", tag = "payments",
    request_body(content = Void, description = "may be empty"),
    params(("mid" = String, Path, format = Uuid, description = "merchant id"),
           ("pid" = String, Path, format = Uuid, description = "payment id"),
           ("Idempotency-Key" = String, Header, pattern = "^[!-~]{1,255}$", description = "1-255 visible ASCII characters")),
    security(("bearer" = [])),
    responses((status = 200, body = Payment, headers(("Shardline-Token" = String), ("Idempotent-Replayed" = String))), Errors))]
pub async fn void(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    body: JsonBody<Void>,
) -> Result<Response, AppError> {
    let (merchant, payment) = payment_path(path, &principal)?;
    let path = format!("/v1/merchants/{merchant}/payments/{payment}/void");
    let idem = idem(&state, &headers, &merchant, &path, &serde_json::json!({}))?;
    let op = Op::Void { payment, idem };
    Ok(respond(route(&state, merchant, &op, body.len).await?))
}

/// Balances per currency.
#[utoipa::path(get, path = "/v1/merchants/{mid}/balance", tag = "merchants",
    params(("mid" = String, Path, format = Uuid, description = "merchant id")),
    security(("bearer" = [])), responses((status = 200, body = Balance), Errors))]
pub async fn balance(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, AppError> {
    let Path(mid) = path.map_err(path_error)?;
    let merchant = merchant_id(&mid)?;
    principal.check_merchant(&merchant)?;
    Ok(respond(route(&state, merchant, &Op::Balance, 0).await?))
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Health)))]
pub async fn healthz(State(state): State<AppState>) -> Response {
    axum::Json(Health {
        status: "ok".into(),
        map_epoch: state.map.epoch(),
        unreachable_shards: Vec::new(),
    })
    .into_response()
}

/// Readiness: the map is loaded and at least one shard answers (all probed at
/// once, 2 s each). Shards that do not answer are listed and make the status
/// `degraded`, not unready: every router sees the same shards, so failing
/// readiness for one shard would take all routers out of a load balancer (and
/// have an orchestrator restart them) while the other shards' merchants could
/// be served.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, body = Health),
              (status = 503, body = Problem, content_type = "application/problem+json")))]
pub async fn readyz(State(state): State<AppState>) -> Result<Response, AppError> {
    if state.map.current().is_none() {
        return Err(AppError::unavailable(
            "not_ready",
            "the range map is not loaded yet",
        ));
    }
    let pools = state.pools.snapshot();
    if pools.is_empty() {
        return Err(AppError::unavailable("not_ready", "no shards known"));
    }
    let probes = pools.iter().map(|(shard, p)| async move {
        let ok = tokio::time::timeout(Duration::from_secs(2), async {
            let c = p.pool.get().await.ok()?;
            c.simple_query("SELECT 1").await.ok()
        })
        .await;
        (shard.to_string(), matches!(ok, Ok(Some(_))))
    });
    let answers = futures_util::future::join_all(probes).await;
    let mut unreachable: Vec<String> = answers
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(s, _)| s.clone())
        .collect();
    unreachable.sort();
    if unreachable.len() == answers.len() {
        return Err(AppError::unavailable(
            "not_ready",
            format!("no shard answers ({})", unreachable.join(", ")),
        ));
    }
    Ok(axum::Json(Health {
        status: if unreachable.is_empty() {
            "ok"
        } else {
            "degraded"
        }
        .into(),
        map_epoch: state.map.epoch(),
        unreachable_shards: unreachable,
    })
    .into_response())
}

/// Unknown routes: 404 problem+json.
pub async fn fallback() -> AppError {
    AppError::not_found("not_found", "no such resource")
}

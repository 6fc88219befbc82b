//! The edge read API (axum): merchant, payment, balance, status and health, with
//! bearer auth against the catalog's API keys (cached), `Shardline-Staleness-Ms`
//! on every response and `Shardline-Min-Token` read-your-writes waits.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::{Value as Json_, json};
use shardline_core::api_keys::{self, Scope};
use shardline_core::{Currency, MerchantId, Money, shard_key};
use shardline_replicator::wire::{format_lsn, parse_lsn};
use sqlx::PgPool;
use thiserror::Error;

use crate::store::{SEP, StoredRow, row_key};
use crate::{Config, Shared, now_micros};

pub const STALENESS_HEADER: &str = "shardline-staleness-ms";
pub const MIN_TOKEN_HEADER: &str = "shardline-min-token";

/// An API error, rendered as problem+json.
#[derive(Debug, Error)]
pub enum ApiError {
    #[error("missing or invalid API key")]
    Unauthorized,
    #[error("this API key may not read merchant {0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error("shard {shard} has applied up to {applied}, not {wanted}, after {waited_ms} ms")]
    NotYet {
        shard: String,
        applied: String,
        wanted: String,
        waited_ms: u128,
    },
    #[error("{0}")]
    NotReady(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    fn status_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::NotYet { .. } => (StatusCode::GATEWAY_TIMEOUT, "min_token_timeout"),
            ApiError::NotReady(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_code();
        if status.is_server_error() {
            tracing::warn!(error = %self, "edge request failed");
        }
        let body = json!({
            "type": format!("urn:shardline:problem:{code}"),
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": self.to_string(),
            "code": code,
        });
        let mut resp = (status, Json(body)).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

/// Verified (or refused) bearer tokens and when they were checked.
type AuthCache = HashMap<String, (Option<Scope>, Instant)>;

#[derive(Debug, Clone)]
pub struct ApiState {
    shared: Arc<Shared>,
    catalog: PgPool,
    auth_cache: Arc<Mutex<AuthCache>>,
    auth_ttl: Duration,
    min_token_wait: Duration,
}

impl ApiState {
    pub fn new(shared: Arc<Shared>, catalog: PgPool, config: &Config) -> Self {
        ApiState {
            shared,
            catalog,
            auth_cache: Arc::new(Mutex::new(HashMap::new())),
            auth_ttl: config.auth_cache_ttl,
            min_token_wait: config.min_token_wait,
        }
    }

    async fn auth(&self, headers: &HeaderMap) -> Result<Scope, ApiError> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthorized)?
            .trim();
        if let Ok(cache) = self.auth_cache.lock()
            && let Some((scope, at)) = cache.get(token)
            && at.elapsed() < self.auth_ttl
        {
            return scope.clone().ok_or(ApiError::Unauthorized);
        }
        let scope = api_keys::verify(&self.catalog, token)
            .await
            .map_err(|e| ApiError::Internal(format!("verifying the API key: {e}")))?
            .map(|(_, s)| s);
        if let Ok(mut cache) = self.auth_cache.lock() {
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(token.to_owned(), (scope.clone(), Instant::now()));
        }
        scope.ok_or(ApiError::Unauthorized)
    }

    async fn merchant_auth(&self, headers: &HeaderMap, mid: &MerchantId) -> Result<(), ApiError> {
        match self.auth(headers).await? {
            Scope::Admin | Scope::Payments { merchant_id: None } => Ok(()),
            Scope::Payments {
                merchant_id: Some(m),
            } if m == *mid => Ok(()),
            Scope::Payments { .. } => Err(ApiError::Forbidden(mid.to_string())),
        }
    }

    /// Every merchant read: the caller may read `mid`, the Min-Token position is
    /// reached; returns the merchant's shard key as stored in row keys.
    async fn merchant_read(
        &self,
        headers: &HeaderMap,
        mid: &MerchantId,
    ) -> Result<String, ApiError> {
        self.merchant_auth(headers, mid).await?;
        self.min_token(headers).await?;
        Ok(shard_key(mid).to_string())
    }

    /// Honour `Shardline-Min-Token: <shard>:<lsn>`: wait (bounded) until that
    /// shard's applied end LSN reaches it.
    async fn min_token(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(v) = headers.get(MIN_TOKEN_HEADER) else {
            return Ok(());
        };
        let text = v
            .to_str()
            .map_err(|_| ApiError::BadRequest("Shardline-Min-Token is not ASCII".into()))?;
        let (shard, lsn) = text
            .split_once(':')
            .and_then(|(s, l)| Some((s.trim().to_owned(), parse_lsn(l)?)))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "Shardline-Min-Token {text:?} is not <shard>:<X/Y lsn>"
                ))
            })?;
        let started = Instant::now();
        let mut rx = self.shared.cursors.subscribe();
        let reached = |m: &std::collections::BTreeMap<String, crate::store::Cursor>| {
            m.get(&shard).is_some_and(|c| c.end_lsn >= lsn)
        };
        let waited = tokio::time::timeout(self.min_token_wait, rx.wait_for(reached)).await;
        match waited {
            Ok(Ok(_)) => Ok(()),
            _ => {
                let applied = self
                    .shared
                    .cursors
                    .borrow()
                    .get(&shard)
                    .map_or_else(|| "nothing".to_owned(), |c| format_lsn(c.end_lsn));
                Err(ApiError::NotYet {
                    shard,
                    applied,
                    wanted: format_lsn(lsn),
                    waited_ms: started.elapsed().as_millis(),
                })
            }
        }
    }

    fn staleness_ms(&self) -> i64 {
        let at = self.shared.caught_up_at_micros.load(Ordering::Relaxed);
        ((now_micros() - at) / 1000).max(0)
    }

    /// A point read: from the row cache without leaving this task when it
    /// holds the row, else on a blocking thread (redb read, then fill).
    async fn row(&self, key: String) -> Result<Option<Arc<StoredRow>>, ApiError> {
        if let Some(r) = self.shared.store.get_if_cached(&key) {
            return Ok(Some(r).filter(|r| !r.deleted));
        }
        let shared = self.shared.clone();
        let row = tokio::task::spawn_blocking(move || shared.store.get(&key))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??;
        Ok(row.filter(|r| !r.deleted))
    }
}

pub fn app(state: ApiState) -> axum::Router {
    axum::Router::new()
        .route("/v1/merchants/{mid}", get(get_merchant))
        .route("/v1/merchants/{mid}/payments/{pid}", get(get_payment))
        .route("/v1/merchants/{mid}/balance", get(get_balance))
        .route("/v1/status", get(status))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            staleness,
        ))
        .with_state(state)
}

/// `Shardline-Staleness-Ms` on every response; merchant reads also record it in
/// the staleness histogram.
async fn staleness(
    State(state): State<ApiState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let read = req.uri().path().starts_with("/v1/merchants/");
    let mut resp = next.run(req).await;
    let ms = state.staleness_ms();
    if read {
        crate::metrics::read_staleness(&state.shared.name, ms);
    }
    if let Ok(v) = HeaderValue::from_str(&ms.to_string()) {
        resp.headers_mut().insert(STALENESS_HEADER, v);
    }
    resp
}

/// `GET /metrics` (Prometheus text; unauthenticated like the router's).
async fn metrics(State(st): State<ApiState>) -> Response {
    crate::metrics::render(&st.shared, st.staleness_ms())
}

fn merchant_id(s: &str) -> Result<MerchantId, ApiError> {
    MerchantId::from_str(s).map_err(|e| ApiError::BadRequest(format!("merchant id: {e}")))
}

fn uuid(s: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(s).map_err(|e| ApiError::BadRequest(format!("id: {e}")))
}

fn col<'a>(r: &'a StoredRow, name: &str) -> Result<&'a str, ApiError> {
    r.get(name)
        .ok_or_else(|| ApiError::Internal(format!("stored row lacks {name}")))
}

/// PostgreSQL's text timestamptz (`2026-11-23 12:50:00.123456+00`).
pub fn parse_ts(s: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%#z")
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| ApiError::Internal(format!("stored timestamp {s:?}: {e}")))
}

fn render(amount: &str, currency: &str) -> Result<String, ApiError> {
    let d = Decimal::from_str(amount.trim())
        .map_err(|e| ApiError::Internal(format!("stored amount {amount:?}: {e}")))?;
    Ok(render_dec(d, currency))
}

fn render_dec(d: Decimal, currency: &str) -> String {
    Currency::from_code(currency.trim())
        .and_then(|c| Money::new(d, c))
        .map_or_else(|_| d.to_string(), |m| m.to_string_canonical())
}

fn version(r: &StoredRow) -> i64 {
    r.version
}

fn ok_json(v: Json_) -> Response {
    (StatusCode::OK, Json(v)).into_response()
}

async fn get_merchant(
    State(st): State<ApiState>,
    headers: HeaderMap,
    Path(mid): Path<String>,
) -> Result<Response, ApiError> {
    let m = merchant_id(&mid)?;
    let sk = st.merchant_read(&headers, &m).await?;
    let r = st
        .row(row_key("merchants", &[&sk, &m.to_string()]))
        .await?
        .ok_or(ApiError::NotFound("merchant"))?;
    Ok(ok_json(json!({
        "id": m.to_string(),
        "name": col(&r, "name")?,
        "default_currency": col(&r, "default_currency")?.trim(),
        "shard_key": col(&r, "shard_key")?.parse::<i64>().map_err(|e| ApiError::Internal(e.to_string()))?,
        "created_at": parse_ts(col(&r, "created_at")?)?,
        "version": version(&r),
    })))
}

async fn get_payment(
    State(st): State<ApiState>,
    headers: HeaderMap,
    Path((mid, pid)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let m = merchant_id(&mid)?;
    let p = uuid(&pid)?;
    let sk = st.merchant_read(&headers, &m).await?;
    let r = st
        .row(row_key("payments", &[&sk, &m.to_string(), &p.to_string()]))
        .await?
        .ok_or(ApiError::NotFound("payment"))?;
    let cur = col(&r, "currency")?.trim().to_owned();
    Ok(ok_json(json!({
        "id": p.to_string(),
        "merchant_id": m.to_string(),
        "amount": render(col(&r, "amount")?, &cur)?,
        "currency": cur,
        "captured_amount": render(col(&r, "captured_amount")?, &cur)?,
        "refunded_amount": render(col(&r, "refunded_amount")?, &cur)?,
        "status": col(&r, "status")?,
        "reference": r.get("reference"),
        "created_at": parse_ts(col(&r, "created_at")?)?,
        "updated_at": parse_ts(col(&r, "updated_at")?)?,
        "version": version(&r),
    })))
}

async fn get_balance(
    State(st): State<ApiState>,
    headers: HeaderMap,
    Path(mid): Path<String>,
) -> Result<Response, ApiError> {
    let m = merchant_id(&mid)?;
    let sk = st.merchant_read(&headers, &m).await?;
    st.row(row_key("merchants", &[&sk, &m.to_string()]))
        .await?
        .ok_or(ApiError::NotFound("merchant"))?;
    let prefix = format!("{}{SEP}", row_key("balances", &[&sk, &m.to_string()]));
    let shared = st.shared.clone();
    let rows = tokio::task::spawn_blocking(move || shared.store.scan(&prefix))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    // currency -> [authorized, available, refunded], ordered by currency.
    let mut sums: std::collections::BTreeMap<String, [Decimal; 3]> = Default::default();
    for (_, r) in rows.iter().filter(|(_, r)| !r.deleted) {
        let cur = col(r, "currency")?.trim().to_owned();
        let slot = match col(r, "account")? {
            "authorized" => 0,
            "available" => 1,
            "refunded" => 2,
            _ => continue,
        };
        let amount = Decimal::from_str(col(r, "amount")?.trim())
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        sums.entry(cur).or_insert([Decimal::ZERO; 3])[slot] += amount;
    }
    let balances: Vec<Json_> = sums
        .into_iter()
        .map(|(cur, [a, v, r])| {
            json!({
                "currency": cur,
                "authorized": render_dec(a, &cur),
                "available": render_dec(v, &cur),
                "refunded": render_dec(r, &cur),
            })
        })
        .collect();
    Ok(ok_json(
        json!({ "merchant_id": m.to_string(), "balances": balances }),
    ))
}

async fn status(State(st): State<ApiState>, headers: HeaderMap) -> Result<Response, ApiError> {
    st.auth(&headers).await?;
    let cursors = st.shared.cursors.borrow().clone();
    let now = now_micros();
    let shards: Vec<Json_> = cursors
        .iter()
        .map(|(shard, c)| {
            json!({
                "shard": shard,
                "applied_seq": c.stream_seq,
                "commit_lsn": format_lsn(c.commit_lsn),
                "end_lsn": format_lsn(c.end_lsn),
                "applied_transactions": c.applied,
                "gaps": c.gaps,
                "last_commit_at": DateTime::<Utc>::from_timestamp_micros(c.commit_time_micros),
                "apply_lag_ms": (c.applied_at_micros - c.commit_time_micros) as f64 / 1000.0,
                "since_last_apply_ms": (now - c.applied_at_micros) / 1000,
            })
        })
        .collect();
    let lag = st.shared.lag_percentiles().map(|(p50, p99, max, n)| {
        json!({
            "p50_ms": p50 as f64 / 1000.0,
            "p99_ms": p99 as f64 / 1000.0,
            "max_ms": max as f64 / 1000.0,
            "samples": n,
        })
    });
    let shared = st.shared.clone();
    let ranges = tokio::task::spawn_blocking(move || shared.store.ranges())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    let ranges: Vec<Json_> = ranges
        .iter()
        .map(|r| {
            json!({
                "range_id": r.range_id,
                "start_key": r.start_key,
                "end_key": r.end_key,
                "owner": r.owner,
                "epoch": r.epoch,
                "owner_since_lsn": format_lsn(r.owner_since_lsn),
                "released": r.released.iter().map(|(s, l)| (s.clone(), format_lsn(*l))).collect::<std::collections::BTreeMap<_, _>>(),
            })
        })
        .collect();
    Ok(ok_json(json!({
        "edge": st.shared.name,
        "shards": shards,
        "staleness_ms": st.staleness_ms(),
        "commit_to_apply": lag,
        "ranges": ranges,
    })))
}

async fn healthz() -> Response {
    ok_json(json!({ "status": "ok" }))
}

/// Ready once the consumer has caught up with the stream since this edge
/// started (a new or long-stopped edge replaying the stream would serve stale
/// rows). Later NATS outages do not make it unready: every edge would go at
/// once; `Shardline-Staleness-Ms` tells readers instead.
async fn readyz(State(st): State<ApiState>) -> Result<Response, ApiError> {
    if st.shared.caught_up_once.load(Ordering::Relaxed) {
        Ok(ok_json(
            json!({ "status": "ok", "staleness_ms": st.staleness_ms() }),
        ))
    } else {
        Err(ApiError::NotReady(
            "the edge has not caught up with the CDC stream since it started".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_postgres_timestamps() {
        let t = parse_ts("2026-11-23 12:50:00.123456+00").unwrap();
        assert_eq!(t.timestamp_micros() % 1_000_000, 123_456);
        let t2 = parse_ts("2026-11-23 14:50:00+02").unwrap();
        assert_eq!(t2.timestamp(), t.timestamp());
        assert_eq!(render("12.5", "USD").unwrap(), "12.50");
        assert_eq!(render("100", "JPY").unwrap(), "100");
    }
}

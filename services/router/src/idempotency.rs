//! Idempotency keys, stored on the merchant's shard in the same transaction as the
//! effect (so they move with the merchant).
//!
//! In one shard transaction: `pg_try_advisory_xact_lock(hash(merchant, key))` (not
//! acquired: the first request is in flight, 409 `idempotency_in_flight`), then the
//! stored row: same request hash -> replay the stored status and body with
//! `Idempotent-Replayed: true`; different hash -> 422 `idempotency_key_reused`;
//! none -> do the effect and insert the row, then commit. Failed requests (4xx) are
//! not stored: their transaction rolls back, so a retry re-evaluates.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use sha2::{Digest, Sha256};
use shardline_core::MerchantId;
use tokio_util::sync::CancellationToken;

use crate::error::AppError;
use crate::payments::sql;
use crate::pools::ShardPools;

pub const HEADER: &str = "idempotency-key";
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// A validated key and the fingerprint of the request it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdemKey {
    pub key: String,
    pub request_hash: [u8; 32],
    pub method: &'static str,
    pub path: String,
    /// The advisory lock serializing requests with this key.
    pub lock_id: i64,
    pub ttl: Duration,
}

impl IdemKey {
    /// From the `Idempotency-Key` header: required, 1..=255 visible ASCII characters.
    /// `canonical_body` is the normalized request (so `"12.5"` and `"12.50"` match).
    pub fn from_headers(
        headers: &HeaderMap,
        merchant: &MerchantId,
        method: &'static str,
        path: &str,
        canonical_body: &[u8],
        ttl: Duration,
    ) -> Result<Self, AppError> {
        let raw = headers.get(HEADER).ok_or_else(|| {
            AppError::bad_request(
                "idempotency_key_required",
                "this request moves money: send an Idempotency-Key header",
            )
        })?;
        let bytes = raw.as_bytes();
        if bytes.is_empty() || bytes.len() > 255 || !bytes.iter().all(|b| (0x21..=0x7e).contains(b))
        {
            return Err(AppError::bad_request(
                "idempotency_key_invalid",
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            ));
        }
        let key = String::from_utf8_lossy(bytes).into_owned();
        let mut h = Sha256::new();
        h.update(method.as_bytes());
        h.update(b"\n");
        h.update(path.as_bytes());
        h.update(b"\n");
        h.update(canonical_body);
        let request_hash: [u8; 32] = h.finalize().into();
        Ok(IdemKey {
            lock_id: lock_id(merchant, &key),
            key,
            request_hash,
            method,
            path: path.to_owned(),
            ttl,
        })
    }
}

/// A bigint advisory-lock key from the merchant and the idempotency key. (The fence
/// uses the two-int4 lock space, which never collides with bigint keys.)
pub fn lock_id(merchant: &MerchantId, key: &str) -> i64 {
    let mut h = Sha256::new();
    h.update(merchant.as_bytes());
    h.update(key.as_bytes());
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    i64::from_be_bytes(first)
}

/// What to do after looking the key up.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    Proceed,
    Replay {
        status: StatusCode,
        body: serde_json::Value,
    },
}

/// Decide from the lock result and the stored row `(request_hash, status, body)`.
pub fn decide(
    key: &IdemKey,
    locked: bool,
    stored: Option<(Vec<u8>, Option<i16>, Option<serde_json::Value>)>,
) -> Result<Check, AppError> {
    if !locked {
        return Err(AppError::conflict(
            "idempotency_in_flight",
            "a request with this Idempotency-Key is still being processed; retry shortly",
        ));
    }
    let Some((hash, status, body)) = stored else {
        return Ok(Check::Proceed);
    };
    if hash.as_slice() != key.request_hash.as_slice() {
        return Err(AppError::unprocessable(
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request",
        ));
    }
    let status = status
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| AppError::internal("stored idempotent response has no status"))?;
    Ok(Check::Replay {
        status,
        body: body.unwrap_or(serde_json::Value::Null),
    })
}

/// Delete expired keys on every shard in batches, until shutdown. Fencing errors
/// (a range being moved) are expected and skipped: the owner cleans up later.
pub async fn cleanup(pools: Arc<ShardPools>, every: Duration, shutdown: CancellationToken) {
    const BATCH: i64 = 1000;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for (shard, p) in pools.snapshot().iter() {
            let Ok(client) = p.pool.get().await else {
                continue;
            };
            for _ in 0..100 {
                if shutdown.is_cancelled() {
                    return;
                }
                match client.execute(sql::DELETE_EXPIRED_IDEM, &[&BATCH]).await {
                    Ok(n) if n > 0 => {
                        metrics::counter!("shardline_router_idempotency_keys_expired_total")
                            .increment(n);
                        if n < BATCH as u64 {
                            break;
                        }
                    }
                    Ok(_) => break,
                    Err(e) => {
                        let fenced = e
                            .code()
                            .is_some_and(|c| shardline_core::fence::classify(c.code()).is_some());
                        if !fenced {
                            tracing::warn!(%shard, error = %e, "idempotency cleanup failed");
                        }
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn key(headers: &HeaderMap, body: &[u8]) -> Result<IdemKey, AppError> {
        let m: MerchantId = "0193b5e4-7a3c-7d2e-9f10-1234567890ab".parse().unwrap();
        IdemKey::from_headers(headers, &m, "POST", "/p", body, Duration::from_secs(1))
    }

    #[test]
    fn header_validation() {
        let mut h = HeaderMap::new();
        assert_eq!(key(&h, b"").unwrap_err().code, "idempotency_key_required");
        h.insert(HEADER, HeaderValue::from_static("has space"));
        assert_eq!(key(&h, b"").unwrap_err().code, "idempotency_key_invalid");
        h.insert(HEADER, HeaderValue::from_str(&"k".repeat(256)).unwrap());
        assert_eq!(key(&h, b"").unwrap_err().code, "idempotency_key_invalid");
        h.insert(HEADER, HeaderValue::from_static("order-42"));
        let a = key(&h, b"{}").unwrap();
        assert_eq!(a.key, "order-42");
        assert_ne!(a.request_hash, key(&h, b"{ }").unwrap().request_hash);
        assert_eq!(a.lock_id, key(&h, b"x").unwrap().lock_id);
    }

    #[test]
    fn decisions() {
        let mut h = HeaderMap::new();
        h.insert(HEADER, HeaderValue::from_static("k"));
        let k = key(&h, b"{}").unwrap();
        assert_eq!(
            decide(&k, false, None).unwrap_err().code,
            "idempotency_in_flight"
        );
        assert_eq!(decide(&k, true, None).unwrap(), Check::Proceed);
        let same = Some((
            k.request_hash.to_vec(),
            Some(201),
            Some(serde_json::json!({"a": 1})),
        ));
        assert!(matches!(
            decide(&k, true, same).unwrap(),
            Check::Replay {
                status: StatusCode::CREATED,
                ..
            }
        ));
        let other = Some((vec![0; 32], Some(201), None));
        assert_eq!(
            decide(&k, true, other).unwrap_err().code,
            "idempotency_key_reused"
        );
    }
}

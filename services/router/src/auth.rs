//! Bearer API keys, verified against the catalog with `api_keys::verify` and cached
//! in memory (by SHA-256 of the token, never the token itself) so the hot path does
//! not touch the catalog. Positive results live `ttl`, negative ones a few seconds;
//! when the catalog is unreachable an expired positive entry keeps serving.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use shardline_core::MerchantId;
use shardline_core::api_keys::{self, Scope};
use sqlx::PgPool;

use crate::AppState;
use crate::error::AppError;

/// Most cached tokens; past it the cache is cleared (bounded memory under a flood of
/// random tokens).
const MAX_ENTRIES: usize = 10_000;
/// How long an unknown or revoked token is remembered as such.
const NEGATIVE_TTL: Duration = Duration::from_secs(5);

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Admin,
    /// A `payments` key: every merchant (`None`) or one.
    Payments(Option<MerchantId>),
}

impl Principal {
    /// May this caller act on `merchant`?
    pub fn check_merchant(&self, merchant: &MerchantId) -> Result<(), AppError> {
        match self {
            Principal::Admin | Principal::Payments(None) => Ok(()),
            Principal::Payments(Some(m)) if m == merchant => Ok(()),
            Principal::Payments(Some(_)) => Err(AppError::forbidden(
                "forbidden_merchant",
                "this API key is limited to another merchant",
            )),
        }
    }

    /// May this caller create merchants? Not a key limited to one merchant.
    pub fn check_create_merchant(&self) -> Result<(), AppError> {
        match self {
            Principal::Admin | Principal::Payments(None) => Ok(()),
            Principal::Payments(Some(_)) => Err(AppError::forbidden(
                "forbidden",
                "a merchant-scoped API key cannot create merchants",
            )),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    principal: Option<Principal>,
    at: Instant,
}

/// The key verifier and its cache.
#[derive(Debug)]
pub struct Auth {
    catalog: PgPool,
    ttl: Duration,
    cache: Mutex<HashMap<[u8; 32], Entry>>,
}

impl Auth {
    pub fn new(catalog: PgPool, ttl: Duration) -> Self {
        Auth {
            catalog,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Verify a bearer token.
    pub async fn verify(&self, token: &str) -> Result<Principal, AppError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let cached = self.lock().get(&digest).cloned();
        if let Some(e) = &cached {
            let ttl = if e.principal.is_some() {
                self.ttl
            } else {
                NEGATIVE_TTL
            };
            if e.at.elapsed() < ttl {
                return e.principal.clone().ok_or_else(invalid_key);
            }
        }
        if api_keys::parse_token(token).is_err() {
            return Err(invalid_key());
        }
        let principal = match api_keys::verify(&self.catalog, token).await {
            Ok(found) => found.map(|(_, scope)| match scope {
                Scope::Admin => Principal::Admin,
                Scope::Payments { merchant_id } => Principal::Payments(merchant_id),
            }),
            Err(e) => {
                // Catalog down: keep trusting a key we verified before.
                if let Some(Entry {
                    principal: Some(p), ..
                }) = cached
                {
                    tracing::warn!(error = %e, "catalog unreachable: using a cached API key");
                    return Ok(p);
                }
                tracing::warn!(error = %e, "cannot verify an API key: catalog unreachable");
                return Err(AppError::unavailable(
                    "auth_unavailable",
                    "cannot verify the API key right now",
                ));
            }
        };
        {
            let mut cache = self.lock();
            if cache.len() >= MAX_ENTRIES {
                cache.clear();
            }
            cache.insert(
                digest,
                Entry {
                    principal: principal.clone(),
                    at: Instant::now(),
                },
            );
        }
        principal.ok_or_else(invalid_key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn invalid_key() -> AppError {
    AppError::unauthorized("the API key is unknown, malformed or revoked")
}

/// The token of an `Authorization: Bearer <api key>` header (401 otherwise).
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Result<&str, AppError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| AppError::unauthorized("missing Authorization: Bearer <api key>"))?;
    value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .ok_or_else(|| AppError::unauthorized("expected Authorization: Bearer <api key>"))
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        state.auth.verify(bearer_token(&parts.headers)?).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        let m = MerchantId::new();
        let other = MerchantId::new();
        assert!(Principal::Admin.check_merchant(&m).is_ok());
        assert!(Principal::Payments(None).check_merchant(&m).is_ok());
        assert!(Principal::Payments(Some(m)).check_merchant(&m).is_ok());
        let e = Principal::Payments(Some(m))
            .check_merchant(&other)
            .unwrap_err();
        assert_eq!(e.code, "forbidden_merchant");
        assert!(
            Principal::Payments(Some(m))
                .check_create_merchant()
                .is_err()
        );
        assert!(Principal::Payments(None).check_create_merchant().is_ok());
    }
}

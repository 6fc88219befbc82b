//! Bearer API keys. A key reads `sl_<prefix>_<secret>`: the 12-hex-digit prefix
//! finds the row, and only the SHA-256 of the secret is stored, so a leaked catalog
//! does not leak usable keys. The plaintext is shown once, at creation.

use std::fmt;

use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::ids::MerchantId;

#[derive(Debug, thiserror::Error)]
pub enum ApiKeyError {
    #[error("api key query failed: {0}")]
    Db(#[from] sqlx::Error),
    #[error("malformed API key: expected sl_<12 hex>_<64 hex>")]
    Malformed,
    #[error("unknown scope {0:?}: expected `admin` or `payments`")]
    UnknownScope(String),
    #[error("no API key with id {0}")]
    NotFound(Uuid),
    #[error(
        "another API key already has the prefix {0} (a different secret): cannot import this one"
    )]
    PrefixTaken(String),
    #[error("the API key with prefix {0} is already stored with another scope")]
    OtherScope(String),
    #[error("the API key with prefix {0} was revoked: create or import a new one")]
    Revoked(String),
}

/// What a key may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "scope", rename_all = "snake_case")]
pub enum Scope {
    /// Everything, including admin endpoints.
    Admin,
    /// Payments API for every merchant (`None`) or a single one.
    Payments { merchant_id: Option<MerchantId> },
}

impl Scope {
    fn as_db(&self) -> (&'static str, Option<Uuid>) {
        match self {
            Scope::Admin => ("admin", None),
            Scope::Payments { merchant_id } => ("payments", merchant_id.map(|m| *m.as_uuid())),
        }
    }

    fn from_db(scope: &str, merchant: Option<Uuid>) -> Result<Self, ApiKeyError> {
        match scope {
            "admin" => Ok(Scope::Admin),
            "payments" => Ok(Scope::Payments {
                merchant_id: merchant.map(MerchantId::from_uuid),
            }),
            other => Err(ApiKeyError::UnknownScope(other.to_owned())),
        }
    }
}

/// A key just created: the only time its plaintext exists.
pub struct NewApiKey {
    pub id: Uuid,
    pub prefix: String,
    pub token: String,
}

impl fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewApiKey")
            .field("id", &self.id)
            .field("prefix", &self.prefix)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// A stored key, without its secret.
#[derive(Debug, Clone, Serialize)]
pub struct ApiKeyInfo {
    pub id: Uuid,
    pub prefix: String,
    pub name: String,
    pub scope: Scope,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Split `sl_<prefix>_<secret>`.
pub fn parse_token(token: &str) -> Result<(&str, &str), ApiKeyError> {
    let rest = token.strip_prefix("sl_").ok_or(ApiKeyError::Malformed)?;
    let (prefix, secret) = rest.split_once('_').ok_or(ApiKeyError::Malformed)?;
    let hex_of = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex_of(prefix, 12) || !hex_of(secret, 64) {
        return Err(ApiKeyError::Malformed);
    }
    Ok((prefix, secret))
}

fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

pub async fn create(pool: &PgPool, name: &str, scope: &Scope) -> Result<NewApiKey, ApiKeyError> {
    let mut prefix = [0u8; 6];
    let mut secret = [0u8; 32];
    {
        let mut rng = rand::rng();
        rng.fill_bytes(&mut prefix);
        rng.fill_bytes(&mut secret);
    }
    let prefix = hex::encode(prefix);
    let secret = hex::encode(secret);
    let id = Uuid::now_v7();
    let (scope_name, merchant) = scope.as_db();
    sqlx::query(
        "INSERT INTO api_keys (id, prefix, secret_hash, name, scope, merchant_id)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(&prefix)
    .bind(hash_secret(&secret).as_slice())
    .bind(name)
    .bind(scope_name)
    .bind(merchant)
    .execute(pool)
    .await?;
    let token = format!("sl_{prefix}_{secret}");
    Ok(NewApiKey { id, prefix, token })
}

/// What [`import`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Imported {
    /// The key was stored.
    Created,
    /// The same key (prefix, secret and scope) was already there: nothing changed.
    AlreadyPresent,
}

/// Store a key whose plaintext was made elsewhere (e.g. a deploy secret), like
/// [`create`] does: only the SHA-256 of its secret. Idempotent: importing a key that
/// is already stored with the same secret and scope is a no-op. A malformed token,
/// a prefix held by another secret, the same key with another scope and a revoked
/// key are errors.
pub async fn import(
    pool: &PgPool,
    name: &str,
    token: &str,
    scope: &Scope,
) -> Result<Imported, ApiKeyError> {
    let (prefix, secret) = parse_token(token)?;
    let hash = hash_secret(secret);
    let (scope_name, merchant) = scope.as_db();
    let inserted = sqlx::query(
        "INSERT INTO api_keys (id, prefix, secret_hash, name, scope, merchant_id)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (prefix) DO NOTHING",
    )
    .bind(Uuid::now_v7())
    .bind(prefix)
    .bind(hash.as_slice())
    .bind(name)
    .bind(scope_name)
    .bind(merchant)
    .execute(pool)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Imported::Created);
    }
    let (stored, have_scope, have_merchant, revoked): (Vec<u8>, String, Option<Uuid>, bool) =
        sqlx::query_as(
            "SELECT secret_hash, scope, merchant_id, revoked_at IS NOT NULL
             FROM api_keys WHERE prefix = $1",
        )
        .bind(prefix)
        .fetch_one(pool)
        .await?;
    if !constant_time_eq(&stored, &hash) {
        return Err(ApiKeyError::PrefixTaken(prefix.to_owned()));
    }
    if revoked {
        return Err(ApiKeyError::Revoked(prefix.to_owned()));
    }
    if Scope::from_db(&have_scope, have_merchant)? != *scope {
        return Err(ApiKeyError::OtherScope(prefix.to_owned()));
    }
    Ok(Imported::AlreadyPresent)
}

/// The scope of a valid, unrevoked key; `None` for unknown, revoked or wrong keys.
pub async fn verify(pool: &PgPool, token: &str) -> Result<Option<(Uuid, Scope)>, ApiKeyError> {
    let Ok((prefix, secret)) = parse_token(token) else {
        return Ok(None);
    };
    let row: Option<(Uuid, Vec<u8>, String, Option<Uuid>)> = sqlx::query_as(
        "SELECT id, secret_hash, scope, merchant_id FROM api_keys
         WHERE prefix = $1 AND revoked_at IS NULL",
    )
    .bind(prefix)
    .fetch_optional(pool)
    .await?;
    let Some((id, stored, scope, merchant)) = row else {
        return Ok(None);
    };
    if !constant_time_eq(&stored, &hash_secret(secret)) {
        return Ok(None);
    }
    Ok(Some((id, Scope::from_db(&scope, merchant)?)))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub async fn list(pool: &PgPool) -> Result<Vec<ApiKeyInfo>, ApiKeyError> {
    type Row = (
        Uuid,
        String,
        String,
        String,
        Option<Uuid>,
        chrono::DateTime<chrono::Utc>,
        Option<chrono::DateTime<chrono::Utc>>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, prefix, name, scope, merchant_id, created_at, revoked_at
         FROM api_keys ORDER BY created_at",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(
            |(id, prefix, name, scope, merchant, created_at, revoked_at)| {
                Ok(ApiKeyInfo {
                    id,
                    prefix,
                    name,
                    scope: Scope::from_db(&scope, merchant)?,
                    created_at,
                    revoked_at,
                })
            },
        )
        .collect()
}

pub async fn revoke(pool: &PgPool, id: Uuid) -> Result<(), ApiKeyError> {
    let done =
        sqlx::query("UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1")
            .bind(id)
            .execute(pool)
            .await?;
    if done.rows_affected() == 0 {
        return Err(ApiKeyError::NotFound(id));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tokens() {
        let t = format!("sl_{}_{}", "a".repeat(12), "0".repeat(64));
        assert!(parse_token(&t).is_ok());
        assert!(parse_token("sl_abc_def").is_err());
        assert!(parse_token(&t.replace("sl_", "sk_")).is_err());
        assert!(parse_token(&format!("sl_{}_{}", "g".repeat(12), "0".repeat(64))).is_err());
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}

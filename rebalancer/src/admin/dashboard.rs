//! `GET /`: the rebalancer dashboard, one server-rendered HTML page (inline CSS
//! and SVG, no script, no external asset) read from the catalog in one
//! read-only snapshot: policy mode, the range map per shard, per-shard load over
//! the last 15 minutes, moves in flight with their phase, recent finished moves
//! and recent policy decisions.
//!
//! Auth: an admin API key as `Authorization: Bearer <key>` or, because browsers
//! cannot send bearer tokens, HTTP Basic with any user name and the key as the
//! password (`http://admin:<key>@127.0.0.1:8070/`). Basic is accepted on this
//! route only. A request without credentials gets 401 with
//! `WWW-Authenticate: Basic realm="shardline"` so that a browser asks for them.

use axum::extract::{FromRequestParts, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use shardline_router::AppError;
use shardline_router::auth::Principal;
use uuid::Uuid;

use super::{AdminState, ApiError};

mod page;
mod svg;

/// Load chart window and bucket.
const WINDOW_SECS: i64 = 15 * 60;
const BUCKET_SECS: i64 = 10;
/// Bounds on what one page reads.
const MAX_RANGES: i64 = 5000;
const MAX_MOVES_IN_FLIGHT: i64 = 50;
const FINISHED_MOVES: i64 = 10;
const DECISIONS: i64 = 30;
/// `?refresh=N` bounds, seconds.
pub const REFRESH_MIN: u32 = 2;
pub const REFRESH_MAX: u32 = 300;

/// Escape text for HTML element content and (double- or single-quoted)
/// attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Standard base64 (RFC 4648, `=` padding optional) for Basic credentials.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let s = s.trim_end_matches('=').as_bytes();
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// The API key of an `Authorization` header: `Bearer <key>`, or `Basic` with the
/// key as password (any user name). `None`: no usable credentials.
fn credentials(headers: &axum::http::HeaderMap) -> Result<String, AppError> {
    let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
        AppError::unauthorized("the dashboard needs an admin API key (Basic password or Bearer)")
    })?;
    let malformed = || {
        AppError::unauthorized(
            "expected Authorization: Basic (password = admin API key) or Bearer <api key>",
        )
    };
    let (scheme, rest) = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .ok_or_else(malformed)?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(rest.trim().to_owned());
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(malformed());
    }
    let decoded = base64_decode(rest.trim())
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(malformed)?;
    let (_, password) = decoded.split_once(':').ok_or_else(malformed)?;
    Ok(password.to_owned())
}

/// An admin caller of the dashboard (Bearer or Basic). Payments keys get 403.
#[derive(Debug, Clone, Copy)]
pub struct DashboardAdmin;

/// A dashboard auth failure: problem+json; a 401 challenges with Basic.
#[derive(Debug)]
pub struct DashboardAuthError(AppError);

impl IntoResponse for DashboardAuthError {
    fn into_response(self) -> Response {
        let unauthorized = self.0.status == StatusCode::UNAUTHORIZED;
        let mut resp = self.0.into_response();
        if unauthorized {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"shardline\", charset=\"UTF-8\""),
            );
        }
        resp
    }
}

impl FromRequestParts<AdminState> for DashboardAdmin {
    type Rejection = DashboardAuthError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AdminState,
    ) -> Result<Self, DashboardAuthError> {
        let key = credentials(&parts.headers).map_err(DashboardAuthError)?;
        match state.auth.verify(&key).await.map_err(DashboardAuthError)? {
            Principal::Admin => Ok(DashboardAdmin),
            Principal::Payments(_) => Err(DashboardAuthError(AppError::forbidden(
                "admin_required",
                "the rebalancer dashboard needs an admin API key",
            ))),
        }
    }
}

/// `?refresh=N`: seconds between reloads (a meta refresh), 2..=300. Other
/// parameters are ignored.
fn parse_refresh(query: Option<&str>) -> Result<Option<u32>, AppError> {
    let Some(q) = query else { return Ok(None) };
    let mut refresh = None;
    for pair in q.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k != "refresh" {
            continue;
        }
        let n = v
            .parse::<u32>()
            .ok()
            .filter(|n| (REFRESH_MIN..=REFRESH_MAX).contains(n))
            .ok_or_else(|| {
                AppError::unprocessable(
                    "invalid_refresh",
                    format!(
                        "refresh must be a whole number of seconds in {REFRESH_MIN}..={REFRESH_MAX}"
                    ),
                )
            })?;
        refresh = Some(n);
    }
    Ok(refresh)
}

/// `policy_state`'s one row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ShardRow {
    pub id: String,
    pub state: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RangeItem {
    pub id: i64,
    pub start_key: i64,
    pub end_key: i64,
    pub shard_id: String,
    pub epoch: i64,
    pub state: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MoveItem {
    pub id: Uuid,
    pub range_id: i64,
    pub start_key: i64,
    pub end_key: i64,
    pub source_shard: String,
    pub target_shard: String,
    pub state: String,
    pub reason: String,
    pub abort_requested: bool,
    pub error: Option<String>,
    pub phase_ms: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Requests of one shard in one bucket (`floor(unix time / 10)`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LoadBucket {
    pub shard_id: String,
    pub bucket: i64,
    pub requests: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DecisionItem {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub kind: String,
    pub taken: bool,
    pub dry_run: bool,
    pub reason: String,
    pub range_id: Option<i64>,
    pub move_id: Option<Uuid>,
    /// `inputs->>'text'` (the policy loop's sentence), else `inputs->>'explanation'`.
    pub text: Option<String>,
}

/// Everything the page shows, read in one snapshot.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub now: DateTime<Utc>,
    pub policy: Option<crate::autopilot::state::PolicyState>,
    pub shards: Vec<ShardRow>,
    pub ranges: Vec<RangeItem>,
    pub range_count: i64,
    pub map_epoch: i64,
    pub in_flight: Vec<MoveItem>,
    pub in_flight_count: i64,
    pub finished: Vec<MoveItem>,
    pub load: Vec<LoadBucket>,
    pub decisions: Vec<DecisionItem>,
}

const MOVE_COLUMNS: &str = "id, range_id, start_key, end_key, source_shard, target_shard, state, \
     reason, abort_requested, error, phase_ms, created_at, finished_at";

async fn read_snapshot(catalog: &sqlx::PgPool) -> Result<Snapshot, sqlx::Error> {
    let mut tx = catalog.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    sqlx::query("SET LOCAL statement_timeout = '5s'")
        .execute(&mut *tx)
        .await?;
    let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut *tx)
        .await?;
    let policy = crate::autopilot::state::fetch(&mut *tx)
        .await
        .map_err(|e| match e {
            crate::autopilot::LoopError::Db(e) => e,
            other => sqlx::Error::Protocol(other.to_string()),
        })?;
    let shards =
        sqlx::query_as::<_, ShardRow>("SELECT id, state FROM shards ORDER BY id LIMIT 256")
            .fetch_all(&mut *tx)
            .await?;
    let (range_count, map_epoch): (i64, i64) =
        sqlx::query_as("SELECT count(*), coalesce(max(epoch), 0) FROM ranges")
            .fetch_one(&mut *tx)
            .await?;
    let ranges = sqlx::query_as::<_, RangeItem>(
        "SELECT id, start_key, end_key, shard_id, epoch, state FROM ranges
          ORDER BY start_key LIMIT $1",
    )
    .bind(MAX_RANGES)
    .fetch_all(&mut *tx)
    .await?;
    let in_flight_count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM moves WHERE state NOT IN ('done', 'aborted')")
            .fetch_one(&mut *tx)
            .await?;
    let in_flight = sqlx::query_as::<_, MoveItem>(sqlx::AssertSqlSafe(format!(
        "SELECT {MOVE_COLUMNS} FROM moves WHERE state NOT IN ('done', 'aborted')
          ORDER BY created_at LIMIT $1"
    )))
    .bind(MAX_MOVES_IN_FLIGHT)
    .fetch_all(&mut *tx)
    .await?;
    // Move ids are UUIDv7 (time-ordered): the primary key walks newest first.
    let finished = sqlx::query_as::<_, MoveItem>(sqlx::AssertSqlSafe(format!(
        "SELECT {MOVE_COLUMNS} FROM moves WHERE state IN ('done', 'aborted')
          ORDER BY id DESC LIMIT $1"
    )))
    .bind(FINISHED_MOVES)
    .fetch_all(&mut *tx)
    .await?;
    // load_samples_at bounds the scan to the window (plus one bucket of slack).
    let load = sqlx::query_as::<_, LoadBucket>(
        "SELECT shard_id, floor(extract(epoch FROM at)::float8 / $2::float8)::bigint AS bucket,
                sum(requests)::bigint AS requests
           FROM load_samples
          WHERE at >= now() - make_interval(secs => $1::float8 + $2::float8)
          GROUP BY 1, 2 ORDER BY 1, 2 LIMIT 20000",
    )
    .bind(WINDOW_SECS as f64)
    .bind(BUCKET_SECS as f64)
    .fetch_all(&mut *tx)
    .await?;
    let decisions = sqlx::query_as::<_, DecisionItem>(
        "SELECT id, at, kind, taken, dry_run, reason, range_id, move_id,
                coalesce(inputs->>'text', inputs->>'explanation') AS text
           FROM decisions ORDER BY at DESC, id DESC LIMIT $1",
    )
    .bind(DECISIONS)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Snapshot {
        now,
        policy,
        shards,
        ranges,
        range_count,
        map_epoch,
        in_flight,
        in_flight_count,
        finished,
        load,
        decisions,
    })
}

/// `GET /[?refresh=N]`.
pub async fn dashboard(
    _: DashboardAdmin,
    State(s): State<AdminState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let refresh = parse_refresh(query.as_deref())?;
    let snapshot = read_snapshot(&s.catalog).await?;
    let html = page::render(&snapshot, refresh);
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'",
            ),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        html,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_html_specials() {
        assert_eq!(esc("plain s1"), "plain s1");
        assert_eq!(
            esc(r#"<script>alert("x") & 'y'</script>"#),
            "&lt;script&gt;alert(&quot;x&quot;) &amp; &#39;y&#39;&lt;/script&gt;"
        );
        assert_eq!(
            esc("&amp;"),
            "&amp;amp;",
            "escaping is not idempotent: escape once"
        );
        assert_eq!(esc("é → ü"), "é → ü");
        assert_eq!(esc(""), "");
    }

    #[test]
    fn decodes_base64() {
        assert_eq!(base64_decode("YWRtaW46c2VrcmV0").unwrap(), b"admin:sekret");
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert_eq!(base64_decode("YQ").unwrap(), b"a");
        assert_eq!(base64_decode("YWI=").unwrap(), b"ab");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert!(base64_decode("Y").is_none());
        assert!(base64_decode("YW*=").is_none());
    }

    fn auth(v: &str) -> axum::http::HeaderMap {
        let mut h = axum::http::HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn credentials_from_bearer_or_basic() {
        assert_eq!(credentials(&auth("Bearer sl_k")).unwrap(), "sl_k");
        // "anyone:sl_a:b" -> the password keeps its colons
        assert_eq!(
            credentials(&auth("Basic YW55b25lOnNsX2E6Yg==")).unwrap(),
            "sl_a:b"
        );
        assert_eq!(credentials(&auth("basic OnNsX2s=")).unwrap(), "sl_k");
        for bad in ["Basic !!!", "Basic YWRtaW4=", "Digest x", "Bearer"] {
            let e = credentials(&auth(bad)).unwrap_err();
            assert_eq!(e.status, StatusCode::UNAUTHORIZED, "{bad}");
        }
        let e = credentials(&axum::http::HeaderMap::new()).unwrap_err();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn refresh_is_bounded() {
        assert_eq!(parse_refresh(None).unwrap(), None);
        assert_eq!(parse_refresh(Some("x=1")).unwrap(), None);
        assert_eq!(parse_refresh(Some("refresh=2")).unwrap(), Some(2));
        assert_eq!(parse_refresh(Some("a=b&refresh=300")).unwrap(), Some(300));
        for bad in [
            "refresh=1",
            "refresh=301",
            "refresh=",
            "refresh",
            "refresh=5s",
            "refresh=-3",
        ] {
            let e = parse_refresh(Some(bad)).unwrap_err();
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
            assert_eq!(e.code, "invalid_refresh");
        }
    }
}

//! Errors: [`AppError`] is what a request fails with, rendered as RFC 9457
//! `application/problem+json` with a stable machine-readable `code`; [`RouterError`]
//! is what starting or running the service fails with.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use shardline_core::ids::IdError;
use shardline_core::money::MoneyError;
use utoipa::ToSchema;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A problem+json body (RFC 9457).
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct Problem {
    /// A URI reference naming the problem type (`urn:shardline:problem:<code>`).
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// Stable machine-readable code, e.g. `refund_exceeds_captured`.
    pub code: String,
}

/// A failed request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {detail}")]
pub struct AppError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    /// `Retry-After` seconds (503s).
    pub retry_after: Option<u32>,
}

impl AppError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        AppError {
            status,
            code,
            detail: detail.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn not_found(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, detail)
    }

    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }

    pub fn unprocessable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    pub fn forbidden(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, detail)
    }

    /// 503 with `Retry-After: 1`.
    pub fn unavailable(code: &'static str, detail: impl Into<String>) -> Self {
        AppError {
            retry_after: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, detail)
        }
    }

    /// A bug or an unexpected database failure. The detail goes to the log only.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error (logged)",
        )
    }

    pub fn problem(&self) -> Problem {
        Problem {
            kind: format!("urn:shardline:problem:{}", self.code),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.to_owned(),
        }
    }
}

impl From<MoneyError> for AppError {
    /// Malformed amounts are 400; well-formed but unacceptable ones 422.
    fn from(e: MoneyError) -> Self {
        let status = match e {
            MoneyError::AmountInvalid { .. } | MoneyError::CurrencyInvalid => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        Self::new(status, e.code(), e.to_string())
    }
}

impl From<IdError> for AppError {
    fn from(e: IdError) -> Self {
        Self::bad_request("invalid_id", e.to_string())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut resp = (self.status, body).into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"shardline\""),
            );
        }
        resp
    }
}

/// Turns any error response that is not problem+json yet (axum's 404/405, tower-http's
/// 413 and timeout) into one, so every failure has the same shape.
pub async fn problemize<B>(resp: axum::http::Response<B>) -> Response
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let resp = resp.map(axum::body::Body::new);
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == PROBLEM_JSON.as_bytes());
    if is_problem {
        return resp;
    }
    let (code, detail): (&'static str, &str) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no such resource"),
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method_not_allowed", "method not allowed on this resource")
        }
        StatusCode::PAYLOAD_TOO_LARGE => ("body_too_large", "request body exceeds 64 KiB"),
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::REQUEST_TIMEOUT => {
            ("request_timeout", "the request did not complete in time")
        }
        s if s.is_client_error() => ("bad_request", "the request was rejected"),
        _ => ("internal", "internal error"),
    };
    let mut err = AppError::new(status, code, detail);
    if code == "request_timeout" {
        err.status = StatusCode::SERVICE_UNAVAILABLE;
        err.retry_after = Some(1);
    }
    let allow = resp.headers().get(header::ALLOW).cloned();
    let mut out = err.into_response();
    if let Some(allow) = allow {
        out.headers_mut().insert(header::ALLOW, allow);
    }
    out
}

/// Why the router could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("invalid configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to the catalog: {0}")]
    Catalog(#[source] sqlx::Error),
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_errors_map_to_400_or_422() {
        let e: AppError = MoneyError::AmountInvalid { reason: "x" }.into();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e: AppError = MoneyError::AmountNotPositive.into();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.code, "amount_not_positive");
    }

    #[test]
    fn problem_shape() {
        let p = AppError::conflict("invalid_state", "nope").problem();
        assert_eq!(p.kind, "urn:shardline:problem:invalid_state");
        assert_eq!(p.status, 409);
        assert_eq!(p.title, "Conflict");
    }
}

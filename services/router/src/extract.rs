//! Extractors whose every rejection is problem+json: JSON bodies (400 malformed,
//! 413 too large, 415 wrong content type) and path ids (400 `invalid_id`).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;
use shardline_core::ids::{MerchantId, PaymentId};

use crate::error::AppError;
use crate::model::EmptyBody;

/// A JSON request body and its size in bytes.
#[derive(Debug, Clone)]
pub struct JsonBody<T> {
    pub value: T,
    pub len: usize,
}

fn is_json(ct: &str) -> bool {
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned + EmptyBody,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or("").to_owned());
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                AppError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    "request body exceeds 64 KiB",
                )
            } else {
                AppError::bad_request("invalid_body", r.body_text())
            }
        })?;
        let len = bytes.len();
        if bytes.iter().all(u8::is_ascii_whitespace)
            && let Some(value) = T::empty()
        {
            return Ok(JsonBody { value, len });
        }
        match content_type.as_deref() {
            Some(ct) if is_json(ct) => {}
            _ => {
                return Err(AppError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "send the body as Content-Type: application/json",
                ));
            }
        }
        let value = serde_json::from_slice(&bytes).map_err(|e| {
            use serde_json::error::Category;
            match e.classify() {
                Category::Data => AppError::bad_request("invalid_body", e.to_string()),
                Category::Syntax | Category::Eof | Category::Io => {
                    AppError::bad_request("invalid_json", format!("malformed JSON: {e}"))
                }
            }
        })?;
        Ok(JsonBody { value, len })
    }
}

pub fn merchant_id(s: &str) -> Result<MerchantId, AppError> {
    s.parse().map_err(AppError::from)
}

pub fn payment_id(s: &str) -> Result<PaymentId, AppError> {
    s.parse().map_err(AppError::from)
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/jsonx"));
        assert!(!is_json(""));
    }
}

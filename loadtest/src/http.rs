//! A small HTTP/1 JSON client for the router and edges (keep-alive pool,
//! bearer auth, per-request timeout).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// How a request ended.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    /// `Shardline-Token` of a write, `Idempotent-Replayed` of a replay.
    pub token: Option<String>,
    pub replayed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{method} {url}: timed out after {after:?}")]
    Timeout {
        method: Method,
        url: String,
        after: Duration,
    },
    #[error("{method} {url}: {detail}")]
    Transport {
        method: Method,
        url: String,
        detail: String,
    },
}

#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    key: String,
    timeout: Duration,
    http: HyperClient<HttpConnector, Full<Bytes>>,
}

impl Client {
    /// `base` like `http://127.0.0.1:8080`.
    pub fn new(base: &str, key: &str, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Client {
            base: base.trim_end_matches('/').to_owned(),
            key: key.to_owned(),
            timeout,
            http: HyperClient::builder(TokioExecutor::new())
                .pool_max_idle_per_host(256)
                .build(connector),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub async fn get(&self, path: &str) -> Result<Reply, HttpError> {
        self.send(Method::GET, path, None, None, &[]).await
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Result<Reply, HttpError> {
        self.send(Method::GET, path, None, None, headers).await
    }

    pub async fn post(
        &self,
        path: &str,
        idem: Option<&str>,
        body: &Value,
    ) -> Result<Reply, HttpError> {
        self.send(Method::POST, path, idem, Some(body), &[]).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        idem: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Reply, HttpError> {
        let url = format!("{}{path}", self.base);
        let transport = |detail: String| HttpError::Transport {
            method: method.clone(),
            url: url.clone(),
            detail,
        };
        let mut b = Request::builder()
            .method(method.clone())
            .uri(&url)
            .header("authorization", format!("Bearer {}", self.key));
        if let Some(i) = idem {
            b = b.header("idempotency-key", i);
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let payload = match body {
            Some(v) => {
                b = b.header("content-type", "application/json");
                Bytes::from(serde_json::to_vec(v).map_err(|e| transport(e.to_string()))?)
            }
            None => Bytes::new(),
        };
        let req = b
            .body(Full::new(payload))
            .map_err(|e| transport(e.to_string()))?;
        let call = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| transport(e.to_string()))?;
            let status = resp.status();
            let token = resp
                .headers()
                .get("shardline-token")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let replayed = resp
                .headers()
                .get("idempotent-replayed")
                .is_some_and(|v| v == "true");
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| transport(e.to_string()))?
                .to_bytes();
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            Ok(Reply {
                status,
                body,
                token,
                replayed,
            })
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(HttpError::Timeout {
                method,
                url,
                after: self.timeout,
            }),
        }
    }
}

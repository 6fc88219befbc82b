//! Prometheus metrics (`metrics` facade + `metrics-exporter-prometheus`): request
//! latency by route/method/status, fencing retries, holds, map epoch and refreshes,
//! shard pool stats (sampled at scrape time).

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::AppState;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide recorder, installed on first use. `None` when another
/// recorder was installed first (then `/metrics` is empty).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(SECONDS_BUCKETS)
                .map_err(|e| tracing::warn!(error = %e, "metrics buckets rejected"))
                .ok()?;
            match builder.install_recorder() {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot install the metrics recorder");
                    None
                }
            }
        })
        .as_ref()
}

/// Records the latency and count of every routed request (a `route_layer`, so
/// the route template is known) and names the route in the request span.
pub async fn track(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    tracing::Span::current().record("route", route.as_str());
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    let labels = [("route", route), ("method", method), ("status", status)];
    metrics::histogram!("shardline_router_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("shardline_router_requests_total", &labels).increment(1);
    resp
}

/// `GET /metrics`
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String)))]
pub async fn render(State(state): State<AppState>) -> Response {
    for (shard, p) in state.pools.snapshot().iter() {
        let s = p.pool.status();
        let shard = shard.to_string();
        metrics::gauge!("shardline_router_pool_connections", "shard" => shard.clone(), "state" => "size")
            .set(s.size as f64);
        metrics::gauge!("shardline_router_pool_connections", "shard" => shard.clone(), "state" => "available")
            .set(s.available as f64);
        metrics::gauge!("shardline_router_pool_connections", "shard" => shard.clone(), "state" => "waiting")
            .set(s.waiting as f64);
        metrics::gauge!("shardline_router_pool_max_size", "shard" => shard).set(s.max_size as f64);
    }
    metrics::gauge!("shardline_router_map_epoch").set(state.map.epoch() as f64);
    let body = handle().map(PrometheusHandle::render).unwrap_or_default();
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

//! Prometheus metrics (`metrics` facade + `metrics-exporter-prometheus`): request
//! latency by route/method/status, fencing retries, holds, map epoch and refreshes,
//! shard pool stats (sampled at scrape time).

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::AppState;

/// The process-wide recorder (shared with edges and replicators of the same
/// process: [`shardline_core::prometheus`]).
pub fn handle() -> Option<&'static PrometheusHandle> {
    shardline_core::prometheus::handle()
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
    let mut resp = shardline_core::prometheus::render().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(shardline_core::prometheus::CONTENT_TYPE),
    );
    resp
}

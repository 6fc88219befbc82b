//! The process-wide Prometheus recorder (`metrics` facade +
//! `metrics-exporter-prometheus`). Every service of a process (router, edges,
//! replicators under `shardline up`) records into this one registry, so every
//! `/metrics` endpoint of a process renders all of it; series carry a label
//! naming their instance (`shard`, `edge`) instead.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Histogram buckets (seconds) of every Shardline histogram.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The Prometheus text exposition content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

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

/// The text exposition of everything recorded so far (empty without a recorder).
pub fn render() -> String {
    handle().map(PrometheusHandle::render).unwrap_or_default()
}

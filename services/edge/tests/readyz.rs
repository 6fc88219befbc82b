//! `/readyz` of the edge: unready until its consumer has caught up with the CDC
//! stream once since start, ready from then on (`/healthz` is always 200). A real
//! redb store in a temp dir; the catalog pool is lazy (never used by these routes).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use shardline_edge::api::{ApiState, app};
use shardline_edge::store::Store;
use shardline_edge::{Config, Shared, heartbeat, now_micros};
use tokio::sync::watch;
use tower::ServiceExt;

async fn get(app: &axum::Router, uri: &str) -> (StatusCode, serde_json::Value) {
    let resp = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn ready_only_after_catching_up_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::new(
        "nats://127.0.0.1:1",
        dir.path().join("edge.redb"),
        "postgres://nobody@127.0.0.1:1/catalog",
    );
    let shared = Arc::new(Shared {
        name: "edge".into(),
        store: Store::open(&config.store_path).unwrap(),
        cursors: watch::Sender::new(Default::default()),
        caught_up_at_micros: AtomicI64::new(now_micros()),
        caught_up_once: AtomicBool::new(false),
        apply_lags_micros: Default::default(),
        heard: heartbeat::Heard::default(),
    });
    let catalog = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy(&config.catalog_url)
        .unwrap();
    let app = app(ApiState::new(shared.clone(), catalog, &config));

    let (status, body) = get(&app, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "not_ready");
    assert_eq!(get(&app, "/healthz").await.0, StatusCode::OK);

    shared.caught_up(now_micros());
    let (status, body) = get(&app, "/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ok");
    assert!(body["staleness_ms"].as_i64().is_some());
}

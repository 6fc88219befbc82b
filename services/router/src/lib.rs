//! Shardline router: the payments HTTP API (DESIGN.md section 5).
//!
//! Every request for a merchant goes to the shard that owns the merchant's key in
//! the cached range map ([`map`]); the shard's fence decides whether that is still
//! true, and [`routing`] refreshes, retries or holds on fencing errors. Money moves
//! in one shard transaction with its ledger journal, balances and idempotency key
//! ([`payments`], [`idempotency`]).
//!
//! * [`app`] builds the axum `Router` for a state (testable with `oneshot`);
//! * [`Server::bind`] + [`Server::serve`], or [`run`], serve it until shutdown,
//!   with the background tasks: map LISTEN + periodic refresh, load flushing,
//!   idempotency key cleanup.

pub mod auth;
pub mod config;
pub mod error;
pub mod extract;
pub mod handlers;
pub mod idempotency;
pub mod load;
pub mod map;
pub mod metrics;
pub mod model;
pub mod openapi;
pub mod payments;
pub mod pools;
pub mod routing;
pub mod telemetry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;

pub use config::{Config, ConfigError, RouterArgs};
pub use error::{AppError, RouterError};

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Everything a request needs; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub catalog: PgPool,
    pub pools: Arc<pools::ShardPools>,
    pub map: Arc<map::MapCache>,
    pub auth: Arc<auth::Auth>,
    pub load: Arc<load::LoadRecorder>,
}

impl AppState {
    /// Build the state (the catalog pool connects lazily) and try a first map load;
    /// a catalog that is down at start only delays readiness.
    pub async fn new(config: Config) -> Result<Self, RouterError> {
        let config = config.validate()?;
        let catalog = PgPoolOptions::new()
            .max_connections(config.catalog_pool_size)
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy(&config.catalog_url)
            .map_err(RouterError::Catalog)?;
        let pools = Arc::new(pools::ShardPools::new(config.shard_pool_size));
        let map = Arc::new(map::MapCache::new(catalog.clone(), pools.clone()));
        if let Err(e) = map.refresh().await {
            tracing::warn!(error = %e, "initial range map load failed; will retry");
        }
        Ok(AppState {
            auth: Arc::new(auth::Auth::new(catalog.clone(), config.auth_cache_ttl)),
            load: Arc::new(load::LoadRecorder::new(config.router_id.clone())),
            config: Arc::new(config),
            catalog,
            pools,
            map,
        })
    }

    /// Start the background tasks; they stop when `shutdown` is cancelled.
    pub fn spawn_background(&self, shutdown: &CancellationToken) -> Vec<JoinHandle<()>> {
        let c = &self.config;
        let mut tasks = vec![
            tokio::spawn(map::refresh_periodically(
                self.map.clone(),
                c.map_refresh_interval,
                shutdown.clone(),
            )),
            tokio::spawn(load::flush_periodically(
                self.load.clone(),
                self.catalog.clone(),
                c.load_flush_interval,
                shutdown.clone(),
            )),
            tokio::spawn(idempotency::cleanup(
                self.pools.clone(),
                c.idempotency_cleanup_interval,
                shutdown.clone(),
            )),
        ];
        if c.map_listen {
            tasks.push(tokio::spawn(map::listen(
                self.map.clone(),
                c.catalog_url.clone(),
                shutdown.clone(),
            )));
        }
        tasks
    }
}

fn request_span(req: &Request) -> Span {
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
        route = tracing::field::Empty,
        merchant = tracing::field::Empty,
        shard = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    // W3C trace context from the caller, when OTLP export is on.
    use opentelemetry::propagation::TextMapPropagator as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    struct Headers<'a>(&'a axum::http::HeaderMap);
    impl opentelemetry::propagation::Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(|k| k.as_str()).collect()
        }
    }
    if req.headers().contains_key("traceparent") {
        let cx = opentelemetry_sdk::propagation::TraceContextPropagator::new()
            .extract(&Headers(req.headers()));
        let _ = span.set_parent(cx);
    }
    span
}

/// The HTTP API for `state`.
pub fn app(state: AppState) -> axum::Router {
    let timeout = state.config.request_timeout;
    axum::Router::new()
        .route("/v1/merchants", post(handlers::create_merchant))
        .route("/v1/merchants/{mid}", get(handlers::get_merchant))
        .route(
            "/v1/merchants/{mid}/payments",
            post(handlers::create_payment).get(handlers::list_payments),
        )
        .route(
            "/v1/merchants/{mid}/payments/{pid}",
            get(handlers::get_payment),
        )
        .route(
            "/v1/merchants/{mid}/payments/{pid}/capture",
            post(handlers::capture),
        )
        .route(
            "/v1/merchants/{mid}/payments/{pid}/refunds",
            post(handlers::refund),
        )
        .route(
            "/v1/merchants/{mid}/payments/{pid}/void",
            post(handlers::void),
        )
        .route("/v1/merchants/{mid}/balance", get(handlers::balance))
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(metrics::render))
        .route("/openapi.json", get(openapi::serve))
        .route_layer(axum::middleware::from_fn(metrics::track))
        .fallback(handlers::fallback)
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_response(|resp: &Response, latency: Duration, span: &Span| {
                            span.record("status", resp.status().as_u16());
                            tracing::debug!(latency_us = latency.as_micros() as u64, "response");
                        }),
                )
                .layer(axum::middleware::map_response(error::problemize))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::SERVICE_UNAVAILABLE,
                    timeout,
                ))
                .layer(RequestBodyLimitLayer::new(BODY_LIMIT)),
        )
}

/// A bound, not yet serving router.
#[derive(Debug)]
pub struct Server {
    listener: tokio::net::TcpListener,
    state: AppState,
    addr: SocketAddr,
}

impl Server {
    /// Validate the config, connect, load the map and bind the listen address.
    pub async fn bind(config: Config) -> Result<Self, RouterError> {
        metrics::handle();
        let listen = config.listen;
        let state = AppState::new(config).await?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| RouterError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| RouterError::Bind {
            addr: listen,
            source,
        })?;
        Ok(Server {
            listener,
            state,
            addr,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serve until `shutdown` is cancelled, then drain in-flight requests, flush
    /// the last load sample and close the pools.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), RouterError> {
        let background = shutdown.child_token();
        let tasks = self.state.spawn_background(&background);
        tracing::info!(addr = %self.addr, "router listening");
        let result = axum::serve(self.listener, app(self.state.clone()))
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await
            .map_err(RouterError::Serve);
        background.cancel();
        for t in tasks {
            let _ = t.await;
        }
        self.state.pools.close();
        self.state.catalog.close().await;
        tracing::info!("router stopped");
        result
    }
}

/// Serve `config` until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RouterError> {
    Server::bind(config).await?.serve(shutdown).await
}

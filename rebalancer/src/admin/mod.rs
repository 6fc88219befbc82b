//! The rebalancer's admin API (default 127.0.0.1:8070, admin API keys only):
//! the range map and shards as the catalog holds them, moves (plan, list, inspect
//! with phase timings and events, abort) and range-map operations (split, merge,
//! isolate a merchant) and the policy's controls (mode, decisions). Every error
//! is problem+json with a stable `code`.
//!
//! The API only writes intent to the catalog (a `planned` move, an abort request,
//! a split or merge, each one catalog transaction); the leader engine drives the
//! moves. So any rebalancer process may serve it, leader or standby.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::routing::{get, post};
use shardline_router::AppError;
use shardline_router::auth::{Auth, Principal, bearer_token};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::model::Error;

mod dashboard;
mod handlers;
mod policy;
mod views;

pub use views::{MoveEventView, MoveView, ShardView};

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8070";
const BODY_LIMIT: usize = 16 * 1024;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AdminState {
    pub catalog: PgPool,
    pub auth: Arc<Auth>,
}

impl AdminState {
    pub fn new(catalog: PgPool) -> Self {
        AdminState {
            auth: Arc::new(Auth::new(catalog.clone(), Duration::from_secs(30))),
            catalog,
        }
    }
}

/// An authenticated admin caller. Payments keys get 403.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<AdminState> for Admin {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Self, AppError> {
        let token = bearer_token(&parts.headers)?;
        match state.auth.verify(token).await? {
            Principal::Admin => Ok(Admin),
            Principal::Payments(_) => Err(AppError::forbidden(
                "admin_required",
                "the rebalancer API needs an admin API key",
            )),
        }
    }
}

/// How engine and catalog errors reach a caller.
impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        use axum::http::StatusCode;
        ApiError(match e {
            Error::NotFound(id) => AppError::not_found("move_not_found", format!("no move {id}")),
            Error::UnknownShard(s) => {
                AppError::unprocessable("unknown_shard", format!("shard {s:?} is not registered"))
            }
            Error::Invalid(msg) => AppError::unprocessable("invalid_request", msg),
            Error::Conflict { id, expected } => AppError::conflict(
                "move_conflict",
                format!("move {id} left state {expected} meanwhile"),
            ),
            Error::Db(e) if is_unavailable(&e) => {
                tracing::warn!(error = %e, "catalog unavailable");
                AppError::unavailable("catalog_unavailable", "the catalog is unreachable")
            }
            Error::Db(e) if is_conflict(&e) => AppError::new(
                StatusCode::CONFLICT,
                "concurrent_change",
                "the range map changed concurrently; retry",
            ),
            other => AppError::internal(other),
        })
    }
}

fn is_unavailable(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
    ) || e
        .as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c.starts_with("57P") || c.starts_with("08"))
}

fn is_conflict(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        // serialization failure, deadlock, exclusion/unique violation, map coverage
        .is_some_and(|c| matches!(c.as_ref(), "40001" | "40P01" | "23P01" | "23505" | "SLM01"))
}

/// A handler's error: an [`AppError`] rendered as problem+json.
#[derive(Debug)]
pub struct ApiError(pub AppError);

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        ApiError(e)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Error::Db(e).into()
    }
}

impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        self.0.into_response()
    }
}

/// Ready when the catalog answers (within 2 s): everything the admin API and
/// the engine do goes through it. Leader and standby are both ready (a standby
/// serves the admin API and takes over when the leader's lock is released).
async fn readyz(
    axum::extract::State(state): axum::extract::State<AdminState>,
) -> Result<axum::Json<serde_json::Value>, shardline_router::AppError> {
    let ping = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.catalog),
    )
    .await;
    match ping {
        Ok(Ok(_)) => Ok(axum::Json(serde_json::json!({"status": "ok"}))),
        Ok(Err(e)) => Err(shardline_router::AppError::unavailable(
            "not_ready",
            format!("the catalog does not answer: {e}"),
        )),
        Err(_) => Err(shardline_router::AppError::unavailable(
            "not_ready",
            "the catalog did not answer within 2 s",
        )),
    }
}

/// The admin API's routes (tested with `oneshot`).
pub fn app(state: AdminState) -> Router {
    use axum::http::StatusCode;
    Router::new()
        .route("/", get(dashboard::dashboard))
        .route("/v1/shards", get(handlers::shards))
        .route("/v1/ranges", get(handlers::ranges))
        .route("/v1/ranges/split", post(handlers::split))
        .route("/v1/ranges/merge", post(handlers::merge))
        .route("/v1/ranges/isolate", post(handlers::isolate))
        .route("/v1/moves", get(handlers::list_moves).post(handlers::create_move))
        .route("/v1/moves/{id}", get(handlers::get_move))
        .route("/v1/moves/{id}/abort", post(handlers::abort_move))
        .route("/v1/policy", get(policy::get_policy))
        .route("/v1/policy/pause", post(policy::pause))
        .route("/v1/policy/resume", post(policy::resume))
        .route("/v1/policy/dry-run", post(policy::dry_run))
        .route("/v1/decisions", get(policy::decisions))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
        .layer(
            tower::ServiceBuilder::new()
                .layer(TraceLayer::new_for_http().make_span_with(
                    |req: &axum::http::Request<_>| {
                        tracing::info_span!("admin_request", method = %req.method(), path = %req.uri().path())
                    },
                ))
                .layer(axum::middleware::map_response(
                    shardline_router::error::problemize,
                ))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Duration::from_secs(30),
                ))
                .layer(RequestBodyLimitLayer::new(BODY_LIMIT)),
        )
}

/// Why the admin API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("admin API stopped: {0}")]
    Io(#[from] std::io::Error),
}

/// A bound admin API server.
#[derive(Debug)]
pub struct AdminServer {
    listener: TcpListener,
    state: AdminState,
}

impl AdminServer {
    pub async fn bind(addr: SocketAddr, state: AdminState) -> Result<Self, ServeError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        Ok(AdminServer { listener, state })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serve until `shutdown`, then finish in-flight requests.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), ServeError> {
        tracing::info!(addr = %self.local_addr(), "rebalancer admin API listening");
        axum::serve(self.listener, app(self.state))
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await?;
        Ok(())
    }
}

//! Routing one operation: merchant -> shard key -> cached map -> shard pool, with
//! the reactions to fencing errors:
//!
//! * SLF01 (the shard does not own the key): refresh the map now; if the owner
//!   changed, retry there (at most `max_fence_retries` times); if not (the catalog
//!   has not flipped yet), hold as for SLF02.
//! * SLF02 (the range is frozen or incoming: a move is cutting over): hold the
//!   request until the map epoch changes (LISTEN, periodic refresh, or our own
//!   polling every 250 ms), then replay it on the owner. The hold budget
//!   (`hold_timeout`) is per request; only when it runs out does the caller get
//!   503 `range_moving` with `Retry-After: 1`.
//!
//! Everything a shard did before a fencing error was rolled back, so replaying is
//! safe; idempotency keys make a replay after an ambiguous failure safe as well.

use std::time::{Duration, Instant};

use deadpool_postgres::{Object, Pool, PoolError};
use shardline_core::fence::FenceVerdict;
use shardline_core::{MerchantId, Range};
use tracing::Instrument;

use crate::AppState;
use crate::error::AppError;
use crate::load::Sample;
use crate::payments::{self, ExecError, Op, Outcome, Target};

/// A routed response and where it was served.
#[derive(Debug, Clone)]
pub struct Routed {
    pub outcome: Outcome,
    pub range: Range,
}

/// A pooled connection that is detached from the pool (closed) unless the
/// operation finished cleanly, e.g. when the request future is dropped mid-way
/// through a transaction by the request timeout.
struct Checked {
    obj: Option<Object>,
    clean: bool,
}

impl Drop for Checked {
    fn drop(&mut self) {
        if !self.clean
            && let Some(obj) = self.obj.take()
        {
            drop(Object::take(obj));
        }
    }
}

async fn run_on(pool: &Pool, target: &Target, op: &Op) -> Result<Outcome, ExecError> {
    let obj = pool.get().await.map_err(|e| {
        ExecError::App(match e {
            PoolError::Backend(e) => unavailable(&e),
            other => AppError::unavailable("shard_unavailable", format!("shard pool: {other}")),
        })
    })?;
    let mut checked = Checked {
        obj: Some(obj),
        clean: false,
    };
    let Some(client) = checked.obj.as_ref() else {
        return Err(ExecError::App(AppError::internal("no connection")));
    };
    let result = payments::execute(client, target, op).await;
    checked.clean = !matches!(result, Err(ExecError::Db(_)));
    result
}

fn unavailable(e: &tokio_postgres::Error) -> AppError {
    tracing::warn!(error = %e, "shard unreachable");
    AppError::unavailable("shard_unavailable", "the merchant's shard is unreachable")
}

/// Connection trouble is 503; anything else from the database is a bug (500).
fn db_error(e: &tokio_postgres::Error) -> AppError {
    let code = e.code().map(|c| c.code().to_owned());
    match code.as_deref() {
        None => unavailable(e),
        Some(c) if c.starts_with("08") || c.starts_with("57P") || c == "53300" => unavailable(e),
        _ => AppError::internal(format!("shard query failed: {e}")),
    }
}

fn is_retryable(e: &tokio_postgres::Error) -> bool {
    matches!(e.code().map(|c| c.code()), Some("40001" | "40P01"))
}

/// Execute `op` for `merchant` on its owner, reacting to fencing errors.
pub async fn route(
    state: &AppState,
    merchant: MerchantId,
    op: &Op,
    request_bytes: usize,
) -> Result<Routed, AppError> {
    let target = Target::new(merchant);
    let key = shardline_core::shard_key(&merchant);
    let span = tracing::Span::current();
    span.record("merchant", tracing::field::display(&merchant));
    let started = Instant::now();
    let mut hold_deadline: Option<Instant> = None;
    let mut not_owned = 0u32;
    for attempt in 0u32..32 {
        let map = match state.map.current() {
            Some(m) => m,
            None => state.map.refresh().await.map_err(|e| {
                tracing::warn!(error = %e, "no range map yet");
                AppError::unavailable("map_unavailable", "the range map is not loaded yet")
            })?,
        };
        let range = map.lookup(key).clone();
        let epoch = map.epoch();
        drop(map);
        span.record("shard", range.shard.as_str());
        let pool = state.pools.get(&range.shard).ok_or_else(|| {
            AppError::unavailable(
                "shard_unavailable",
                format!("no connection pool for shard {}", range.shard),
            )
        })?;
        let query_span = tracing::info_span!(
            "shard_query",
            shard = %range.shard,
            op = op.name(),
            attempt,
            range_id = range.id
        );
        let result = run_on(&pool, &target, op).instrument(query_span).await;
        let verdict = match result {
            Ok(outcome) => {
                let bytes = request_bytes as u64
                    + serde_json::to_vec(&outcome.body).map_or(0, |b| b.len() as u64);
                state.load.record(
                    &range,
                    Sample {
                        merchant,
                        key,
                        write: op.is_write() && !outcome.replayed,
                        rows: outcome.rows,
                        bytes,
                        latency: started.elapsed(),
                    },
                );
                return Ok(Routed { outcome, range });
            }
            Err(ExecError::App(e)) => return Err(e),
            Err(ExecError::Db(e)) if is_retryable(&e) && attempt < 3 => {
                metrics::counter!("shardline_router_txn_retries_total").increment(1);
                continue;
            }
            Err(ExecError::Db(e)) => return Err(db_error(&e)),
            Err(ExecError::Fence(v)) => v,
        };
        let kind = match verdict {
            FenceVerdict::NotOwned => "not_owned",
            FenceVerdict::Frozen => "frozen",
        };
        metrics::counter!("shardline_router_fence_retries_total", "kind" => kind).increment(1);
        tracing::debug!(shard = %range.shard, kind, attempt, "fenced");
        if verdict == FenceVerdict::NotOwned && not_owned < state.config.max_fence_retries {
            not_owned += 1;
            match state.map.refresh().await {
                Ok(m) if m.lookup(key).shard != range.shard => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "map refresh after SLF01 failed"),
            }
        }
        let deadline =
            *hold_deadline.get_or_insert_with(|| Instant::now() + state.config.hold_timeout);
        if !hold(state, epoch, deadline).await {
            metrics::counter!("shardline_router_hold_timeouts_total").increment(1);
            return Err(AppError::unavailable(
                "range_moving",
                "the merchant's key range is being moved; retry shortly",
            ));
        }
    }
    Err(AppError::unavailable(
        "range_moving",
        "the merchant's key range kept moving; retry shortly",
    ))
}

/// Wait until the map epoch moves past `epoch` or `deadline` passes, refreshing
/// every 250 ms in case notifications are not arriving. Returns whether it moved.
async fn hold(state: &AppState, epoch: i64, deadline: Instant) -> bool {
    let started = Instant::now();
    let moved = loop {
        if state.map.epoch() != epoch {
            break true;
        }
        let now = Instant::now();
        if now >= deadline {
            break false;
        }
        let slice = (now + Duration::from_millis(250)).min(deadline);
        if state.map.wait_for_change(epoch, slice).await {
            break true;
        }
        if let Err(e) = state.map.refresh().await {
            tracing::debug!(error = %e, "map refresh while holding failed");
        }
    };
    metrics::histogram!("shardline_router_hold_seconds", "result" => if moved { "replayed" } else { "timeout" })
        .record(started.elapsed().as_secs_f64());
    moved
}

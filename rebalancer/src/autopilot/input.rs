//! Reads a [`PolicyInput`] from the catalog (and range sizes from the shards):
//! plain queries, one per table, bounded by the history and oscillation windows.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use shardline_core::{KeyRange, MerchantId, ShardId};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

use crate::policy::{
    HeavyHitter, LoadSample, MoveInFlight, MoveRecord, PolicyConfig, PolicyInput, ShardInfo,
    ShardState, SizeEstimate,
};

use super::LoopError;

fn key(v: i64, what: &str) -> Result<u64, LoopError> {
    u64::try_from(v).map_err(|_| LoopError::Catalog(format!("negative key {v} in {what}")))
}

fn keys(start: i64, end: i64, what: &str) -> Result<KeyRange, LoopError> {
    KeyRange::new(key(start, what)?, key(end, what)?)
        .map_err(|e| LoopError::Catalog(format!("{what}: {e}")))
}

fn shard(s: &str) -> Result<ShardId, LoopError> {
    s.parse()
        .map_err(|e| LoopError::Catalog(format!("shard id {s:?}: {e}")))
}

fn count(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// `load_samples.heavy_hitters` as the router writes it.
#[derive(Deserialize)]
struct RawHitter {
    merchant_id: String,
    shard_key: u32,
    count: u64,
    error: u64,
}

type SampleRow = (
    String,
    DateTime<Utc>,
    i64,
    i64,
    i64,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    sqlx::types::Json<Vec<RawHitter>>,
);

async fn samples(
    catalog: &PgPool,
    now: DateTime<Utc>,
    config: &PolicyConfig,
) -> Result<Vec<LoadSample>, LoopError> {
    let window = config.interval * (config.history_intervals + 1);
    let since = now - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    let rows: Vec<SampleRow> = sqlx::query_as(
        "SELECT router_id, at, range_id, start_key, end_key, shard_id, requests, writes,
                rows_touched, bytes, latency_us_sum, latency_us_max, heavy_hitters
           FROM load_samples WHERE at >= $1 AND at < $2 ORDER BY at, id",
    )
    .bind(since)
    .bind(now)
    .fetch_all(catalog)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (router_id, at, range_id, start, end, sh, req, wr, rows_t, bytes, lat_sum, lat_max, hh) in
        rows
    {
        let heavy_hitters =
            hh.0.into_iter()
                .filter_map(|h| {
                    // A sketch entry with a malformed id is skipped, not fatal.
                    let merchant_id = h.merchant_id.parse::<MerchantId>().ok()?;
                    Some(HeavyHitter {
                        merchant_id,
                        shard_key: h.shard_key,
                        count: h.count,
                        error: h.error,
                    })
                })
                .collect();
        out.push(LoadSample {
            router_id,
            at,
            range_id,
            keys: keys(start, end, "load_samples")?,
            shard: shard(&sh)?,
            requests: count(req),
            writes: count(wr),
            rows_touched: count(rows_t),
            bytes: count(bytes),
            latency_us_sum: count(lat_sum),
            latency_us_max: count(lat_max),
            heavy_hitters,
        });
    }
    Ok(out)
}

type MoveRowT = (
    Uuid,
    i64,
    i64,
    i64,
    String,
    String,
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<i64>,
);

async fn moves(
    catalog: &PgPool,
    now: DateTime<Utc>,
    config: &PolicyConfig,
    sizes: &[SizeEstimate],
) -> Result<(Vec<MoveInFlight>, Vec<MoveRecord>), LoopError> {
    let window = config
        .oscillation_window
        .max(config.range_cooldown)
        .max(Duration::from_secs(3600));
    let since = now - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    let rows: Vec<MoveRowT> = sqlx::query_as(
        "SELECT id, range_id, start_key, end_key, source_shard, target_shard, state, created_at,
                finished_at, (stats->>'bytes')::bigint
           FROM moves
          WHERE state NOT IN ('done', 'aborted') OR finished_at >= $1
          ORDER BY created_at",
    )
    .bind(since)
    .fetch_all(catalog)
    .await?;
    let mut in_flight = Vec::new();
    let mut history = Vec::new();
    for (id, range_id, start, end, src, dst, state, created, finished, bytes) in rows {
        let k = keys(start, end, "moves")?;
        let bytes = bytes
            .map(count)
            .or_else(|| crate::policy::size_of(k, sizes))
            .unwrap_or(config.unknown_size_bytes);
        match (state.as_str(), finished) {
            ("done" | "aborted", Some(finished_at)) => history.push(MoveRecord {
                keys: k,
                source: shard(&src)?,
                target: shard(&dst)?,
                started_at: created,
                finished_at,
                bytes,
                completed: state == "done",
            }),
            ("done" | "aborted", None) => {}
            _ => in_flight.push(MoveInFlight {
                move_id: id,
                range_id,
                keys: k,
                source: shard(&src)?,
                target: shard(&dst)?,
                started_at: created,
                bytes,
            }),
        }
    }
    Ok((in_flight, history))
}

/// Per-range data sizes, measured on the shards and cached for `refresh`.
///
/// A shard's data size (`pg_total_relation_size` of its data tables) is spread
/// over its owned ranges by their share of the shard's payments and merchants
/// (one counting query per shard). Unreachable shards keep their last figure.
#[derive(Debug, Default)]
pub(crate) struct SizeCache {
    by_shard: BTreeMap<String, (Instant, Vec<SizeEstimate>)>,
}

const DATA_TABLES: &str =
    "'merchants','payments','refunds','ledger_entries','balances','idempotency_keys'";

impl SizeCache {
    pub(crate) async fn refresh(
        &mut self,
        catalog: &PgPool,
        refresh: Duration,
    ) -> Result<Vec<SizeEstimate>, LoopError> {
        let shards: Vec<(String, String)> =
            sqlx::query_as("SELECT id, dsn FROM shards WHERE state <> 'down' ORDER BY id")
                .fetch_all(catalog)
                .await?;
        for (id, dsn) in shards {
            let fresh = self
                .by_shard
                .get(&id)
                .is_some_and(|(at, _)| at.elapsed() < refresh);
            if fresh {
                continue;
            }
            let ranges: Vec<(i64, i64)> = sqlx::query_as(
                "SELECT start_key, end_key FROM ranges WHERE shard_id = $1 ORDER BY start_key",
            )
            .bind(&id)
            .fetch_all(catalog)
            .await?;
            match measure(&dsn, &ranges).await {
                Ok(est) => {
                    self.by_shard.insert(id, (Instant::now(), est));
                }
                Err(e) => tracing::warn!(shard = %id, error = %e, "measuring range sizes failed"),
            }
        }
        Ok(self
            .by_shard
            .values()
            .flat_map(|(_, v)| v.iter().cloned())
            .collect())
    }
}

async fn measure(dsn: &str, ranges: &[(i64, i64)]) -> Result<Vec<SizeEstimate>, LoopError> {
    if ranges.is_empty() {
        return Ok(Vec::new());
    }
    let mut conn = PgConnection::connect(dsn).await?;
    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname IN ({DATA_TABLES})"
    )))
    .fetch_one(&mut conn)
    .await?;
    let (starts, ends): (Vec<i64>, Vec<i64>) = ranges.iter().copied().unzip();
    let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT r.lo, r.hi,
                (SELECT count(*) FROM merchants m WHERE m.shard_key >= r.lo AND m.shard_key < r.hi)
              + (SELECT count(*) FROM payments p WHERE p.shard_key >= r.lo AND p.shard_key < r.hi)
           FROM unnest($1::bigint[], $2::bigint[]) AS r(lo, hi)",
    )
    .bind(&starts)
    .bind(&ends)
    .fetch_all(&mut conn)
    .await?;
    let _ = conn.close().await;
    let all: i64 = rows.iter().map(|r| r.2).sum();
    let mut out = Vec::with_capacity(rows.len());
    for (lo, hi, n) in rows {
        let bytes = if all > 0 {
            (total as f64 * n as f64 / all as f64).round() as u64
        } else {
            0
        };
        out.push(SizeEstimate {
            keys: keys(lo, hi, "ranges")?,
            bytes,
        });
    }
    Ok(out)
}

/// Everything `decide` needs, as of the catalog's clock `now`.
pub(crate) async fn load(
    catalog: &PgPool,
    now: DateTime<Utc>,
    config: &PolicyConfig,
    sizes: Vec<SizeEstimate>,
) -> Result<PolicyInput, LoopError> {
    let map = shardline_core::catalog::load_range_map(catalog)
        .await
        .map_err(|e| LoopError::Catalog(e.to_string()))?;
    let shard_rows: Vec<(String, String)> =
        sqlx::query_as("SELECT id, state FROM shards ORDER BY id")
            .fetch_all(catalog)
            .await?;
    let mut shards = Vec::with_capacity(shard_rows.len());
    for (id, state) in shard_rows {
        let state = ShardState::parse(&state)
            .ok_or_else(|| LoopError::Catalog(format!("shard {id} has state {state:?}")))?;
        shards.push(ShardInfo {
            id: shard(&id)?,
            state,
        });
    }
    let samples = samples(catalog, now, config).await?;
    let (in_flight, history) = moves(catalog, now, config, &sizes).await?;
    Ok(PolicyInput {
        now,
        map,
        shards,
        samples,
        in_flight,
        history,
        sizes,
    })
}

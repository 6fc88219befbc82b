//! Catalog data access used by operations: registering shards, seeding and reading
//! the range map. The router and the move engine have their own hot-path queries.

use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};

use crate::ids::{IdError, ShardId};
use crate::range_map::{KeyRange, Range, RangeMap, RangeMapError};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog query failed: {0}")]
    Db(#[from] sqlx::Error),
    #[error("catalog holds an invalid shard id: {0}")]
    BadShardId(#[from] IdError),
    #[error("catalog range map is invalid: {0}")]
    BadMap(#[from] RangeMapError),
    #[error("cannot seed the range map: {0}")]
    Seed(String),
}

/// A row of `shards`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ShardRow {
    pub id: String,
    pub dsn: String,
    pub state: String,
}

/// A row of `ranges`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RangeRow {
    pub id: i64,
    pub start_key: i64,
    pub end_key: i64,
    pub shard_id: String,
    pub epoch: i64,
    pub state: String,
}

/// Insert a shard or update its DSN (`shardline up` re-registers on every start).
pub async fn upsert_shard(pool: &PgPool, id: &ShardId, dsn: &str) -> Result<(), CatalogError> {
    sqlx::query(
        "INSERT INTO shards (id, dsn) VALUES ($1, $2)
         ON CONFLICT (id) DO UPDATE SET dsn = EXCLUDED.dsn, updated_at = now()
         WHERE shards.dsn IS DISTINCT FROM EXCLUDED.dsn",
    )
    .bind(id.as_str())
    .bind(dsn)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn list_shards(pool: &PgPool) -> Result<Vec<ShardRow>, CatalogError> {
    Ok(
        sqlx::query_as::<_, ShardRow>("SELECT id, dsn, state FROM shards ORDER BY id")
            .fetch_all(pool)
            .await?,
    )
}

pub async fn list_ranges(pool: &PgPool) -> Result<Vec<RangeRow>, CatalogError> {
    Ok(sqlx::query_as::<_, RangeRow>(
        "SELECT id, start_key, end_key, shard_id, epoch, state FROM ranges ORDER BY start_key",
    )
    .fetch_all(pool)
    .await?)
}

/// The catalog's range map, validated (full coverage, no overlap).
pub async fn load_range_map(pool: &PgPool) -> Result<RangeMap, CatalogError> {
    let rows = list_ranges(pool).await?;
    let ranges = rows
        .into_iter()
        .map(|r| {
            Ok(Range {
                id: r.id,
                range: KeyRange::new(key(r.start_key)?, key(r.end_key)?)?,
                shard: r.shard_id.parse::<ShardId>()?,
                epoch: r.epoch,
            })
        })
        .collect::<Result<Vec<_>, CatalogError>>()?;
    Ok(RangeMap::new(ranges)?)
}

fn key(v: i64) -> Result<u64, CatalogError> {
    u64::try_from(v).map_err(|_| CatalogError::Seed(format!("negative key {v} in catalog")))
}

/// Seed an even range map over `shards` (`per_shard` ranges each, round-robin) if the
/// catalog has no ranges yet. Returns whether it seeded. Safe to call concurrently
/// and repeatedly: the check and the inserts happen under a table lock in one
/// transaction, and the coverage trigger validates the result at commit.
pub async fn seed_even(
    pool: &PgPool,
    shards: &[ShardId],
    per_shard: u32,
) -> Result<bool, CatalogError> {
    if shards.is_empty() {
        return Err(CatalogError::Seed("no shards to place ranges on".into()));
    }
    let mut tx: Transaction<'_, Postgres> = pool.begin().await?;
    sqlx::query("LOCK TABLE ranges IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM ranges")
        .fetch_one(&mut *tx)
        .await?;
    if count > 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    let (first_id,): (i64,) = sqlx::query_as("SELECT nextval('range_id_seq')")
        .fetch_one(&mut *tx)
        .await?;
    let map = RangeMap::even(shards, per_shard, first_id)?;
    for r in map.ranges() {
        sqlx::query("INSERT INTO ranges (id, start_key, end_key, shard_id, epoch) VALUES ($1, $2, $3, $4, 0)")
            .bind(r.id)
            .bind(r.range.start() as i64)
            .bind(r.range.end() as i64)
            .bind(r.shard.as_str())
            .execute(&mut *tx)
            .await?;
    }
    let max_id = map.ranges().iter().map(|r| r.id).max().unwrap_or(first_id);
    sqlx::query("SELECT setval('range_id_seq', $1)")
        .bind(max_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}

/// Whether any move was ever recorded (seeding of shards' owned ranges is only done
/// for a map that never moved).
pub async fn any_moves(pool: &PgPool) -> Result<bool, CatalogError> {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM moves")
        .fetch_one(pool)
        .await?;
    Ok(n > 0)
}

//! Shard data access used by operations: owned ranges and their states.

use serde::Serialize;
use sqlx::PgPool;

use crate::catalog::RangeRow;

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("shard query failed: {0}")]
    Db(#[from] sqlx::Error),
}

/// A row of `owned_ranges`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct OwnedRange {
    pub id: i64,
    pub start_key: i64,
    pub end_key: i64,
    pub epoch: i64,
    pub state: String,
}

pub async fn owned_ranges(pool: &PgPool) -> Result<Vec<OwnedRange>, ShardError> {
    Ok(sqlx::query_as::<_, OwnedRange>(
        "SELECT id, start_key, end_key, epoch, state FROM owned_ranges ORDER BY start_key",
    )
    .fetch_all(pool)
    .await?)
}

/// Give a freshly seeded shard the catalog ranges it owns, as `active`. Only acts on
/// a shard with no owned ranges at all (a new cluster); returns how many it added.
pub async fn seed_owned_ranges(
    pool: &PgPool,
    shard_id: &str,
    catalog_ranges: &[RangeRow],
) -> Result<u64, ShardError> {
    let mut tx = pool.begin().await?;
    sqlx::query("LOCK TABLE owned_ranges IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM owned_ranges")
        .fetch_one(&mut *tx)
        .await?;
    if count > 0 {
        tx.rollback().await?;
        return Ok(0);
    }
    let mut added = 0;
    for r in catalog_ranges.iter().filter(|r| r.shard_id == shard_id) {
        added += sqlx::query(
            "INSERT INTO owned_ranges (id, start_key, end_key, epoch, state)
             VALUES ($1, $2, $3, $4, 'active')",
        )
        .bind(r.id)
        .bind(r.start_key)
        .bind(r.end_key)
        .bind(r.epoch)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    tx.commit().await?;
    Ok(added)
}

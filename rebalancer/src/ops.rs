//! Split, merge and isolate: range-map operations that change no owner. Each is
//! one catalog transaction (the coverage trigger checks the map at commit; every
//! changed range gets a fresh epoch and routers are notified) plus one transaction
//! on the owning shard (its `owned_ranges` trigger takes the fencing locks of the
//! keys involved, so writers of those keys drain first). The shard commits while
//! the catalog transaction still holds the ranges' row locks, then the catalog
//! commits: a failure in between leaves the shard split finer than the catalog,
//! which the fence tolerates (it checks keys, not ids) and a retry repairs.

use shardline_core::MerchantId;
use sqlx::{Connection, PgConnection, PgPool};

use crate::model::{Error, Result};

async fn shard_conn(catalog: &PgPool, shard: &str) -> Result<PgConnection> {
    let dsn: String = sqlx::query_scalar("SELECT dsn FROM shards WHERE id = $1")
        .bind(shard)
        .fetch_optional(catalog)
        .await?
        .ok_or_else(|| Error::UnknownShard(shard.to_owned()))?;
    Ok(PgConnection::connect(&dsn).await?)
}

async fn no_move(tx: &mut PgConnection, range_id: i64) -> Result<()> {
    let busy: Option<uuid::Uuid> = sqlx::query_scalar(
        "SELECT id FROM moves WHERE range_id = $1 AND state NOT IN ('done', 'aborted')",
    )
    .bind(range_id)
    .fetch_optional(&mut *tx)
    .await?;
    match busy {
        Some(id) => Err(Error::Invalid(format!(
            "range {range_id} is being moved by {id}"
        ))),
        None => Ok(()),
    }
}

/// Split range `range_id` at key `at` (start < at < end). The left part keeps the
/// id; returns the id of the new right part.
pub async fn split(catalog: &PgPool, range_id: i64, at: i64) -> Result<i64> {
    let mut tx = catalog.begin().await?;
    let r: Option<(i64, i64, String)> =
        sqlx::query_as("SELECT start_key, end_key, shard_id FROM ranges WHERE id = $1 FOR UPDATE")
            .bind(range_id)
            .fetch_optional(&mut *tx)
            .await?;
    let (start, end, shard) = r.ok_or_else(|| Error::Invalid(format!("no range {range_id}")))?;
    if at <= start || at >= end {
        return Err(Error::Invalid(format!(
            "split key {at} is not inside [{start}, {end})"
        )));
    }
    no_move(&mut tx, range_id).await?;
    let left_epoch: i64 =
        sqlx::query_scalar("UPDATE ranges SET end_key = $2 WHERE id = $1 RETURNING epoch")
            .bind(range_id)
            .bind(at)
            .fetch_one(&mut *tx)
            .await?;
    let (new_id, right_epoch): (i64, i64) = sqlx::query_as(
        "INSERT INTO ranges (start_key, end_key, shard_id, epoch) VALUES ($1, $2, $3, 0)
         RETURNING id, epoch",
    )
    .bind(at)
    .bind(end)
    .bind(&shard)
    .fetch_one(&mut *tx)
    .await?;
    let mut sc = shard_conn(catalog, &shard).await?;
    let mut stx = sc.begin().await?;
    let state: Option<String> =
        sqlx::query_scalar("SELECT state FROM owned_ranges WHERE id = $1 FOR UPDATE")
            .bind(range_id)
            .fetch_optional(&mut *stx)
            .await?;
    let state = state.ok_or_else(|| {
        Error::Inconsistent(format!("shard {shard} does not hold range {range_id}"))
    })?;
    sqlx::query("UPDATE owned_ranges SET end_key = $2, epoch = $3 WHERE id = $1")
        .bind(range_id)
        .bind(at)
        .bind(left_epoch)
        .execute(&mut *stx)
        .await?;
    sqlx::query(
        "INSERT INTO owned_ranges (id, start_key, end_key, epoch, state) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(new_id)
    .bind(at)
    .bind(end)
    .bind(right_epoch)
    .bind(&state)
    .execute(&mut *stx)
    .await?;
    stx.commit().await?;
    tx.commit().await?;
    tracing::info!(range_id, at, new_id, %shard, "range split");
    Ok(new_id)
}

/// Merge two adjacent ranges of the same shard (`left.end == right.start`); the
/// left id survives.
pub async fn merge(catalog: &PgPool, left: i64, right: i64) -> Result<()> {
    let mut tx = catalog.begin().await?;
    let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(
        "SELECT id, start_key, end_key, shard_id FROM ranges WHERE id IN ($1, $2)
          ORDER BY start_key FOR UPDATE",
    )
    .bind(left)
    .bind(right)
    .fetch_all(&mut *tx)
    .await?;
    let [l, r] = rows.as_slice() else {
        return Err(Error::Invalid(format!(
            "ranges {left} and {right} must both exist"
        )));
    };
    if l.0 != left || l.2 != r.1 || l.3 != r.3 {
        return Err(Error::Invalid(format!(
            "ranges {left} and {right} are not adjacent (left first) on one shard"
        )));
    }
    no_move(&mut tx, left).await?;
    no_move(&mut tx, right).await?;
    sqlx::query("DELETE FROM ranges WHERE id = $1")
        .bind(right)
        .execute(&mut *tx)
        .await?;
    let epoch: i64 =
        sqlx::query_scalar("UPDATE ranges SET end_key = $2 WHERE id = $1 RETURNING epoch")
            .bind(left)
            .bind(r.2)
            .fetch_one(&mut *tx)
            .await?;
    let mut sc = shard_conn(catalog, &l.3).await?;
    let mut stx = sc.begin().await?;
    let states: Vec<String> =
        sqlx::query_scalar("SELECT state FROM owned_ranges WHERE id IN ($1, $2) FOR UPDATE")
            .bind(left)
            .bind(right)
            .fetch_all(&mut *stx)
            .await?;
    if states.len() != 2 || states.iter().any(|s| s != "active") {
        return Err(Error::Inconsistent(format!(
            "shard {} holds ranges {left}/{right} as {states:?}",
            l.3
        )));
    }
    sqlx::query("DELETE FROM owned_ranges WHERE id = $1")
        .bind(right)
        .execute(&mut *stx)
        .await?;
    sqlx::query("UPDATE owned_ranges SET end_key = $2, epoch = $3 WHERE id = $1")
        .bind(left)
        .bind(r.2)
        .bind(epoch)
        .execute(&mut *stx)
        .await?;
    stx.commit().await?;
    tx.commit().await?;
    tracing::info!(left, right, "ranges merged");
    Ok(())
}

/// Split until the merchant's shard key is a range of its own (`[k, k+1)`);
/// returns that range's id (move it with `Subject::Range`).
pub async fn isolate(catalog: &PgPool, merchant: &MerchantId) -> Result<i64> {
    let key = i64::from(shardline_core::shard_key(merchant));
    let find = || async {
        sqlx::query_as::<_, (i64, i64, i64)>(
            "SELECT id, start_key, end_key FROM ranges WHERE start_key <= $1 AND end_key > $1",
        )
        .bind(key)
        .fetch_one(catalog)
        .await
    };
    let (id, start, _) = find().await?;
    if start < key {
        split(catalog, id, key).await?;
    }
    let (id, _, end) = find().await?;
    if end > key + 1 {
        split(catalog, id, key + 1).await?;
    }
    Ok(find().await?.0)
}

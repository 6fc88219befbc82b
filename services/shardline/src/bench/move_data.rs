//! Data helpers of the move benchmark: seeding a range with bulk payments, its
//! size, and the plain-COPY baseline.

use std::time::Instant;

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use shardline_core::{MerchantId, shard_key};
use shardline_rebalancer::repl::TABLES;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// The tables a move carries (names only).
fn tables() -> impl Iterator<Item = &'static str> {
    TABLES.iter().map(|(t, _)| *t)
}

/// Bulk rows for the moving range's merchants, straight into their shard: payments
/// with balanced journals, then balances recomputed from the ledger.
pub async fn seed(shard: &PgPool, merchants: &[MerchantId], per_range: u32) -> anyhow::Result<()> {
    if merchants.is_empty() || per_range == 0 {
        return Ok(());
    }
    let keys: Vec<i64> = merchants.iter().map(|m| i64::from(shard_key(m))).collect();
    let ids: Vec<uuid::Uuid> = merchants.iter().map(|m| *m.as_uuid()).collect();
    let each = per_range.div_ceil(merchants.len() as u32) as i32;
    let mut tx = shard.begin().await?;
    sqlx::query(
        "WITH m AS (SELECT * FROM unnest($1::bigint[], $2::uuid[]) AS m(k, id)),
              p AS (INSERT INTO payments (shard_key, merchant_id, payment_id, currency, amount, status)
                    SELECT m.k, m.id, gen_random_uuid(), 'USD', (1 + i % 500)::numeric / 4, 'authorized'
                      FROM m, generate_series(1, $3) AS i
                    RETURNING shard_key, merchant_id, payment_id, amount)
         INSERT INTO ledger_entries (shard_key, merchant_id, journal_id, line, payment_id,
                                     account, currency, amount, kind)
         SELECT p.shard_key, p.merchant_id, md5(p.payment_id::text)::uuid, v.line, p.payment_id,
                v.account, 'USD', v.amt, 'authorize'
           FROM p, LATERAL (VALUES (0, 'authorized', p.amount),
                                   (1, 'processor_hold', -p.amount)) AS v(line, account, amt)",
    )
    .bind(&keys)
    .bind(&ids)
    .bind(each)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO balances (shard_key, merchant_id, currency, account, amount)
         SELECT shard_key, merchant_id, currency, account, sum(amount) FROM ledger_entries
          WHERE merchant_id = ANY($1) GROUP BY 1, 2, 3, 4
         ON CONFLICT (shard_key, merchant_id, currency, account)
         DO UPDATE SET amount = EXCLUDED.amount, version = balances.version + 1",
    )
    .bind(&ids)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Bytes of the range's rows (as stored), all data tables.
pub async fn range_bytes(shard: &PgPool, start: i64, end: i64) -> anyhow::Result<i64> {
    let sum = tables()
        .map(|t| {
            format!(
                "(SELECT coalesce(sum(pg_column_size(t.*)), 0) FROM {t} t
                   WHERE shard_key >= $1 AND shard_key < $2)"
            )
        })
        .collect::<Vec<_>>()
        .join(" + ");
    Ok(
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT ({sum})::bigint")))
            .bind(start)
            .bind(end)
            .fetch_one(shard)
            .await?,
    )
}

/// Plain COPY of the range's rows from `src_url` into a scratch database (same
/// schema, triggers disabled as subscription apply has them) on the cluster of
/// `dst_url`, table after table. Returns the seconds it took.
pub async fn plain_copy(src_url: &str, dst_url: &str, start: i64, end: i64) -> anyhow::Result<f64> {
    let admin_url = format!(
        "{}/postgres",
        dst_url.rsplit_once('/').context("shard URL")?.0
    );
    let scratch_url = format!(
        "{}/copy_baseline",
        dst_url.rsplit_once('/').context("shard URL")?.0
    );
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&admin_url)
        .await?;
    sqlx::query("DROP DATABASE IF EXISTS copy_baseline")
        .execute(&admin)
        .await?;
    sqlx::query("CREATE DATABASE copy_baseline")
        .execute(&admin)
        .await?;
    admin.close().await;
    let scratch = PgPoolOptions::new()
        .max_connections(1)
        .connect(&scratch_url)
        .await?;
    shardline_core::migrations::run(&scratch, shardline_core::migrations::Schema::Shard).await?;
    for t in tables() {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER TABLE {t} DISABLE TRIGGER ALL"
        )))
        .execute(&scratch)
        .await?;
    }
    scratch.close().await;
    let (src, c1) = tokio_postgres::connect(src_url, tokio_postgres::NoTls).await?;
    tokio::spawn(c1);
    let (dst, c2) = tokio_postgres::connect(&scratch_url, tokio_postgres::NoTls).await?;
    tokio::spawn(c2);
    let t0 = Instant::now();
    for t in tables() {
        let out = src
            .copy_out(&format!(
                "COPY (SELECT * FROM {t} WHERE shard_key >= {start} AND shard_key < {end}) TO STDOUT"
            ))
            .await?;
        let sink = dst.copy_in(&format!("COPY {t} FROM STDIN")).await?;
        futures_util::pin_mut!(out, sink);
        while let Some(chunk) = out.next().await {
            sink.send(chunk?).await?;
        }
        sink.close().await?;
    }
    Ok(t0.elapsed().as_secs_f64())
}

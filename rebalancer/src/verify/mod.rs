//! Money-aware verification of a moved range: every row compared by (primary key,
//! version, md5 of the row text) between source and target while writes continue
//! (both directions, so the row sets and counts agree), mismatching rows
//! re-checked until they converge; then delta passes over the rows the source wrote
//! since (from the move's change log, O(changes)), a per-merchant money pass
//! (ledger sums and balances), and, with the source frozen, the rows and the money
//! of merchants written since the last passes. Nothing inside the write pause is
//! O(rows of the range).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures_util::TryStreamExt;
use serde::Serialize;
use sqlx::{AssertSqlSafe, PgPool};
use uuid::Uuid;

use crate::model::{Error, Result};
use crate::repl::TABLES;

pub mod frozen;
mod money;

pub use money::{Merchant, money_pass};

/// (version, md5 of the row text) by primary key text.
type Digest = HashMap<String, (i64, String)>;

/// What a full verification pass found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PassReport {
    pub rows: BTreeMap<String, usize>,
    pub passes: u32,
    pub rechecked: usize,
    /// Rows compared by each delta pass after the full pass.
    pub delta_rows: Vec<usize>,
    /// Keys (per table) still being updated at the last look: the target was
    /// following them; they are compared again with the source frozen.
    #[serde(skip)]
    pub deferred: BTreeMap<String, Vec<String>>,
    /// Source transaction id horizon taken before the pass started: rows written by
    /// transactions at or above it are re-checked at cutover.
    pub xmin_horizon: i64,
    /// Horizon H taken before the per-merchant money pass ([`money_pass`]); 0 when
    /// it has not run (the cutover then refuses to flip).
    pub money_horizon: i64,
    /// Merchants whose ledger sums outside the post-H keys differed in the money
    /// pass: their full sums and balances are compared with the source frozen.
    #[serde(skip)]
    pub money_suspects: Vec<Merchant>,
    /// Merchants whose balances differed in the money pass: their balances are
    /// compared with the source frozen.
    #[serde(skip)]
    pub balance_suspects: Vec<Merchant>,
    pub money_suspect_count: usize,
    pub balance_suspect_count: usize,
    /// Merchants whose pre-H ledger sums and balances the money pass found equal.
    pub money_equal: usize,
}

/// The key of a row: the canonical text of a jsonb object of its primary key
/// (identical on both sides, and usable to look the row up by index).
pub fn key_expr(pk: &str, alias: &str) -> String {
    let parts = pk
        .split(',')
        .map(|c| c.trim())
        .map(|c| format!("'{c}', {alias}.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("jsonb_build_object({parts})::text")
}

fn select_digest(table: &str, pk: &str, filter: &str) -> String {
    let k = key_expr(pk, "t");
    format!(
        "SELECT {k} AS k, t.version, md5(t::text) AS h FROM {table} t
          WHERE t.shard_key >= $1 AND t.shard_key < $2 {filter}"
    )
}

/// The join of table `t` with the record `r` of a key, on the primary key.
fn pk_join(pk: &str) -> String {
    pk.split(',')
        .map(|c| c.trim())
        .map(|c| format!("t.{c} = r.{c}"))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// Look rows up by key (index probes, not a scan of the range).
fn select_by_keys(table: &str, pk: &str) -> String {
    let k = key_expr(pk, "t");
    let on = pk_join(pk);
    format!(
        "SELECT {k} AS k, t.version, md5(t::text) AS h
           FROM unnest($1::text[]) AS u(k)
           CROSS JOIN LATERAL jsonb_populate_record(NULL::{table}, u.k::jsonb) AS r
           JOIN {table} t ON {on}"
    )
}

async fn digest(pool: &PgPool, table: &str, pk: &str, start: i64, end: i64) -> Result<Digest> {
    let sql = select_digest(table, pk, "");
    let mut out = Digest::new();
    // Streamed from the server cursor-style: memory holds the digests, not rows.
    let mut rows = sqlx::query_as::<_, (String, i64, String)>(AssertSqlSafe(sql))
        .bind(start)
        .bind(end)
        .fetch(pool);
    while let Some((k, v, h)) = rows.try_next().await? {
        out.insert(k, (v, h));
    }
    Ok(out)
}

async fn digest_keys(pool: &PgPool, table: &str, pk: &str, keys: &[String]) -> Result<Digest> {
    let mut out = Digest::new();
    let sql = select_by_keys(table, pk);
    for chunk in keys.chunks(1000) {
        let rows: Vec<(String, i64, String)> = sqlx::query_as(AssertSqlSafe(sql.clone()))
            .bind(chunk)
            .fetch_all(pool)
            .await?;
        for (k, v, h) in rows {
            out.insert(k, (v, h));
        }
    }
    Ok(out)
}

#[derive(Debug, PartialEq, Eq)]
enum Diff {
    /// same version, different content: corruption, never lag
    Corrupt,
    /// missing, extra or an older/newer version: may be replication lag
    Lag,
}

fn compare(src: &Digest, dst: &Digest) -> HashMap<String, Diff> {
    let mut out = HashMap::new();
    for (k, (v, h)) in src {
        match dst.get(k) {
            None => {
                out.insert(k.clone(), Diff::Lag);
            }
            Some((v2, h2)) if v2 == v && h2 != h => {
                out.insert(k.clone(), Diff::Corrupt);
            }
            Some((v2, _)) if v2 != v => {
                out.insert(k.clone(), Diff::Lag);
            }
            Some(_) => {}
        }
    }
    for k in dst.keys() {
        if !src.contains_key(k) {
            out.insert(k.clone(), Diff::Lag);
        }
    }
    out
}

async fn source_horizon(source: &PgPool) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT txid_snapshot_xmin(txid_current_snapshot())::text::bigint")
            .fetch_one(source)
            .await?,
    )
}

/// Re-check differing rows (both sides, by key) until they agree. A row whose
/// content differs at the same version twice is corruption. A row the source keeps
/// updating is settled once the target reached the version the source had at the
/// previous read (replication is applying it): it is deferred to the next pass and
/// to the frozen check. Rows still differing otherwise after `max_passes` fail.
/// Returns (passes, rows re-checked, deferred keys).
#[allow(clippy::too_many_arguments)]
async fn converge(
    source: &PgPool,
    target: &PgPool,
    table: &str,
    pk: &str,
    mut prev_src: Digest,
    mut diffs: HashMap<String, Diff>,
    max_passes: u32,
    recheck_delay: Duration,
) -> Result<(u32, usize, Vec<String>)> {
    let mut passes = 1;
    let mut rechecked = 0;
    let mut deferred = Vec::new();
    let mut corrupt_seen: HashMap<String, u32> = HashMap::new();
    while !diffs.is_empty() {
        for (k, d) in &diffs {
            if *d == Diff::Corrupt {
                let n = corrupt_seen.entry(k.clone()).or_insert(0);
                *n += 1;
                if *n >= 2 {
                    return Err(Error::Verification(format!(
                        "{table} row {k} differs from the source at the same version"
                    )));
                }
            }
        }
        if passes >= max_passes {
            let sample: Vec<&String> = diffs.keys().take(5).collect();
            return Err(Error::Verification(format!(
                "{} {table} rows did not converge after {passes} passes (e.g. {sample:?})",
                diffs.len()
            )));
        }
        tokio::time::sleep(recheck_delay).await;
        let keys: Vec<String> = diffs.keys().cloned().collect();
        rechecked += keys.len();
        // Target first: it lags the source, so a quiet row reads equal.
        let dst = digest_keys(target, table, pk, &keys).await?;
        let src = digest_keys(source, table, pk, &keys).await?;
        diffs = compare(&src, &dst);
        diffs.retain(|k, d| {
            let progressing = *d == Diff::Lag
                && matches!((dst.get(k), prev_src.get(k)), (Some((dv, _)), Some((pv, _))) if dv >= pv);
            if progressing {
                deferred.push(k.clone());
            }
            !progressing
        });
        prev_src = src;
        passes += 1;
    }
    Ok((passes, rechecked, deferred))
}

/// Full pass while writes continue: every row of the range on both sides, then
/// the differing ones re-checked until they converge.
pub async fn full_pass(
    source: &PgPool,
    target: &PgPool,
    start: i64,
    end: i64,
    max_passes: u32,
    recheck_delay: Duration,
) -> Result<PassReport> {
    let xmin_horizon = source_horizon(source).await?;
    let mut report = PassReport {
        xmin_horizon,
        ..PassReport::default()
    };
    for (table, pk) in TABLES {
        // Target first: it lags the source, so a quiet row reads equal.
        let dst = digest(target, table, pk, start, end).await?;
        let src = digest(source, table, pk, start, end).await?;
        report.rows.insert(table.to_owned(), src.len());
        let diffs = compare(&src, &dst);
        let (passes, rechecked, deferred) = converge(
            source,
            target,
            table,
            pk,
            src,
            diffs,
            max_passes,
            recheck_delay,
        )
        .await?;
        report.passes = report.passes.max(passes);
        report.rechecked += rechecked;
        report.deferred.insert(table.to_owned(), deferred);
    }
    Ok(report)
}

/// Delta pass while writes continue: only rows the source wrote since
/// `report.xmin_horizon` plus the rows deferred by the previous pass (looked up on
/// the target by key). Advances the horizon (taken before the pass) and replaces
/// the deferred set; returns how many rows it compared.
pub async fn delta_pass(
    source: &PgPool,
    target: &PgPool,
    move_id: Uuid,
    report: &mut PassReport,
    max_passes: u32,
    recheck_delay: Duration,
) -> Result<usize> {
    let new_horizon = source_horizon(source).await?;
    let horizon = report.xmin_horizon;
    // Tables in parallel: the pass must be short for the next one to see few rows.
    let per_table = TABLES.iter().map(|&(table, pk)| {
        let carried = report.deferred.remove(table).unwrap_or_default();
        async move {
            let (mut keys, mut src) = logged_since(source, move_id, table, pk, horizon).await?;
            let extra: Vec<String> = carried.into_iter().filter(|k| !keys.contains(k)).collect();
            if !extra.is_empty() {
                src.extend(digest_keys(source, table, pk, &extra).await?);
                keys.extend(extra);
            }
            if keys.is_empty() {
                return Ok::<_, Error>((table, 0, Vec::new()));
            }
            let dst = digest_keys(target, table, pk, &keys).await?;
            let diffs = compare(&src, &dst);
            let (_, _, deferred) = converge(
                source,
                target,
                table,
                pk,
                src,
                diffs,
                max_passes,
                recheck_delay,
            )
            .await?;
            Ok((table, keys.len(), deferred))
        }
    });
    let per_table: Vec<_> = per_table.collect();
    let mut changed = 0;
    for (table, n, deferred) in futures_util::future::try_join_all(per_table).await? {
        changed += n;
        report.deferred.insert(table.to_owned(), deferred);
    }
    report.xmin_horizon = new_horizon;
    report.delta_rows.push(changed);
    Ok(changed)
}

/// The keys of `table` the move's change log recorded from transactions at or
/// above `horizon` (64-bit transaction ids), and the source's current digests of
/// those rows (a deleted row has a key but no digest).
async fn logged_since(
    source: &PgPool,
    move_id: Uuid,
    table: &str,
    pk: &str,
    horizon: i64,
) -> Result<(Vec<String>, Digest)> {
    let keys: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT k FROM move_changes WHERE move_id = $1 AND tbl = $2 AND xid >= $3",
    )
    .bind(move_id)
    .bind(table)
    .bind(horizon)
    .fetch_all(source)
    .await?;
    let digest = digest_keys(source, table, pk, &keys).await?;
    Ok((keys, digest))
}

//! Money verification split at the money pass horizon H (docs/moves.md,
//! "Verification"). Ledger rows are immutable, so a merchant's final ledger sum
//! per (currency, account) is the sum of its rows *outside* the post-H keys K
//! (the ledger keys the change log recorded from transactions at or above H) plus
//! the sum of the rows *in* K. The money pass (writes continuing) compares the
//! first part on both sides; the frozen check compares the second, by key:
//! O(changes) inside the write pause. Merchants whose first part differed
//! (*suspects*) get the full per-merchant comparison inside the pause; balances
//! of every merchant written since H (or differing at the pass) are compared as
//! rows, by merchant (index probes).

use std::collections::BTreeMap;

use sqlx::{AssertSqlSafe, PgPool, Postgres};
use uuid::Uuid;

use super::{PassReport, key_expr, source_horizon};
use crate::model::{Error, Result};

/// A merchant as (shard_key, merchant_id text): the leading columns of the
/// balances key and of the ledger's merchant index, so lookups are index probes.
pub type Merchant = (i64, String);

/// Per merchant: a canonical string of its sums or rows.
type ByMerchant = BTreeMap<Merchant, String>;

const LEDGER_PK: &str = "shard_key, journal_id, line";

/// Merchants as two parallel arrays (shard keys, merchant ids), for `unnest`.
pub(super) type MerchantArrays = (Vec<i64>, Vec<Uuid>);

/// `(shard_key, merchant_id)` pairs as two parallel arrays ($1, $2).
fn split(merchants: &[Merchant]) -> Result<MerchantArrays> {
    let mut keys = Vec::with_capacity(merchants.len());
    let mut ids = Vec::with_capacity(merchants.len());
    for (k, m) in merchants {
        let id =
            Uuid::parse_str(m).map_err(|e| Error::Inconsistent(format!("merchant id {m}: {e}")))?;
        keys.push(*k);
        ids.push(id);
    }
    Ok((keys, ids))
}

async fn by_merchant<'e, E>(exec: E, sql: String, binds: Binds<'_>) -> Result<ByMerchant>
where
    E: sqlx::Executor<'e, Database = Postgres>,
{
    let mut q = sqlx::query_as::<_, (i64, String, String)>(AssertSqlSafe(sql));
    q = match binds {
        Binds::Range(s, e) => q.bind(s).bind(e),
        Binds::RangeKeys(s, e, k) => q.bind(s).bind(e).bind(k),
        Binds::RangeLog(s, e, id, h) => q.bind(s).bind(e).bind(id).bind(h),
    };
    Ok(q.fetch_all(exec)
        .await?
        .into_iter()
        .map(|(k, m, v)| ((k, m), v))
        .collect())
}

enum Binds<'a> {
    Range(i64, i64),
    RangeKeys(i64, i64, &'a [String]),
    RangeLog(i64, i64, Uuid, i64),
}

/// Ledger sums per merchant, currency and account as one string per merchant,
/// over the ledger rows `from` (an aliased `l` relation plus conditions).
fn ledger_sql(from: &str) -> String {
    format!(
        "SELECT l.shard_key, l.merchant_id::text,
                string_agg('L' || l.currency || l.account || '=' || l.s, ';'
                           ORDER BY l.currency, l.account)
           FROM (SELECT l.shard_key, l.merchant_id, l.currency, l.account,
                        sum(l.amount)::text AS s
                   FROM {from}
                  GROUP BY 1, 2, 3, 4) l
          GROUP BY 1, 2"
    )
}

/// Balances (amount and version) as one string per merchant.
fn balances_sql(filter: &str) -> String {
    format!(
        "SELECT b.shard_key, b.merchant_id::text,
                string_agg('B' || b.currency || b.account || '=' || b.amount::text
                           || '@' || b.version, ';' ORDER BY b.currency, b.account)
           FROM {filter}
          GROUP BY 1, 2"
    )
}

/// Ledger sums of the rows outside the keys `$3` (target side of the pass).
fn pre_h_target_sql() -> String {
    let k = key_expr(LEDGER_PK, "l");
    ledger_sql(&format!(
        "ledger_entries l LEFT JOIN unnest($3::text[]) AS x(k) ON x.k = {k}
          WHERE l.shard_key >= $1 AND l.shard_key < $2 AND x.k IS NULL"
    ))
}

/// Ledger sums of the rows without a change-log entry at or above the horizon
/// `$4` of move `$3`, in one snapshot (source side of the pass).
fn pre_h_source_sql() -> String {
    let k = key_expr(LEDGER_PK, "l");
    ledger_sql(&format!(
        "ledger_entries l
          WHERE l.shard_key >= $1 AND l.shard_key < $2
            AND NOT EXISTS (SELECT 1 FROM move_changes c
                             WHERE c.move_id = $3 AND c.tbl = 'ledger_entries'
                               AND c.xid >= $4 AND c.k = {k})"
    ))
}

fn differing(a: &ByMerchant, b: &ByMerchant) -> Vec<Merchant> {
    let mut out: Vec<Merchant> = a
        .iter()
        .filter(|(m, v)| b.get(*m) != Some(*v))
        .map(|(m, _)| m.clone())
        .chain(b.keys().filter(|m| !a.contains_key(*m)).cloned())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The money pass, while writes continue. Takes the source horizon H, then on
/// the target ONE snapshot (repeatable read) whose ledger sums leave out the
/// post-H keys read from the source *after* that snapshot began (every post-H
/// row the snapshot shows was committed on the source before, with its log row,
/// so it is among them), then the source's pre-H sums in one snapshot (anti-join
/// with its log). Balances: target in that snapshot, source after.
pub async fn money_pass(
    source: &PgPool,
    target: &PgPool,
    move_id: Uuid,
    start: i64,
    end: i64,
    report: &mut PassReport,
) -> Result<()> {
    let t0 = std::time::Instant::now();
    let horizon = source_horizon(source).await?;
    let mut tx = target.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    hash_anti_join(&mut tx).await?;
    // The first query takes the snapshot.
    let dst_bal = by_merchant(
        &mut *tx,
        balances_sql("balances b WHERE b.shard_key >= $1 AND b.shard_key < $2"),
        Binds::Range(start, end),
    )
    .await?;
    let keys = post_h_keys(source, move_id, horizon).await?;
    let dst_pre = by_merchant(
        &mut *tx,
        pre_h_target_sql(),
        Binds::RangeKeys(start, end, &keys),
    )
    .await?;
    tx.commit().await?;
    let t_dst = t0.elapsed();
    let mut tx = source.begin().await?;
    hash_anti_join(&mut tx).await?;
    // One statement: one snapshot for the rows and the log.
    let src_pre = by_merchant(
        &mut *tx,
        pre_h_source_sql(),
        Binds::RangeLog(start, end, move_id, horizon),
    )
    .await?;
    tx.commit().await?;
    let src_bal = by_merchant(
        source,
        balances_sql("balances b WHERE b.shard_key >= $1 AND b.shard_key < $2"),
        Binds::Range(start, end),
    )
    .await?;
    let suspects = differing(&src_pre, &dst_pre);
    let balance_suspects = differing(&src_bal, &dst_bal);
    let mut all: Vec<&Merchant> = src_pre.keys().chain(src_bal.keys()).collect();
    all.sort();
    all.dedup();
    report.money_equal = all
        .iter()
        .filter(|m| !suspects.contains(m) && !balance_suspects.contains(m))
        .count();
    tracing::info!(
        %move_id,
        post_h_keys = keys.len(),
        suspects = suspects.len(),
        balance_suspects = balance_suspects.len(),
        merchants = all.len(),
        target_ms = t_dst.as_millis() as u64,
        total_ms = t0.elapsed().as_millis() as u64,
        "money pass"
    );
    report.money_horizon = horizon;
    report.money_suspect_count = suspects.len();
    report.balance_suspect_count = balance_suspects.len();
    report.money_suspects = suspects;
    report.balance_suspects = balance_suspects;
    Ok(())
}

/// The anti-joins above scan the range once and must hash the post-H keys: the
/// log's statistics lag (it fills up during the move), and a nested loop over
/// it is O(rows x changes).
async fn hash_anti_join(tx: &mut sqlx::Transaction<'_, Postgres>) -> Result<()> {
    sqlx::query("SET LOCAL enable_nestloop = off")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The ledger keys the move's change log recorded at or above `horizon`.
async fn post_h_keys(source: &PgPool, move_id: Uuid, horizon: i64) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT k FROM move_changes
          WHERE move_id = $1 AND tbl = 'ledger_entries' AND xid >= $2",
    )
    .bind(move_id)
    .bind(horizon)
    .fetch_all(source)
    .await?)
}

/// What the frozen check compares (each read the same way on both sides).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MoneyParts {
    /// Full ledger sums and balances of the suspects.
    full: ByMerchant,
    /// Ledger sums over the post-H keys.
    post_h: ByMerchant,
    /// Balances of the merchants written since H and of the balance suspects.
    balances: ByMerchant,
}

/// Parts of the frozen read ([`frozen_sql`]): the first column of its rows.
const PART_POST_H: &str = "money:post_h";
const PART_BALANCES: &str = "money:balances";
const PART_FULL_LEDGER: &str = "money:full_ledger";
const PART_FULL_BALANCES: &str = "money:full_balances";

/// The money branches of the frozen read, as `(part, merchant_id, shard_key,
/// value)` rows: ledger sums over the post-H keys `$3`, balances of the merchants
/// `($4, $5)`, full ledger sums and balances of the suspects `($6, $7)`. Index
/// probes only; empty arrays read nothing.
pub(super) fn frozen_sql() -> String {
    let by = |k: u8, m: u8| format!("unnest(${k}::bigint[], ${m}::uuid[]) AS m(k, id)");
    let branch = |part: &str, sql: String| {
        format!(
            "SELECT '{part}'::text, x.merchant_id, x.shard_key, x.s FROM ({sql}) AS x(shard_key, merchant_id, s)"
        )
    };
    [
        branch(
            PART_POST_H,
            ledger_sql(
                "unnest($3::text[]) AS u(k)
                 CROSS JOIN LATERAL jsonb_populate_record(NULL::ledger_entries, u.k::jsonb) AS r
                 JOIN ledger_entries l
                   ON l.shard_key = r.shard_key AND l.journal_id = r.journal_id AND l.line = r.line",
            ),
        ),
        branch(
            PART_BALANCES,
            balances_sql(&format!(
                "{} JOIN balances b ON b.shard_key = m.k AND b.merchant_id = m.id",
                by(4, 5)
            )),
        ),
        branch(
            PART_FULL_LEDGER,
            ledger_sql(&format!(
                "{} JOIN ledger_entries l ON l.shard_key = m.k AND l.merchant_id = m.id",
                by(6, 7)
            )),
        ),
        branch(
            PART_FULL_BALANCES,
            balances_sql(&format!(
                "{} JOIN balances b ON b.shard_key = m.k AND b.merchant_id = m.id",
                by(6, 7)
            )),
        ),
    ]
    .join("\nUNION ALL\n")
}

impl MoneyParts {
    /// Take a money row of the frozen read; `false` when `part` is not money.
    pub(super) fn take(&mut self, part: &str, merchant: String, shard_key: i64, v: String) -> bool {
        let m = (shard_key, merchant);
        match part {
            PART_POST_H => self.post_h.insert(m, v),
            PART_BALANCES => self.balances.insert(m, v),
            // a suspect's ledger sums, then "|" and its balances (either may be empty)
            PART_FULL_LEDGER => {
                let e = self.full.entry(m).or_default();
                e.insert_str(0, &v);
                return true;
            }
            PART_FULL_BALANCES => {
                let e = self.full.entry(m).or_default();
                e.push('|');
                e.push_str(&v);
                return true;
            }
            _ => return false,
        };
        true
    }
}

/// The money scope of the frozen check, as the binds `$4..$7` of [`frozen_sql`]:
/// balances of `touched` (merchants with ledger or balance rows written since H)
/// and of the balance suspects; full sums of the money suspects.
pub(super) fn frozen_binds(
    touched: Vec<Merchant>,
    report: &PassReport,
) -> Result<(MerchantArrays, MerchantArrays)> {
    if report.money_horizon == 0 {
        return Err(Error::Inconsistent(
            "the money pass did not run before the cutover".into(),
        ));
    }
    let mut balances = touched;
    balances.extend(report.balance_suspects.iter().cloned());
    balances.sort();
    balances.dedup();
    Ok((split(&balances)?, split(&report.money_suspects)?))
}

/// The first merchant whose money differs, and in which part.
pub fn first_difference(src: &MoneyParts, dst: &MoneyParts) -> Option<(Merchant, &'static str)> {
    [
        (&src.full, &dst.full, "ledger sums or balances"),
        (&src.post_h, &dst.post_h, "ledger sums since the money pass"),
        (&src.balances, &dst.balances, "balances"),
    ]
    .into_iter()
    .find_map(|(a, b, what)| differing(a, b).into_iter().next().map(|m| (m, what)))
}

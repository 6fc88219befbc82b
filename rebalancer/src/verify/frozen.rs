//! The check inside the write pause, with the source frozen: the rows the source
//! wrote since the last pass (plus the keys deferred by it) and the money of the
//! merchants written since the money pass, compared by key between source and
//! target. Two statements on the source (the change log, then one read) and one on
//! the target (the same read), each on a connection the cutover took and warmed
//! before the freeze: the pause pays a few round trips, no connection set-up, no
//! statement preparation and no fan-out over a pool.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use sqlx::{AssertSqlSafe, PgConnection};
use uuid::Uuid;

use super::money::{self, MerchantArrays, MoneyParts};
use super::{Digest, PassReport, compare, key_expr, pk_join};
use crate::model::{Error, Result};
use crate::repl::TABLES;

/// The change log of move `$1` in the tables `$4` from transactions at or above
/// `min($2, $3)` ($2: the last pass's horizon, $3: the money horizon H).
const CHANGES_SQL: &str = "SELECT DISTINCT tbl, k, merchant_id::text, xid >= $2, xid >= $3
       FROM move_changes
      WHERE move_id = $1 AND tbl = ANY($4) AND xid >= least($2, $3)";

/// One table's branch of the frozen read: `(table, key, version, md5 of the row)`
/// of the rows with the keys `$2` whose table in `$1` is this one (index probes).
fn table_branch(table: &str, pk: &str) -> String {
    let k = key_expr(pk, "t");
    let on = pk_join(pk);
    format!(
        "SELECT '{table}'::text, {k}, t.version, md5(t::text)
           FROM unnest($1::text[], $2::text[]) AS u(tbl, k)
           CROSS JOIN LATERAL jsonb_populate_record(NULL::{table}, u.k::jsonb) AS r
           JOIN {table} t ON {on}
          WHERE u.tbl = '{table}'"
    )
}

/// The frozen read, identical on both sides: every table's rows by key, then the
/// money parts ([`money::frozen_sql`]).
static READ_SQL: LazyLock<String> = LazyLock::new(|| {
    TABLES
        .iter()
        .map(|(t, pk)| table_branch(t, pk))
        .chain([money::frozen_sql()])
        .collect::<Vec<_>>()
        .join("\nUNION ALL\n")
});

/// What the frozen check reads on both sides (the binds of [`read_sql`]).
#[derive(Debug, Default, Clone)]
pub struct Scope {
    tables: Vec<String>,
    keys: Vec<String>,
    post_h: Vec<String>,
    balances: MerchantArrays,
    suspects: MerchantArrays,
}

impl Scope {
    /// Rows the check compares (table rows by key).
    pub fn rows(&self) -> usize {
        self.keys.len()
    }

    /// Ledger keys written since the money pass (summed per merchant).
    pub fn post_h_keys(&self) -> usize {
        self.post_h.len()
    }

    /// Merchants whose balances (and, for suspects, full sums) are compared.
    pub fn merchants(&self) -> usize {
        self.balances.0.len() + self.suspects.0.len()
    }
}

/// One side's answer to the frozen read.
#[derive(Debug, Default)]
pub struct Read {
    tables: BTreeMap<String, Digest>,
    money: MoneyParts,
}

/// With the source frozen (its change log is final): the scope of the check, from
/// the move's change log and the last pass's report.
pub async fn scope(source: &mut PgConnection, move_id: Uuid, report: &PassReport) -> Result<Scope> {
    let tables: Vec<String> = TABLES.iter().map(|(t, _)| (*t).to_owned()).collect();
    let rows: Vec<(String, String, Option<String>, bool, bool)> = sqlx::query_as(CHANGES_SQL)
        .bind(move_id)
        .bind(report.xmin_horizon)
        .bind(report.money_horizon)
        .bind(&tables)
        .fetch_all(&mut *source)
        .await?;
    let mut keys: BTreeSet<(String, String)> = report
        .deferred
        .iter()
        .flat_map(|(t, ks)| ks.iter().map(move |k| (t.clone(), k.clone())))
        .collect();
    let mut post_h = BTreeSet::new();
    let mut touched = BTreeSet::new();
    for (tbl, k, merchant, since_pass, since_h) in rows {
        if since_h && (tbl == "ledger_entries" || tbl == "balances") {
            if let Some(m) = merchant {
                touched.insert((shard_key_of(&k)?, m));
            }
            if tbl == "ledger_entries" {
                post_h.insert(k.clone());
            }
        }
        if since_pass {
            keys.insert((tbl, k));
        }
    }
    let (balances, suspects) = money::frozen_binds(touched.into_iter().collect(), report)?;
    let (tables, keys) = keys.into_iter().unzip();
    Ok(Scope {
        tables,
        keys,
        post_h: post_h.into_iter().collect(),
        balances,
        suspects,
    })
}

/// The `shard_key` of a key text (a jsonb object of the primary key).
fn shard_key_of(k: &str) -> Result<i64> {
    serde_json::from_str::<serde_json::Value>(k)
        .ok()
        .and_then(|v| v.get("shard_key").and_then(|s| s.as_i64()))
        .ok_or_else(|| Error::Inconsistent(format!("change log key without a shard_key: {k}")))
}

/// Read `scope` on one side, in one statement.
pub async fn read(conn: &mut PgConnection, scope: &Scope) -> Result<Read> {
    let rows: Vec<(String, String, i64, String)> = sqlx::query_as(AssertSqlSafe(READ_SQL.as_str()))
        .bind(&scope.tables)
        .bind(&scope.keys)
        .bind(&scope.post_h)
        .bind(&scope.balances.0)
        .bind(&scope.balances.1)
        .bind(&scope.suspects.0)
        .bind(&scope.suspects.1)
        .fetch_all(conn)
        .await?;
    let mut out = Read::default();
    for (part, k, n, v) in rows {
        if !out.money.take(&part, k.clone(), n, v.clone()) {
            out.tables.entry(part).or_default().insert(k, (n, v));
        }
    }
    Ok(out)
}

/// Compare the target's read with the frozen source's; a money difference is
/// reported first.
pub fn check(src: &Read, dst: &Read) -> Result<()> {
    if let Some(((_, m), what)) = money::first_difference(&src.money, &dst.money) {
        return Err(Error::Verification(format!(
            "{what} of merchant {m} differ at cutover"
        )));
    }
    let empty = Digest::new();
    let tables: BTreeSet<&String> = src.tables.keys().chain(dst.tables.keys()).collect();
    for table in tables {
        let (a, b) = (
            src.tables.get(table).unwrap_or(&empty),
            dst.tables.get(table).unwrap_or(&empty),
        );
        if let Some((k, _)) = compare(a, b).into_iter().next() {
            return Err(Error::Verification(format!(
                "{table} row {k} differs at cutover"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_key_of_reads_the_key_text() {
        let k = r#"{"line": 2, "shard_key": 4242, "journal_id": "0190c0de-0000-7000-8000-000000000000"}"#;
        assert_eq!(shard_key_of(k).unwrap(), 4242);
        assert!(shard_key_of(r#"{"line": 2}"#).is_err());
        assert!(shard_key_of("not json").is_err());
    }

    #[test]
    fn the_read_has_a_branch_per_table_and_per_money_part() {
        let sql = READ_SQL.as_str();
        assert_eq!(sql.matches("UNION ALL").count(), TABLES.len() + 3);
        for (t, _) in TABLES {
            assert!(sql.contains(&format!("JOIN {t} t ON")), "{t}");
        }
    }
}

//! The checks that read the shards: exactly-once placement of writes, rows on
//! non-owners, ledger and balances, leftover replication objects.

use std::collections::BTreeMap;

use shardline_core::shard_key;
use sqlx::AssertSqlSafe;
use uuid::Uuid;

use super::{Checked, UnackedOutcome, VerifyError, Violation, World, Write, db};

/// Data tables (every one carries `shard_key`).
const TABLES: [&str; 7] = shardline_replicator::TABLES;

/// How many examples of one kind of violation are listed per shard.
const EXAMPLES: i64 = 20;

/// Copies of each write per shard: id -> shard -> count.
async fn copies(
    world: &World,
    writes: &[Write],
) -> Result<BTreeMap<Uuid, BTreeMap<String, i64>>, VerifyError> {
    let mut by_table: BTreeMap<(&str, &str), Vec<Uuid>> = BTreeMap::new();
    for w in writes {
        let (table, col, id) = w.row();
        by_table.entry((table, col)).or_default().push(id);
    }
    let mut out: BTreeMap<Uuid, BTreeMap<String, i64>> = BTreeMap::new();
    for (shard, pool) in &world.shards {
        for ((table, col), ids) in &by_table {
            let sql = format!(
                "SELECT {col}, count(*)::int8 FROM {table} WHERE {col} = ANY($1) GROUP BY 1"
            );
            let found: Vec<(Uuid, i64)> = sqlx::query_as(AssertSqlSafe(sql))
                .bind(ids)
                .fetch_all(pool)
                .await
                .map_err(db(format!("count {table} on {shard}")))?;
            for (id, n) in found {
                out.entry(id).or_default().insert(shard.clone(), n);
            }
        }
    }
    Ok(out)
}

/// Invariant 1 for acknowledged writes.
pub(super) async fn exactly_once(
    world: &World,
    acked: &[Write],
    violations: &mut Vec<Violation>,
) -> Result<(), VerifyError> {
    let copies = copies(world, acked).await?;
    let none = BTreeMap::new();
    for w in acked {
        let (_, _, id) = w.row();
        let found = copies.get(&id).unwrap_or(&none);
        let owner = world.map.lookup_merchant(w.merchant()).shard.to_string();
        let total: i64 = found.values().sum();
        let moving = world.in_flight(i64::from(shard_key(w.merchant())));
        match total {
            0 => violations.push(Violation::Lost {
                write: w.clone(),
                owner,
            }),
            1 => {
                if !found.contains_key(&owner) && !moving {
                    let found_on = found.keys().next().cloned().unwrap_or_default();
                    violations.push(Violation::WrongShard {
                        write: w.clone(),
                        owner,
                        found_on,
                    });
                }
            }
            // A range in flight legitimately has the row on both ends.
            2 if moving && found.len() == 2 && found.values().all(|&n| n == 1) => {}
            _ => violations.push(Violation::Duplicate {
                write: w.clone(),
                copies: found.clone(),
            }),
        }
    }
    Ok(())
}

/// Unacknowledged writes: listed with their copy count; more than one is a
/// duplicate.
pub(super) async fn unacked(
    world: &World,
    unacked: &[Write],
    violations: &mut Vec<Violation>,
) -> Result<Vec<UnackedOutcome>, VerifyError> {
    let copies = copies(world, unacked).await?;
    let mut out = Vec::new();
    for w in unacked {
        let (_, _, id) = w.row();
        let found = copies.get(&id).cloned().unwrap_or_default();
        let total: i64 = found.values().sum();
        let moving = world.in_flight(i64::from(shard_key(w.merchant())));
        if total > 1 && !(moving && total == 2 && found.len() == 2) {
            violations.push(Violation::Duplicate {
                write: w.clone(),
                copies: found,
            });
        }
        out.push(UnackedOutcome {
            write: w.clone(),
            copies: total,
        });
    }
    Ok(out)
}

/// `{[a,b),[c,d)}`: the keys a shard may hold (its ranges plus ranges in flight).
fn allowed_keys(world: &World, shard: &str) -> String {
    let mut spans: Vec<(i64, i64)> = world
        .ranges
        .iter()
        .filter(|r| r.shard_id == shard)
        .map(|r| (r.start_key, r.end_key))
        .chain(world.moving.iter().copied())
        .collect();
    spans.sort_unstable();
    let parts: Vec<String> = spans.iter().map(|(s, e)| format!("[{s},{e})")).collect();
    format!("{{{}}}", parts.join(","))
}

/// Invariant 2: rows outside the shard's ranges.
pub(super) async fn placement(
    world: &World,
    checked: &mut Checked,
    violations: &mut Vec<Violation>,
) -> Result<(), VerifyError> {
    for (shard, pool) in &world.shards {
        let allowed = allowed_keys(world, shard);
        for table in TABLES {
            let sql = format!(
                "SELECT count(*)::int8,
                        (count(*) FILTER (WHERE NOT (shard_key <@ $1::int8multirange)))::int8,
                        min(shard_key) FILTER (WHERE NOT (shard_key <@ $1::int8multirange))
                   FROM {table}"
            );
            let (rows, misplaced, example): (i64, i64, Option<i64>) =
                sqlx::query_as(AssertSqlSafe(sql))
                    .bind(&allowed)
                    .fetch_one(pool)
                    .await
                    .map_err(db(format!("placement of {table} on {shard}")))?;
            *checked.rows_by_table.entry(table.to_owned()).or_default() += rows;
            if misplaced > 0 {
                violations.push(Violation::Misplaced {
                    shard: shard.clone(),
                    table: table.to_owned(),
                    rows: misplaced,
                    example_key: example.unwrap_or_default(),
                });
            }
        }
    }
    Ok(())
}

/// Invariant 3: journals sum to zero; balances equal ledger sums.
pub(super) async fn ledger(
    world: &World,
    checked: &mut Checked,
    violations: &mut Vec<Violation>,
) -> Result<(), VerifyError> {
    for (shard, pool) in &world.shards {
        let (journals,): (i64,) = sqlx::query_as(
            "SELECT count(DISTINCT (shard_key, journal_id))::int8 FROM ledger_entries",
        )
        .fetch_one(pool)
        .await
        .map_err(db(format!("count journals on {shard}")))?;
        checked.journals += journals;
        let bad: Vec<(Uuid, String, String)> = sqlx::query_as(
            "SELECT journal_id, currency::text, sum(amount)::text FROM ledger_entries
              GROUP BY shard_key, journal_id, currency HAVING sum(amount) <> 0
              ORDER BY 1 LIMIT $1",
        )
        .bind(EXAMPLES)
        .fetch_all(pool)
        .await
        .map_err(db(format!("journal sums on {shard}")))?;
        for (journal, currency, sum) in bad {
            violations.push(Violation::UnbalancedJournal {
                shard: shard.clone(),
                journal,
                currency,
                sum,
            });
        }
        let differ: Vec<(Uuid, String, String, String, String)> = sqlx::query_as(
            "SELECT merchant_id, currency::text, account,
                    coalesce(l.s, 0)::text, coalesce(b.amount, 0)::text
               FROM (SELECT shard_key, merchant_id, currency, account, sum(amount) AS s
                       FROM ledger_entries GROUP BY 1, 2, 3, 4) l
               FULL JOIN balances b USING (shard_key, merchant_id, currency, account)
              WHERE coalesce(l.s, 0) <> coalesce(b.amount, 0)
              ORDER BY 1, 2, 3 LIMIT $1",
        )
        .bind(EXAMPLES)
        .fetch_all(pool)
        .await
        .map_err(db(format!("balances on {shard}")))?;
        for (merchant, currency, account, ledger, balance) in differ {
            violations.push(Violation::BalanceMismatch {
                shard: shard.clone(),
                merchant,
                currency,
                account,
                ledger,
                balance,
            });
        }
    }
    Ok(())
}

/// Invariant 5: replication objects nobody accounts for. Allowed: the shard's
/// CDC publication and slot (the replicator's), and the objects of moves in
/// flight (named in the catalog). Anything else is an orphan, whoever made it.
pub(super) async fn orphans(
    world: &World,
    violations: &mut Vec<Violation>,
) -> Result<(), VerifyError> {
    for (shard, pool) in &world.shards {
        let cdc_slot = format!("shardline_cdc_{shard}");
        let found: Vec<(String, String)> = sqlx::query_as(
            "SELECT 'publication', pubname::text FROM pg_publication
             UNION ALL SELECT 'slot', slot_name::text FROM pg_replication_slots
             UNION ALL SELECT 'subscription', subname::text FROM pg_subscription
             UNION ALL SELECT 'origin', roname::text FROM pg_replication_origin
             ORDER BY 1, 2",
        )
        .fetch_all(pool)
        .await
        .map_err(db(format!("replication objects on {shard}")))?;
        for (object, name) in found {
            let expected = match object.as_str() {
                "publication" => name == shardline_replicator::PUBLICATION,
                "slot" => name == cdc_slot,
                _ => false,
            } || world.move_objects.contains(&name)
                // A subscription's table-sync slots and its origin (`pg_<oid>...`)
                // exist while some move copies.
                || (!world.moving.is_empty() && name.starts_with("pg_"));
            if !expected {
                violations.push(Violation::Orphan {
                    shard: shard.clone(),
                    object,
                    name,
                });
            }
        }
    }
    Ok(())
}

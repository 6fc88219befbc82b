//! `shardline status`: shards, ranges, epochs, and whether each shard's
//! owned_ranges agree with the catalog.

use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use shardline_core::catalog::{self, RangeRow, ShardRow};
use shardline_core::shard::{self, OwnedRange};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::cli::StatusArgs;
use crate::local::catalog_url;

#[derive(Debug, Serialize)]
pub struct ShardStatus {
    #[serde(flatten)]
    pub shard: ShardRow,
    pub reachable: bool,
    pub error: Option<String>,
    pub owned_ranges: Vec<OwnedRange>,
    /// Catalog ranges of this shard missing from its owned_ranges, or extra there.
    pub mismatches: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub map_epoch: i64,
    pub ranges: Vec<RangeRow>,
    pub shards: Vec<ShardStatus>,
}

pub async fn collect(catalog: &PgPool) -> anyhow::Result<Status> {
    let ranges = catalog::list_ranges(catalog).await?;
    let shard_rows = catalog::list_shards(catalog).await?;
    let mut shards = Vec::new();
    for row in shard_rows {
        let owned = async {
            let p = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(3))
                .connect(&row.dsn)
                .await?;
            let owned = shard::owned_ranges(&p).await?;
            p.close().await;
            anyhow::Ok(owned)
        }
        .await;
        let (reachable, error, owned_ranges) = match owned {
            Ok(o) => (true, None, o),
            Err(e) => (false, Some(format!("{e:#}")), Vec::new()),
        };
        let mismatches = if reachable {
            compare(&row.id, &ranges, &owned_ranges)
        } else {
            Vec::new()
        };
        shards.push(ShardStatus {
            shard: row,
            reachable,
            error,
            owned_ranges,
            mismatches,
        });
    }
    Ok(Status {
        map_epoch: ranges.iter().map(|r| r.epoch).max().unwrap_or(0),
        ranges,
        shards,
    })
}

/// Differences between what the catalog says a shard owns and what it holds.
fn compare(shard_id: &str, ranges: &[RangeRow], owned: &[OwnedRange]) -> Vec<String> {
    let mut out = Vec::new();
    for r in ranges.iter().filter(|r| r.shard_id == shard_id) {
        match owned.iter().find(|o| o.id == r.id) {
            None => out.push(format!(
                "range {} [{}, {}) not in owned_ranges",
                r.id, r.start_key, r.end_key
            )),
            Some(o) if o.start_key != r.start_key || o.end_key != r.end_key => out.push(format!(
                "range {}: catalog [{}, {}) vs shard [{}, {})",
                r.id, r.start_key, r.end_key, o.start_key, o.end_key
            )),
            Some(_) => {}
        }
    }
    for o in owned {
        let owner = ranges
            .iter()
            .find(|r| r.id == o.id)
            .map(|r| r.shard_id.as_str());
        if owner != Some(shard_id) && o.state == "active" {
            out.push(format!(
                "owned range {} [{}, {}) is active here but the catalog gives it to {}",
                o.id,
                o.start_key,
                o.end_key,
                owner.unwrap_or("nobody")
            ));
        }
    }
    out
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let url = catalog_url(&args.catalog)?;
    let catalog = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&url)
        .await
        .context("connecting to the catalog")?;
    let status = collect(&catalog).await?;
    catalog.close().await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    println!(
        "map epoch {}  ranges {}  shards {}",
        status.map_epoch,
        status.ranges.len(),
        status.shards.len()
    );
    println!();
    println!(
        "{:<8} {:<9} {:<10} {:>7} {:>7}",
        "SHARD", "STATE", "REACHABLE", "RANGES", "OWNED"
    );
    for s in &status.shards {
        let ranges = status
            .ranges
            .iter()
            .filter(|r| r.shard_id == s.shard.id)
            .count();
        println!(
            "{:<8} {:<9} {:<10} {:>7} {:>7}",
            s.shard.id,
            s.shard.state,
            if s.reachable { "yes" } else { "NO" },
            ranges,
            s.owned_ranges.len()
        );
        if let Some(e) = &s.error {
            println!("         error: {e}");
        }
        for m in &s.mismatches {
            println!("         mismatch: {m}");
        }
    }
    println!();
    println!(
        "{:>6} {:>12} {:>12} {:<8} {:>6} {:<7}",
        "RANGE", "START", "END", "SHARD", "EPOCH", "STATE"
    );
    for r in &status.ranges {
        println!(
            "{:>6} {:>12} {:>12} {:<8} {:>6} {:<7}",
            r.id, r.start_key, r.end_key, r.shard_id, r.epoch, r.state
        );
    }
    Ok(())
}

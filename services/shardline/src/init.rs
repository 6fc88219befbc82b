//! `shardline init --catalog URL --shard ID=URL...`: bootstrap a catalog against
//! existing databases (what `shardline up` does for its local clusters), safe to
//! run on every deploy. See [`crate::bootstrap`] for the steps; on top of them it
//! optionally imports an admin key from an environment variable.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::Context;
use serde::Serialize;
use shardline_core::api_keys::{self, Imported, Scope};
use shardline_core::{ShardId, catalog};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::bootstrap::{Seeding, ShardDb, bootstrap};
use crate::cli::InitArgs;
use crate::config::{ConfigError, in_range, postgres_url};

/// Name of the admin key `--admin-key-env` imports.
pub const IMPORTED_KEY_NAME: &str = "bootstrap admin";

/// Validated settings of `shardline init`.
#[derive(Debug)]
pub struct InitConfig {
    pub catalog: String,
    /// In the order given; ids and URLs are distinct.
    pub shards: Vec<(ShardId, String)>,
    pub ranges_per_shard: u32,
    pub admin_key: Option<AdminKey>,
    pub json: bool,
}

/// An admin token read from an environment variable (never printed).
pub struct AdminKey {
    /// The variable it came from.
    pub var: String,
    pub token: String,
}

impl fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminKey")
            .field("var", &self.var)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl InitConfig {
    pub fn from_args(args: InitArgs) -> Result<Self, ConfigError> {
        let catalog = match args.catalog {
            Some(u) => postgres_url("catalog", &u)?,
            None => {
                return Err(ConfigError::new(
                    "catalog",
                    "missing: give --catalog URL (or SHARDLINE_CATALOG_URL)",
                ));
            }
        };
        let specs: Vec<&String> = args.shards.iter().filter(|s| !s.is_empty()).collect();
        if specs.is_empty() {
            return Err(ConfigError::new(
                "shard",
                "missing: give --shard ID=URL for every shard (or SHARDLINE_INIT_SHARDS)",
            ));
        }
        let mut shards: Vec<(ShardId, String)> = Vec::with_capacity(specs.len());
        for spec in specs {
            let (id, url) = parse_shard(spec)?;
            if shards.iter().any(|(have, _)| *have == id) {
                return Err(ConfigError::new(
                    "shard",
                    format!("shard id {id} is given twice"),
                ));
            }
            if let Some((other, _)) = shards.iter().find(|(_, u)| *u == url) {
                return Err(ConfigError::new(
                    "shard",
                    format!("shards {other} and {id} have the same URL"),
                ));
            }
            if url == catalog {
                return Err(ConfigError::new(
                    "shard",
                    format!("shard {id} has the catalog's URL"),
                ));
            }
            shards.push((id, url));
        }
        let ranges_per_shard = in_range(
            "ranges_per_shard",
            args.ranges_per_shard.unwrap_or(4),
            1..=256,
        )?;
        let admin_key = args.admin_key_env.as_deref().map(read_key).transpose()?;
        Ok(InitConfig {
            catalog,
            shards,
            ranges_per_shard,
            admin_key,
            json: args.json,
        })
    }
}

/// `ID=URL`; the URL is never echoed in errors (it may hold a password).
fn parse_shard(spec: &str) -> Result<(ShardId, String), ConfigError> {
    let Some((id, url)) = spec.split_once('=') else {
        return Err(ConfigError::new(
            "shard",
            "expected ID=URL (e.g. s1=postgres://user@host:5432/shardline)",
        ));
    };
    let id: ShardId = id
        .parse()
        .map_err(|e| ConfigError::new("shard", format!("shard id {id:?}: {e}")))?;
    let url = postgres_url("shard", url)
        .map_err(|e| ConfigError::new("shard", format!("shard {id}: {}", e.message)))?;
    Ok((id, url))
}

fn read_key(var: &str) -> Result<AdminKey, ConfigError> {
    const SETTING: &str = "admin_key_env";
    if var.is_empty() {
        return Err(ConfigError::new(SETTING, "empty variable name"));
    }
    let token = match std::env::var(var) {
        Ok(t) if !t.trim().is_empty() => t.trim().to_owned(),
        Ok(_) => {
            return Err(ConfigError::new(
                SETTING,
                format!("environment variable {var} is empty"),
            ));
        }
        Err(_) => {
            return Err(ConfigError::new(
                SETTING,
                format!("environment variable {var} is not set (or not UTF-8)"),
            ));
        }
    };
    api_keys::parse_token(&token)
        .map_err(|e| ConfigError::new(SETTING, format!("environment variable {var}: {e}")))?;
    Ok(AdminKey {
        var: var.to_owned(),
        token,
    })
}

async fn connect(what: &str, url: &str) -> anyhow::Result<PgPool> {
    // The URL may hold a password: name the database, not the URL.
    PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .with_context(|| format!("connecting to {what}"))
}

/// One shard in the summary.
#[derive(Debug, Serialize)]
pub struct ShardSummary {
    pub id: String,
    /// Given on this command line (else only found in the catalog, left as is).
    pub given: bool,
    pub ranges: usize,
    pub owned_ranges_added: u64,
}

/// What `init` did and found.
#[derive(Debug, Serialize)]
pub struct InitSummary {
    #[serde(flatten)]
    pub seeding: Seeding,
    pub ranges: usize,
    pub shards: Vec<ShardSummary>,
    /// `created`, `already_present`, or null without `--admin-key-env`.
    pub admin_key: Option<Imported>,
}

/// Bootstrap and return the summary (the command prints it).
pub async fn init(config: &InitConfig) -> anyhow::Result<InitSummary> {
    let catalog_pool = connect("the catalog", &config.catalog).await?;
    let mut targets = Vec::with_capacity(config.shards.len());
    for (id, url) in &config.shards {
        let pool = connect(&format!("shard {id}"), url).await?;
        targets.push(ShardDb {
            id: id.clone(),
            url: url.clone(),
            pool,
        });
    }
    refuse_moved_urls(&catalog_pool, &config.shards).await?;
    let seeding = bootstrap(&catalog_pool, &targets, config.ranges_per_shard).await?;
    let admin_key = match &config.admin_key {
        Some(k) => Some(
            api_keys::import(&catalog_pool, IMPORTED_KEY_NAME, &k.token, &Scope::Admin)
                .await
                .with_context(|| format!("importing the admin key from {}", k.var))?,
        ),
        None => None,
    };
    let ranges = catalog::list_ranges(&catalog_pool).await?;
    let mut per_shard: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &ranges {
        *per_shard.entry(r.shard_id.as_str()).or_default() += 1;
    }
    let mut shards: Vec<ShardSummary> = config
        .shards
        .iter()
        .map(|(id, _)| ShardSummary {
            id: id.to_string(),
            given: true,
            ranges: per_shard.get(id.as_str()).copied().unwrap_or(0),
            owned_ranges_added: seeding
                .owned_ranges_added
                .iter()
                .find(|(s, _)| s == id)
                .map_or(0, |(_, n)| *n),
        })
        .collect();
    for row in catalog::list_shards(&catalog_pool).await? {
        if !shards.iter().any(|s| s.id == row.id) {
            shards.push(ShardSummary {
                ranges: per_shard.get(row.id.as_str()).copied().unwrap_or(0),
                id: row.id,
                given: false,
                owned_ranges_added: 0,
            });
        }
    }
    for t in &targets {
        t.pool.close().await;
    }
    catalog_pool.close().await;
    Ok(InitSummary {
        seeding,
        ranges: ranges.len(),
        shards,
        admin_key,
    })
}

/// A URL already registered under another shard id is a mistake (two ids for one
/// database would both own its ranges).
async fn refuse_moved_urls(pool: &PgPool, shards: &[(ShardId, String)]) -> anyhow::Result<()> {
    // Before the first migration there is no `shards` table yet: nothing to check.
    let exists: (bool,) = sqlx::query_as("SELECT to_regclass('shards') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    if !exists.0 {
        return Ok(());
    }
    for row in catalog::list_shards(pool).await? {
        if let Some((id, _)) = shards
            .iter()
            .find(|(id, url)| *url == row.dsn && id.as_str() != row.id)
        {
            return Err(ConfigError::new(
                "shard",
                format!(
                    "shard {id} has the URL the catalog registers for shard {}",
                    row.id
                ),
            )
            .into());
        }
    }
    Ok(())
}

pub async fn run(config: InitConfig) -> anyhow::Result<()> {
    let summary = init(&config).await?;
    if config.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    println!("catalog: migrated");
    for s in &summary.shards {
        let what = match (s.given, s.ranges) {
            (false, n) => format!("in the catalog, not given here (left as is), {n} ranges"),
            (true, 0) if !summary.seeding.seeded_map => {
                "migrated and registered with 0 ranges (the rebalancer moves ranges onto it)"
                    .to_owned()
            }
            (true, n) => format!(
                "migrated and registered, {n} ranges{}",
                if s.owned_ranges_added > 0 {
                    format!(", {} owned ranges seeded", s.owned_ranges_added)
                } else {
                    String::new()
                }
            ),
        };
        println!("shard {}: {what}", s.id);
    }
    if summary.seeding.seeded_map {
        println!(
            "range map: seeded evenly ({} ranges, {} per shard)",
            summary.ranges, config.ranges_per_shard
        );
    } else {
        println!(
            "range map: already present ({} ranges), unchanged",
            summary.ranges
        );
    }
    if summary.seeding.moves_happened {
        println!("owned ranges: left alone (moves happened)");
    }
    match (&config.admin_key, summary.admin_key) {
        (Some(k), Some(Imported::Created)) => println!(
            "admin key: imported from ${} as {IMPORTED_KEY_NAME:?}",
            k.var
        ),
        (Some(k), _) => println!("admin key: the key in ${} is already present", k.var),
        (None, _) => println!(
            "admin key: none imported; create one with \
             `shardline keys create --catalog URL --name NAME --scope admin`"
        ),
    }
    Ok(())
}

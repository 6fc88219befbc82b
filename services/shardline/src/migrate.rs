//! `shardline migrate --catalog URL --shard URL...`

use anyhow::Context;
use shardline_core::fence::{FenceKind, FenceMode};
use shardline_core::migrations::{self, Schema};
use sqlx::postgres::PgPoolOptions;

use crate::cli::MigrateArgs;
use crate::config::{ConfigError, postgres_url};

#[derive(Debug)]
pub struct MigrateConfig {
    pub catalog: Option<String>,
    pub shards: Vec<String>,
}

impl MigrateConfig {
    pub fn from_args(args: MigrateArgs) -> Result<Self, ConfigError> {
        if args.catalog.is_none() && args.shards.is_empty() {
            return Err(ConfigError::new(
                "catalog",
                "nothing to migrate: give --catalog URL and/or --shard URL",
            ));
        }
        Ok(MigrateConfig {
            catalog: args
                .catalog
                .map(|u| postgres_url("catalog", &u))
                .transpose()?,
            shards: args
                .shards
                .iter()
                .map(|u| postgres_url("shard", u))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// Migrate one database; a shard also gets its fence (`SHARDLINE_FENCE`), returned.
pub async fn migrate_url(url: &str, schema: Schema) -> anyhow::Result<Option<FenceKind>> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .with_context(|| format!("connecting to the {} database", schema.name()))?;
    let kind = match schema {
        Schema::Catalog => {
            migrations::run(&pool, schema).await?;
            None
        }
        Schema::Shard => Some(migrations::run_shard(&pool, FenceMode::from_env()?).await?),
    };
    pool.close().await;
    Ok(kind)
}

pub async fn run(config: MigrateConfig) -> anyhow::Result<()> {
    if let Some(url) = &config.catalog {
        migrate_url(url, Schema::Catalog).await?;
        println!("catalog: migrated");
    }
    for (i, url) in config.shards.iter().enumerate() {
        let kind = migrate_url(url, Schema::Shard)
            .await?
            .map_or("?", FenceKind::as_str);
        println!("shard #{}: migrated ({kind} fence)", i + 1);
    }
    Ok(())
}

//! The seeding steps shared by `shardline up` (its local clusters) and
//! `shardline init` (existing databases): migrate the catalog and every shard,
//! register each shard, seed an even range map when the catalog has none, and give
//! the shards their owned ranges while no move ever happened. Every step is
//! idempotent, so both commands run it on every start / deploy.

use serde::Serialize;
use shardline_core::migrations::{self, Schema};
use shardline_core::{ShardId, catalog, shard};
use sqlx::PgPool;

/// A shard database to bootstrap.
#[derive(Debug, Clone)]
pub struct ShardDb {
    pub id: ShardId,
    pub url: String,
    pub pool: PgPool,
}

/// What [`bootstrap`] changed.
#[derive(Debug, Clone, Serialize)]
pub struct Seeding {
    /// An even range map was seeded (the catalog had no ranges).
    pub seeded_map: bool,
    /// A move was ever recorded, so the shards' owned ranges were left alone.
    pub moves_happened: bool,
    /// Owned ranges added per shard (in the order given; 0 for a shard that
    /// already had its ranges, or got none).
    pub owned_ranges_added: Vec<(ShardId, u64)>,
}

/// Migrate, register and seed (see the module docs). `ranges_per_shard` only
/// matters when the catalog has no ranges yet.
pub async fn bootstrap(
    catalog_pool: &PgPool,
    shards: &[ShardDb],
    ranges_per_shard: u32,
) -> anyhow::Result<Seeding> {
    migrations::run(catalog_pool, Schema::Catalog).await?;
    for s in shards {
        migrations::run(&s.pool, Schema::Shard).await?;
        catalog::upsert_shard(catalog_pool, &s.id, &s.url).await?;
    }
    let ids: Vec<ShardId> = shards.iter().map(|s| s.id.clone()).collect();
    let seeded_map = catalog::seed_even(catalog_pool, &ids, ranges_per_shard).await?;
    if seeded_map {
        tracing::info!(
            shards = ids.len(),
            ranges_per_shard,
            "seeded an even range map"
        );
    }
    let moves_happened = catalog::any_moves(catalog_pool).await?;
    let mut owned_ranges_added = Vec::with_capacity(shards.len());
    if !moves_happened {
        let ranges = catalog::list_ranges(catalog_pool).await?;
        for s in shards {
            let added = shard::seed_owned_ranges(&s.pool, s.id.as_str(), &ranges).await?;
            owned_ranges_added.push((s.id.clone(), added));
        }
    }
    Ok(Seeding {
        seeded_map,
        moves_happened,
        owned_ranges_added,
    })
}

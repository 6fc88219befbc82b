//! The catalog and shard schemas, embedded in the binary as sqlx migrations.
//!
//! Migrations are idempotent to re-run: sqlx records applied versions in
//! `_sqlx_migrations` and refuses to run a changed migration (checksum mismatch),
//! so a shard or catalog can never silently drift from the code.

use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};

use crate::fence::{self, FenceError, FenceKind, FenceMode};

/// Migrations of the catalog database (shards, ranges, moves, load, decisions, keys).
pub static CATALOG: Migrator = sqlx::migrate!("../../migrations/catalog");

/// Migrations of every shard database (owned ranges, merchant data, fencing).
pub static SHARD: Migrator = sqlx::migrate!("../../migrations/shard");

/// Which schema a database carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    Catalog,
    Shard,
}

impl Schema {
    pub fn migrator(self) -> &'static Migrator {
        match self {
            Schema::Catalog => &CATALOG,
            Schema::Shard => &SHARD,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Schema::Catalog => "catalog",
            Schema::Shard => "shard",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("migrating the {schema} database failed: {source}")]
    Migrate {
        schema: &'static str,
        #[source]
        source: MigrateError,
    },
    #[error(transparent)]
    Fence(#[from] FenceError),
}

/// Apply every pending migration of `schema`; a no-op when the database is current.
/// A shard then gets the fence `SHARDLINE_FENCE` asks for (`auto` by default: the
/// native one when the server has it), see [`run_shard`].
pub async fn run(pool: &PgPool, schema: Schema) -> Result<(), MigrationError> {
    match schema {
        Schema::Catalog => apply(pool, schema).await,
        Schema::Shard => run_shard(pool, FenceMode::from_env()?).await.map(|_| ()),
    }
}

/// Migrate a shard database, then install the fence `mode` asks for
/// ([`fence::install`]); returns the fence now active.
pub async fn run_shard(pool: &PgPool, mode: FenceMode) -> Result<FenceKind, MigrationError> {
    apply(pool, Schema::Shard).await?;
    Ok(fence::install(pool, mode).await?)
}

async fn apply(pool: &PgPool, schema: Schema) -> Result<(), MigrationError> {
    schema
        .migrator()
        .run(pool)
        .await
        .map_err(|source| MigrationError::Migrate {
            schema: schema.name(),
            source,
        })
}

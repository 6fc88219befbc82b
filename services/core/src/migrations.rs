//! The catalog and shard schemas, embedded in the binary as sqlx migrations.
//!
//! Migrations are idempotent to re-run: sqlx records applied versions in
//! `_sqlx_migrations` and refuses to run a changed migration (checksum mismatch),
//! so a shard or catalog can never silently drift from the code.

use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};

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
}

/// Apply every pending migration of `schema`; a no-op when the database is current.
pub async fn run(pool: &PgPool, schema: Schema) -> Result<(), MigrationError> {
    schema
        .migrator()
        .run(pool)
        .await
        .map_err(|source| MigrationError::Migrate {
            schema: schema.name(),
            source,
        })
}

//! Shardline core: the domain types every service shares.
//!
//! * [`ids`]: identifiers (`MerchantId`, `ShardId`, ...) parsed from untrusted input.
//! * [`shard_key`](mod@shard_key): the stable placement hash `shard_key(MerchantId) -> u32`.
//! * [`money`]: `Money` / `Currency` on `rust_decimal` with ISO-4217 minor units.
//! * [`range_map`]: the half-open range map covering `[0, 2^32)`.
//! * [`migrations`]: the embedded sqlx migrations of the catalog and shard databases.
//! * [`catalog`], [`shard`]: data access to the catalog and shard databases used by
//!   operations (seeding, status); hot paths live in the services.
//! * [`config`]: validated configuration plumbing (errors name the setting).
//! * [`api_keys`]: bearer API keys, stored as SHA-256 hashes in the catalog.
//! * [`fence`]: the SQLSTATEs the shard databases raise when a write hits a range
//!   they do not own.
//! * [`telemetry`]: tracing initialisation shared by every binary.
//! * [`prometheus`]: the process-wide Prometheus recorder behind every `/metrics`.

pub mod api_keys;
pub mod catalog;
pub mod config;
pub mod fence;
pub mod ids;
pub mod migrations;
pub mod money;
pub mod prometheus;
pub mod range_map;
pub mod shard;
pub mod shard_key;
pub mod telemetry;

pub use ids::{MerchantId, ShardId};
pub use money::{Currency, Money};
pub use range_map::{KeyRange, Range, RangeMap};
pub use shard_key::shard_key;

//! SQLSTATEs raised by the shard and catalog databases (see docs/fencing.md).
//!
//! They are the contract between the database and every caller: the router maps
//! them to retries, holds or problem+json responses. [`install`] chooses between
//! the native (C) and the PL/pgSQL fence of a shard.

mod install;

pub use install::{
    FENCE_MODE_ENV, FENCED_TABLES, FenceError, FenceKind, FenceMode, NATIVE_EXTENSION, active_kind,
    install, native_available,
};

/// The shard does not own a range holding the key (stale map: refresh, retry on the owner).
pub const NOT_OWNED: &str = "SLF01";
/// The range is `frozen` or `incoming` on this shard: a move is in progress.
pub const RANGE_FROZEN: &str = "SLF02";
/// An update tried to change a row's `shard_key` or `merchant_id`.
pub const KEY_IMMUTABLE: &str = "SLF03";
/// A ledger journal does not sum to zero per currency (checked at commit).
pub const LEDGER_UNBALANCED: &str = "SLL01";
/// Ledger entries are append-only.
pub const LEDGER_IMMUTABLE: &str = "SLL02";
/// The catalog range map would not cover `[0, 2^32)` exactly.
pub const MAP_NOT_COVERING: &str = "SLM01";
/// An append-only catalog table was updated or deleted.
pub const APPEND_ONLY: &str = "SLA01";

/// Advisory-lock class of the fencing locks:
/// `pg_advisory_xact_lock[_shared](FENCE_LOCK_CLASS, fence_bucket(key))`.
pub const FENCE_LOCK_CLASS: i32 = 1_397_245_510;

/// Keys per fencing-lock bucket is `2^FENCE_BUCKET_SHIFT` (1024 buckets).
pub const FENCE_BUCKET_SHIFT: u32 = 22;

/// The fencing-lock bucket of a key (what the shard trigger locks).
pub fn fence_bucket(key: u32) -> i32 {
    // at most 2^10 - 1: always fits
    (key >> FENCE_BUCKET_SHIFT) as i32
}

/// What a SQLSTATE from a shard means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceVerdict {
    /// The shard no longer owns the key.
    NotOwned,
    /// The key's range is being moved.
    Frozen,
}

/// Classify a SQLSTATE code; `None` when it is not a fencing error.
pub fn classify(sqlstate: &str) -> Option<FenceVerdict> {
    match sqlstate {
        NOT_OWNED => Some(FenceVerdict::NotOwned),
        RANGE_FROZEN => Some(FenceVerdict::Frozen),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_fencing_codes() {
        assert_eq!(classify("SLF01"), Some(FenceVerdict::NotOwned));
        assert_eq!(classify("SLF02"), Some(FenceVerdict::Frozen));
        assert_eq!(classify("SLL01"), None);
        assert_eq!(classify("23505"), None);
    }

    #[test]
    fn buckets_cover_the_key_space_in_1024_parts() {
        assert_eq!(fence_bucket(0), 0);
        assert_eq!(fence_bucket((1 << 22) - 1), 0);
        assert_eq!(fence_bucket(1 << 22), 1);
        assert_eq!(fence_bucket(u32::MAX), 1023);
    }
}

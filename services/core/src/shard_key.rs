//! The placement hash: `shard_key(merchant_id) -> u32`.
//!
//! `shard_key` is the upper 32 bits of XXH3-64 (seed 0) over the 16 bytes of the
//! merchant UUID in RFC 4122 (big-endian) byte order, i.e. [`uuid::Uuid::as_bytes`].
//!
//! Every shard-data row stores this value and the range map partitions its space
//! `[0, 2^32)`, so **it may never change**: the published test vectors below (also
//! in `docs/shard-key.md`) pin it.

use crate::ids::MerchantId;

/// One past the largest shard key: the key space is `[0, KEY_SPACE_END)`.
pub const KEY_SPACE_END: u64 = 1 << 32;

/// The shard key of a merchant: upper 32 bits of `xxh3_64(uuid bytes)`.
#[must_use]
pub fn shard_key(id: &MerchantId) -> u32 {
    shard_key_of_bytes(id.as_bytes())
}

/// The shard key of raw UUID bytes (RFC 4122 order), for callers that hold a
/// [`uuid::Uuid`] or the bytes straight from a database row.
#[must_use]
pub fn shard_key_of_bytes(bytes: &[u8; 16]) -> u32 {
    let hash = xxhash_rust::xxh3::xxh3_64(bytes);
    // The shift leaves exactly 32 significant bits, so the cast is lossless.
    (hash >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Published test vectors (docs/shard-key.md): `(merchant id, shard_key, full
    /// xxh3_64)`. Cross-checked against the reference C implementation (xxHash 0.8.4, via
    /// python-xxhash 4.1.0). These must never change.
    const VECTORS: &[(&str, u32, u64)] = &[
        (
            "00000000-0000-0000-0000-000000000001",
            1_095_909_775,
            0x4152_418f_75dd_93bb,
        ),
        (
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
            1_915_363_375,
            0x722a_202f_07a4_b313,
        ),
        (
            "01234567-89ab-cdef-0123-456789abcdef",
            653_436_721,
            0x26f2_a731_193d_428f,
        ),
        (
            "0193b5e4-7a3c-7d2e-9f10-1234567890ab",
            1_547_873_713,
            0x5c42_adb1_fbc8_ec3f,
        ),
        (
            "01936f2a-3b4c-7000-8000-000000000000",
            3_755_356_526,
            0xdfd6_316e_7208_ec73,
        ),
        (
            "01936f2a-3b4c-7000-8000-000000000001",
            2_801_866_887,
            0xa701_1887_23e3_5f97,
        ),
        (
            "0198c2a1-0000-7000-8000-00000000ffff",
            3_628_619_551,
            0xd848_571f_da9e_434e,
        ),
        (
            "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
            2_128_981_512,
            0x7ee5_ae08_2bb7_9d16,
        ),
        (
            "6ba7b811-9dad-11d1-80b4-00c04fd430c8",
            1_957_210_912,
            0x74a8_ab20_af10_1348,
        ),
        (
            "f47ac10b-58cc-4372-a567-0e02b2c3d479",
            1_781_443_413,
            0x6a2e_ab55_8a2c_715c,
        ),
        (
            "550e8400-e29b-41d4-a716-446655440000",
            4_066_325_607,
            0xf25f_3467_eb84_d6e6,
        ),
        (
            "123e4567-e89b-12d3-a456-426614174000",
            196_367_045,
            0x0bb4_52c5_ab55_77f8,
        ),
        (
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            1_440_704_840,
            0x55df_6948_2c6d_3767,
        ),
        (
            "7d444840-9dc0-11d1-b245-5ffdce74fad2",
            3_641_163_935,
            0xd907_c09f_0017_83d7,
        ),
    ];

    #[test]
    fn published_vectors() {
        assert!(VECTORS.len() >= 12);
        for (uuid, key, hash) in VECTORS {
            let id: MerchantId = uuid.parse().unwrap();
            assert_eq!(
                xxhash_rust::xxh3::xxh3_64(id.as_bytes()),
                *hash,
                "xxh3_64({uuid})"
            );
            assert_eq!(shard_key(&id), *key, "shard_key({uuid})");
            assert_eq!(shard_key_of_bytes(id.as_bytes()), *key);
        }
        // The nil UUID is never a merchant id, but its bytes have a key too.
        assert_eq!(shard_key_of_bytes(&[0; 16]), 3_500_567_141);
    }

    #[test]
    fn key_space() {
        assert_eq!(KEY_SPACE_END, u64::from(u32::MAX) + 1);
    }

    #[test]
    fn spreads_v7_ids() {
        // v7 ids created back to back share their timestamp prefix; their keys must
        // still spread over the whole key space.
        let n = 4096_u32;
        let mut buckets = [0_u32; 16];
        for _ in 0..n {
            let key = shard_key(&MerchantId::new());
            buckets[(key >> 28) as usize] += 1;
        }
        let expected = n / 16;
        for (i, count) in buckets.iter().enumerate() {
            assert!(
                count.abs_diff(expected) < expected / 2,
                "bucket {i} has {count} keys, expected about {expected}: {buckets:?}"
            );
        }
    }
}

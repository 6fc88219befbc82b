//! Identifiers shared by every service.
//!
//! * [`MerchantId`], [`PaymentId`], [`RefundId`]: UUID newtypes. New ids are UUIDv7
//!   (time-ordered, so they index well); parsing accepts any UUID version, because ids
//!   may come from elsewhere, but only the canonical hyphenated 8-4-4-4-12 text form
//!   (either case) and never the nil UUID. They display as hyphenated lowercase and
//!   serialize as that string; deserialization validates like parsing.
//! * [`ShardId`]: a short lowercase name matching `^[a-z][a-z0-9-]{0,31}$`. It is
//!   embedded in NATS subjects (`shardline.cdc.<shard>`) and read-your-writes tokens
//!   (`<shard>:<lsn>`), so the alphabet is deliberately tiny: no `.`, `:`, `*`, `>`
//!   or whitespace can ever appear in one.

use std::borrow::Borrow;
use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use uuid::Uuid;

/// Why an identifier was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The text is not exactly 36 characters long.
    #[error(
        "{kind} must be a hyphenated UUID (36 characters, 8-4-4-4-12 hex digits), got {len} characters"
    )]
    UuidLength {
        /// Which id was being parsed (`"merchant id"`, ...).
        kind: &'static str,
        /// The length of the rejected text, in characters.
        len: usize,
    },
    /// 36 characters, but not hex digits grouped 8-4-4-4-12 by hyphens.
    #[error("{kind} must be a hyphenated UUID (8-4-4-4-12 hex digits)")]
    UuidFormat {
        /// Which id was being parsed.
        kind: &'static str,
    },
    /// The nil UUID (all zeros) never identifies anything.
    #[error("{kind} must not be the nil UUID")]
    NilUuid {
        /// Which id was being parsed.
        kind: &'static str,
    },
    /// An empty shard id.
    #[error("shard id must not be empty")]
    ShardEmpty,
    /// A shard id longer than [`ShardId::MAX_LEN`].
    #[error("shard id is {len} bytes long; at most 32 are allowed")]
    ShardTooLong {
        /// The length of the rejected text, in bytes.
        len: usize,
    },
    /// A shard id that does not start with `a-z`.
    #[error("shard id must start with a lowercase ASCII letter (a-z)")]
    ShardStart,
    /// A shard id containing something other than `a-z`, `0-9` or `-`.
    #[error("shard id may contain only a-z, 0-9 and '-', found {found:?} at byte {index}")]
    ShardChar {
        /// The offending character.
        found: char,
        /// Its byte offset.
        index: usize,
    },
}

impl IdError {
    /// A stable machine-readable code for API error bodies.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::UuidLength { .. } | Self::UuidFormat { .. } | Self::NilUuid { .. } => {
                "id_invalid"
            }
            Self::ShardEmpty
            | Self::ShardTooLong { .. }
            | Self::ShardStart
            | Self::ShardChar { .. } => "shard_id_invalid",
        }
    }
}

/// Parses the canonical hyphenated form only (`8-4-4-4-12` hex digits, any case).
///
/// `Uuid::try_parse` alone would also accept the simple, braced and URN forms.
fn parse_hyphenated(kind: &'static str, s: &str) -> Result<Uuid, IdError> {
    let bytes = s.as_bytes();
    if bytes.len() != 36 {
        let len = s.chars().count();
        return Err(if len == 36 {
            IdError::UuidFormat { kind }
        } else {
            IdError::UuidLength { kind, len }
        });
    }
    let well_formed = bytes.iter().enumerate().all(|(i, b)| match i {
        8 | 13 | 18 | 23 => *b == b'-',
        _ => b.is_ascii_hexdigit(),
    });
    if !well_formed {
        return Err(IdError::UuidFormat { kind });
    }
    let uuid = Uuid::try_parse(s).map_err(|_| IdError::UuidFormat { kind })?;
    if uuid.is_nil() {
        return Err(IdError::NilUuid { kind });
    }
    Ok(uuid)
}

/// Serde visitor that deserializes any `FromStr` type from a string, so that
/// deserialization validates exactly like parsing does.
pub(crate) struct FromStrVisitor<T> {
    expecting: &'static str,
    _marker: PhantomData<fn() -> T>,
}

impl<T> FromStrVisitor<T> {
    pub(crate) const fn new(expecting: &'static str) -> Self {
        Self {
            expecting,
            _marker: PhantomData,
        }
    }
}

impl<T> Visitor<'_> for FromStrVisitor<T>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }
}

macro_rules! uuid_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Uuid);

        // A `Default` that returns a fresh random id would be surprising.
        #[allow(clippy::new_without_default)]
        impl $name {
            #[doc = concat!("What this id is called in error messages: `\"", $kind, "\"`.")]
            pub const KIND: &'static str = $kind;

            #[doc = concat!("Generates a new ", $kind, " (UUIDv7: time-ordered).")]
            #[must_use]
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            #[doc = concat!("Wraps a UUID from a trusted source (e.g. a database row) as a ", $kind, ".")]
            #[must_use]
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The wrapped UUID.
            #[must_use]
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }

            /// The 16 bytes of the UUID in RFC 4122 (big-endian) order.
            #[must_use]
            pub const fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(s: &str) -> Result<Self, IdError> {
                parse_hyphenated($kind, s).map(Self)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;

            fn try_from(s: &str) -> Result<Self, IdError> {
                s.parse()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut buf = Uuid::encode_buffer();
                s.serialize_str(self.0.hyphenated().encode_lower(&mut buf))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_str(FromStrVisitor::new(concat!("a ", $kind, " (hyphenated UUID)")))
            }
        }
    };
}

uuid_id!(
    /// Identifies a merchant; its [`shard_key`](crate::shard_key()) places all of the
    /// merchant's data.
    MerchantId,
    "merchant id"
);
uuid_id!(
    /// Identifies a payment (unique across the cluster).
    PaymentId,
    "payment id"
);
uuid_id!(
    /// Identifies a refund (unique across the cluster).
    RefundId,
    "refund id"
);

/// The name of a shard: `^[a-z][a-z0-9-]{0,31}$`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(String);

impl ShardId {
    /// The maximum length of a shard id, in bytes.
    pub const MAX_LEN: usize = 32;

    /// Validates `s` as a shard id.
    ///
    /// # Errors
    /// [`IdError`] unless `s` matches `^[a-z][a-z0-9-]{0,31}$`.
    pub fn validate(s: &str) -> Result<(), IdError> {
        let bytes = s.as_bytes();
        let Some(first) = bytes.first() else {
            return Err(IdError::ShardEmpty);
        };
        if bytes.len() > Self::MAX_LEN {
            return Err(IdError::ShardTooLong { len: bytes.len() });
        }
        if !first.is_ascii_lowercase() {
            return Err(IdError::ShardStart);
        }
        match s
            .char_indices()
            .find(|(_, c)| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            Some((index, found)) => Err(IdError::ShardChar { found, index }),
            None => Ok(()),
        }
    }

    /// The shard id as a string slice.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Consumes the id, returning the inner string.
    #[must_use]
    pub fn into_string(self) -> String {
        self.0
    }
}

impl FromStr for ShardId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::validate(s)?;
        Ok(Self(s.to_owned()))
    }
}

impl TryFrom<&str> for ShardId {
    type Error = IdError;

    fn try_from(s: &str) -> Result<Self, IdError> {
        s.parse()
    }
}

impl TryFrom<String> for ShardId {
    type Error = IdError;

    fn try_from(s: String) -> Result<Self, IdError> {
        Self::validate(&s)?;
        Ok(Self(s))
    }
}

impl From<ShardId> for String {
    fn from(id: ShardId) -> Self {
        id.0
    }
}

impl AsRef<str> for ShardId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for ShardId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for ShardId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for ShardId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShardId({:?})", self.0)
    }
}

impl Serialize for ShardId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ShardId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(FromStrVisitor::new(
            "a shard id matching ^[a-z][a-z0-9-]{0,31}$",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "0193b5e4-7a3c-7d2e-9f10-1234567890ab";

    #[test]
    fn new_ids_are_v7_and_distinct() {
        let a = MerchantId::new();
        let b = MerchantId::new();
        assert_ne!(a, b);
        assert_eq!(a.as_uuid().get_version_num(), 7);
        assert_eq!(PaymentId::new().as_uuid().get_version_num(), 7);
        assert_eq!(RefundId::new().as_uuid().get_version_num(), 7);
    }

    #[test]
    fn v7_ids_sort_by_creation() {
        let ids: Vec<PaymentId> = (0..100).map(|_| PaymentId::new()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn parses_any_version_hyphenated() {
        for s in [
            SAMPLE,
            "6ba7b810-9dad-11d1-80b4-00c04fd430c8", // v1
            "f47ac10b-58cc-4372-a567-0e02b2c3d479", // v4
            "ffffffff-ffff-ffff-ffff-ffffffffffff", // max
        ] {
            let id: MerchantId = s.parse().unwrap();
            assert_eq!(id.to_string(), s);
            assert_eq!(MerchantId::try_from(s).unwrap(), id);
        }
    }

    #[test]
    fn uppercase_input_displays_lowercase() {
        let id: MerchantId = SAMPLE.to_ascii_uppercase().parse().unwrap();
        assert_eq!(id.to_string(), SAMPLE);
    }

    #[test]
    fn rejects_non_hyphenated_forms() {
        let simple = SAMPLE.replace('-', "");
        let braced = format!("{{{SAMPLE}}}");
        let urn = format!("urn:uuid:{SAMPLE}");
        let padded = format!(" {SAMPLE}");
        for s in [
            "",
            "x",
            simple.as_str(),
            braced.as_str(),
            urn.as_str(),
            padded.as_str(),
            "0193b5e4-7a3c-7d2e-9f10-1234567890a",
            "0193b5e4-7a3c-7d2e-9f10-1234567890abc",
        ] {
            assert!(
                matches!(s.parse::<MerchantId>(), Err(IdError::UuidLength { .. })),
                "{s:?}"
            );
        }
        for s in [
            "0193b5e47-a3c-7d2e-9f10-1234567890ab",
            "0193b5e4-7a3c-7d2e-9f10-1234567890ag",
            "0193b5e4_7a3c_7d2e_9f10_1234567890ab",
            "0193b5e4-7a3c-7d2e-9f10+1234567890ab",
            "0193b5e4-7a3c-7d2e-9f10-12345678é0a",
            "0193b5e4-7a3c-7d2e-9f10-1234567890aé",
        ] {
            assert_eq!(
                s.parse::<PaymentId>(),
                Err(IdError::UuidFormat { kind: "payment id" }),
                "{s:?}"
            );
        }
    }

    #[test]
    fn error_messages_are_clear() {
        let err = "abc".parse::<MerchantId>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "merchant id must be a hyphenated UUID (36 characters, 8-4-4-4-12 hex digits), \
             got 3 characters"
        );
        assert_eq!(err.code(), "id_invalid");
        assert_eq!(
            "a.b".parse::<ShardId>().unwrap_err().to_string(),
            "shard id may contain only a-z, 0-9 and '-', found '.' at byte 1"
        );
    }

    #[test]
    fn rejects_nil() {
        let err = "00000000-0000-0000-0000-000000000000"
            .parse::<RefundId>()
            .unwrap_err();
        assert_eq!(err, IdError::NilUuid { kind: "refund id" });
        assert_eq!(err.to_string(), "refund id must not be the nil UUID");
        assert_eq!(err.code(), "id_invalid");
    }

    #[test]
    fn bytes_are_rfc_order() {
        let id: MerchantId = SAMPLE.parse().unwrap();
        assert_eq!(id.as_bytes()[0], 0x01);
        assert_eq!(id.as_bytes()[1], 0x93);
        assert_eq!(id.as_bytes()[15], 0xab);
        assert_eq!(Uuid::from(id), *id.as_uuid());
        assert_eq!(MerchantId::from(*id.as_uuid()), id);
        assert_eq!(MerchantId::from_uuid(*id.as_uuid()), id);
    }

    #[test]
    fn uuid_serde_round_trip_and_validation() {
        let id: MerchantId = SAMPLE.parse().unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{SAMPLE}\""));
        assert_eq!(serde_json::from_str::<MerchantId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<MerchantId>("\"not-a-uuid\"").is_err());
        assert!(
            serde_json::from_str::<MerchantId>(&format!("\"{}\"", SAMPLE.replace('-', "")))
                .is_err()
        );
        assert!(serde_json::from_str::<MerchantId>("42").is_err());
        assert!(serde_json::from_str::<MerchantId>("null").is_err());
        let err = serde_json::from_str::<MerchantId>("\"00000000-0000-0000-0000-000000000000\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("nil UUID"), "{err}");
        // Escaped strings (owned by the deserializer) work too.
        let escaped = format!("\"\\u0030{}\"", &SAMPLE[1..]);
        assert_eq!(serde_json::from_str::<MerchantId>(&escaped).unwrap(), id);
    }

    #[test]
    fn debug_is_readable() {
        let id: MerchantId = SAMPLE.parse().unwrap();
        assert_eq!(format!("{id:?}"), format!("MerchantId({SAMPLE})"));
    }

    #[test]
    fn shard_ids_valid() {
        for s in [
            "a",
            "s1",
            "shard-01",
            "eu-west-1a",
            "a234567890123456789012345678901b",
        ] {
            let id: ShardId = s.parse().unwrap();
            assert_eq!(id.as_str(), s);
            assert_eq!(id.to_string(), s);
            assert_eq!(ShardId::try_from(s.to_owned()).unwrap(), id);
            assert_eq!(id, s);
        }
    }

    #[test]
    fn shard_ids_invalid() {
        assert_eq!("".parse::<ShardId>(), Err(IdError::ShardEmpty));
        assert_eq!(
            "a2345678901234567890123456789012x".parse::<ShardId>(),
            Err(IdError::ShardTooLong { len: 33 })
        );
        for s in ["1a", "-a", "Ab", " a", "é"] {
            assert_eq!(s.parse::<ShardId>(), Err(IdError::ShardStart), "{s:?}");
        }
        for (s, found, index) in [
            ("aB", 'B', 1),
            ("a.b", '.', 1),
            ("a:b", ':', 1),
            ("a b", ' ', 1),
            ("a*", '*', 1),
            ("ab>", '>', 2),
            ("a_b", '_', 1),
            ("aé", 'é', 1),
            ("a\n", '\n', 1),
        ] {
            let err = s.parse::<ShardId>().unwrap_err();
            assert_eq!(err, IdError::ShardChar { found, index }, "{s:?}");
            assert_eq!(err.code(), "shard_id_invalid");
        }
    }

    #[test]
    fn shard_id_serde() {
        let id: ShardId = "s-2".parse().unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"s-2\"");
        assert_eq!(serde_json::from_str::<ShardId>("\"s-2\"").unwrap(), id);
        assert!(serde_json::from_str::<ShardId>("\"S-2\"").is_err());
        assert!(serde_json::from_str::<ShardId>("\"a.b\"").is_err());
        assert!(serde_json::from_str::<ShardId>("2").is_err());
    }

    #[test]
    fn shard_id_borrows_as_str() {
        let mut m = std::collections::HashMap::new();
        m.insert(ShardId::try_from("s1").unwrap(), 1);
        assert_eq!(m.get("s1"), Some(&1));
        assert_eq!(String::from(ShardId::try_from("s1").unwrap()), "s1");
    }
}

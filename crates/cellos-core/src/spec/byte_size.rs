//! Byte counts written by people: `1048576`, `512k`, `64Mi`, `1G`.
//!
//! Hand-written because the grammar is tiny and the crates that parse sizes disagree on whether
//! `k` means 1000 or 1024; the spec language fixes it: decimal suffixes (`k`/`K`, `M`, `G`, `T`)
//! are powers of 1000, binary suffixes (`Ki`, `Mi`, `Gi`, `Ti`) are powers of 1024.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::document::ByteSize;

/// Why a size string is not a byte count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ByteSizeError {
    #[error("empty size; write a number of bytes such as 1048576 or a size such as 64Mi")]
    Empty,
    #[error("{0:?} is not a size; write digits with an optional unit k, M, G, T (powers of 1000) or Ki, Mi, Gi, Ti (powers of 1024)")]
    Malformed(String),
    #[error("{0:?} has an unknown unit; use k, M, G, T (powers of 1000) or Ki, Mi, Gi, Ti (powers of 1024)")]
    UnknownUnit(String),
    #[error("{0:?} does not fit in 64 bits")]
    Overflow(String),
}

/// Parses a byte count such as `"64Mi"` (67108864), `"1G"` (1000000000) or `"4096"`.
///
/// Surrounding whitespace and one space between number and unit are accepted; fractions,
/// signs and a trailing `B` are not, so that every accepted string has exactly one meaning.
pub fn parse_byte_size(text: &str) -> Result<u64, ByteSizeError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(ByteSizeError::Empty);
    }
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(digits_end);
    if digits.is_empty() {
        return Err(ByteSizeError::Malformed(text.to_owned()));
    }
    let unit = unit.strip_prefix(' ').unwrap_or(unit);
    let multiplier: u64 = match unit {
        "" => 1,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ if unit.chars().all(|c| c.is_ascii_alphabetic()) => {
            return Err(ByteSizeError::UnknownUnit(text.to_owned()))
        }
        _ => return Err(ByteSizeError::Malformed(text.to_owned())),
    };
    let number: u64 = digits
        .parse()
        .map_err(|_| ByteSizeError::Overflow(text.to_owned()))?;
    number
        .checked_mul(multiplier)
        .ok_or_else(|| ByteSizeError::Overflow(text.to_owned()))
}

impl ByteSize {
    /// The number of bytes this size stands for.
    pub fn bytes(&self) -> Result<u64, ByteSizeError> {
        match self {
            ByteSize::Bytes(n) => Ok(*n),
            ByteSize::Text(text) => parse_byte_size(text),
        }
    }
}

/// Accepts a byte size as a number or a string and keeps only its numeric meaning.
///
/// Used for fields stored as `Option<u64>` (such as `memoryMaxBytes`) so that `256Mi` can be
/// written in a spec while every consumer still reads a plain number.
pub(crate) mod optional_bytes {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        let size = ByteSize::deserialize(d)?;
        size.bytes().map(Some).map_err(de::Error::custom)
    }
}

/// Hand-written so a wrong value gets a message naming the accepted forms instead of serde's
/// "did not match any variant of untagged enum".
impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ByteSizeVisitor;

        impl Visitor<'_> for ByteSizeVisitor {
            type Value = ByteSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of bytes or a size string such as \"64Mi\"")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize::Bytes(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize::Bytes)
                    .map_err(|_| E::custom(format!("byte size {v} must not be negative")))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ByteSize, E> {
                Err(E::custom(format!(
                    "byte size {v} must be a whole number of bytes or a string such as \"64Mi\""
                )))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                Ok(ByteSize::Text(v.to_owned()))
            }
        }

        d.deserialize_any(ByteSizeVisitor)
    }
}

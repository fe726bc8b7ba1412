//! Canonical bytes: RFC 8785 JSON Canonicalization Scheme (JCS), so any implementation in any
//! language can recompute the exact bytes that were hashed and signed.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::events::CloudEvent;

use super::IntegrityError;

/// `cellosprev` of the first event of a stream.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Largest integer an IEEE double (JCS's number model) represents exactly.
const MAX_EXACT_INTEGER: u64 = (1 << 53) - 1;

/// JCS bytes of `event` as it stands (include or clear `cellossig` before calling, depending on
/// whether these are the signed bytes or the chained bytes).
pub fn canonical_bytes(event: &CloudEvent) -> Result<Vec<u8>, IntegrityError> {
    Ok(canonical_value_bytes(&serde_json::to_value(event)?)?)
}

/// JCS bytes of a JSON value.
///
/// Fast path: for the values CellOS writes, serde_json's compact output already *is* JCS, and
/// it is about eight times faster than the general canonicalizer, which dominates verification
/// time. The two agree exactly when object keys are sorted by UTF-16 code units (true for
/// keys below U+E000, where UTF-8 byte order and UTF-16 order coincide, if the map is sorted),
/// every number is an integer a double holds exactly, and strings are escaped alike (both
/// escape only `"`, `\` and control characters, with the same short forms and lower-case
/// `\u00xx`). Anything else goes through `serde_json_canonicalizer`.
pub fn canonical_value_bytes(value: &Value) -> Result<Vec<u8>, serde_json::Error> {
    if compact_is_canonical(value) {
        serde_json::to_vec(value)
    } else {
        serde_json_canonicalizer::to_vec(value)
    }
}

fn compact_is_canonical(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(_) | Value::String(_) => true,
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_i64().map(i64::unsigned_abs))
            .is_some_and(|abs| abs <= MAX_EXACT_INTEGER),
        Value::Array(items) => items.iter().all(compact_is_canonical),
        Value::Object(map) => {
            let keys_ok = map.keys().all(|k| k.chars().all(|c| u32::from(c) < 0xE000));
            // Checked rather than assumed: serde_json keeps insertion order instead when its
            // `preserve_order` feature is enabled anywhere in the build.
            let sorted = map
                .keys()
                .zip(map.keys().skip(1))
                .all(|(a, b)| a.as_str() < b.as_str());
            keys_ok && sorted && map.values().all(compact_is_canonical)
        }
    }
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

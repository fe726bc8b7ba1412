//! Canonical bytes: RFC 8785 JSON Canonicalization Scheme, so any implementation in any
//! language can recompute the exact bytes that were hashed and signed.

use sha2::{Digest, Sha256};

use crate::events::CloudEvent;

use super::IntegrityError;

/// `cellosprev` of the first event of a stream.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// JCS bytes of `event` as it stands (include or clear `cellossig` before calling, depending on
/// whether these are the signed bytes or the chained bytes).
pub fn canonical_bytes(event: &CloudEvent) -> Result<Vec<u8>, IntegrityError> {
    Ok(serde_json_canonicalizer::to_vec(event)?)
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

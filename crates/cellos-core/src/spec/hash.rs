//! The canonical spec hash: one identity for a spec, however it was written.
//!
//! `sha256:` + hex SHA-256 over the RFC 8785 (JCS) canonical JSON of the parsed spec. Because it
//! is computed from the typed value, not the text, it does not depend on YAML vs JSON, key
//! order, indentation, comments, quoting style, or whether a default was written out. Byte
//! sizes are hashed by their value, so `sizeBytes: 64Mi` and `sizeBytes: 67108864` agree.

use sha2::{Digest, Sha256};

use super::document::{ByteSize, ExecutionCellSpec};

/// `sha256:<64 hex digits>` identifying `spec`'s meaning.
pub fn canonical_spec_hash(spec: &ExecutionCellSpec) -> String {
    let canonical = canonical_spec_json(spec);
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    )
}

/// The RFC 8785 canonical JSON text the hash is computed over.
pub fn canonical_spec_json(spec: &ExecutionCellSpec) -> String {
    let mut spec = spec.clone();
    if let Some(ws) = spec
        .filesystem
        .as_mut()
        .and_then(|fs| fs.workspace.as_mut())
    {
        if let Some(Ok(bytes)) = ws.size_bytes.as_ref().map(ByteSize::bytes) {
            ws.size_bytes = Some(ByteSize::Bytes(bytes));
        }
    }
    // Serialising these types cannot fail: every map is keyed by String and no field has a
    // fallible Serialize impl, so an error here is a bug in this crate, not bad input.
    serde_json_canonicalizer::to_string(&spec).expect("ExecutionCellSpec always serialises to JSON")
}

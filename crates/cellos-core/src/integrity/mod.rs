//! Integrity: canonical bytes, hash chain and signatures over events.
//!
//! * Canonical bytes of an event are its RFC 8785 (JCS) serialization without `cellossig`.
//! * `cellosseq` counts from 1; `cellosprev` is the hex SHA-256 of the previous event's full
//!   canonical bytes (signature included), or [`GENESIS_PREV`] for the first event.
//! * `cellossig` signs the canonical bytes with Ed25519 (default) or HMAC-SHA256; `celloskid`
//!   names the key.
//!
//! Because each signature covers `cellosprev`, a valid signature on event N vouches for every
//! event before it; [`verify_stream`] still checks every signature so it can name the first
//! bad event precisely.

mod canonical;
mod chain;
mod keys;
mod verify;

pub use canonical::{canonical_bytes, canonical_value_bytes, sha256_hex, GENESIS_PREV};
pub use chain::{seal, ChainHead, SealedEvent, Sealer};
pub use keys::{ed25519_kid, hmac_kid, key_material_held, note_key_material_held, Keyring, Signer};
pub use verify::{
    verify_stream, verify_stream_with, FailureKind, SignatureCheck, Verifier, VerifyFailure,
    VerifyReport,
};

/// Errors of sealing events and handling keys.
#[derive(Debug, thiserror::Error)]
pub enum IntegrityError {
    #[error("event cannot be canonicalized (RFC 8785): {0}")]
    Canonicalize(#[from] serde_json::Error),
    #[error(
        "chain head line is not a sealed event: {0}; the log's last line must carry cellosseq"
    )]
    BadHead(String),
    #[error("HMAC key `{name}` is invalid: {reason}")]
    BadHmacKey { name: String, reason: String },
}

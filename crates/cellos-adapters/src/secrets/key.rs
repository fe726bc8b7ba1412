//! Secret key names: `^[A-Z_][A-Z0-9_]{0,127}$`.
//!
//! Keys become file names and environment variable names, so the grammar is kept narrow enough
//! that no key can be a path, contain a separator, or need quoting. Checked by hand: the
//! grammar is four character classes and does not justify a regex engine.

use cellos_core::ports::{PortError, PortErrorKind};

/// Longest accepted key, in bytes.
pub const MAX_SECRET_KEY_LEN: usize = 128;

/// Accept `key` if it is an upper-case identifier of at most [`MAX_SECRET_KEY_LEN`] bytes.
pub fn validate_secret_key(key: &str) -> Result<(), PortError> {
    let bytes = key.as_bytes();
    let first_ok = bytes
        .first()
        .is_some_and(|b| b.is_ascii_uppercase() || *b == b'_');
    let rest_ok = bytes
        .iter()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_');
    if first_ok && rest_ok && bytes.len() <= MAX_SECRET_KEY_LEN {
        Ok(())
    } else {
        Err(PortError::new(
            PortErrorKind::Refused,
            format!(
                "secret key {key:?} is invalid: authority.secretRefs entries must match \
                 ^[A-Z_][A-Z0-9_]{{0,127}}$ (upper-case letters, digits, '_', not starting with a digit)"
            ),
        ))
    }
}

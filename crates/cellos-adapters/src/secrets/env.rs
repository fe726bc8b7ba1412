//! `EnvSecretBroker`: secrets from the supervisor's own environment (`CELLOS_SECRET_<KEY>`).

use std::os::unix::ffi::OsStringExt;

use cellos_core::ports::{PortError, PortErrorKind, SecretBroker, SecretValue};

use super::key::validate_secret_key;

/// Prefix of the environment variables this broker reads.
pub const ENV_SECRET_PREFIX: &str = "CELLOS_SECRET_";

/// Reads `CELLOS_SECRET_<KEY>` with `std::env::var_os` at resolve time.
///
/// Read at resolve time rather than snapshotted at construction: a snapshot would hold a
/// second copy of every secret for the supervisor's whole life, while reading on demand moves
/// the variable's bytes straight into a zeroising [`SecretValue`] (no intermediate `String`).
/// The environment itself is the source of truth and is left as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct EnvSecretBroker;

impl EnvSecretBroker {
    pub fn new() -> Self {
        EnvSecretBroker
    }

    /// The variable that holds `key` (the key is not validated here).
    pub fn variable_name(key: &str) -> String {
        format!("{ENV_SECRET_PREFIX}{key}")
    }
}

impl SecretBroker for EnvSecretBroker {
    fn name(&self) -> &'static str {
        "env"
    }

    fn resolve(&self, key: &str, cell_id: &str) -> Result<SecretValue, PortError> {
        validate_secret_key(key)?;
        let variable = Self::variable_name(key);
        match std::env::var_os(&variable) {
            Some(value) => Ok(SecretValue::new(value.into_vec())),
            None => Err(PortError::new(
                PortErrorKind::NotFound,
                format!(
                    "secret {key} for cell {cell_id} not found: set {variable} in the supervisor's environment"
                ),
            )),
        }
    }

    /// Nothing is held between calls; see the module documentation.
    fn revoke_for_cell(&self, _cell_id: &str) -> Result<(), PortError> {
        Ok(())
    }
}

//! `ChainedBroker`: try several brokers in order (e.g. file, then env).

use cellos_core::ports::{PortError, PortErrorKind, SecretBroker, SecretValue};

/// Resolves through each broker in turn. Only `NotFound` falls through to the next broker:
/// any other failure (a refused symlink, an oversized file, an I/O error) stops the search, so
/// a tampered source can never be silently replaced by a later one.
pub struct ChainedBroker {
    brokers: Vec<Box<dyn SecretBroker>>,
}

impl ChainedBroker {
    pub fn new(brokers: Vec<Box<dyn SecretBroker>>) -> Self {
        ChainedBroker { brokers }
    }
}

impl SecretBroker for ChainedBroker {
    fn name(&self) -> &'static str {
        "chain"
    }

    fn resolve(&self, key: &str, cell_id: &str) -> Result<SecretValue, PortError> {
        let mut misses = Vec::new();
        for broker in &self.brokers {
            match broker.resolve(key, cell_id) {
                Err(e) if e.kind == PortErrorKind::NotFound => misses.push(e.message),
                other => return other,
            }
        }
        Err(PortError::new(
            PortErrorKind::NotFound,
            if misses.is_empty() {
                format!("secret {key} for cell {cell_id} not found: no secret broker is configured")
            } else {
                misses.join("; ")
            },
        ))
    }

    /// Revokes in every broker, even after a failure, and reports the first failure.
    fn revoke_for_cell(&self, cell_id: &str) -> Result<(), PortError> {
        let mut first_error = None;
        for broker in &self.brokers {
            if let Err(e) = broker.revoke_for_cell(cell_id) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

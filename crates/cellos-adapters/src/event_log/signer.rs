//! The log's signer, either given up front or loaded at the first append.
//!
//! Loading late keeps the private key out of the process until it signs: `cellos run` clones
//! the cell's init before its first append, and a process that never held the key can let
//! that clone run init itself (see `cellos_core::integrity::key_material_held`).

use std::sync::{Mutex, OnceLock};

use cellos_core::integrity::Signer;
use cellos_core::ports::{PortError, PortErrorKind};

/// Loads the signer on first use; its error explains what is wrong with the key.
pub type SignerLoader = Box<dyn FnOnce() -> Result<Signer, String> + Send>;

enum Pending {
    Loader(SignerLoader),
    Failed(String),
    Loaded,
}

pub(super) struct LogSigner {
    ready: OnceLock<Signer>,
    pending: Mutex<Pending>,
}

impl LogSigner {
    pub(super) fn ready(signer: Signer) -> Self {
        Self {
            ready: OnceLock::from(signer),
            pending: Mutex::new(Pending::Loaded),
        }
    }

    pub(super) fn deferred(loader: SignerLoader) -> Self {
        Self {
            ready: OnceLock::new(),
            pending: Mutex::new(Pending::Loader(loader)),
        }
    }

    /// The key id, once the signer is loaded.
    pub(super) fn kid(&self) -> Option<&str> {
        self.ready.get().map(Signer::kid)
    }

    /// The signer, loading it now if this is the first use. A failed load is not retried:
    /// every later append reports the same error.
    pub(super) fn get(&self) -> Result<&Signer, PortError> {
        if let Some(signer) = self.ready.get() {
            return Ok(signer);
        }
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(signer) = self.ready.get() {
            return Ok(signer);
        }
        let failed = |reason: &str| {
            PortError::new(
                PortErrorKind::Refused,
                format!("event log: cannot load the signing key: {reason}"),
            )
        };
        let load = match std::mem::replace(&mut *pending, Pending::Loaded) {
            Pending::Loader(load) => load,
            Pending::Failed(reason) => {
                let err = failed(&reason);
                *pending = Pending::Failed(reason);
                return Err(err);
            }
            Pending::Loaded => return Err(failed("the signer vanished after loading")),
        };
        match load() {
            Ok(signer) => Ok(self.ready.get_or_init(|| signer)),
            Err(reason) => {
                let err = failed(&reason);
                *pending = Pending::Failed(reason);
                Err(err)
            }
        }
    }
}

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

pub(super) struct LogSigner {
    /// The outcome of the (one) load: a failed load is not retried.
    loaded: OnceLock<Result<Signer, String>>,
    loader: Mutex<Option<SignerLoader>>,
}

impl LogSigner {
    pub(super) fn ready(signer: Signer) -> Self {
        Self {
            loaded: OnceLock::from(Ok(signer)),
            loader: Mutex::new(None),
        }
    }

    pub(super) fn deferred(loader: SignerLoader) -> Self {
        Self {
            loaded: OnceLock::new(),
            loader: Mutex::new(Some(loader)),
        }
    }

    /// The key id, once the signer is loaded.
    pub(super) fn kid(&self) -> Option<&str> {
        self.loaded.get()?.as_ref().ok().map(Signer::kid)
    }

    /// The signer, loading it now if this is the first use; after a failed load every call
    /// reports the same error.
    pub(super) fn get(&self) -> Result<&Signer, PortError> {
        self.loaded
            .get_or_init(|| {
                let load = self.loader.lock().unwrap_or_else(|p| p.into_inner()).take();
                load.map_or_else(|| Err("no signer to load".into()), |load| load())
            })
            .as_ref()
            .map_err(|reason| {
                PortError::new(
                    PortErrorKind::Refused,
                    format!("event log: cannot load the signing key: {reason}"),
                )
            })
    }
}

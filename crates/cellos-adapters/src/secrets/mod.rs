//! Secret brokers: where secret values come from.
//!
//! Every broker resolves only the keys a spec lists in `authority.secretRefs` (the supervisor
//! asks for nothing else), validates the key before touching anything, and never puts a secret
//! value into an error message. Values travel as [`cellos_core::ports::SecretValue`], which is
//! zeroised when dropped.
//!
//! Revocation: the file and env brokers read their source on every `resolve` and keep no copy,
//! so after the caller drops the values it received nothing of the secret remains in the
//! broker; their `revoke_for_cell` is therefore a no-op that always succeeds. They cannot
//! revoke the secret at its source (the file or the variable stays), and say so here rather
//! than pretend otherwise.
//!
//! The command broker runs a host program per call and asks it to revoke at teardown, so a
//! program that hands out leases or short-lived tokens can end them.
//!
//! Several brokers are chained by the supervisor, which asks them in order, moves on only on
//! "not found", and records which broker delivered each key.

mod command;
mod env;
mod file;
mod key;

pub use command::{CommandSecretBroker, NOT_FOUND_STATUS};
pub use env::{EnvSecretBroker, ENV_SECRET_PREFIX};
pub use file::FileSecretBroker;
pub use key::{validate_secret_key, MAX_SECRET_KEY_LEN};

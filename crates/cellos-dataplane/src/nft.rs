//! Runs `nft` inside a cell's network namespace.
//!
//! Mechanism: [`crate::netns_exec::run_tool`] (the child joins the namespace between fork and
//! exec); the namespace file is opened before the fork so a missing namespace is a clear error
//! instead of a child failure.
//! `nft` is used rather than raw nf_tables netlink because the ruleset must be loaded as one
//! text script (its hash is the evidence), and `nft -f` applies a script as one transaction.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::netns_exec::{run_tool, ToolError};

use crate::pin::{AddressPinner, Pin, PinError};
use crate::ruleset::{EgressPlan, FAMILY, TABLE};

/// Why an `nft` invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot open network namespace {path}: {source}; is the cell still running?")]
    Netns {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run {binary}: {source}; install nftables (apt-get install nftables)")]
    Spawn {
        binary: String,
        source: std::io::Error,
    },
    #[error("nft {args} exited with {status}: {stderr}")]
    Rejected {
        args: String,
        status: String,
        stderr: String,
    },
    #[error("nft -j output is not JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Applies scripts and reads state of the `inet cellos` table in one network namespace.
#[derive(Debug, Clone)]
pub struct NftController {
    netns: Option<PathBuf>,
    /// The namespace as an open descriptor: it stays the same namespace for as long as this
    /// controller (or a pinner holding it) lives, which a path like `/proc/self/fd/N` or
    /// `/proc/<pid>/ns/net` cannot promise once the descriptor or process is gone.
    netns_fd: Option<Arc<OwnedFd>>,
    binary: String,
}

impl NftController {
    /// Controller for the namespace at `path` (`/proc/<pid>/ns/net`, `/run/netns/<name>`).
    pub fn for_netns(path: impl Into<PathBuf>) -> Self {
        Self {
            netns: Some(path.into()),
            netns_fd: None,
            binary: "nft".to_owned(),
        }
    }

    /// Controller for the namespace `fd` refers to (held open by the controller).
    pub fn for_netns_fd(fd: Arc<OwnedFd>) -> Self {
        Self {
            netns: None,
            netns_fd: Some(fd),
            binary: "nft".to_owned(),
        }
    }

    /// Controller for the network namespace of process `pid` (e.g. the cell's init).
    pub fn for_pid(pid: u32) -> Self {
        Self::for_netns(format!("/proc/{pid}/ns/net"))
    }

    /// Controller for the caller's own namespace.
    pub fn current() -> Self {
        Self {
            netns: None,
            netns_fd: None,
            binary: "nft".to_owned(),
        }
    }

    /// Use another `nft` binary (an absolute path, for hosts with several).
    pub fn with_binary(mut self, binary: impl Into<String>) -> Self {
        self.binary = binary.into();
        self
    }

    pub fn netns(&self) -> Option<&Path> {
        self.netns.as_deref()
    }

    /// Loads `script` with `nft -f -`: all of it, atomically, or nothing.
    pub fn apply(&self, script: &str) -> Result<(), NftError> {
        self.run(&["-f", "-"], Some(script)).map(|_| ())
    }

    /// `nft list table inet cellos` as text.
    pub fn list_table(&self) -> Result<String, NftError> {
        self.run(&["list", "table", FAMILY, TABLE], None)
    }

    /// `nft -j list table inet cellos`, parsed.
    pub fn list_table_json(&self) -> Result<serde_json::Value, NftError> {
        let text = self.run(&["-j", "list", "table", FAMILY, TABLE], None)?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Runs `nft args...` in the namespace, feeding `stdin`; returns stdout.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, NftError> {
        let ns: Option<OwnedFd> = match (&self.netns_fd, &self.netns) {
            (Some(fd), _) => Some(fd.try_clone().map_err(|source| NftError::Netns {
                path: PathBuf::from("(descriptor)"),
                source,
            })?),
            (None, Some(path)) => Some(std::fs::File::open(path).map(OwnedFd::from).map_err(
                |source| NftError::Netns {
                    path: path.clone(),
                    source,
                },
            )?),
            (None, None) => None,
        };
        run_tool(&self.binary, args, stdin, ns).map_err(|err| match err {
            ToolError::Spawn { source, .. } | ToolError::Wait { source, .. } => NftError::Spawn {
                binary: self.binary.clone(),
                source,
            },
            ToolError::Failed {
                args,
                status,
                stderr,
                ..
            } => NftError::Rejected {
                args,
                status,
                stderr,
            },
        })
    }
}

/// Installs DNS pins into the cell's `pinned_v4/v6` sets, on the ports the plan allows.
#[derive(Debug, Clone)]
pub struct NftPinner {
    pub controller: NftController,
    pub plan: EgressPlan,
}

impl AddressPinner for NftPinner {
    fn pin(&self, pins: &[Pin]) -> Result<(), PinError> {
        let script = self.plan.pin_script(pins);
        if script.is_empty() {
            return Ok(());
        }
        self.controller
            .apply(&script)
            .map_err(|e| PinError(e.to_string()))
    }
}

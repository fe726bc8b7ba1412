//! Session cells: commands and file operations inside a running cell.
//!
//! A cell without `spec.run` stays up until it is deleted, its TTL runs out or it sits idle
//! too long; programs drive it with execs and file operations. These are the values that
//! cross the [`crate::ports::CellSession`] port; the supervisor adds evidence, timeouts and
//! kept output on top.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Most arguments one exec may pass.
pub const MAX_EXEC_ARGS: usize = 4096;

/// A command to run inside a running cell, with exactly the workload's confinement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecRequest {
    /// Program and arguments; `argv[0]` is looked up in the cell's `PATH` unless it holds a `/`.
    pub argv: Vec<String>,
    /// Added to (and overriding) the workload's environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory inside the cell (default: the workload's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Kill the exec's whole process tree after this long and report exit status 124.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Run on a terminal of this size (stdout and stderr are then one stream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pty: Option<PtySize>,
    /// Whether the caller will write to the exec's stdin (otherwise it reads `/dev/null`).
    #[serde(default)]
    pub stdin: bool,
}

impl ExecRequest {
    /// Problems with the request, each naming its field and the fix.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.argv.is_empty() {
            out.push("argv: required, give the program and its arguments".to_string());
        }
        if self.argv.len() > MAX_EXEC_ARGS {
            out.push(format!("argv: at most {MAX_EXEC_ARGS} arguments"));
        }
        if self.argv.iter().any(|a| a.contains('\0')) {
            out.push("argv: an argument contains a NUL byte".to_string());
        }
        for (key, value) in &self.env {
            if key.is_empty() || key.contains('=') || key.contains('\0') || value.contains('\0') {
                out.push(format!(
                    "env.{key}: names must be non-empty without '=' or NUL, values without NUL"
                ));
            }
        }
        if let Some(cwd) = &self.cwd {
            if !cwd.starts_with('/') || cwd.contains('\0') {
                out.push(format!(
                    "cwd: {cwd:?} must be an absolute path inside the cell"
                ));
            }
        }
        if self.timeout_ms == Some(0) {
            out.push("timeoutMs: must be at least 1".to_string());
        }
        if let Some(pty) = &self.pty {
            if pty.rows == 0 || pty.cols == 0 {
                out.push("pty: rows and cols must be at least 1".to_string());
            }
        }
        out
    }
}

/// A terminal's window size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PtySize {
    pub rows: u16,
    pub cols: u16,
}

/// How an exec ended, as the cell reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum ExecExit {
    Exited {
        code: i32,
    },
    Signaled {
        signal: i32,
    },
    /// The command could not be executed (not found, not executable, ...).
    SpawnFailed {
        reason: String,
    },
}

impl ExecExit {
    /// Shell-style status: the code, 128+signal, 127 when it could not start.
    pub fn status(&self) -> i32 {
        match self {
            ExecExit::Exited { code } => *code,
            ExecExit::Signaled { signal } => 128 + signal,
            ExecExit::SpawnFailed { .. } => 127,
        }
    }
}

/// What a path inside the cell is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FileKind {
    File,
    Directory,
    Symlink,
    Other,
}

/// `stat` of a path inside the cell (symlinks are not followed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileStat {
    pub path: String,
    pub kind: FileKind,
    pub size: u64,
    /// Permission bits (`0o644`).
    pub mode: u32,
    /// Seconds since the epoch.
    pub modified_unix: i64,
    /// Target of a symlink, as stored (never followed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileEntry {
    pub name: String,
    pub kind: FileKind,
    pub size: u64,
    pub mode: u32,
    pub modified_unix: i64,
}

/// A file written into the cell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileWritten {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// Idle and lifetime settings of a session cell, resolved from the spec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionLimits {
    pub ttl_seconds: Option<u64>,
    pub idle_timeout_seconds: Option<u64>,
}

/// Environment entries of a request as `KEY=value` strings.
pub fn env_entries(env: &BTreeMap<String, String>) -> Vec<String> {
    env.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

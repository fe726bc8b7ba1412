//! Session cells under one long-lived supervisor (`cellos serve`): many cells at once, each
//! driven by execs and file operations, every action attributed to its caller in the log.
//!
//! [`Sessions`] is the registry the HTTP server drives. Creates, execs and destroys of
//! different cells run in parallel: the registry lock is only held to find a cell, never
//! across a backend call.

mod exec_log;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use cellos_core::policy::AdmissionDecision;
use cellos_core::ports::{IsolationReport, PortError, TeardownReport};
use cellos_core::session::{ExecRequest, FileEntry, FileStat, FileWritten, PtySize};
use cellos_core::spec::{ExecutionCellDocument, PolicyPackDocument, Problem};
use serde::{Deserialize, Serialize};

pub use exec_log::{ExecLog, ExecOutcome, Frame, Read as ExecRead, Stream, DEFAULT_KEPT_BYTES};

use crate::lifecycle::Supervisor;

/// Who asked: every event of an API action names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// `uid:0` for a Unix-socket peer, the token's subject over TCP.
    pub subject: String,
}

/// Limits of the session surface.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Largest file one read or write moves.
    pub max_file_bytes: u64,
    /// Kept output per exec (older output is dropped past it).
    pub kept_output_bytes: u64,
    /// Ended execs kept per cell for re-reading (the oldest are forgotten first).
    pub kept_execs: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            max_file_bytes: 64 << 20,
            kept_output_bytes: DEFAULT_KEPT_BYTES,
            kept_execs: 256,
        }
    }
}

/// Where a cell is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CellState {
    Running,
    Paused,
    /// The workload of a cell with `run` ended; the cell is being torn down.
    Completed,
    Destroyed,
}

/// A cell as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CellInfo {
    pub id: String,
    pub run_id: String,
    pub state: CellState,
    /// Whether the spec has `run` (the cell ends with its workload) or not (a session cell).
    pub session: bool,
    pub spec_hash: String,
    /// RFC 3339.
    pub created: String,
    /// Who created it.
    pub owner: String,
    pub execs: u64,
    /// RFC 3339 time of the last exec or file operation.
    pub last_activity: String,
    pub isolation: IsolationReport,
    /// Status of the workload of a cell with `run`, once it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i32>,
    /// What destroy removed and verified, once destroyed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teardown: Option<TeardownReport>,
}

/// Why a session operation failed. Each variant maps to one problem type of the API.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("invalid spec: {} problem(s)", .0.len())]
    Invalid(Vec<Problem>),
    #[error("this server cannot serve the spec: {} problem(s)", .0.len())]
    Unsupported(Vec<Problem>),
    #[error("admission denied")]
    Denied(AdmissionDecision),
    /// A request (not a spec) is malformed; each entry names its field and the fix.
    #[error("bad request: {}", .0.join("; "))]
    BadRequest(Vec<String>),
    #[error("{what} not found")]
    NotFound { what: String },
    /// The cell exists but cannot do this now (paused, ended, id taken, ...).
    #[error("{what}")]
    Conflict { what: String },
    #[error("{what}")]
    TooLarge { what: String },
    /// The cell refused the operation (a path escaping the cell, a read-only mount, ...).
    #[error("{0}")]
    Refused(PortError),
    #[error("cell backend: {0}")]
    Backend(PortError),
    #[error("event log: {0} (nothing runs without durable evidence)")]
    Events(PortError),
}

/// An exec that started: its kept output, and its stdin when it asked for one.
pub struct ExecStarted {
    pub id: String,
    pub log: Arc<ExecLog>,
    pub stdin: Option<Box<dyn std::io::Write + Send>>,
}

/// The cells of one server.
pub struct Sessions {
    supervisor: Arc<Supervisor>,
    policies: Vec<PolicyPackDocument>,
    config: SessionConfig,
    cells: RwLock<BTreeMap<String, ()>>,
}

impl Sessions {
    pub fn new(
        supervisor: Arc<Supervisor>,
        policies: Vec<PolicyPackDocument>,
        config: SessionConfig,
    ) -> Self {
        Self {
            supervisor,
            policies,
            config,
            cells: RwLock::new(BTreeMap::new()),
        }
    }

    /// Admit and create a cell; a session cell is running when this returns.
    pub fn create(
        &self,
        caller: &Caller,
        document: ExecutionCellDocument,
    ) -> Result<CellInfo, SessionError> {
        let _ = (
            caller,
            document,
            &self.supervisor,
            &self.policies,
            &self.config,
        );
        Err(not_yet())
    }

    /// Every cell this server holds, live and recently destroyed, by id.
    pub fn list(&self) -> Vec<CellInfo> {
        let _ = &self.cells;
        Vec::new()
    }

    pub fn get(&self, id: &str) -> Result<CellInfo, SessionError> {
        Err(SessionError::NotFound {
            what: format!("cell {id:?}"),
        })
    }

    /// Destroy a cell (killing its execs) and verify nothing is left; idempotent.
    pub fn destroy(&self, caller: &Caller, id: &str) -> Result<CellInfo, SessionError> {
        let _ = (caller, id);
        Err(not_yet())
    }

    pub fn pause(&self, caller: &Caller, id: &str) -> Result<CellInfo, SessionError> {
        let _ = (caller, id);
        Err(not_yet())
    }

    pub fn resume(&self, caller: &Caller, id: &str) -> Result<CellInfo, SessionError> {
        let _ = (caller, id);
        Err(not_yet())
    }

    /// Start an exec; its output is kept in the returned log whether or not anyone reads it.
    pub fn exec(
        &self,
        caller: &Caller,
        id: &str,
        request: ExecRequest,
    ) -> Result<ExecStarted, SessionError> {
        let _ = (caller, id, request);
        Err(not_yet())
    }

    /// The kept output of an exec of cell `id` (running or ended).
    pub fn exec_log(&self, id: &str, exec_id: &str) -> Result<Arc<ExecLog>, SessionError> {
        let _ = (id, exec_id);
        Err(not_yet())
    }

    /// Kill a running exec's whole process tree.
    pub fn kill_exec(&self, caller: &Caller, id: &str, exec_id: &str) -> Result<(), SessionError> {
        let _ = (caller, id, exec_id);
        Err(not_yet())
    }

    /// Set the terminal size of a PTY exec.
    pub fn resize_exec(&self, id: &str, exec_id: &str, size: PtySize) -> Result<(), SessionError> {
        let _ = (id, exec_id, size);
        Err(not_yet())
    }

    pub fn read_file(
        &self,
        caller: &Caller,
        id: &str,
        path: &str,
    ) -> Result<(FileStat, Vec<u8>), SessionError> {
        let _ = (caller, id, path);
        Err(not_yet())
    }

    /// Replace `path` atomically.
    pub fn write_file(
        &self,
        caller: &Caller,
        id: &str,
        path: &str,
        content: &[u8],
        mode: Option<u32>,
    ) -> Result<FileWritten, SessionError> {
        let _ = (caller, id, path, content, mode);
        Err(not_yet())
    }

    pub fn stat(&self, caller: &Caller, id: &str, path: &str) -> Result<FileStat, SessionError> {
        let _ = (caller, id, path);
        Err(not_yet())
    }

    pub fn list_dir(
        &self,
        caller: &Caller,
        id: &str,
        path: &str,
    ) -> Result<Vec<FileEntry>, SessionError> {
        let _ = (caller, id, path);
        Err(not_yet())
    }

    pub fn mkdir(
        &self,
        caller: &Caller,
        id: &str,
        path: &str,
        parents: bool,
    ) -> Result<(), SessionError> {
        let _ = (caller, id, path, parents);
        Err(not_yet())
    }

    pub fn remove(
        &self,
        caller: &Caller,
        id: &str,
        path: &str,
        recursive: bool,
    ) -> Result<(), SessionError> {
        let _ = (caller, id, path, recursive);
        Err(not_yet())
    }

    /// Destroy cells whose TTL or idle timeout passed. Call about once a second.
    pub fn sweep(&self) {}

    /// Destroy every cell (or, with `keep`, leave them running for a restarted server to
    /// reclaim) and make the log durable.
    pub fn shutdown(&self, keep: bool) {
        let _ = keep;
    }

    /// Counts for `/metrics`: live cells by state.
    pub fn counts(&self) -> BTreeMap<CellState, u64> {
        BTreeMap::new()
    }
}

fn not_yet() -> SessionError {
    SessionError::Conflict {
        what: "session cells are being built".into(),
    }
}

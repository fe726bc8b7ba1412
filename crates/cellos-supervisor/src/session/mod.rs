//! Session cells under one long-lived supervisor (`cellos serve`): many cells at once, each
//! driven by execs and file operations, every action attributed to its caller in the log.
//!
//! [`Sessions`] is the registry the HTTP server drives. Creates, execs and destroys of
//! different cells run in parallel: the registry lock is only held to find a cell, never
//! across a backend call.

mod cell;
mod create;
mod exec;
mod exec_log;
mod files;
mod parents;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use cellos_core::events::{EventKind, LifecycleFrozenData, Outcome};
use cellos_core::policy::AdmissionDecision;
use cellos_core::ports::{IsolationReport, PortError, TeardownReport};
use cellos_core::session::{ExecRequest, FileEntry, FileStat, FileWritten, PtySize};
use cellos_core::spec::{ExecutionCellDocument, PolicyPackDocument, Problem};
use serde::{Deserialize, Serialize};

use cell::SessionCell;
use parents::Parents;

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

impl CellInfo {
    /// A cell of an earlier server that the log shows ended; `None` for one still running
    /// (another process's cell) or never created.
    fn from_history(state: &cellos_core::projection::CellState) -> Option<CellInfo> {
        use cellos_core::projection::Phase;
        if state.phase != Phase::Destroyed {
            return None;
        }
        let created = state.timings.created.clone().unwrap_or_default();
        Some(CellInfo {
            id: state.cell_id.clone(),
            run_id: state.run_id.clone().unwrap_or_default(),
            state: CellState::Destroyed,
            // Only a workload reports a command's end.
            session: state.exit_code.is_none() && state.signal.is_none(),
            spec_hash: state.spec_hash.clone().unwrap_or_default(),
            last_activity: state
                .timings
                .destroyed
                .clone()
                .unwrap_or_else(|| created.clone()),
            created,
            owner: String::new(),
            execs: state.execs,
            isolation: state.isolation.clone().unwrap_or_default(),
            exit_status: state.exit_code,
            teardown: Some(TeardownReport {
                cell_id: state.cell_id.clone(),
                destroyed: true,
                residue: state.residue.clone(),
                unverified: state.unverified.clone(),
                ..TeardownReport::default()
            }),
        })
    }
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

/// How many threads create cells at once (see [`parents`]).
const CELL_PARENTS: usize = 8;
/// Destroyed cells kept for `GET` after their end.
const KEPT_DESTROYED: usize = 1024;

/// The cells of one server.
pub struct Sessions {
    supervisor: Arc<Supervisor>,
    policies: Vec<PolicyPackDocument>,
    config: SessionConfig,
    cells: RwLock<BTreeMap<String, Arc<SessionCell>>>,
    /// Cells of earlier servers, as the event log tells them (see [`Sessions::remember`]).
    history: RwLock<BTreeMap<String, CellInfo>>,
    parents: Parents,
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
            history: RwLock::new(BTreeMap::new()),
            parents: Parents::new(CELL_PARENTS),
        }
    }

    /// Rebuild what earlier servers' cells came to from the fold of the event log: every cell
    /// the log shows ended is listed (destroyed), with its teardown findings, beside this
    /// server's own cells. Call once at start, after reclaiming what a dead server left.
    pub fn remember(&self, projection: &BTreeMap<String, cellos_core::projection::CellState>) {
        let mut history = self.history.write().unwrap_or_else(|p| p.into_inner());
        for state in projection.values() {
            if let Some(info) = CellInfo::from_history(state) {
                history.insert(info.id.clone(), info);
            }
        }
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// This server's cells now, so no lock is held while each is looked at.
    fn snapshot(&self) -> Vec<Arc<SessionCell>> {
        self.cells
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn find(&self, id: &str) -> Result<Arc<SessionCell>, SessionError> {
        self.cells
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| SessionError::NotFound {
                what: format!("cell {id:?}"),
            })
    }

    /// A cell that is running (not paused, not destroyed).
    fn running(&self, id: &str) -> Result<Arc<SessionCell>, SessionError> {
        let cell = self.find(id)?;
        let state = cell.live().state;
        match state {
            CellState::Running => Ok(cell),
            CellState::Paused => Err(SessionError::Conflict {
                what: format!("cell {id:?} is paused; resume it first"),
            }),
            _ => Err(SessionError::Conflict {
                what: format!("cell {id:?} has ended"),
            }),
        }
    }

    /// A cell that still exists (running or paused).
    fn present(&self, id: &str) -> Result<Arc<SessionCell>, SessionError> {
        let cell = self.find(id)?;
        if cell.live().state == CellState::Destroyed {
            return Err(SessionError::Conflict {
                what: format!("cell {id:?} has ended"),
            });
        }
        Ok(cell)
    }

    /// Admit and create a cell; a session cell is running when this returns.
    pub fn create(
        &self,
        caller: &Caller,
        document: ExecutionCellDocument,
    ) -> Result<CellInfo, SessionError> {
        self.create_with_policies(caller, document, &[])
    }

    /// [`Sessions::create`], admitted against `extra` policy packs besides the server's (a
    /// surface's own packs, such as those of an MCP profile); the admission event lists both.
    pub fn create_with_policies(
        &self,
        caller: &Caller,
        document: ExecutionCellDocument,
        extra: &[PolicyPackDocument],
    ) -> Result<CellInfo, SessionError> {
        if let Ok(existing) = self.find(&document.spec.id) {
            if existing.live().state != CellState::Destroyed {
                return Err(SessionError::Conflict {
                    what: format!("cell {:?} already exists", document.spec.id),
                });
            }
        }
        let supervisor = self.supervisor.clone();
        let mut policies = self.policies.clone();
        policies.extend_from_slice(extra);
        let caller_owned = caller.clone();
        let kept = self.config.kept_output_bytes;
        let cell = self
            .parents
            .run(move || create::create(&supervisor, &policies, &caller_owned, document, kept))
            .ok_or_else(|| SessionError::Conflict {
                what: "the server is shutting down".into(),
            })??;
        let info = cell.info();
        let mut cells = self.cells.write().unwrap_or_else(|p| p.into_inner());
        cells.insert(cell.id.clone(), cell);
        forget_old_destroyed(&mut cells);
        Ok(info)
    }

    /// Record that a surface refused `caller`'s request for a cell before creating it (a
    /// request to widen an MCP profile): the refusal is an admission denial in the log, like
    /// one by a policy pack, attributed to the caller.
    pub fn record_denial(
        &self,
        caller: &Caller,
        spec: &cellos_core::spec::ExecutionCellSpec,
        decision: &AdmissionDecision,
    ) -> Result<(), SessionError> {
        let run_id = uuid::Uuid::new_v4().to_string();
        let mut recorder = self.supervisor.recorder(&spec.id, &run_id);
        recorder.set_actor(Some(&caller.subject));
        recorder.admission(&cellos_core::spec::canonical_spec_hash(spec), decision);
        recorder.flush().map_err(SessionError::Events)
    }

    /// Every cell this server holds, live and recently destroyed, by id.
    pub fn list(&self) -> Vec<CellInfo> {
        let cells = self.snapshot();
        let mut infos: BTreeMap<String, CellInfo> = self
            .history
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        infos.extend(cells.iter().map(|c| (c.id.clone(), c.info())));
        infos.into_values().collect()
    }

    pub fn get(&self, id: &str) -> Result<CellInfo, SessionError> {
        match self.find(id) {
            Ok(cell) => Ok(cell.info()),
            Err(not_here) => self
                .history
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(id)
                .cloned()
                .ok_or(not_here),
        }
    }

    /// Destroy a cell (killing its execs) and verify nothing is left; idempotent.
    pub fn destroy(&self, caller: &Caller, id: &str) -> Result<CellInfo, SessionError> {
        let cell = self.find(id)?;
        create::destroy(&self.supervisor, &cell, caller, None)?;
        Ok(cell.info())
    }

    pub fn pause(&self, caller: &Caller, id: &str) -> Result<CellInfo, SessionError> {
        self.freeze(caller, id, true)
    }

    pub fn resume(&self, caller: &Caller, id: &str) -> Result<CellInfo, SessionError> {
        self.freeze(caller, id, false)
    }

    fn freeze(&self, caller: &Caller, id: &str, pause: bool) -> Result<CellInfo, SessionError> {
        let cell = self.present(id)?;
        let backend = self.supervisor.backend();
        let mechanism = if pause {
            backend.pause(id)
        } else {
            backend.resume(id)
        }
        .map_err(exec::port_error)?;
        let kind = if pause {
            EventKind::LifecyclePaused
        } else {
            EventKind::LifecycleResumed
        };
        exec::record_action(
            &cell.recorder,
            caller,
            kind,
            &LifecycleFrozenData { mechanism },
        )?;
        cell.live().state = if pause {
            CellState::Paused
        } else {
            CellState::Running
        };
        cell.touch();
        Ok(cell.info())
    }

    /// Start an exec; its output is kept in the returned log whether or not anyone reads it.
    pub fn exec(
        &self,
        caller: &Caller,
        id: &str,
        request: ExecRequest,
    ) -> Result<ExecStarted, SessionError> {
        let problems = request.problems();
        if !problems.is_empty() {
            return Err(SessionError::BadRequest(problems));
        }
        let cell = self.running(id)?;
        let seq = cell
            .exec_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let exec_id = format!("e{seq}");
        cell.touch();
        let on_end = {
            let cell = Arc::downgrade(&cell);
            Box::new(move || {
                if let Some(cell) = cell.upgrade() {
                    cell.touch();
                }
            })
        };
        let ctx = exec::ExecContext {
            surface: cell.surface()?.clone(),
            recorder: cell.recorder.clone(),
            limits_recorded: cell.limits_recorded.clone(),
            kept_bytes: self.config.kept_output_bytes,
            on_end,
        };
        let (running, stdin) = exec::start(ctx, exec_id.clone(), &request, caller)?;
        let mut live = cell.live();
        live.execs.insert(seq, running.clone());
        SessionCell::trim_execs(&mut live, self.config.kept_execs);
        Ok(ExecStarted {
            id: exec_id,
            log: running.log.clone(),
            stdin,
        })
    }

    fn running_exec(
        &self,
        id: &str,
        exec_id: &str,
    ) -> Result<Arc<exec::RunningExec>, SessionError> {
        let cell = self.find(id)?;
        let seq = exec_id
            .strip_prefix('e')
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| SessionError::NotFound {
                what: format!("exec {exec_id:?} of cell {id:?}"),
            })?;
        let live = cell.live();
        live.execs
            .get(&seq)
            .cloned()
            .ok_or_else(|| SessionError::NotFound {
                what: format!(
                    "exec {exec_id:?} of cell {id:?} (ended execs are kept up to a limit)"
                ),
            })
    }

    /// The kept output of an exec of cell `id` (running or ended).
    pub fn exec_log(&self, id: &str, exec_id: &str) -> Result<Arc<ExecLog>, SessionError> {
        if exec_id == create::WORKLOAD_EXEC {
            if let Some(log) = self.find(id)?.live().workload.clone() {
                return Ok(log);
            }
        }
        Ok(self.running_exec(id, exec_id)?.log.clone())
    }

    /// Kill a running exec's whole process tree.
    pub fn kill_exec(&self, caller: &Caller, id: &str, exec_id: &str) -> Result<(), SessionError> {
        self.running_exec(id, exec_id)?
            .kill(caller)
            .map_err(exec::port_error)
    }

    /// Set the terminal size of a PTY exec.
    pub fn resize_exec(&self, id: &str, exec_id: &str, size: PtySize) -> Result<(), SessionError> {
        self.running_exec(id, exec_id)?
            .control
            .resize(size)
            .map_err(exec::port_error)
    }

    pub fn read_file(
        &self,
        caller: &Caller,
        id: &str,
        path: &str,
    ) -> Result<(FileStat, Vec<u8>), SessionError> {
        files::read(
            &*self.present(id)?,
            caller,
            path,
            self.config.max_file_bytes,
        )
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
        let cell = self.present(id)?;
        files::write(
            &cell,
            caller,
            path,
            content,
            mode,
            self.config.max_file_bytes,
        )
    }

    /// Metadata of a path (not evidence: no content moves).
    pub fn stat(&self, id: &str, path: &str) -> Result<FileStat, SessionError> {
        let cell = self.present(id)?;
        cell.touch();
        cell.surface()?.stat(path).map_err(exec::port_error)
    }

    /// A directory's entries (not evidence: no content moves).
    pub fn list_dir(&self, id: &str, path: &str) -> Result<Vec<FileEntry>, SessionError> {
        let cell = self.present(id)?;
        cell.touch();
        cell.surface()?.list(path).map_err(exec::port_error)
    }

    pub fn mkdir(
        &self,
        caller: &Caller,
        id: &str,
        path: &str,
        parents: bool,
    ) -> Result<(), SessionError> {
        files::mkdir(&*self.present(id)?, caller, path, parents)
    }

    pub fn remove(
        &self,
        caller: &Caller,
        id: &str,
        path: &str,
        recursive: bool,
    ) -> Result<(), SessionError> {
        files::remove(&*self.present(id)?, caller, path, recursive)
    }

    /// Destroy cells whose TTL or idle timeout passed. Call about once a second.
    pub fn sweep(&self) {
        let now = Instant::now();
        let due: Vec<(Arc<SessionCell>, &'static str)> = self
            .snapshot()
            .into_iter()
            .filter_map(|c| c.expired(now).map(|why| (c, why)))
            .collect();
        for (cell, why) in due {
            let system = Caller {
                subject: "system:lifetime".into(),
            };
            if let Err(err) = create::destroy(&self.supervisor, &cell, &system, Some(why)) {
                tracing::warn!(cell = %cell.id, %err, "destroying an expired cell failed");
            }
        }
    }

    /// Destroy every cell and stop the cell-parent threads; or, with `keep`, leave the cells
    /// for the next server to reclaim.
    pub fn shutdown(&self, keep: bool) {
        let cells = self.snapshot();
        if keep {
            // Dropping a backend cell would tear it down here, with no event saying so: leak
            // them instead, so their records and cgroups stay for the next server, whose
            // reclaim records each cell's end.
            for cell in &cells {
                let backend = cell.cell.lock().unwrap_or_else(|p| p.into_inner()).take();
                std::mem::forget(backend);
            }
            return;
        }
        let system = Caller {
            subject: "system:shutdown".into(),
        };
        std::thread::scope(|scope| {
            for cell in &cells {
                let (supervisor, system) = (&self.supervisor, &system);
                scope.spawn(move || {
                    let _ = create::destroy(supervisor, cell, system, Some("the server shut down"));
                });
            }
        });
        self.parents.stop();
    }

    /// Counts for `/metrics`: cells by state.
    pub fn counts(&self) -> BTreeMap<CellState, u64> {
        let mut counts = BTreeMap::new();
        for cell in self.snapshot() {
            *counts.entry(cell.live().state).or_insert(0) += 1;
        }
        counts
    }
}

/// Keep at most [`KEPT_DESTROYED`] destroyed cells (the oldest go first).
fn forget_old_destroyed(cells: &mut BTreeMap<String, Arc<SessionCell>>) {
    let mut destroyed: Vec<(Instant, String)> = cells
        .values()
        .filter(|c| c.live().state == CellState::Destroyed)
        .map(|c| (c.created_at, c.id.clone()))
        .collect();
    if destroyed.len() <= KEPT_DESTROYED {
        return;
    }
    destroyed.sort();
    for (_, id) in &destroyed[..destroyed.len() - KEPT_DESTROYED] {
        cells.remove(id);
    }
}

/// The outcome a session cell ends with: it has no workload, so only teardown can fail it.
fn session_outcome(teardown: &TeardownReport) -> Outcome {
    if teardown.residue_free() {
        Outcome::Succeeded
    } else {
        Outcome::Failed
    }
}

/// How long destroy waits for killed execs to record their end.
const EXEC_END_WAIT: Duration = Duration::from_secs(5);

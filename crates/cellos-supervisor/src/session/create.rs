//! Creating and destroying a registry cell: the same admission, secrets, evidence and teardown
//! as `cellos run`, with the API caller named on every event.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::io::Write;

use cellos_core::events::Outcome;
use cellos_core::ports::{PortError, PortErrorKind, WorkloadExit, WorkloadOutcome};
use cellos_core::session::ExecExit;
use cellos_core::spec::{
    check_capabilities, validate_execution_cell, ExecutionCellDocument, ExecutionCellSpec,
    PolicyPackDocument,
};

use super::cell::{now_rfc3339, Live, SessionCell};
use super::exec_log::{ExecLog, ExecOutcome, Stream};
use super::{session_outcome, Caller, CellState, SessionError, EXEC_END_WAIT};
use crate::evidence::Recorder;
use crate::lifecycle::{Created, Supervisor, SupervisorError};

/// Admit `document` and create its cell, started: a session cell then serves execs; a cell
/// with `run` runs its workload on a driver thread and ends with it.
pub(crate) fn create(
    supervisor: &Arc<Supervisor>,
    policies: &[PolicyPackDocument],
    caller: &Caller,
    document: ExecutionCellDocument,
    kept_bytes: u64,
) -> Result<Arc<SessionCell>, SessionError> {
    validate_execution_cell(&document).map_err(SessionError::Invalid)?;
    let spec = document.spec;
    check_capabilities(&spec, supervisor.capabilities()).map_err(SessionError::Unsupported)?;
    // Unique per create: the cell id may be reused after destroy.
    let run_id = uuid::Uuid::new_v4().to_string();
    let mut recorder = supervisor.recorder(&spec.id, &run_id);
    recorder.set_actor(Some(&caller.subject));
    let output = Arc::new(ExecLog::new(WORKLOAD_EXEC, kept_bytes));
    let (stdout, stderr): (Box<dyn Write + Send>, Box<dyn Write + Send>) = if spec.is_session() {
        (Box::new(std::io::sink()), Box::new(std::io::sink()))
    } else {
        (
            Box::new(LogWriter(output.clone(), Stream::Stdout)),
            Box::new(LogWriter(output.clone(), Stream::Stderr)),
        )
    };
    let created = supervisor
        .admit_and_create(&spec, policies, &run_id, stdout, stderr, &mut recorder)
        .map_err(from_supervisor)?;
    if spec.is_session() {
        start_session(supervisor, spec, run_id, caller, created, recorder)
    } else {
        Ok(start_workload(
            supervisor, spec, run_id, caller, created, recorder, output,
        ))
    }
}

/// The exec id under which a cell with `run` keeps its workload's output.
pub(crate) const WORKLOAD_EXEC: &str = "e0";

/// Started → the session surface; a failure destroys the cell and records the end.
fn start_session(
    supervisor: &Supervisor,
    spec: ExecutionCellSpec,
    run_id: String,
    caller: &Caller,
    created: Created,
    mut recorder: Recorder,
) -> Result<Arc<SessionCell>, SessionError> {
    let Created {
        mut cell,
        spec_hash,
        delivered,
        ..
    } = created;
    let started = recorder
        .started(&spec_hash, cell.isolation())
        .map_err(SessionError::Events)
        .and_then(|()| cell.start().map(drop).map_err(SessionError::Backend))
        .and_then(|()| {
            cell.session().ok_or_else(|| {
                SessionError::Backend(PortError::new(
                    PortErrorKind::MissingFeature,
                    "this cell backend offers no exec surface",
                ))
            })
        });
    let surface = match started {
        Ok(surface) => surface,
        Err(err) => {
            let (teardown, revoked) = supervisor.tear_down(cell.as_mut(), &delivered);
            let _ = recorder.finished(
                &revoked,
                spec.secret_delivery(),
                Outcome::Failed,
                &teardown,
                Some(&err.to_string()),
            );
            return Err(err);
        }
    };
    recorder.set_actor(None);
    let entry = entry(
        &spec,
        run_id,
        spec_hash,
        caller,
        delivered,
        cell.isolation().clone(),
        recorder,
    );
    let entry = SessionCell {
        surface: Some(surface),
        cell: Mutex::new(Some(cell)),
        ..entry
    };
    Ok(Arc::new(entry))
}

/// A cell with `run`: its workload runs on a driver thread (started → completed → export →
/// destroy, as `cellos run` does), its output kept as exec [`WORKLOAD_EXEC`].
fn start_workload(
    supervisor: &Arc<Supervisor>,
    spec: ExecutionCellSpec,
    run_id: String,
    caller: &Caller,
    created: Created,
    mut recorder: Recorder,
    output: Arc<ExecLog>,
) -> Arc<SessionCell> {
    let Created {
        mut cell,
        spec_hash,
        delivered,
        created,
        ..
    } = created;
    recorder.set_actor(None);
    let isolation = cell.isolation().clone();
    let recorder_slot = supervisor.recorder(&spec.id, &run_id);
    let entry = Arc::new(entry(
        &spec,
        run_id,
        spec_hash.clone(),
        caller,
        delivered.clone(),
        isolation,
        recorder_slot,
    ));
    entry.live().workload = Some(output.clone());
    let (supervisor, driven_entry) = (supervisor.clone(), entry.clone());
    std::thread::spawn(move || {
        let ttl_deadline = spec
            .lifetime
            .as_ref()
            .and_then(|l| l.ttl_seconds)
            .map(|ttl| created + Duration::from_secs(ttl));
        let started = Instant::now();
        let driven = supervisor.drive(
            cell.as_mut(),
            &spec,
            &spec_hash,
            ttl_deadline,
            &mut recorder,
        );
        let (teardown, revoked) = supervisor.tear_down(cell.as_mut(), &delivered);
        let (status, outcome, reason) = match &driven {
            Ok((outcome, _, failures)) => {
                let status = crate::lifecycle::exit_status(&outcome.exit);
                let ok = status == 0 && failures.is_empty() && teardown.residue_free();
                let outcome_kind = if ok {
                    Outcome::Succeeded
                } else {
                    Outcome::Failed
                };
                (Some(status), outcome_kind, None)
            }
            Err(err) => (None, Outcome::Failed, Some(err.to_string())),
        };
        let _ = recorder.finished(
            &revoked,
            spec.secret_delivery(),
            outcome,
            &teardown,
            reason.as_deref(),
        );
        let (stdout_bytes, stderr_bytes) = output.counts();
        if let Ok((workload, _, _)) = &driven {
            output.finish(workload_outcome(
                workload,
                started,
                stdout_bytes,
                stderr_bytes,
            ));
        }
        let mut live = driven_entry.live();
        live.exit_status = status;
        live.state = CellState::Destroyed;
        live.teardown = Some(teardown);
    });
    entry
}

/// The registry entry of a created cell (no surface, no backend cell yet).
fn entry(
    spec: &ExecutionCellSpec,
    run_id: String,
    spec_hash: String,
    caller: &Caller,
    delivered: Vec<(String, &'static str)>,
    isolation: cellos_core::ports::IsolationReport,
    recorder: Recorder,
) -> SessionCell {
    let lifetime = spec.lifetime.clone().unwrap_or_default();
    let now = now_rfc3339();
    SessionCell {
        id: spec.id.clone(),
        run_id,
        spec_hash,
        owner: caller.subject.clone(),
        session: spec.is_session(),
        created: now.clone(),
        created_at: Instant::now(),
        ttl: lifetime.ttl_seconds.map(Duration::from_secs),
        idle: lifetime.idle_timeout_seconds.map(Duration::from_secs),
        isolation,
        delivery: spec.secret_delivery(),
        delivered,
        surface: None,
        recorder: Arc::new(Mutex::new(recorder)),
        cell: Mutex::new(None),
        state: Mutex::new(Live {
            state: CellState::Running,
            last_activity: Instant::now(),
            last_activity_rfc3339: now,
            execs: BTreeMap::new(),
            teardown: None,
            exit_status: None,
            workload: None,
        }),
        exec_seq: AtomicU64::new(0),
        limits_recorded: Arc::default(),
    }
}

/// How the workload ended, as the kept output of exec [`WORKLOAD_EXEC`] reports it.
fn workload_outcome(
    outcome: &WorkloadOutcome,
    started: Instant,
    stdout_bytes: u64,
    stderr_bytes: u64,
) -> ExecOutcome {
    let (exit, timed_out) = match &outcome.exit {
        WorkloadExit::Exited { code } => (ExecExit::Exited { code: *code }, false),
        WorkloadExit::Signaled { signal } => (ExecExit::Signaled { signal: *signal }, false),
        WorkloadExit::TimedOut { .. } => (ExecExit::Signaled { signal: 9 }, true),
        WorkloadExit::SpawnFailed { reason } => (
            ExecExit::SpawnFailed {
                reason: reason.clone(),
            },
            false,
        ),
    };
    ExecOutcome {
        exit,
        timed_out,
        killed: false,
        duration_ms: started.elapsed().as_millis() as u64,
        stdout_bytes,
        stderr_bytes,
    }
}

/// Writes a workload's output into its kept log.
struct LogWriter(Arc<ExecLog>, Stream);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.push(self.1, buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The supervisor's reasons as the API's.
fn from_supervisor(err: SupervisorError) -> SessionError {
    match err {
        SupervisorError::Invalid(p) => SessionError::Invalid(p),
        SupervisorError::Unsupported(p) => SessionError::Unsupported(p),
        SupervisorError::Denied(d) => SessionError::Denied(d),
        SupervisorError::Secret { key, source } => SessionError::Refused(PortError::new(
            source.kind,
            format!("secret {key}: {}", source.message),
        )),
        // What the backend refuses for this spec (an id another cell holds, a rootfs that is
        // not there) is the caller's to fix, not a server failure.
        SupervisorError::Backend(e) if e.kind == PortErrorKind::Refused => SessionError::Refused(e),
        SupervisorError::Backend(e) if e.kind == PortErrorKind::NotFound => {
            SessionError::NotFound { what: e.message }
        }
        SupervisorError::Backend(e) => SessionError::Backend(e),
        SupervisorError::Events(e) => SessionError::Events(e),
    }
}

/// Destroy `cell`: kill its execs (their ends are recorded first), tear it down, revoke its
/// secrets and record the end. Idempotent: a second call returns at once. A cell with `run`
/// has its workload killed; its driver thread then tears it down as `cellos run` would.
pub(crate) fn destroy(
    supervisor: &Supervisor,
    cell: &SessionCell,
    caller: &Caller,
    reason: Option<&str>,
) -> Result<(), SessionError> {
    if !cell.session {
        return end_workload(supervisor, cell);
    }
    // Taking the backend cell makes every other destroy of it a no-op.
    let Some(mut backend_cell) = cell.cell.lock().unwrap_or_else(|p| p.into_inner()).take() else {
        return Ok(());
    };
    kill_execs(cell, caller);
    let (teardown, revoked) = supervisor.tear_down(backend_cell.as_mut(), &cell.delivered);
    let outcome = session_outcome(&teardown);
    let recorded = {
        let mut recorder = cell.recorder.lock().unwrap_or_else(|p| p.into_inner());
        recorder.set_actor(Some(&caller.subject));
        recorder.finished(&revoked, cell.delivery, outcome, &teardown, reason)
    };
    let mut live = cell.live();
    live.state = CellState::Destroyed;
    live.teardown = Some(teardown);
    drop(live);
    recorded.map_err(SessionError::Events)
}

/// Kill every running exec and wait (a bounded time) for their ends to be recorded.
fn kill_execs(cell: &SessionCell, by: &Caller) {
    let execs: Vec<_> = cell.live().execs.values().cloned().collect();
    for exec in execs.iter().filter(|e| !e.done()) {
        let _ = exec.kill(by);
    }
    let deadline = Instant::now() + EXEC_END_WAIT;
    for exec in &execs {
        exec.wait_done(deadline.saturating_duration_since(Instant::now()));
    }
}

/// How long a delete waits for a killed workload's cell to be torn down by its driver.
const WORKLOAD_END_WAIT: Duration = Duration::from_secs(30);

/// Kill a running workload and wait until its driver destroyed the cell.
fn end_workload(supervisor: &Supervisor, cell: &SessionCell) -> Result<(), SessionError> {
    if cell.live().state == CellState::Destroyed {
        return Ok(());
    }
    // SIGKILL (9): the workload ends, init kills the rest and the driver tears the cell down.
    let _ = supervisor.backend().signal(&cell.id, 9);
    let deadline = Instant::now() + WORKLOAD_END_WAIT;
    while cell.live().state != CellState::Destroyed {
        if Instant::now() >= deadline {
            return Err(SessionError::Conflict {
                what: format!(
                    "cell {:?}: its workload did not end within {} s of SIGKILL",
                    cell.id,
                    WORKLOAD_END_WAIT.as_secs()
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

//! Running one exec: evidence before it starts, output pumped into its kept log whether or not
//! anyone reads it, a deadline that kills its whole tree, and evidence of how it ended.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use cellos_core::events::{EventKind, ExecCompletedData, ExecStartedData};
use cellos_core::ports::{CellSession, ExecControl, ExecProcess, LimitHit, PortError};
use cellos_core::session::{ExecExit, ExecRequest};

use super::exec_log::{ExecLog, ExecOutcome, Stream};
use super::{Caller, SessionError};
use crate::evidence::Recorder;

/// How long output may still arrive after the command exited: a background process that
/// keeps the pipes open must not hold the exec's end back.
const DRAIN_GRACE: Duration = Duration::from_millis(250);

/// A started exec, as the cell keeps it.
pub(crate) struct RunningExec {
    pub(crate) log: Arc<ExecLog>,
    pub(crate) control: Arc<dyn ExecControl>,
    /// Who killed it before it ended (a caller, or the cell's end: delete, TTL, shutdown).
    pub(crate) killed_by: Mutex<Option<String>>,
}

impl RunningExec {
    /// Kill the exec's whole tree on behalf of `by`.
    pub(crate) fn kill(&self, by: &Caller) -> Result<(), PortError> {
        self.killed_by
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(|| by.subject.clone());
        self.control.kill()
    }

    fn killer(&self) -> Option<String> {
        self.killed_by
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn done(&self) -> bool {
        self.log.outcome().is_some()
    }

    /// Wait up to `limit` for the exec's end to be recorded.
    pub(crate) fn wait_done(&self, limit: Duration) {
        let _ = self.log.read(u64::MAX, 0, Some(limit));
    }
}

/// The write end of an exec's stdin.
pub(crate) type Stdin = Box<dyn std::io::Write + Send>;

/// What an exec needs from its cell.
pub(crate) struct ExecContext {
    pub(crate) surface: Arc<dyn CellSession>,
    pub(crate) recorder: Arc<Mutex<Recorder>>,
    /// The cell's limit counters already recorded (see [`record_limit_hits`]).
    pub(crate) limits_recorded: Arc<Mutex<BTreeMap<String, u64>>>,
    pub(crate) kept_bytes: u64,
    /// Called when the exec ends (the cell's idle clock restarts).
    pub(crate) on_end: Box<dyn Fn() + Send + Sync>,
}

/// Start `request` as exec `id` of the cell.
pub(crate) fn start(
    ctx: ExecContext,
    id: String,
    request: &ExecRequest,
    caller: &Caller,
) -> Result<(Arc<RunningExec>, Option<Stdin>), SessionError> {
    let started_data = ExecStartedData {
        exec_id: id.clone(),
        argv: request.argv.clone(),
        tty: request.pty.is_some(),
        timeout_ms: request.timeout_ms,
        caller: caller.subject.clone(),
    };
    record(&ctx.recorder, caller, EventKind::ExecStarted, &started_data)?;
    let begun = Instant::now();
    let process = match ctx.surface.exec(request) {
        Ok(p) => p,
        Err(err) => {
            let outcome = ExecOutcome {
                exit: ExecExit::SpawnFailed {
                    reason: err.message.clone(),
                },
                timed_out: false,
                killed: false,
                duration_ms: 0,
                stdout_bytes: 0,
                stderr_bytes: 0,
            };
            let _ = record_completed(&ctx.recorder, caller, &started_data, &outcome, None);
            return Err(SessionError::Backend(err));
        }
    };
    let ExecProcess {
        stdin,
        stdout,
        stderr,
        control,
    } = process;
    let log = Arc::new(ExecLog::new(id, ctx.kept_bytes));
    let running = Arc::new(RunningExec {
        log: log.clone(),
        control: Arc::from(control),
        killed_by: Mutex::new(None),
    });
    let drained = Arc::new(Drained::default());
    pump(stdout, Stream::Stdout, &log, &drained);
    if let Some(stderr) = stderr {
        pump(stderr, Stream::Stderr, &log, &drained);
    }
    let waiter = running.clone();
    let caller = caller.clone();
    let timeout = request.timeout_ms.map(Duration::from_millis);
    std::thread::spawn(move || {
        let outcome = finish(&waiter, timeout, begun, &drained);
        let killer = waiter.killer();
        let _ = record_completed(&ctx.recorder, &caller, &started_data, &outcome, killer);
        record_limit_hits(&ctx, &caller);
        waiter.log.finish(outcome);
        (ctx.on_end)();
    });
    Ok((running, stdin))
}

/// Wait for the exit (killing the tree at the deadline), then for the output to drain.
fn finish(
    exec: &RunningExec,
    timeout: Option<Duration>,
    begun: Instant,
    drained: &Drained,
) -> ExecOutcome {
    let deadline = timeout.map(|t| begun + t);
    let mut timed_out = false;
    let exit = match exec.control.wait(deadline) {
        Ok(Some(exit)) => exit,
        Ok(None) => {
            timed_out = true;
            let _ = exec.control.kill();
            wait_after_kill(exec.control.as_ref())
        }
        Err(err) => ExecExit::SpawnFailed {
            reason: format!("lost the exec's report: {err}"),
        },
    };
    drained.wait(DRAIN_GRACE);
    let (stdout_bytes, stderr_bytes) = exec.log.counts();
    ExecOutcome {
        exit,
        timed_out,
        killed: exec.killer().is_some(),
        duration_ms: begun.elapsed().as_millis() as u64,
        stdout_bytes,
        stderr_bytes,
    }
}

fn wait_after_kill(control: &dyn ExecControl) -> ExecExit {
    match control.wait(Some(Instant::now() + Duration::from_secs(10))) {
        Ok(Some(exit)) => exit,
        _ => ExecExit::Signaled { signal: SIGKILL },
    }
}

/// SIGKILL's number (9 on every Linux architecture); spelled out so this crate stays free of
/// host crates.
const SIGKILL: i32 = 9;

/// Counts the exec's streams still open.
#[derive(Default)]
struct Drained {
    open: Mutex<usize>,
    closed: Condvar,
}

impl Drained {
    fn opened(&self) {
        *self.open.lock().unwrap_or_else(|p| p.into_inner()) += 1;
    }

    fn close(&self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        *open = open.saturating_sub(1);
        self.closed.notify_all();
    }

    fn wait(&self, grace: Duration) {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let _ = self
            .closed
            .wait_timeout_while(open, grace, |open| *open > 0);
    }
}

/// Copy a stream into the log until it ends (bytes after the exec's end are dropped by the
/// log; reading on keeps a background writer from blocking on a full pipe).
fn pump(
    mut stream: Box<dyn Read + Send>,
    which: Stream,
    log: &Arc<ExecLog>,
    drained: &Arc<Drained>,
) {
    drained.opened();
    let (log, drained) = (log.clone(), drained.clone());
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => log.push(which, &buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        drained.close();
    });
}

fn record<T: serde::Serialize>(
    recorder: &Mutex<Recorder>,
    caller: &Caller,
    kind: EventKind,
    data: &T,
) -> Result<(), SessionError> {
    let mut recorder = recorder.lock().unwrap_or_else(|p| p.into_inner());
    recorder.set_actor(Some(&caller.subject));
    let result = recorder.record_kind(kind, data);
    recorder.set_actor(None);
    result.map_err(SessionError::Events)
}

fn record_completed(
    recorder: &Mutex<Recorder>,
    caller: &Caller,
    started: &ExecStartedData,
    outcome: &ExecOutcome,
    killed_by: Option<String>,
) -> Result<(), SessionError> {
    let data = ExecCompletedData {
        killed_by,
        exec_id: started.exec_id.clone(),
        argv: started.argv.clone(),
        status: outcome.status(),
        exit: outcome.exit.clone(),
        timed_out: outcome.timed_out,
        killed: outcome.killed,
        duration_ms: outcome.duration_ms,
        stdout_bytes: outcome.stdout_bytes,
        stderr_bytes: outcome.stderr_bytes,
        caller: started.caller.clone(),
    };
    record(recorder, caller, EventKind::ExecCompleted, &data)
}

/// Records `limit.v1.hit` for every limit the cell hit since the last record: a session cell
/// has no workload whose end reports them, so its counters are read after each exec. `count`
/// is the number of new hits; the mechanism names the counter and its total.
fn record_limit_hits(ctx: &ExecContext, caller: &Caller) {
    let hits = ctx.surface.limit_hits();
    let mut recorded = ctx
        .limits_recorded
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    for hit in hits {
        let before = recorded.get(&hit.limit).copied().unwrap_or(0);
        if hit.count <= before {
            continue;
        }
        recorded.insert(hit.limit.clone(), hit.count);
        let new = LimitHit {
            count: hit.count - before,
            ..hit
        };
        let _ = record(&ctx.recorder, caller, EventKind::LimitHit, &new);
    }
}

/// Record an event attributed to `caller` (file operations, pause, ...).
pub(crate) fn record_action<T: serde::Serialize>(
    recorder: &Mutex<Recorder>,
    caller: &Caller,
    kind: EventKind,
    data: &T,
) -> Result<(), SessionError> {
    record(recorder, caller, kind, data)
}

/// Port errors of the exec surface, as the API reports them.
pub(crate) fn port_error(err: PortError) -> SessionError {
    use cellos_core::ports::PortErrorKind;
    match err.kind {
        PortErrorKind::Refused => SessionError::Refused(err),
        PortErrorKind::NotFound => SessionError::NotFound { what: err.message },
        PortErrorKind::TooLarge => SessionError::TooLarge { what: err.message },
        _ => SessionError::Backend(err),
    }
}

//! One command in a cell, to its end: the request built from the tool's arguments, stdin fed,
//! the exit waited for, and the output returned within a cap with a note saying what is
//! missing and how to read it.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cellos_core::session::{ExecExit, ExecRequest};
use cellos_supervisor::{Caller, ExecLog, Sessions, Stream};
use serde::Serialize;

use crate::args::CommandArgs;
use crate::error::ToolError;

/// How long past its own timeout an exec may take to be reported before the call gives up
/// waiting (the kill of its tree and the drain of its pipes happen in that time).
const REPORT_GRACE: Duration = Duration::from_secs(30);

/// What a finished command returns.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecResult {
    /// The exec's id in the cell's log.
    pub exec_id: String,
    pub stdout: String,
    pub stderr: String,
    /// The exit code, when the command exited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that ended it, when one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    pub duration_ms: u64,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    /// Says how much output is not shown and how to read it, when any is missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<String>,
}

/// Where the rest of a long output can be read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Afterwards {
    /// The cell stays: redirect to a file and read it with `sandbox_read_file`.
    CellStays,
    /// The cell is destroyed after the command (`run`).
    CellGoes,
}

/// The exec request of `args`, with the timeout already bounded by the profile.
pub fn request(args: &CommandArgs, timeout_ms: u64) -> Result<ExecRequest, ToolError> {
    let argv = match (&args.command, &args.argv) {
        (Some(command), None) => vec!["/bin/sh".into(), "-c".into(), command.clone()],
        (None, Some(argv)) if !argv.is_empty() => argv.clone(),
        (None, Some(_)) => return Err(bad("argv: give the program and its arguments")),
        (Some(_), Some(_)) => return Err(bad("give either command or argv, not both")),
        (None, None) => {
            return Err(bad(
                "give command (a shell line) or argv (a program and its arguments)",
            ))
        }
    };
    let request = ExecRequest {
        argv,
        env: args.env.clone(),
        cwd: args.cwd.clone(),
        timeout_ms: Some(timeout_ms),
        pty: None,
        stdin: args.stdin.is_some(),
    };
    let problems = request.problems();
    if problems.is_empty() {
        Ok(request)
    } else {
        Err(bad(&problems.join("; ")))
    }
}

fn bad(message: &str) -> ToolError {
    ToolError::BadArgument(message.to_owned())
}

/// The exec a call is waiting for (cell id, exec id), while it runs.
#[derive(Debug, Clone, Default)]
pub struct Waiting(Arc<Mutex<Option<(String, String)>>>);

impl Waiting {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<(String, String)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Held by a tool call while it waits: if the call is dropped before the exec ended (the
/// client cancelled it or went away), the exec's whole process tree is killed, so nothing
/// runs on for a caller who no longer waits for it.
pub struct KillIfAbandoned {
    pub sessions: Arc<Sessions>,
    pub caller: Caller,
    pub waiting: Waiting,
}

impl Drop for KillIfAbandoned {
    fn drop(&mut self) {
        if let Some((cell, exec)) = self.waiting.slot().take() {
            let _ = self.sessions.kill_exec(&self.caller, &cell, &exec);
        }
    }
}

/// One command to run in a cell and how to report it.
pub struct Run<'a> {
    pub id: &'a str,
    pub request: ExecRequest,
    /// Written to the command's stdin, on the side.
    pub stdin: Option<&'a str>,
    /// Output kept in the result per stream.
    pub max_output: usize,
    pub afterwards: Afterwards,
}

/// Run `run.request` in cell `run.id` and wait for its end (blocking); `waiting` names the
/// exec while it runs.
pub fn run(
    sessions: &Sessions,
    caller: &Caller,
    run: Run<'_>,
    waiting: &Waiting,
) -> Result<ExecResult, ToolError> {
    let Run {
        id,
        request,
        stdin,
        max_output,
        afterwards,
    } = run;
    let timeout = Duration::from_millis(request.timeout_ms.unwrap_or(0));
    let started = sessions.exec(caller, id, request)?;
    *waiting.slot() = Some((id.to_owned(), started.id.clone()));
    if let (Some(mut pipe), Some(text)) = (started.stdin, stdin) {
        let bytes = text.as_bytes().to_vec();
        // A command that does not read its stdin must not hold the call: write on the side.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        });
    }
    let log = started.log;
    let outcome = wait(&log, timeout + REPORT_GRACE).ok_or_else(|| ToolError::Exec {
        message: format!(
            "exec {} of cell {id:?} did not report its end within {} s of its timeout",
            log.id(),
            REPORT_GRACE.as_secs()
        ),
        output: serde_json::json!({ "execId": log.id() }),
    })?;
    waiting.slot().take();
    let result = collect(&log, &outcome, max_output, afterwards);
    judge(id, &outcome, result)
}

fn wait(log: &ExecLog, limit: Duration) -> Option<cellos_supervisor::ExecOutcome> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let now = std::time::Instant::now();
        if now >= deadline {
            return None;
        }
        if let Some(outcome) = log.read(u64::MAX, 0, Some(deadline - now)).outcome {
            return Some(outcome);
        }
    }
}

/// A command that ran to its end is a result whatever its status; a timeout, a kill or a
/// command that could not start is a tool error carrying what it wrote.
fn judge(
    id: &str,
    outcome: &cellos_supervisor::ExecOutcome,
    result: ExecResult,
) -> Result<ExecResult, ToolError> {
    let message = if outcome.timed_out {
        format!(
            "timed out: the command ran past its timeoutMs ({} ms) and its whole process tree \
             was killed; give a longer timeoutMs (up to the profile's) or do less per call",
            outcome.duration_ms
        )
    } else if outcome.killed {
        format!(
            "killed: cell {id:?} ended (destroyed, or its TTL ran out) while the command ran; \
             create a new cell to go on"
        )
    } else if let ExecExit::SpawnFailed { reason } = &outcome.exit {
        format!("the command could not be started: {reason}")
    } else {
        return Ok(result);
    };
    let output = serde_json::to_value(&result).unwrap_or_default();
    Err(ToolError::Exec { message, output })
}

fn collect(
    log: &ExecLog,
    outcome: &cellos_supervisor::ExecOutcome,
    max_output: usize,
    afterwards: Afterwards,
) -> ExecResult {
    let read = log.read(0, usize::MAX, None);
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    for frame in read.frames {
        let out = match frame.stream {
            Stream::Stdout => &mut stdout,
            Stream::Stderr => &mut stderr,
        };
        let room = max_output.saturating_sub(out.len());
        out.extend_from_slice(&frame.data[..frame.data.len().min(room)]);
    }
    let notes: Vec<String> = [
        ("stdout", stdout.len() as u64, outcome.stdout_bytes),
        ("stderr", stderr.len() as u64, outcome.stderr_bytes),
    ]
    .into_iter()
    .filter(|(_, shown, total)| shown < total)
    .map(|(name, shown, total)| {
        format!(
            "{name}: {} of {total} bytes not shown (the first {shown} are)",
            total - shown
        )
    })
    .collect();
    let (exit_code, signal) = match outcome.exit {
        ExecExit::Exited { code } => (Some(code), None),
        ExecExit::Signaled { signal } => (None, Some(signal)),
        ExecExit::SpawnFailed { .. } => (None, None),
    };
    ExecResult {
        exec_id: log.id().to_owned(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        exit_code,
        signal,
        duration_ms: outcome.duration_ms,
        stdout_bytes: outcome.stdout_bytes,
        stderr_bytes: outcome.stderr_bytes,
        truncated: (!notes.is_empty()).then(|| truncation_note(&notes, afterwards)),
    }
}

fn truncation_note(notes: &[String], afterwards: Afterwards) -> String {
    let how = match afterwards {
        Afterwards::CellStays => {
            "to read all of it, run the command again with its output sent to a file \
             (`CMD > /tmp/out.txt 2>&1`) and read that file with sandbox_read_file, in parts \
             with offset and length"
        }
        Afterwards::CellGoes => {
            "run destroys its cell, so to read all of it create a cell with sandbox_create, \
             run the command with sandbox_exec sending its output to a file \
             (`CMD > /tmp/out.txt 2>&1`), and read that file with sandbox_read_file, in parts \
             with offset and length"
        }
    };
    format!("output truncated: {}; {how}", notes.join("; "))
}

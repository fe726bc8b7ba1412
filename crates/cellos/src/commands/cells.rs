//! `run`, `ps`, `logs`, `kill`, `gc`, `doctor`: cells on this host.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use cellos_adapters::logs::{cell_log_dir, Stream, TeeLog, DEFAULT_LOG_CAP_BYTES};
use cellos_core::ports::{CellBackend, EventSink};
use cellos_core::spec::{parse_execution_cell, Problem};
use cellos_linux::backend::InitMode;
use cellos_linux::netscope::NetworkConfig;
use cellos_supervisor::{RunRequest, SupervisorError};
use nix::sys::signal::Signal;

use crate::commands::spec::{load_policies, read_text};
use crate::compose;
use crate::exit::Failure;

pub fn run(
    home: &Path,
    spec_path: &Path,
    policies: &[PathBuf],
    secrets_dir: Option<PathBuf>,
    quiet: bool,
    network: NetworkConfig,
) -> Result<u8, Failure> {
    let text = read_text(spec_path)?;
    // Printed as `cellos validate` prints it, so both commands refuse a spec in the same words.
    let document = parse_execution_cell(&text).map_err(|e| {
        eprintln!("{}: {e}", spec_path.display());
        Failure::cellos(format!("{}: not a valid document", spec_path.display()))
    })?;
    let policies = load_policies(policies).map_err(|e| Failure::cellos(e.to_string()))?;
    let sink = compose::deferred_log(home)?;
    let init_mode = compose::run_init_mode(&document.spec);
    let mut supervisor = compose::supervisor(home, sink, secrets_dir, network.clone(), init_mode)?;

    // Crash reconciliation first: a previous supervisor may have been killed mid-run.
    match supervisor.gc() {
        Ok(gc) => {
            for teardown in &gc.reclaimed {
                eprintln!("cellos: reclaimed leftovers of cell {}", teardown.cell_id);
            }
        }
        Err(e) => eprintln!("cellos: gc before run failed: {e}"),
    }
    // A reclaimed cell's event was signed: this process now holds the key, so init is exec'd.
    if init_mode == InitMode::InClone && compose::run_init_mode(&document.spec) == InitMode::Exec {
        supervisor = supervisor.with_backend(compose::backend(home, network, InitMode::Exec)?);
    }

    let cell_id = document.spec.id.clone();
    let live = |stream: Stream| -> Option<Box<dyn Write + Send>> {
        match (quiet, stream) {
            (true, _) => None,
            (false, Stream::Stdout) => Some(Box::new(std::io::stdout())),
            (false, Stream::Stderr) => Some(Box::new(std::io::stderr())),
        }
    };
    let log_error =
        |e: std::io::Error| Failure::cellos(format!("cannot keep workload output: {e}"));
    let (stdout, _) = TeeLog::create(
        home,
        &cell_id,
        Stream::Stdout,
        DEFAULT_LOG_CAP_BYTES,
        live(Stream::Stdout),
    )
    .map_err(log_error)?;
    let (stderr, _) = TeeLog::create(
        home,
        &cell_id,
        Stream::Stderr,
        DEFAULT_LOG_CAP_BYTES,
        live(Stream::Stderr),
    )
    .map_err(log_error)?;

    let forwarding = forward_signals(supervisor.backend().clone(), cell_id.clone());
    let result = supervisor.run(RunRequest {
        document: &document,
        policies: &policies,
        run_id: uuid::Uuid::new_v4().to_string(),
        stdout: Box::new(stdout),
        stderr: Box::new(stderr),
        on_created: Some(Box::new(forwarding)),
    });
    match result {
        Ok(report) => {
            eprintln!("cellos: {}: {}", report.cell_id, report.reason());
            Ok(u8::try_from(report.exit_code().clamp(0, 255)).unwrap_or(u8::MAX))
        }
        Err(SupervisorError::Invalid(problems)) => {
            Err(problem_failure(spec_path, "invalid spec", &problems))
        }
        Err(SupervisorError::Unsupported(problems)) => Err(problem_failure(
            spec_path,
            "this build cannot serve the spec",
            &problems,
        )),
        Err(e) => Err(Failure::cellos(e.to_string())),
    }
}

/// Prints every problem as `file: path: message` (as `cellos validate` does) and sums them up.
fn problem_failure(spec_path: &Path, what: &str, problems: &[Problem]) -> Failure {
    for problem in problems {
        eprintln!("{}: {problem}", spec_path.display());
    }
    Failure::cellos(format!(
        "{}: {what} ({} problem(s))",
        spec_path.display(),
        problems.len()
    ))
}

/// SIGTERM, SIGINT and SIGHUP sent to the supervisor are passed on to the workload, so the
/// supervisor itself stays alive to finish export, teardown and evidence. The handlers are
/// installed now (a signal that arrives before the cell exists is kept, and delivered once it
/// does); the returned closure starts the forwarding thread, for when the cell exists, so
/// that the supervisor is still single-threaded when it clones the cell's init.
fn forward_signals(backend: Arc<dyn CellBackend>, cell_id: String) -> impl FnOnce() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]);
    if signals.is_err() {
        eprintln!(
            "cellos: cannot install signal forwarding; signals to cellos will not reach the cell"
        );
    }
    move || {
        let Ok(mut signals) = signals else { return };
        std::thread::spawn(move || {
            for signal in signals.forever() {
                let _ = backend.signal(&cell_id, signal);
            }
        });
    }
}

pub fn ps(home: &Path, json: bool) -> Result<u8, Failure> {
    let backend = compose::backend(home, NetworkConfig::default(), InitMode::Exec)?;
    let cells = backend.list().map_err(|e| Failure::other(e.to_string()))?;
    if json {
        let text = serde_json::to_string_pretty(&cells)
            .map_err(|e| Failure::other(format!("cannot print cells: {e}")))?;
        println!("{text}");
        return Ok(0);
    }
    println!(
        "{:<24} {:<38} {:>8} {:>12} STATE",
        "CELL", "RUN", "PID", "CREATED"
    );
    for cell in cells {
        println!(
            "{:<24} {:<38} {:>8} {:>12} {}",
            cell.cell_id,
            cell.run_id,
            cell.init_pid
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into()),
            cell.created_unix,
            if cell.supervised {
                "running"
            } else {
                "orphaned (cellos gc)"
            }
        );
    }
    Ok(0)
}

pub fn logs(home: &Path, cell_id: &str) -> Result<u8, Failure> {
    let dir = cell_log_dir(home, cell_id);
    if !dir.is_dir() {
        return Err(Failure::other(format!(
            "no kept output for cell {cell_id:?} in {}",
            dir.display()
        )));
    }
    for (stream, mut out) in [
        (
            Stream::Stdout,
            Box::new(std::io::stdout()) as Box<dyn Write>,
        ),
        (Stream::Stderr, Box::new(std::io::stderr())),
    ] {
        match std::fs::read(dir.join(stream.file_name())) {
            Ok(bytes) => {
                let _ = out.write_all(&bytes);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Failure::other(format!("{}: {e}", dir.display()))),
        }
    }
    Ok(0)
}

fn parse_signal(name: &str) -> Result<i32, Failure> {
    if let Ok(n) = name.parse::<i32>() {
        return Signal::try_from(n)
            .map(|s| s as i32)
            .map_err(|_| Failure::other(format!("{n} is not a signal number")));
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&full).map(|s| s as i32).map_err(|_| {
        Failure::other(format!(
            "{name:?} is not a signal name (try TERM, KILL, INT)"
        ))
    })
}

pub fn kill(home: &Path, cell_id: &str, signal: &str) -> Result<u8, Failure> {
    let signal = parse_signal(signal)?;
    let backend = compose::backend(home, NetworkConfig::default(), InitMode::Exec)?;
    backend
        .signal(cell_id, signal)
        .map_err(|e| Failure::other(e.to_string()))?;
    Ok(0)
}

pub fn pause(home: &Path, cell_id: &str) -> Result<u8, Failure> {
    freeze(home, cell_id, true)
}

pub fn resume(home: &Path, cell_id: &str) -> Result<u8, Failure> {
    freeze(home, cell_id, false)
}

/// Pause (`paused`) or resume a running cell, then record it in the host's signed log.
fn freeze(home: &Path, cell_id: &str, paused: bool) -> Result<u8, Failure> {
    let backend = compose::backend(home, NetworkConfig::default(), InitMode::Exec)?;
    let done = if paused {
        backend.pause(cell_id)
    } else {
        backend.resume(cell_id)
    };
    let mechanism = done.map_err(|e| Failure::other(e.to_string()))?;
    let (log, factory) = compose::event_log(home, "cli")?;
    let event =
        factory.lifecycle_frozen(time::OffsetDateTime::now_utc(), cell_id, paused, &mechanism);
    log.emit(event)
        .map_err(|e| Failure::cellos(format!("record the event: {e}")))?;
    let verb = if paused { "paused" } else { "resumed" };
    println!("{verb} {cell_id} ({mechanism})");
    Ok(0)
}

pub fn gc(home: &Path) -> Result<u8, Failure> {
    let sink = compose::deferred_log(home)?;
    let supervisor =
        compose::supervisor(home, sink, None, NetworkConfig::default(), InitMode::Exec)?;
    let report = supervisor.gc().map_err(|e| Failure::other(e.to_string()))?;
    for teardown in &report.reclaimed {
        let removed: Vec<String> = teardown
            .removed
            .iter()
            .map(|r| format!("{} {}", r.class, r.detail))
            .collect();
        println!("reclaimed {}: {}", teardown.cell_id, removed.join(", "));
        for residue in &teardown.residue {
            println!("  still present: {} {}", residue.class, residue.detail);
        }
        for unverified in &teardown.unverified {
            println!("  unverified: {}: {}", unverified.class, unverified.reason);
        }
    }
    for (cell_id, err) in &report.failed {
        eprintln!("cellos: could not reclaim {cell_id}: {err}");
    }
    if report.reclaimed.is_empty() && report.failed.is_empty() {
        println!("nothing to reclaim");
    }
    let clean = report.failed.is_empty() && report.reclaimed.iter().all(|t| t.residue_free());
    Ok(if clean { 0 } else { 1 })
}

pub fn doctor(json: bool) -> Result<u8, Failure> {
    use cellos_linux::doctor::CheckStatus;
    let checks = cellos_linux::doctor::probe();
    if json {
        let text = serde_json::to_string_pretty(&checks)
            .map_err(|e| Failure::other(format!("cannot print checks: {e}")))?;
        println!("{text}");
    } else {
        for check in &checks {
            let mark = match check.status {
                CheckStatus::Ok => "ok",
                CheckStatus::Missing => "MISSING",
                CheckStatus::Unverified => "UNCHECKED",
            };
            println!("{mark:<9} {:<28} {}", check.feature, check.detail);
            if let Some(fix) = &check.fix {
                println!("{:<9} {:<28} fix: {fix}", "", "");
            }
        }
    }
    Ok(if checks.iter().all(|c| c.available()) {
        0
    } else {
        1
    })
}

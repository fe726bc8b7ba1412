//! In-cell telemetry of a Linux cell (`spec.telemetry.enabled`), host side.
//!
//! Before the workload exists, the backend binds the cell's receiver socket in the cell's run
//! directory (`<state>/run/<cell>.telemetry/telemetry.sock`) and subscribes the host process
//! probe to the cell's cgroups. The plan then binds that socket into the cell at
//! [`IN_CELL_SOCKET_PATH`] and the agent binary, read-only, at [`IN_CELL_AGENT_PATH`]; init
//! starts the agent beside the workload, as the workload's uid, confined like it. The host
//! trusts only which socket the bytes came from: the socket file is this cell's alone.
//! Both binds are detached trees the supervisor (host root) opens (see [`crate::trees`]), so
//! neither the agent's install directory nor the state directory needs to be searchable by
//! the cell's ids: the cell only ever looks up its own `/run/cellos`.
//!
//! One thread per cell ([`TelemetryRunner`]) drives the session: it polls every
//! [`POLL_INTERVAL`], turns every result into a catalogue event built with the run's factory
//! and hands it to the supervisor's [`RuntimeEvidence`] (which seals it), samples the cell's
//! cgroup counters while the workload runs, and at teardown settles every pending comparison
//! and reports the channel's counters (`telemetry.v1.reported`). A dedicated thread because
//! the supervisor is synchronous and blocks in `wait`; the session itself never blocks.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cellos_core::events::EventFactory;
use cellos_core::ports::{Residue, RuntimeEvidence};
use cellos_core::spec::ExecutionCellSpec;
use cellos_telemetry::receiver::{HostStamp, ReceiverConfig, SOCKET_FILE_NAME};
use cellos_telemetry::session::{CellTelemetry, CellTelemetryConfig};
use time::OffsetDateTime;

use crate::error::LinuxError;
use crate::plan::{AgentPlan, MountPlan, DEFAULT_PATH};
use crate::record;
use crate::residue::CheckError;

pub use cellos_telemetry::receiver::IN_CELL_SOCKET_PATH;

/// Where the agent binary is bound (read-only) inside the cell.
pub const IN_CELL_AGENT_PATH: &str = "/run/cellos/bin/cellos-telemetry-agent";
/// File name of the agent binary, looked up next to the `cellos` executable.
pub const AGENT_BINARY: &str = "cellos-telemetry-agent";
/// Default keep-alive window: silence this long while the workload runs is reported.
pub const DEFAULT_SILENCE: Duration = cellos_telemetry::keepalive::DEFAULT_WINDOW;
/// Environment variable the composition root reads to override the keep-alive window (ms).
pub const SILENCE_ENV: &str = "CELLOS_TELEMETRY_SILENCE_MS";
/// Default interval between `telemetry.v1.cgroup_sampled` events while the workload runs.
pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_secs(5);
/// How often the runner polls the session (it never blocks, so this only bounds latency).
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Host-side telemetry settings of the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetrySettings {
    /// The agent binary on the host; `None` refuses cells with `spec.telemetry.enabled`.
    pub agent_exe: Option<PathBuf>,
    /// Keep-alive window (the agent is told to send keep-alives five times per window).
    pub silence: Duration,
    /// Interval between cgroup samples while the workload runs.
    pub sample_interval: Duration,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings {
            agent_exe: None,
            silence: DEFAULT_SILENCE,
            sample_interval: DEFAULT_SAMPLE_INTERVAL,
        }
    }
}

impl TelemetrySettings {
    /// The agent binary, checked: absolute and a regular file.
    fn agent_exe(&self) -> Result<&Path, LinuxError> {
        let exe = self.agent_exe.as_deref().ok_or_else(|| {
            LinuxError::missing(
                "in-cell telemetry agent (spec.telemetry.enabled)",
                format!(
                    "install {AGENT_BINARY} next to the cellos executable (cargo build -p \
                     {AGENT_BINARY}), or set telemetry.enabled: false"
                ),
            )
        })?;
        if !exe.is_absolute() || !exe.is_file() {
            return Err(LinuxError::missing(
                format!("in-cell telemetry agent {}", exe.display()),
                format!("install {AGENT_BINARY} there (an absolute path to the binary)"),
            ));
        }
        Ok(exe)
    }
}

/// The cell's telemetry directory in the run directory (holds only the socket).
pub fn socket_dir(state_dir: &Path, cell_id: &str) -> PathBuf {
    record::run_dir(state_dir).join(format!("{cell_id}.telemetry"))
}

/// What the plan needs for a telemetry cell: the two binds and how init starts the agent.
pub fn plan_parts(
    settings: &TelemetrySettings,
    state_dir: &Path,
    cell_id: &str,
) -> Result<(Vec<MountPlan>, AgentPlan), LinuxError> {
    let agent_exe = settings.agent_exe()?;
    let socket = socket_dir(state_dir, cell_id).join(SOCKET_FILE_NAME);
    let mounts = vec![
        // Read-only mount, writable inode: connect(2) checks the socket's mode (0666), never
        // the mount's flags, and the workload cannot replace or remove what is bound here.
        MountPlan::Bind {
            source: socket,
            target: IN_CELL_SOCKET_PATH.to_owned(),
            read_only: true,
            is_dir: false,
            fd: 0,
        },
        MountPlan::Bind {
            source: agent_exe.to_path_buf(),
            target: IN_CELL_AGENT_PATH.to_owned(),
            read_only: true,
            is_dir: false,
            fd: 0,
        },
    ];
    let keepalive_ms = (settings.silence.as_millis() / 5).clamp(20, 2000);
    let agent = AgentPlan {
        path: IN_CELL_AGENT_PATH.to_owned(),
        env: vec![
            format!("PATH={DEFAULT_PATH}"),
            format!("CELLOS_TELEMETRY_SOCK={IN_CELL_SOCKET_PATH}"),
            format!("CELLOS_TELEMETRY_KEEPALIVE_MS={keepalive_ms}"),
        ],
    };
    Ok((mounts, agent))
}

/// Messages from the cell to its runner thread.
enum Command {
    WorkloadStarted,
    WorkloadExited,
}

/// Everything the runner thread needs to stamp and emit.
pub struct RunnerContext<'a> {
    pub state_dir: &'a Path,
    pub spec: &'a ExecutionCellSpec,
    pub spec_hash: &'a str,
    pub run_id: &'a str,
    pub cgroup_dirs: Vec<PathBuf>,
    pub factory: EventFactory,
    pub evidence: Arc<dyn RuntimeEvidence>,
}

/// One cell's running telemetry: its socket, its probe and the thread that drives them.
pub struct TelemetryRunner {
    dir: PathBuf,
    commands: Option<Sender<Command>>,
    thread: Option<JoinHandle<()>>,
}

impl TelemetryRunner {
    /// Bind the cell's socket and subscribe its probe (before anything of the cell runs), then
    /// start the thread that polls them.
    pub fn start(
        settings: &TelemetrySettings,
        ctx: RunnerContext<'_>,
    ) -> Result<TelemetryRunner, LinuxError> {
        let cell_id = ctx.spec.id.clone();
        let dir = socket_dir(ctx.state_dir, &cell_id);
        // A directory left by a crashed supervisor holds only a dead socket.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir)
            .map_err(|e| LinuxError::io(format!("create {}", dir.display()), e))?;
        let mut receiver = ReceiverConfig::new(
            dir.join(SOCKET_FILE_NAME),
            HostStamp {
                cell_id: cell_id.clone(),
                run_id: ctx.run_id.to_owned(),
                spec_hash: ctx.spec_hash.to_owned(),
            },
        );
        receiver.keepalive_window = settings.silence;
        let session = CellTelemetry::start(CellTelemetryConfig::new(
            receiver,
            ctx.spec.clone(),
            ctx.cgroup_dirs,
        ))
        .map_err(|e| {
            let _ = std::fs::remove_dir_all(&dir);
            LinuxError::Setup {
                what: "spec.telemetry: start the cell's telemetry".into(),
                detail: e.to_string(),
            }
        })?;
        let (tx, rx) = mpsc::channel();
        let run_id = ctx.run_id.to_owned();
        let (factory, evidence, sample_interval) =
            (ctx.factory, ctx.evidence, settings.sample_interval);
        let thread = std::thread::Builder::new()
            .name(format!("telemetry-{cell_id}"))
            .spawn(move || {
                let emitter = Emitter {
                    cell_id,
                    run_id,
                    factory,
                    evidence,
                };
                drive(session, &rx, &emitter, sample_interval)
            })
            .map_err(|e| {
                let _ = std::fs::remove_dir_all(&dir);
                LinuxError::io("spawn the cell's telemetry thread", e)
            })?;
        Ok(TelemetryRunner {
            dir,
            commands: Some(tx),
            thread: Some(thread),
        })
    }

    /// The workload exec'd: silence counts from now.
    pub fn workload_started(&self) {
        self.send(Command::WorkloadStarted);
    }

    /// The workload ended: silence no longer counts.
    pub fn workload_exited(&self) {
        self.send(Command::WorkloadExited);
    }

    fn send(&self, command: Command) {
        if let Some(tx) = &self.commands {
            // The thread only ends when told to (or by panicking); either way there is
            // nobody left to tell.
            let _ = tx.send(command);
        }
    }

    /// Stop: emit what is left and the final report, remove the socket and its directory.
    /// Call once the cell's processes are gone. Returns what could not be removed.
    pub fn finish(&mut self) -> Vec<Residue> {
        // Dropping the sender ends the thread's loop.
        self.commands = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let mut residue = Vec::new();
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => residue.push(Residue {
                class: "file".into(),
                detail: format!("telemetry socket directory {}: {e}", self.dir.display()),
            }),
        }
        residue
    }
}

impl Drop for TelemetryRunner {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Builds and hands over the cell's events.
struct Emitter {
    cell_id: String,
    run_id: String,
    factory: EventFactory,
    evidence: Arc<dyn RuntimeEvidence>,
}

/// The runner thread: poll until the cell is torn down, then settle and report.
fn drive(
    mut session: CellTelemetry,
    commands: &mpsc::Receiver<Command>,
    out: &Emitter,
    sample_interval: Duration,
) {
    let mut running = false;
    let mut next_sample = Instant::now();
    loop {
        match commands.recv_timeout(POLL_INTERVAL) {
            Ok(Command::WorkloadStarted) => {
                session.workload_started();
                running = true;
                next_sample = Instant::now() + sample_interval;
            }
            Ok(Command::WorkloadExited) => {
                session.workload_exited();
                running = false;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        for event in session.poll() {
            out.evidence
                .observe(event.to_event(&out.factory, &out.cell_id));
        }
        if running && Instant::now() >= next_sample {
            if let Some(sample) = session.sample_cgroup() {
                out.evidence.observe(out.factory.cgroup_sampled(
                    OffsetDateTime::now_utc(),
                    &out.cell_id,
                    &out.run_id,
                    &sample,
                ));
            }
            next_sample = Instant::now() + sample_interval;
        }
    }
    let (events, report) = session.finish();
    for event in events {
        out.evidence
            .observe(event.to_event(&out.factory, &out.cell_id));
    }
    out.evidence.observe(out.factory.telemetry_reported(
        OffsetDateTime::now_utc(),
        &out.cell_id,
        &report.event_data(&out.run_id),
    ));
}

/// Residue check: the cell's telemetry directory (and socket) must be gone after teardown.
pub fn residue(state_dir: &Path, cell_id: &str) -> Result<Option<String>, CheckError> {
    let dir = socket_dir(state_dir, cell_id);
    Ok(crate::residue::file_exists(&dir)?
        .then(|| format!("telemetry socket directory {} still exists", dir.display())))
}

/// Crash reconciliation: remove a dead cell's telemetry directory. Returns what was removed.
pub fn reclaim(state_dir: &Path, cell_id: &str) -> Option<Residue> {
    let dir = socket_dir(state_dir, cell_id);
    std::fs::remove_dir_all(&dir).ok().map(|()| Residue {
        class: "file".into(),
        detail: dir.display().to_string(),
    })
}

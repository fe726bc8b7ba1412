//! [`LinuxBackend`] and [`LinuxCell`]: the `CellBackend`/`Cell` ports on Linux namespaces.
//!
//! create: four stages, in `create/` (whose module docs tell the sequence); it returns while
//! init builds the root and parks the workload just before its exec. start: wait for `Ready`, tell init to let the workload exec,
//! wait for `Started` (setup failures surface here, before anything of the workload ran).
//! wait: status messages with a deadline. destroy: SIGKILL init (the kernel then kills the
//! whole pid namespace and frees the mount namespace), reap, remove the cgroup and the record,
//! then verify that nothing is left.
//!
//! With `spec.telemetry.enabled`, destroy finishes the telemetry (final events, report,
//! socket removed) once the cell's last process is gone. See [`crate::telemetry`].

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cellos_core::ports::{
    Cell, CellBackend, CellRequest, CellSession, CellSummary, IsolationReport, PortError,
    PortErrorKind, Residue, TeardownReport, WorkloadExit, WorkloadOutcome,
};
use cellos_core::spec::ExecutionCellSpec;

use crate::cgroup::{self, CellCgroup};
pub use crate::clone::InitMode;
use crate::clone::{reap, InitExe};
use crate::create;
use crate::error::LinuxError;
use crate::idmap::IdMap;
use crate::init::FORWARDED_SIGNALS;
use crate::landlock_rules;
use crate::netscope::egress::Egress;
use crate::netscope::{self, NetRecord, NetworkConfig};
use crate::pidfd;
use crate::plan::{BpfInstruction, WORKLOAD_ID};
use crate::protocol::{
    StartStep, StatusEvent, StatusMsg, StatusReader, CMD_KILL, CMD_START, INIT_ARG,
};
use crate::record::{self, RunRecord};
use crate::residue::{self, CheckError, Findings, HostSources, Proc};
use crate::safe_path;
use crate::seccomp::{self, SeccompProfile};
use crate::session::{lock, Control, LinuxSession, SharedSession};
use crate::telemetry::{self, TelemetryRunner, TelemetrySettings};

/// Default base of the host id range cells map to: above the ranges systemd hands to
/// containers and dynamic users, and below 2^31 (tools mishandle larger ids).
pub const DEFAULT_UID_BASE: u32 = 0x7000_0000;

/// How long init gets to act on a kill command before it is SIGKILLed itself.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(2);

/// Host-side settings of the backend.
#[derive(Debug, Clone)]
pub struct LinuxBackendConfig {
    /// `CELLOS_HOME`: holds `run/` (records), `root/` (build mount point), `etc-mask/`, `oci/`.
    pub state_dir: PathBuf,
    /// Absolute path of the executable that becomes the cell's init.
    pub init_exe: PathBuf,
    /// Arguments after the executable; `["__cell-init"]` for binaries calling
    /// [`crate::init::run_if_init`].
    pub init_args: Vec<String>,
    /// Whether init runs in the clone or is exec'd (see [`InitMode`]).
    pub init_mode: InitMode,
    /// Host uid/gid that cell id 0 maps to (65536 ids are mapped).
    pub uid_base: u32,
    /// In-cell telemetry: the agent binary, the keep-alive window, the sampling interval.
    pub telemetry: TelemetrySettings,
    /// Address pool and DNS upstream of networked cells.
    pub network: NetworkConfig,
    /// Where the residue check after destroy and reclaim reads the host.
    pub residue_sources: HostSources,
}

impl LinuxBackendConfig {
    /// Defaults: init arguments `["__cell-init"]`, init exec'd ([`InitMode::Exec`] suits any
    /// process), uid base [`DEFAULT_UID_BASE`], no telemetry agent (cells with
    /// `spec.telemetry.enabled` are refused until one is set).
    pub fn new(state_dir: impl Into<PathBuf>, init_exe: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            init_exe: init_exe.into(),
            init_args: vec![INIT_ARG.to_owned()],
            init_mode: InitMode::Exec,
            uid_base: DEFAULT_UID_BASE,
            telemetry: TelemetrySettings::default(),
            network: NetworkConfig::default(),
            residue_sources: HostSources::host(),
        }
    }
}

/// The Linux cell backend.
pub struct LinuxBackend {
    pub(crate) config: LinuxBackendConfig,
    /// `config.init_exe`, opened once (see [`InitExe`]).
    pub(crate) init_exe: InitExe,
    pub(crate) id_map: IdMap,
    seccomp: OnceLock<(SeccompProfile, Vec<BpfInstruction>)>,
    /// The kernel's Landlock ABI (`None`: no Landlock).
    landlock_kernel: OnceLock<Option<u32>>,
}

impl LinuxBackend {
    /// Check privileges and prepare the state directory.
    pub fn new(config: LinuxBackendConfig) -> Result<LinuxBackend, LinuxError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(LinuxError::missing(
                "root privileges for the Linux cell backend",
                "run cellos as root: mapping the cell's 65536 ids onto an unprivileged host range \
                 and creating its cgroups need them (rootless cells are not supported)",
            ));
        }
        let id_map = IdMap::cell_range(config.uid_base)?;
        if !config.init_exe.is_absolute() {
            return Err(LinuxError::Refused {
                what: format!(
                    "init executable '{}' must be an absolute path",
                    config.init_exe.display()
                ),
            });
        }
        let init_exe = InitExe::open(&config.init_exe)?;
        let mut config = config;
        let runs = record::run_dir(&config.state_dir);
        std::fs::create_dir_all(&runs)
            .map_err(|e| LinuxError::io(format!("create {}", runs.display()), e))?;
        // Paths under the state directory (overlay mask, image store) are opened without
        // following symlinks; resolve the ones in the configured path once, here.
        config.state_dir = std::fs::canonicalize(&config.state_dir)
            .map_err(|e| LinuxError::io(format!("resolve {}", config.state_dir.display()), e))?;
        Ok(LinuxBackend {
            config,
            init_exe,
            id_map,
            seccomp: OnceLock::new(),
            landlock_kernel: OnceLock::new(),
        })
    }

    pub fn state_dir(&self) -> &Path {
        &self.config.state_dir
    }

    /// Host uid (and gid) the workload runs as: a read-write host directory (a declared mount
    /// with `readOnly: false`, or a workspace `source`) must be writable by it.
    pub fn workload_host_id(&self) -> u32 {
        self.id_map
            .to_host(WORKLOAD_ID)
            .unwrap_or(self.config.uid_base)
    }

    pub(crate) fn seccomp(&self) -> Result<&(SeccompProfile, Vec<BpfInstruction>), LinuxError> {
        if let Some(s) = self.seccomp.get() {
            return Ok(s);
        }
        let profile = seccomp::default_profile()?;
        let program = profile
            .program()
            .iter()
            .map(|i| BpfInstruction {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k: i.k,
            })
            .collect();
        Ok(self.seccomp.get_or_init(|| (profile, program)))
    }

    /// The Landlock ABI a cell requiring `min_abi` gets (see [`landlock_rules::abi_for`]). The
    /// workload's init applies exactly this level and refuses to start under any other, so the
    /// isolation report is exact. The kernel is asked once per backend.
    pub(crate) fn landlock_abi(&self, min_abi: u32) -> Result<Option<u32>, LinuxError> {
        let kernel = *self.landlock_kernel.get_or_init(landlock_rules::kernel_abi);
        landlock_rules::abi_for(min_abi, kernel)
    }

    /// The host uid the cell's root maps to.
    pub(crate) fn host_root(&self) -> u32 {
        self.id_map.to_host(0).unwrap_or(self.config.uid_base)
    }

    fn create_cell(&self, mut request: CellRequest<'_>) -> Result<LinuxCell, LinuxError> {
        let planned = create::plan::stage(self, &request)?;
        let secrets = std::mem::take(&mut request.secrets);
        let host = create::host::stage(self, &request, planned.config, planned.telemetry, secrets)?;
        let spawned = create::spawn::stage(self, host)?;
        Ok(create::attach::stage(
            self,
            request,
            planned.report,
            spawned,
        )?)
    }
}

impl CellBackend for LinuxBackend {
    fn name(&self) -> &'static str {
        "linux"
    }

    fn create(&self, request: CellRequest<'_>) -> Result<Box<dyn Cell>, PortError> {
        Ok(Box::new(self.create_cell(request)?))
    }

    fn reclaim(&self, cell_id: &str) -> Result<TeardownReport, PortError> {
        Ok(reclaim(
            &self.config.state_dir,
            cell_id,
            &self.config.residue_sources,
        )?)
    }

    /// Cells of this state directory whose supervisor is gone. Only records count: every
    /// cell's record exists before its cgroup and is removed after it, while a cgroup without
    /// a record here may belong to a live cell of another state directory.
    fn orphans(&self) -> Result<Vec<String>, PortError> {
        Ok(record::list_records(&self.config.state_dir)?
            .into_iter()
            .filter(|r| !r.supervised())
            .map(|r| r.cell_id)
            .collect())
    }

    fn list(&self) -> Result<Vec<CellSummary>, PortError> {
        Ok(record::list_records(&self.config.state_dir)?
            .into_iter()
            .map(|r| CellSummary {
                supervised: r.supervised(),
                init_pid: r.init_alive().then_some(r.init_pid).flatten(),
                cell_id: r.cell_id,
                run_id: r.run_id,
                created_unix: r.created_unix,
            })
            .collect())
    }

    fn signal(&self, cell_id: &str, signal: i32) -> Result<(), PortError> {
        let rec = self.running_record(cell_id)?;
        let (Some(pid), Some(init)) = (rec.init_pid, rec.open_init()?) else {
            return Err(PortError::new(
                PortErrorKind::NotFound,
                format!("cell '{cell_id}' has no running init"),
            ));
        };
        let forwarded = FORWARDED_SIGNALS.iter().any(|s| *s as i32 == signal);
        if signal != libc::SIGKILL && !forwarded {
            return Err(PortError::new(
                PortErrorKind::Refused,
                format!(
                    "signal {signal} is not delivered to cells: use SIGKILL or one of TERM, INT, \
                     HUP, QUIT, USR1, USR2"
                ),
            ));
        }
        // Init forwards the catchable ones to the workload; SIGKILL ends the whole cell.
        pidfd::signal(&init, signal).map_err(|e| {
            PortError::from(LinuxError::io(
                format!("signal cell '{cell_id}' init {pid}"),
                e,
            ))
        })
    }

    fn pause(&self, cell_id: &str) -> Result<String, PortError> {
        self.running_record(cell_id)?;
        let mechanism = cgroup::freeze::freeze(cell_id, cgroup::freeze::FreezerChoice::Auto)?;
        Ok(mechanism.to_string())
    }

    fn resume(&self, cell_id: &str) -> Result<String, PortError> {
        self.running_record(cell_id)?;
        Ok(cgroup::freeze::thaw(cell_id)?.to_string())
    }
}

impl LinuxBackend {
    /// The run record of a running cell, or a not-found error naming it.
    fn running_record(&self, cell_id: &str) -> Result<record::RunRecord, PortError> {
        cgroup::validate_cell_id(cell_id)?;
        let rec = record::read(&self.config.state_dir, cell_id)?.ok_or_else(|| {
            PortError::new(
                PortErrorKind::NotFound,
                format!("no running cell '{cell_id}'"),
            )
        })?;
        if !rec.init_alive() {
            return Err(PortError::new(
                PortErrorKind::NotFound,
                format!("cell '{cell_id}' has no running init"),
            ));
        }
        Ok(rec)
    }
}

/// Reclaim what a dead supervisor left of `cell_id`: kill its init (only if the recorded pid
/// still has the recorded start time), remove its cgroups and its record, then verify against
/// `sources`.
pub fn reclaim(
    state_dir: &Path,
    cell_id: &str,
    sources: &HostSources,
) -> Result<TeardownReport, LinuxError> {
    cgroup::validate_cell_id(cell_id)?;
    let rec = record::read(state_dir, cell_id)?;
    let mut removed = Vec::new();
    let mut init = None;
    if let Some(rec) = &rec {
        if let (Some(pid), Some(fd)) = (rec.init_pid, rec.open_init()?) {
            let _ = pidfd::signal(&fd, libc::SIGKILL);
            init = Some((pid, fd));
            removed.push(Residue {
                class: "process".into(),
                detail: format!("init pid {pid} (SIGKILL; its pid namespace dies with it)"),
            });
        }
    }
    for path in CellCgroup::reclaim(cell_id)? {
        removed.push(Residue {
            class: "cgroup".into(),
            detail: path.display().to_string(),
        });
    }
    // A killed init is reaped by its own parent (or the subreaper); wait until it is gone.
    if let Some((_, fd)) = &init {
        // Whether it exited in time is what the process check below decides, from /proc.
        let _ = pidfd::wait_exit(fd, KILL_GRACE);
    }
    let mut report = TeardownReport {
        cell_id: cell_id.to_owned(),
        forced: init.is_some(),
        ..TeardownReport::default()
    };
    let mut findings = Findings::default();
    // Checked whether or not it looked alive above: a /proc that cannot be read makes every
    // process look dead.
    if let Some((Some(pid), Some(start))) = rec.as_ref().map(|r| (r.init_pid, r.init_start)) {
        findings.check(
            "process",
            Proc::open(&sources.proc)
                .and_then(|proc| proc.runs(pid, start))
                .map(|runs| runs.then(|| format!("init pid {pid} still running"))),
        );
    }
    removed.extend(telemetry::reclaim(state_dir, cell_id));
    let network = rec.as_ref().and_then(|r| r.network.as_ref());
    let (net_removed, net_failed) = netscope::remove(state_dir, cell_id, network);
    removed.extend(net_removed);
    report.residue.extend(net_failed);
    findings.extend(netscope::residue(state_dir, cell_id, network, sources));
    if rec.is_some() {
        record::remove(state_dir, cell_id)?;
        removed.push(Residue {
            class: "file".into(),
            detail: record::record_path(state_dir, cell_id)
                .display()
                .to_string(),
        });
    }
    findings.extend(common_residue(state_dir, cell_id, sources, false));
    report.destroyed = !removed.is_empty();
    report.removed = removed;
    findings.into_report(&mut report);
    Ok(report)
}

/// Residue checks shared by destroy and reclaim: cgroup directories, the telemetry socket, the
/// run record (unless a background finisher removes it, see [`netscope::teardown`]) and mounts
/// on the cell's host paths.
fn common_residue(
    state_dir: &Path,
    cell_id: &str,
    sources: &HostSources,
    record_handed_over: bool,
) -> Findings {
    let mut findings = Findings::default();
    let socket_dir = telemetry::socket_dir(state_dir, cell_id);
    let record_path = record::record_path(state_dir, cell_id);
    findings.check(
        "mount",
        residue::mounts_on(sources, &[socket_dir, record_path.clone()]),
    );
    findings.check("file", telemetry::residue(state_dir, cell_id));
    findings.check(
        "cgroup",
        CellCgroup::leftover_dirs(cell_id, &sources.mountinfo).map(|dirs| {
            let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            (!dirs.is_empty())
                .then(|| format!("cgroup directories still exist: {}", dirs.join(", ")))
        }),
    );
    if !record_handed_over {
        findings.check(
            "file",
            residue::file_exists(&record_path).map(|left| {
                left.then(|| format!("run record {} still exists", record_path.display()))
            }),
        );
    }
    findings
}

/// Records of every cell known to `state_dir` (for `ps` and `gc`).
pub fn list_records(state_dir: &Path) -> Result<Vec<RunRecord>, LinuxError> {
    record::list_records(state_dir)
}

/// One cell on Linux.
pub struct LinuxCell {
    id: String,
    state_dir: PathBuf,
    /// Where destroy's residue check reads the host.
    residue_sources: HostSources,
    /// Host pid of init and its pidfd, until reaped.
    init: Option<(i32, OwnedFd)>,
    /// The init binary and the host uid of the cell's root, to explain a failed start.
    init_exe: PathBuf,
    host_root: u32,
    /// Shared with `session`; emptied at destroy (init then ends the cell).
    control: Control,
    /// The cell's exec and file surface, offered once the cell started.
    session: SharedSession,
    status: OwnedFd,
    reader: StatusReader,
    cgroup: CellCgroup,
    isolation: IsolationReport,
    outputs: Vec<JoinHandle<()>>,
    /// The cell's telemetry (`spec.telemetry.enabled`), finished at destroy.
    telemetry: Option<TelemetryRunner>,
    timeout: Option<Duration>,
    started: Option<Instant>,
    spawn_failure: Option<String>,
    /// The workload's exit was reported (nothing of it runs any more).
    finished: bool,
    destroyed: bool,
    /// The network scope of a networked cell, and its running dataplane.
    network: Option<NetRecord>,
    egress: Option<Egress>,
    /// Where the veth's deletion finishes, and whether destroy left the record to it.
    link_teardown: netscope::teardown::LinkTeardown,
    record_handed_over: bool,
}

/// What the create stages made of a cell (see [`crate::create`]).
pub(crate) struct CellParts {
    pub init: Option<(i32, OwnedFd)>,
    pub control: File,
    pub status: OwnedFd,
    pub reader: StatusReader,
    pub cgroup: CellCgroup,
    pub isolation: IsolationReport,
    pub outputs: Vec<JoinHandle<()>>,
    pub telemetry: Option<TelemetryRunner>,
    pub network: Option<NetRecord>,
    pub egress: Option<Egress>,
}

impl LinuxCell {
    /// A created cell, its init building the root.
    pub(crate) fn new(backend: &LinuxBackend, spec: &ExecutionCellSpec, parts: CellParts) -> Self {
        let control: Control = Arc::new(Mutex::new(Some(parts.control)));
        let init_pid = parts.init.as_ref().map_or(0, |(pid, _)| *pid);
        LinuxCell {
            session: Arc::new(LinuxSession::new(
                &spec.id,
                init_pid,
                control.clone(),
                backend.workload_host_id(),
                parts.cgroup.limit_probe(),
            )),
            id: spec.id.clone(),
            state_dir: backend.config.state_dir.clone(),
            residue_sources: backend.config.residue_sources.clone(),
            init: parts.init,
            init_exe: backend.init_exe.path().to_path_buf(),
            host_root: backend.host_root(),
            control,
            status: parts.status,
            reader: parts.reader,
            cgroup: parts.cgroup,
            isolation: parts.isolation,
            outputs: parts.outputs,
            telemetry: parts.telemetry,
            timeout: spec.timeout_ms().map(Duration::from_millis),
            started: None,
            spawn_failure: None,
            finished: false,
            destroyed: false,
            network: parts.network,
            egress: parts.egress,
            link_teardown: backend.config.network.teardown,
            record_handed_over: false,
        }
    }

    fn send(&mut self, cmd: u8) -> Result<(), LinuxError> {
        let mut guard = lock(&self.control);
        let control = guard.as_mut().ok_or_else(|| LinuxError::NotFound {
            what: format!("cell '{}' is destroyed", self.id),
        })?;
        control
            .write_all(&[cmd])
            .map_err(|e| LinuxError::io("send command to cell init", e))
    }

    fn join_outputs(&mut self) {
        for handle in self.outputs.drain(..) {
            let _ = handle.join();
        }
    }

    /// SIGKILL (through its pidfd) and reap init: the kernel then kills the rest of the pid
    /// namespace, and init's exit completes only once every process in it is gone. Returns
    /// init's wait status, or the pid that could not be reaped; `None` if init was reaped
    /// before.
    fn kill_init(&mut self) -> Option<Result<i32, i32>> {
        let (pid, fd) = self.init.take()?;
        let _ = pidfd::signal(&fd, libc::SIGKILL);
        Some(reap(pid).ok_or(pid))
    }

    /// Init closed its status pipe before `Started` without saying why: name what its wait
    /// status shows (a step's exit code, a signal). A failed start command only says that init
    /// is gone, so it is not repeated.
    fn vanished_before_start(&mut self) -> LinuxError {
        let status = match self.kill_init() {
            Some(Ok(status)) if libc::WIFEXITED(status) => {
                let code = libc::WEXITSTATUS(status);
                match StartStep::from_exit_code(code) {
                    Some(step) => format!("exited with code {code} at step {step:?}"),
                    None => format!("exited with code {code}"),
                }
            }
            Some(Ok(status)) if libc::WIFSIGNALED(status) => {
                format!("was killed by signal {}", libc::WTERMSIG(status))
            }
            _ => "exited".to_owned(),
        };
        LinuxError::Setup {
            what: "start workload".into(),
            detail: format!("the cell's init {status} before starting the workload"),
        }
    }

    fn outcome(&mut self, exit: WorkloadExit, started: Instant) -> WorkloadOutcome {
        let duration = started.elapsed();
        self.finished = true;
        if let Some(t) = &self.telemetry {
            t.workload_exited();
        }
        self.join_outputs();
        WorkloadOutcome {
            exit,
            duration,
            limit_hits: self.cgroup.limit_hits(),
        }
    }

    fn wait_inner(&mut self, deadline: Option<Instant>) -> Result<WorkloadOutcome, LinuxError> {
        let Some(started) = self.started else {
            return Err(LinuxError::Refused {
                what: "wait before start".into(),
            });
        };
        if let Some(reason) = self.spawn_failure.clone() {
            return Ok(self.outcome(WorkloadExit::SpawnFailed { reason }, started));
        }
        let timeout_deadline = self.timeout.map(|t| started + t);
        let (deadline, limit) = match (timeout_deadline, deadline) {
            (Some(t), Some(d)) if d < t => (Some(d), "ttlSeconds"),
            (Some(t), _) => (Some(t), "timeoutMs"),
            (None, d) => (d, "ttlSeconds"),
        };
        let mut timed_out = false;
        let mut deadline = deadline;
        loop {
            let event = self
                .reader
                .next(self.status.as_fd(), deadline)
                .map_err(|e| LinuxError::io("read cell status", e))?;
            match event {
                StatusEvent::Msg(StatusMsg::Exited { code }) if !timed_out => {
                    return Ok(self.outcome(WorkloadExit::Exited { code }, started))
                }
                StatusEvent::Msg(StatusMsg::Signaled { signal }) if !timed_out => {
                    return Ok(self.outcome(WorkloadExit::Signaled { signal }, started))
                }
                StatusEvent::Msg(StatusMsg::Exited { .. } | StatusMsg::Signaled { .. }) => {
                    return Ok(self.outcome(
                        WorkloadExit::TimedOut {
                            limit: limit.into(),
                        },
                        started,
                    ))
                }
                StatusEvent::Msg(_) => continue,
                StatusEvent::TimedOut if !timed_out => {
                    // Ask init to kill the workload (keeps the mount namespace for export);
                    // if it does not answer in time, kill init and with it the namespace.
                    timed_out = true;
                    if self.send(CMD_KILL).is_err() {
                        let _ = self.kill_init();
                    }
                    deadline = Some(Instant::now() + KILL_GRACE);
                }
                StatusEvent::TimedOut | StatusEvent::Closed => {
                    let _ = self.kill_init();
                    let exit = if timed_out {
                        WorkloadExit::TimedOut {
                            limit: limit.into(),
                        }
                    } else {
                        WorkloadExit::SpawnFailed {
                            reason: "the cell's init died before reporting the workload's exit"
                                .into(),
                        }
                    };
                    return Ok(self.outcome(exit, started));
                }
            }
        }
    }

    fn destroy_inner(&mut self) -> Result<TeardownReport, LinuxError> {
        if self.destroyed {
            let mut report = TeardownReport {
                cell_id: self.id.clone(),
                ..TeardownReport::default()
            };
            common_residue(
                &self.state_dir,
                &self.id,
                &self.residue_sources,
                self.record_handed_over,
            )
            .into_report(&mut report);
            return Ok(report);
        }
        let forced = !self.finished;
        let mut removed = Vec::new();
        if let Some((pid, _)) = &self.init {
            removed.push(Residue {
                class: "process".into(),
                detail: format!("init pid {pid} and its pid namespace"),
            });
        }
        // Closing the control pipe lets init exit by itself; SIGKILL makes it immediate.
        *lock(&self.control) = None;
        let unreaped = self.kill_init().and_then(Result::err);
        self.join_outputs();
        let mut residue = Vec::new();
        if let Some(pid) = unreaped {
            residue.push(Residue {
                class: "process".into(),
                detail: format!("init pid {pid} could not be reaped"),
            });
        }
        // Returns only once the cgroups are empty (or reports who is left). A cgroup that
        // cannot be listed says nothing about who is left.
        let mut findings = Findings::default();
        match self.cgroup.kill_all() {
            Ok(()) => {}
            Err(e @ LinuxError::Io { .. }) => findings.unverified("process", &CheckError::Host(e)),
            Err(e) => residue.push(Residue {
                class: "process".into(),
                detail: format!("processes remain in the cell's cgroup: {e}"),
            }),
        }
        // After the last process is gone, so its exit is observed and reported.
        if let Some(mut t) = self.telemetry.take() {
            residue.extend(t.finish());
            removed.push(Residue {
                class: "file".into(),
                detail: telemetry::socket_dir(&self.state_dir, &self.id)
                    .display()
                    .to_string(),
            });
        }
        match self.cgroup.remove() {
            Ok(()) => removed.extend(self.cgroup.paths().iter().map(|p| Residue {
                class: "cgroup".into(),
                detail: p.display().to_string(),
            })),
            Err(e) => residue.push(Residue {
                class: "cgroup".into(),
                detail: format!("removing the cell's cgroup failed: {e}"),
            }),
        }
        // Cut off while the namespace is still held: releasing it makes the kernel delete the
        // veth, and every link request would then wait for that deletion.
        let cut = self
            .network
            .as_ref()
            .and_then(|net| netscope::teardown::cut_off(self.link_teardown, net));
        // Stopping the dataplane reads its counters (`network.v1.summary`) and releases the
        // namespace; then the host side goes.
        if let Some(egress) = self.egress.take() {
            egress.stop();
        }
        if let Some(net) = &self.network {
            let net = netscope::teardown::destroy(
                cut,
                self.link_teardown,
                &self.state_dir,
                &self.id,
                net,
                &self.residue_sources,
            );
            removed.extend(net.removed);
            residue.extend(net.failed);
            findings.extend(net.findings);
            // The finisher removes the record once it has verified the veth's deletion.
            self.record_handed_over = net.handed_over;
        }
        if !self.record_handed_over {
            record::remove(&self.state_dir, &self.id)?;
            removed.push(Residue {
                class: "file".into(),
                detail: record::record_path(&self.state_dir, &self.id)
                    .display()
                    .to_string(),
            });
        }
        self.destroyed = true;
        findings.extend(common_residue(
            &self.state_dir,
            &self.id,
            &self.residue_sources,
            self.record_handed_over,
        ));
        let mut report = TeardownReport {
            cell_id: self.id.clone(),
            destroyed: true,
            forced,
            removed,
            residue,
            unverified: Vec::new(),
        };
        findings.into_report(&mut report);
        Ok(report)
    }
}

impl Cell for LinuxCell {
    fn id(&self) -> &str {
        &self.id
    }

    fn isolation(&self) -> &IsolationReport {
        &self.isolation
    }

    fn start(&mut self) -> Result<Instant, PortError> {
        if self.started.is_some() {
            return Err(PortError::new(
                PortErrorKind::Refused,
                "cell already started",
            ));
        }
        // If init already failed and exited, the write fails; its status message says why.
        if let Err(e @ LinuxError::NotFound { .. }) = self.send(CMD_START) {
            return Err(e.into());
        }
        loop {
            let event = self
                .reader
                .next(self.status.as_fd(), None)
                .map_err(|e| LinuxError::io("read cell status", e))?;
            let now = Instant::now();
            match event {
                StatusEvent::Msg(StatusMsg::Started) => {
                    self.started = Some(now);
                    if let Some(t) = &self.telemetry {
                        t.workload_started();
                    }
                    return Ok(now);
                }
                StatusEvent::Msg(StatusMsg::SpawnFailed { reason }) => {
                    self.spawn_failure = Some(reason);
                    self.started = Some(now);
                    return Ok(now);
                }
                StatusEvent::Msg(StatusMsg::Failed {
                    message,
                    missing_feature,
                }) => {
                    return Err(LinuxError::InitFailed {
                        message,
                        missing_feature,
                    }
                    .into())
                }
                StatusEvent::Msg(StatusMsg::StartFailed { step, errno }) => {
                    return Err(crate::clone::start_failure(
                        step,
                        errno,
                        &self.init_exe,
                        self.host_root,
                    )
                    .into())
                }
                StatusEvent::Msg(_) => continue,
                StatusEvent::Closed | StatusEvent::TimedOut => {
                    return Err(self.vanished_before_start().into());
                }
            }
        }
    }

    fn wait(&mut self, deadline: Option<Instant>) -> Result<WorkloadOutcome, PortError> {
        Ok(self.wait_inner(deadline)?)
    }

    fn open_artifact(&self, path: &str) -> Result<Box<dyn Read + Send>, PortError> {
        let Some((pid, _)) = &self.init else {
            return Err(PortError::new(
                PortErrorKind::NotFound,
                format!("cell '{}' no longer runs; artifacts are gone", self.id),
            ));
        };
        let root = rustix::fs::open(
            format!("/proc/{pid}/root").as_str(),
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| {
            LinuxError::errno(format!("open root of cell '{}'", self.id), e.raw_os_error())
        })?;
        let fd = safe_path::open_in_root(root.as_fd(), path, rustix::fs::OFlags::RDONLY).map_err(
            |e| match e.raw_os_error() {
                Some(libc::ELOOP) | Some(libc::EXDEV) => PortError::new(
                    PortErrorKind::Refused,
                    format!("artifact path '{path}' goes through a symlink or leaves the cell"),
                ),
                _ => PortError::from(LinuxError::io(format!("open artifact '{path}'"), e)),
            },
        )?;
        let file = File::from(fd);
        let meta = file
            .metadata()
            .map_err(|e| LinuxError::io(format!("stat artifact '{path}'"), e))?;
        if !meta.is_file() {
            return Err(PortError::new(
                PortErrorKind::Refused,
                format!("artifact path '{path}' is not a regular file"),
            ));
        }
        Ok(Box::new(file))
    }

    fn destroy(&mut self) -> Result<TeardownReport, PortError> {
        Ok(self.destroy_inner()?)
    }

    fn session(&self) -> Option<Arc<dyn CellSession>> {
        let live = self.started.is_some() && self.spawn_failure.is_none() && !self.destroyed;
        live.then(|| self.session.clone() as Arc<dyn CellSession>)
    }
}

impl Drop for LinuxCell {
    fn drop(&mut self) {
        if !self.destroyed {
            let _ = self.destroy_inner();
        }
    }
}

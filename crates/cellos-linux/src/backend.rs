//! [`LinuxBackend`] and [`LinuxCell`]: the `CellBackend`/`Cell` ports on Linux namespaces.
//!
//! create: validate and plan (host side) → run record → cgroup → clone init in new user, pid,
//! mount, net, ipc and uts namespaces → write its id maps and release it (it execs) → open the
//! host paths as detached mount trees, record init's pid, move it into the cgroup → send the
//! plan and the trees. create returns while init builds the root and parks the workload just
//! before its exec, so that work overlaps with whatever the caller does next. start: wait for
//! `Ready`, tell init to let the workload exec, wait for `Started` (setup failures surface
//! here, before anything of the workload ran). wait: status messages with a deadline. destroy:
//! SIGKILL init (the kernel then kills the whole pid namespace and frees the mount namespace),
//! reap, remove the cgroup and the record, then verify that nothing is left.
//!
//! With `spec.telemetry.enabled`, create also binds the cell's telemetry socket and subscribes
//! the host process probe right after the cgroup exists (before init is cloned), and the plan
//! carries the socket and agent binds and the agent's exec; destroy finishes the telemetry
//! (final events, report, socket removed) once the cell's last process is gone. See
//! [`crate::telemetry`].
//!
//! The thread that calls `create` must outlive the cell: init dies with it (`PDEATHSIG`).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cellos_core::ports::{
    Cell, CellBackend, CellRequest, CellSession, CellSummary, IsolationReport, PortError,
    PortErrorKind, Residue, TeardownReport, WorkloadExit, WorkloadOutcome,
};
use cellos_core::spec::RootfsSpec;
use zeroize::Zeroizing;

use crate::cgroup::{self, CellCgroup, CgroupLimits};
pub use crate::clone::InitMode;
use crate::clone::{reap, InitCommand, InitExe, Spawned};
use crate::error::LinuxError;
use crate::etc_mask;
use crate::idmap::{self, IdMap};
use crate::init::FORWARDED_SIGNALS;
use crate::landlock_rules;
use crate::netscope::egress::{Egress, EgressSetup};
use crate::netscope::{self, NetRecord, NetworkConfig};
use crate::pidfd;
use crate::plan::{self, BpfInstruction, PlanContext, ResolvedRootfs, WORKLOAD_ID};
use crate::protocol::{
    send_fds, Handoff, SecretFrame, StartStep, StatusEvent, StatusMsg, StatusReader, CMD_KILL,
    CMD_START, CONTROL_FD, INIT_ARG, RELEASE, STATUS_FD,
};
use crate::record::{self, RunRecord};
use crate::residue::{self, CheckError, Findings, HostSources, Proc};
use crate::safe_path;
use crate::seccomp::{self, SeccompProfile};
use crate::session::{lock, Control, LinuxSession, SharedSession};
use crate::telemetry::{self, RunnerContext, TelemetryRunner, TelemetrySettings};
use crate::trees;

/// Default base of the host id range cells map to: above the ranges systemd hands to
/// containers and dynamic users, and below 2^31 (tools mishandle larger ids).
pub const DEFAULT_UID_BASE: u32 = 0x7000_0000;

/// Where init mounts the new root, in its own private mount namespace (the host's `/tmp` is
/// only covered there). Every host path the cell gets arrives as a descriptor, so nothing
/// init needs is hidden by this mount, and `/tmp` is searchable by the cell's (unprivileged)
/// root on every distribution.
const BUILD_DIR: &str = "/tmp";

/// How long init gets to act on a kill command before it is SIGKILLed itself.
const KILL_GRACE: Duration = Duration::from_secs(2);

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
    /// Whether init may run in the clone or is always exec'd (see [`InitMode`]).
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
    /// Defaults: init arguments `["__cell-init"]`, uid base [`DEFAULT_UID_BASE`], no telemetry
    /// agent (cells with `spec.telemetry.enabled` are refused until one is set).
    pub fn new(state_dir: impl Into<PathBuf>, init_exe: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            init_exe: init_exe.into(),
            init_args: vec![INIT_ARG.to_owned()],
            init_mode: InitMode::default(),
            uid_base: DEFAULT_UID_BASE,
            telemetry: TelemetrySettings::default(),
            network: NetworkConfig::default(),
            residue_sources: HostSources::host(),
        }
    }
}

/// The Linux cell backend.
pub struct LinuxBackend {
    config: LinuxBackendConfig,
    /// `config.init_exe`, opened once (see [`InitExe`]).
    init_exe: InitExe,
    id_map: IdMap,
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

    fn seccomp(&self) -> Result<&(SeccompProfile, Vec<BpfInstruction>), LinuxError> {
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
    fn landlock_abi(&self, min_abi: u32) -> Result<Option<u32>, LinuxError> {
        let kernel = *self.landlock_kernel.get_or_init(landlock_rules::kernel_abi);
        landlock_rules::abi_for(min_abi, kernel)
    }

    fn resolve_rootfs(&self, spec: &RootfsSpec) -> Result<(ResolvedRootfs, String), LinuxError> {
        match spec {
            RootfsSpec::Host => Ok((ResolvedRootfs::Host, "host".into())),
            RootfsSpec::Path(p) => Ok((
                ResolvedRootfs::Dir(PathBuf::from(&p.path)),
                format!("path:{}", p.path),
            )),
            RootfsSpec::Oci(oci) => {
                let store = self.config.state_dir.join("oci");
                let image =
                    crate::oci::materialize(Path::new(&oci.oci_layout), &oci.reference, &store)
                        .map_err(|e| match e {
                            crate::oci::OciError::UnknownReference { .. } => LinuxError::NotFound {
                                what: format!("filesystem.rootfs: {e}"),
                            },
                            other => LinuxError::Refused {
                                what: format!("filesystem.rootfs: {other}"),
                            },
                        })?;
                Ok((
                    ResolvedRootfs::Dir(image.path),
                    format!("oci:{}", image.digest),
                ))
            }
        }
    }

    fn create_cell(&self, request: CellRequest<'_>) -> Result<LinuxCell, LinuxError> {
        let spec = request.spec;
        cgroup::validate_cell_id(&spec.id)?;
        // Before anything exists: a kernel below the spec's Landlock requirement refuses it.
        let landlock_min_abi = spec.landlock_min_abi();
        let landlock_abi = self.landlock_abi(landlock_min_abi)?;
        let fs = spec.filesystem.clone().unwrap_or_default();
        let (rootfs, rootfs_label) = self.resolve_rootfs(&fs.rootfs)?;
        let etc_mask = match rootfs {
            ResolvedRootfs::Host => Some(etc_mask::ensure_mask(
                &self.config.state_dir.join("etc-mask"),
                Path::new("/etc"),
            )?),
            ResolvedRootfs::Dir(_) => None,
        };
        let (profile, program) = self.seccomp()?;
        let secret_keys: Vec<String> = request.secrets.iter().map(|s| s.key.clone()).collect();
        let telemetry_enabled = spec.telemetry.as_ref().is_some_and(|t| t.enabled);
        let telemetry_plan = if telemetry_enabled {
            Some(telemetry::plan_parts(
                &self.config.telemetry,
                &self.config.state_dir,
                &spec.id,
            )?)
        } else {
            None
        };
        let mut config = plan::build(
            spec,
            PlanContext {
                build_dir: Path::new(BUILD_DIR),
                rootfs: &rootfs,
                etc_mask: etc_mask.as_deref(),
                secret_delivery: request.secret_delivery,
                secret_keys: &secret_keys,
                expected_landlock_abi: landlock_abi,
                seccomp: program.clone(),
                telemetry: telemetry_plan,
            },
        )?;
        config.number_trees();
        let writable_exec = config.landlock.writable_exec();
        let state_dir = &self.config.state_dir;
        let me = std::process::id() as i32;
        let mut rec = RunRecord {
            cell_id: spec.id.clone(),
            run_id: request.run_id.to_owned(),
            created_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            supervisor_pid: me,
            supervisor_start: record::process_start_time(me).unwrap_or(0),
            init_pid: None,
            init_start: None,
            cgroup_paths: Vec::new(),
            network: None,
        };
        // Fails when the cell id is taken; nothing of that other cell is touched.
        record::create(state_dir, &rec)?;
        // From here on, `guard` removes what exists if we fail.
        let mut guard = CreateGuard {
            state_dir,
            cell_id: &spec.id,
            init: None,
            network: None,
            armed: true,
        };
        // A networked cell's link is leased now: its resolv.conf names the host end. The lease
        // file names the cell (reclaim finds it by that); the veth and host table are named in
        // the record (written with init's pid) before they are created.
        if netscope::wants_network(spec) {
            let (link, lease) =
                netscope::pool::lease(state_dir, &self.config.network.pool, &spec.id)?;
            let net = NetRecord::new(state_dir, &spec.id, link, lease);
            config.resolv_conf = Some(net.resolv_conf());
            guard.network = Some(net.clone());
            rec.network = Some(net);
        }
        let secrets: Vec<SecretFrame> = request
            .secrets
            .iter()
            .map(|s| SecretFrame {
                key: s.key.clone(),
                value: Zeroizing::new(s.value.expose().to_vec()),
            })
            .collect();
        drop(request.secrets);

        let limits = spec.cell_limits();
        let cgroup = CellCgroup::create(
            &spec.id,
            &CgroupLimits {
                memory_max_bytes: limits.memory_max_bytes,
                pids_max: limits.pids_max,
                cpu_millis: limits.cpu_millis,
            },
        )?;
        rec.cgroup_paths = cgroup.paths().to_vec();
        // The socket exists and the probe listens before anything of the cell runs: the
        // cell's first exec (its init) is already observed.
        let telemetry = if telemetry_enabled {
            Some(TelemetryRunner::start(
                &self.config.telemetry,
                RunnerContext {
                    state_dir,
                    spec,
                    spec_hash: request.spec_hash,
                    run_id: request.run_id,
                    cgroup_dirs: cgroup.paths().to_vec(),
                    factory: request.factory.clone(),
                    evidence: request.evidence.clone(),
                },
            )?)
        } else {
            None
        };

        // Opened before the clone (after the telemetry socket they bind exists), so init finds
        // its config and trees waiting once released.
        let trees = trees::open_all(&config)?;
        let handoff = Handoff { config, secrets };

        let pipe = || {
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                .map_err(|e| LinuxError::errno("pipe", e.raw_os_error()))
        };
        // A socket, not a pipe: the mount trees travel over it as SCM_RIGHTS.
        let (control_w, control_r) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::Stream,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| LinuxError::errno("control socketpair", e as i32))?;
        let (status_r, status_w) = pipe()?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        // Pipes belong to their creator (host root, unmapped in the cell) with mode 0600, so
        // the workload could not reopen its own stdout (`echo > /dev/stdout`): give them to the
        // workload's host ids.
        let host_id = self.id_map.to_host(WORKLOAD_ID);
        for p in [&out_w, &err_w] {
            std::os::unix::fs::fchown(p, host_id, host_id)
                .map_err(|e| LinuxError::io("chown the workload's output pipes", e))?;
        }
        let devnull = File::open("/dev/null").map_err(|e| LinuxError::io("open /dev/null", e))?;
        let command = InitCommand::new(
            &self.init_exe,
            self.config.init_mode,
            &self.config.init_args,
            &[
                (devnull.as_fd(), 0),
                (out_w.as_fd(), 1),
                (err_w.as_fd(), 2),
                (control_r.as_fd(), CONTROL_FD),
                (status_w.as_fd(), STATUS_FD),
            ],
            cgroup.join_handles()?,
            handoff,
        )?;
        let Spawned {
            pid,
            pidfd,
            in_v2_leaf,
            handoff,
        } = command.spawn()?;
        guard.init = Some((pid, pidfd));
        drop((control_r, status_w, out_w, err_w, devnull));

        let mut control = File::from(control_w);
        let mut reader = StatusReader::new();
        self.hand_over(pid, in_v2_leaf, &cgroup, &mut control, handoff, &trees)
            .map_err(|e| {
                // A child that could not become init said why before it exited; one still
                // alive is killed first, so its status pipe closes at once.
                if let Some((_, fd)) = &guard.init {
                    let _ = pidfd::signal(fd, libc::SIGKILL);
                }
                match reader.next(status_r.as_fd(), Some(Instant::now() + KILL_GRACE)) {
                    Ok(StatusEvent::Msg(StatusMsg::StartFailed { step, errno })) => {
                        self.start_failure(step, errno)
                    }
                    _ => e,
                }
            })?;
        drop(trees);
        // Until this record names init, a crash of ours kills it (PDEATHSIG) and `gc` finds
        // its cgroups by the cell's id.
        rec.init_pid = Some(pid);
        rec.init_start = record::process_start_time(pid);
        record::update(state_dir, &rec)?;

        // The network scope is built while init builds the root; the workload cannot exec
        // before `start`, by which time the ruleset, DNS authority and gate are in place.
        let egress = match &mut rec.network {
            Some(net) => {
                net.netns_inode =
                    netscope::residue::netns_inode(Path::new(&format!("/proc/{pid}/ns/net")));
                let net = net.clone();
                record::update(state_dir, &rec)?;
                Some(self.start_network(&net, pid, spec, request.factory, request.evidence)?)
            }
            None => None,
        };

        // Init builds the root while the caller goes on (typically recording evidence); a setup
        // failure surfaces from `start`, before anything of the workload runs.
        let outputs = vec![copy_outputs(out_r, request.stdout, err_r, request.stderr)];

        let isolation = IsolationReport {
            backend: "linux".into(),
            namespaces: ["user", "pid", "mnt", "net", "ipc", "uts", "cgroup"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            uid_map: self.id_map.line(),
            workload_uid: WORKLOAD_ID,
            workload_gid: WORKLOAD_ID,
            rootfs: rootfs_label,
            seccomp_profile: profile.name.clone(),
            seccomp_profile_sha256: profile.sha256.clone(),
            landlock_abi,
            landlock_enforced: landlock_abi.is_some(),
            landlock_min_abi,
            landlock_unenforced: landlock_rules::unenforced_rights(landlock_abi)
                .into_iter()
                .map(str::to_owned)
                .collect(),
            writable_exec,
            capabilities: Vec::new(),
            no_new_privs: true,
            cgroup_version: cgroup.version_summary(),
            limits: {
                let mut limits = cgroup.enforcement();
                if let Some(ms) = spec.timeout_ms() {
                    limits.push(cellos_core::ports::LimitEnforcement {
                        limit: "timeoutMs".into(),
                        value: ms,
                        mechanism: "SIGKILL of every process in the cell's pid namespace at the \
                                    deadline"
                            .into(),
                    });
                }
                if let Some(ttl) = spec.lifetime.as_ref().and_then(|l| l.ttl_seconds) {
                    limits.push(cellos_core::ports::LimitEnforcement {
                        limit: "ttlSeconds".into(),
                        value: ttl,
                        mechanism: "supervisor deadline; SIGKILL of the cell's pid namespace"
                            .into(),
                    });
                }
                limits
            },
            network: match (&egress, &rec.network) {
                (Some(egress), Some(net)) => egress.describe(net),
                _ => "loopback-only".into(),
            },
        };
        guard.armed = false;
        let control: Control = Arc::new(Mutex::new(Some(control)));
        Ok(LinuxCell {
            session: Arc::new(LinuxSession::new(
                &spec.id,
                pid,
                control.clone(),
                self.workload_host_id(),
            )),
            id: spec.id.clone(),
            state_dir: state_dir.clone(),
            residue_sources: self.config.residue_sources.clone(),
            init: guard.init.take(),
            init_exe: self.init_exe.path().to_path_buf(),
            host_root: self.id_map.to_host(0).unwrap_or(self.config.uid_base),
            control,
            status: status_r,
            reader,
            cgroup,
            isolation,
            outputs,
            telemetry,
            timeout: spec.timeout_ms().map(Duration::from_millis),
            started: None,
            spawn_failure: None,
            finished: false,
            destroyed: false,
            network: rec.network,
            egress,
        })
    }

    /// Give the cloned child `pid` what it needs to become init: its id maps, the release
    /// byte, its cgroup (if it was not born there), the plan (an exec'd init reads it from the
    /// socket; one in the clone already has it) and the mount trees. The maps must exist
    /// before the child becomes the namespace's root (exec'd without them, it would lose its
    /// capabilities). The child joined the cell's cgroups before it waits for release (or is
    /// moved into the v2 leaf here before it reads its config), so nothing it starts runs
    /// outside the cell's cgroup.
    fn hand_over(
        &self,
        pid: i32,
        in_v2_leaf: bool,
        cgroup: &CellCgroup,
        control: &mut File,
        handoff: Option<Handoff>,
        trees: &[OwnedFd],
    ) -> Result<(), LinuxError> {
        idmap::write_maps(pid, &self.id_map)?;
        control
            .write_all(&[RELEASE])
            .map_err(|e| LinuxError::io("release cell init", e))?;
        if !in_v2_leaf {
            cgroup.add_process_v2(pid)?;
        }
        if let Some(handoff) = handoff {
            let frame = handoff
                .frame()
                .map_err(|e| LinuxError::io("encode cell config", e))?;
            control
                .write_all(&frame)
                .map_err(|e| LinuxError::io("send config to cell init", e))?;
        }
        let tree_fds: Vec<_> = trees.iter().map(|t| t.as_fd()).collect();
        send_fds(control.as_fd(), &tree_fds)
            .map_err(|e| LinuxError::io("send mount trees to cell init", e))
    }

    /// What the child reported when a step on its way to init failed.
    fn start_failure(&self, step: StartStep, errno: i32) -> LinuxError {
        crate::clone::start_failure(
            step,
            errno,
            self.init_exe.path(),
            self.id_map.to_host(0).unwrap_or(self.config.uid_base),
        )
    }

    /// Links the cell's namespace (init `pid`) to the host and starts its egress dataplane.
    fn start_network(
        &self,
        net: &NetRecord,
        pid: i32,
        spec: &cellos_core::spec::ExecutionCellSpec,
        factory: cellos_core::events::EventFactory,
        evidence: std::sync::Arc<dyn cellos_core::ports::RuntimeEvidence>,
    ) -> Result<Egress, LinuxError> {
        let path = format!("/proc/{pid}/ns/net");
        let netns: OwnedFd = File::open(&path)
            .map_err(|e| LinuxError::io(format!("open {path}"), e))?
            .into();
        netscope::link::create_host_side(net, pid)?;
        netscope::link::configure_cell_side(net, netns.as_fd())?;
        let upstream = match self.config.network.dns_upstream {
            Some(addr) => addr,
            None => cellos_dataplane::dns::system_upstream().map_err(|e| LinuxError::Refused {
                what: format!("{e} (--dns-upstream IP:PORT or CELLOS_DNS_UPSTREAM)"),
            })?,
        };
        Egress::start(EgressSetup {
            spec,
            rec: net,
            netns,
            upstream,
            factory,
            evidence,
        })
    }
}

/// Undoes a half-made cell: kills and reaps init, removes the record (the cgroup cleans itself
/// up when its `CellCgroup` drops).
struct CreateGuard<'a> {
    state_dir: &'a Path,
    cell_id: &'a str,
    /// The cloned child's pid and pidfd.
    init: Option<(i32, OwnedFd)>,
    network: Option<NetRecord>,
    armed: bool,
}

impl Drop for CreateGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some((pid, fd)) = &self.init {
            let _ = pidfd::signal(fd, libc::SIGKILL);
            let _ = reap(*pid);
        }
        let _ = netscope::remove(self.state_dir, self.cell_id, self.network.as_ref());
        let _ = record::remove(self.state_dir, self.cell_id);
    }
}

/// Copy the workload's stdout and stderr pipes into the request's writers as bytes arrive,
/// from one thread (poll on both) until both reach EOF.
fn copy_outputs(
    out: OwnedFd,
    out_w: Box<dyn Write + Send>,
    err: OwnedFd,
    err_w: Box<dyn Write + Send>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut streams = [
            (Some(File::from(out)), out_w),
            (Some(File::from(err)), err_w),
        ];
        let mut buf = [0u8; 16 * 1024];
        loop {
            let mut fds: Vec<libc::pollfd> = Vec::with_capacity(2);
            let mut which = Vec::with_capacity(2);
            for (i, (pipe, _)) in streams.iter().enumerate() {
                if let Some(p) = pipe {
                    fds.push(libc::pollfd {
                        fd: std::os::fd::AsRawFd::as_raw_fd(p),
                        events: libc::POLLIN,
                        revents: 0,
                    });
                    which.push(i);
                }
            }
            if fds.is_empty() {
                break;
            }
            // SAFETY: valid pollfd array for the duration of the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
            if n < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
            for (pfd, i) in fds.iter().zip(which) {
                if pfd.revents == 0 {
                    continue;
                }
                let (pipe, writer) = &mut streams[i];
                let Some(p) = pipe.as_mut() else { continue };
                match p.read(&mut buf) {
                    Ok(0) => *pipe = None,
                    // A failing writer must not stall the workload: keep draining.
                    Ok(n) => {
                        let _ = writer.write_all(&buf[..n]).and_then(|_| writer.flush());
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => *pipe = None,
                }
            }
        }
        for (_, writer) in &mut streams {
            let _ = writer.flush();
        }
    })
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
    findings.extend(common_residue(state_dir, cell_id, sources));
    report.destroyed = !removed.is_empty();
    report.removed = removed;
    findings.into_report(&mut report);
    Ok(report)
}

/// Residue checks shared by destroy and reclaim: cgroup directories, the telemetry socket, the
/// run record and mounts on the cell's host paths.
fn common_residue(state_dir: &Path, cell_id: &str, sources: &HostSources) -> Findings {
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
    findings.check(
        "file",
        residue::file_exists(&record_path)
            .map(|left| left.then(|| format!("run record {} still exists", record_path.display()))),
    );
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
}

impl LinuxCell {
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
            common_residue(&self.state_dir, &self.id, &self.residue_sources)
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
        // Stopping the dataplane reads its counters (`network.v1.summary`) and releases the
        // namespace; then the host side goes.
        if let Some(egress) = self.egress.take() {
            egress.stop();
        }
        if self.network.is_some() {
            let (net_removed, net_failed) =
                netscope::remove(&self.state_dir, &self.id, self.network.as_ref());
            removed.extend(net_removed);
            residue.extend(net_failed);
            findings.extend(netscope::residue(
                &self.state_dir,
                &self.id,
                self.network.as_ref(),
                &self.residue_sources,
            ));
        }
        record::remove(&self.state_dir, &self.id)?;
        removed.push(Residue {
            class: "file".into(),
            detail: record::record_path(&self.state_dir, &self.id)
                .display()
                .to_string(),
        });
        self.destroyed = true;
        findings.extend(common_residue(
            &self.state_dir,
            &self.id,
            &self.residue_sources,
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

//! The cell's init: PID 1 of the cell's pid namespace, root of its user namespace.
//!
//! It is the same binary re-executed with [`INIT_ARG`] (see [`run_if_init`]). Fds on entry:
//! 0 `/dev/null`, 1/2 the workload's output pipes, [`CONTROL_FD`] and [`STATUS_FD`] (see
//! [`crate::protocol`]). It takes the plan (from the config frame, or from memory when it runs
//! in the clone) and receives the mount trees, builds the root and pivots,
//! forks the workload and lets it drop every privilege and confine itself up to just before
//! `execve` (parked), reports `Ready`, and on the start command lets it exec. While the
//! workload runs, init reaps orphans and forwards termination signals; when it ends, init
//! kills whatever is left in the cell and reports the exit status. If the cell declared
//! artifacts it stays alive (keeping the mount namespace for export) until the supervisor
//! closes the control channel; otherwise it exits at once.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cellos_core::spec::SecretDeliveryMode;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use zeroize::Zeroizing;

use crate::error::LinuxError;
use crate::init_exec::Execs;
use crate::landlock_rules::{self, LandlockPlan};
use crate::plan::{AgentPlan, InitConfig};
use crate::protocol::{
    recv_fds, Handoff, SecretFrame, StatusMsg, CMD_EXEC, CMD_EXEC_KILL, CMD_KILL, CMD_START,
    CONTROL_FD, INIT_ARG, STATUS_FD,
};
use crate::refusal::{Namespace, Refusal, Step};
use crate::trees::Received;
use crate::{caps, netns, rootfs};

/// Signals init passes on to the workload.
pub const FORWARDED_SIGNALS: &[Signal] = &[
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// If this process was started as a cell init (`argv[1] == "__cell-init"`), run the init and
/// exit; otherwise return at once. Call it first thing in `main`.
pub fn run_if_init() {
    if std::env::args_os().nth(1).as_deref() != Some(OsStr::new(INIT_ARG)) {
        return;
    }
    std::process::exit(init_main(None));
}

/// Init proper, from the descriptors on entry to its exit code. Exec'd via [`run_if_init`]
/// (the plan then comes as the config frame), or run in the clone by [`crate::init_in_clone`]
/// with the plan it found in memory (`handoff`).
pub(crate) fn init_main(handoff: Option<Handoff>) -> i32 {
    // Nothing but our five descriptors may reach the workload.
    // SAFETY: closes descriptors above STATUS_FD: an exec'd init owns none of them yet, and init
    // run in the clone never returns to the supervisor code that owns its copies.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            (STATUS_FD + 1) as libc::c_uint,
            libc::c_uint::MAX,
            0,
        )
    };
    // SAFETY: the supervisor set these descriptors up for us; we own them from here on.
    let (mut control, mut status) =
        unsafe { (File::from_raw_fd(CONTROL_FD), File::from_raw_fd(STATUS_FD)) };
    for fd in [control.as_raw_fd(), status.as_raw_fd()] {
        // SAFETY: setting FD_CLOEXEC on descriptors we own.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }

    let (config, secrets) = match setup(&mut control, handoff) {
        Ok(v) => v,
        Err(e) => {
            let _ = StatusMsg::Failed {
                message: e.to_string(),
                missing_feature: e.kind() == cellos_core::ports::PortErrorKind::MissingFeature,
            }
            .send(&mut status);
            return 1;
        }
    };
    let execs = Execs::new(&config, &secrets);
    if config.session {
        let sigfd = block_signals();
        release_outputs();
        if StatusMsg::Ready.send(&mut status).is_err() || !await_start(&mut control) {
            return 1;
        }
        return match sigfd {
            Ok(sigfd) => serve_session(&config, execs, sigfd, &mut control, &mut status),
            Err(reason) => {
                let _ = StatusMsg::SpawnFailed { reason }.send(&mut status);
                wait_for_close(&mut control)
            }
        };
    }
    // Fork and confine the workload now, parked before its execve, so that `start` only costs
    // the exec: this runs while the supervisor is busy between create and start.
    let parked = park_workload(&config, secrets);
    release_outputs();
    if StatusMsg::Ready.send(&mut status).is_err() {
        return 1;
    }
    if !await_start(&mut control) {
        // The supervisor is gone: exiting kills the parked workload with the namespace.
        return 0;
    }
    supervise(&config, parked, execs, &mut control, &mut status)
}

/// Wait for [`CMD_START`]; `false` when the supervisor went away first.
fn await_start(control: &mut File) -> bool {
    let mut cmd = [0u8; 1];
    loop {
        match control.read(&mut cmd) {
            Ok(1) if cmd[0] == CMD_START => return true,
            Ok(1) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            _ => return false,
        }
    }
}

/// A session cell: no workload, only execs, until the supervisor closes the control channel.
fn serve_session(
    config: &InitConfig,
    mut execs: Execs,
    sigfd: SignalFd,
    control: &mut File,
    status: &mut File,
) -> i32 {
    if StatusMsg::Started.send(status).is_err() {
        return 1;
    }
    loop {
        let (signal_ready, control_ready) = poll_two(&sigfd, control);
        if control_ready && !handle_command(config, &mut execs, control) {
            kill_all_and_reap();
            return 0;
        }
        if signal_ready {
            // Termination signals are the supervisor's to send through the control channel.
            let _ = sigfd.read_signal();
            reap_children(&mut execs, None);
        }
    }
}

/// Wait until the signalfd or the control channel is readable.
fn poll_two(sigfd: &SignalFd, control: &File) -> (bool, bool) {
    let mut fds = [
        libc::pollfd {
            fd: sigfd.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: control.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: two valid pollfds.
    if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
        return (false, false);
    }
    (fds[0].revents != 0, fds[1].revents != 0)
}

/// Act on one command from the supervisor; `false` when the control channel closed (or broke),
/// which means "end the cell now".
fn handle_command(config: &InitConfig, execs: &mut Execs, control: &mut File) -> bool {
    let mut cmd = [0u8; 1];
    match control.read(&mut cmd) {
        Ok(1) => match cmd[0] {
            CMD_KILL => {
                // SAFETY: PID 1 of the cell's pid namespace signals every other process in it.
                unsafe { libc::kill(-1, libc::SIGKILL) };
                true
            }
            CMD_EXEC => execs.start(config, control).is_ok(),
            CMD_EXEC_KILL => execs.kill(control).is_ok(),
            _ => true,
        },
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => true,
        _ => false,
    }
}

/// Read the plan, enter the cgroup namespace, build the root, set hostname and loopback.
fn setup(
    control: &mut File,
    handoff: Option<Handoff>,
) -> Result<(InitConfig, Vec<SecretFrame>), LinuxError> {
    let Handoff { config, secrets } = match handoff {
        Some(handoff) => handoff,
        None => Handoff::read_frame(control)?,
    };
    let received = recv_fds(control.as_fd(), config.tree_count())
        .map_err(|e| LinuxError::io("receive mount trees from supervisor", e))?;
    let mut trees = Received::new(received);
    // The supervisor moved us into the cell's cgroup before releasing us: make it our root.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP).map_err(|e| {
        Refusal::new(
            Step::Unshare(Namespace::Cgroup),
            "for the cell's init",
            e as i32,
        )
    })?;
    rootfs::build_and_pivot(&config, &secrets, &mut trees)?;
    let hostname: String = config.cell_id.chars().take(64).collect();
    nix::unistd::sethostname(&hostname)
        .map_err(|e| Refusal::new(Step::Sethostname, "in the cell", e as i32))?;
    netns::loopback_up()?;
    Ok((config, secrets))
}

/// Everything the workload child needs, prepared before fork.
pub(crate) struct Exec {
    path: CString,
    argv: Vec<CString>,
    /// NUL-terminated `KEY=value` entries; zeroised on drop (they may hold secrets).
    env: Vec<Zeroizing<Vec<u8>>>,
    landlock: LandlockPlan,
    seccomp: seccompiler::BpfProgram,
    /// Output to `/dev/null` instead of the workload's pipes (the telemetry agent).
    quiet: bool,
}

/// The workload's environment: the plan's entries, then the secrets when they are delivered
/// as variables. Every exec of the cell gets the same.
pub(crate) fn workload_env(
    config: &InitConfig,
    secrets: &[SecretFrame],
) -> Vec<Zeroizing<Vec<u8>>> {
    let mut env: Vec<Zeroizing<Vec<u8>>> = config
        .env
        .iter()
        .map(|e| Zeroizing::new(e.as_bytes().to_vec()))
        .collect();
    if config.secret_delivery == SecretDeliveryMode::Env {
        for s in secrets {
            let mut entry = Zeroizing::new(Vec::with_capacity(s.key.len() + 1 + s.value.len()));
            entry.extend_from_slice(s.key.as_bytes());
            entry.push(b'=');
            entry.extend_from_slice(&s.value);
            env.push(entry);
        }
    }
    env
}

/// NUL-terminate each `KEY=value` entry for `execve`, refusing one that holds a NUL.
pub(crate) fn terminate_env(env: &mut [Zeroizing<Vec<u8>>]) -> Result<(), String> {
    if env.iter().any(|e| e.contains(&0)) {
        return Err("an environment entry contains a NUL byte".into());
    }
    for e in env.iter_mut() {
        e.push(0);
    }
    Ok(())
}

fn prepare(config: &InitConfig, secrets: Vec<SecretFrame>) -> Result<Exec, String> {
    let mut env = workload_env(config, &secrets);
    drop(secrets);
    terminate_env(&mut env)?;
    let path_var = config
        .env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(crate::plan::DEFAULT_PATH);
    let argv0 = config.argv.first().ok_or("run.argv is empty")?;
    let path = resolve_program(argv0, path_var)?;
    confined_exec(config, &path, &config.argv, env, false)
}

/// The telemetry agent's exec: its own binary, argument list and environment, the workload's
/// confinement.
fn prepare_agent(config: &InitConfig, agent: &AgentPlan) -> Result<Exec, String> {
    let mut env: Vec<Zeroizing<Vec<u8>>> = Vec::with_capacity(agent.env.len());
    for e in &agent.env {
        let mut entry = Zeroizing::new(e.as_bytes().to_vec());
        if entry.contains(&0) {
            return Err("a telemetry agent environment entry contains a NUL byte".into());
        }
        entry.push(0);
        env.push(entry);
    }
    let name = Path::new(&agent.path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| agent.path.clone());
    confined_exec(config, Path::new(&agent.path), &[name], env, true)
}

pub(crate) fn confined_exec(
    config: &InitConfig,
    path: &Path,
    argv: &[String],
    env: Vec<Zeroizing<Vec<u8>>>,
    quiet: bool,
) -> Result<Exec, String> {
    let argv = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()).map_err(|_| "argv contains a NUL byte".to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let seccomp = config
        .seccomp
        .iter()
        .map(|i| seccompiler::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let to_paths = |v: &[String]| v.iter().map(PathBuf::from).collect::<Vec<_>>();
    Ok(Exec {
        path: CString::new(path.as_os_str().as_bytes()).map_err(|_| "path contains NUL")?,
        argv,
        env,
        landlock: LandlockPlan {
            read_exec: to_paths(&config.landlock.read_exec),
            read_only: to_paths(&config.landlock.read_only),
            read_write: to_paths(&config.landlock.read_write),
        },
        seccomp,
        quiet,
    })
}

/// `argv[0]` as given when it contains a `/`, else the first executable match in `PATH`.
pub(crate) fn resolve_program(argv0: &str, path_var: &str) -> Result<PathBuf, String> {
    if argv0.contains('/') {
        return Ok(PathBuf::from(argv0));
    }
    for dir in path_var.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(argv0);
        if let Ok(meta) = std::fs::metadata(&candidate) {
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
        }
    }
    Err(format!(
        "'{argv0}' not found in PATH ({path_var}) inside the cell"
    ))
}

/// A forked and confined child, blocked before its `execve`.
struct ParkedChild {
    pid: Pid,
    /// Signals forwarded to it go through this pidfd (as every signal to a cell's process).
    pidfd: OwnedFd,
    /// Writing one byte lets it exec.
    go: File,
    /// Close-on-exec pipe: EOF means the exec happened, a message is the reason it did not.
    err: File,
}

impl ParkedChild {
    /// Let it exec; the reason it could not, if any.
    fn release(mut self) -> (Pid, OwnedFd, String) {
        // A child that already failed has closed its end: the write fails, the reason is below.
        let _ = self.go.write_all(&[1]);
        let mut reason = String::new();
        let _ = self.err.read_to_string(&mut reason);
        (self.pid, self.pidfd, reason)
    }
}

/// The workload (and the telemetry agent, when the cell has one), parked.
struct Parked {
    workload: ParkedChild,
    agent: Option<ParkedChild>,
    sigfd: SignalFd,
}

/// Prepare the execs, block the signals init handles (signalfd), fork the workload (and the
/// agent) and let each drop its privileges and confine itself up to just before `execve`.
fn park_workload(config: &InitConfig, secrets: Vec<SecretFrame>) -> Result<Parked, String> {
    let exec = prepare(config, secrets)?;
    let agent = config
        .telemetry_agent
        .as_ref()
        .map(|a| prepare_agent(config, a))
        .transpose()?;
    let sigfd = block_signals()?;
    let workload = park(config, &exec)?;
    drop(exec);
    let agent = match agent {
        Some(agent) => Some(park(config, &agent).map_err(|e| format!("telemetry agent: {e}"))?),
        None => None,
    };
    Ok(Parked {
        workload,
        agent,
        sigfd,
    })
}

/// Block the signals init handles and return a signalfd for them.
fn block_signals() -> Result<SignalFd, String> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    for s in FORWARDED_SIGNALS {
        mask.add(*s);
    }
    mask.thread_block()
        .map_err(|e| format!("block signals in init: {e}"))?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC).map_err(|e| format!("signalfd in init: {e}"))
}

fn park(config: &InitConfig, exec: &Exec) -> Result<ParkedChild, String> {
    let (go_r, go_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("pipe for start: {e}"))?;
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("pipe for exec status: {e}"))?;
    // SAFETY: init is single-threaded, so the child may allocate and call anything.
    match unsafe { nix::unistd::fork() } {
        Err(e) => Err(format!("fork: {e}")),
        Ok(ForkResult::Child) => {
            drop((go_w, err_r));
            let reason = become_workload(config, exec, File::from(go_r));
            let mut w = File::from(err_w);
            let _ = w.write_all(reason.as_bytes());
            // SAFETY: terminate the failed child without running init's destructors.
            unsafe { libc::_exit(127) }
        }
        Ok(ForkResult::Parent { child }) => {
            // Our unreaped child: the pid cannot name anyone else yet.
            let pidfd = rustix::process::Pid::from_raw(child.as_raw())
                .ok_or_else(|| format!("fork returned pid {child}"))
                .and_then(|pid| {
                    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
                        .map_err(|e| format!("pidfd_open of the forked child: {e}"))
                })?;
            Ok(ParkedChild {
                pid: child,
                pidfd,
                go: File::from(go_w),
                err: File::from(err_r),
            })
        }
    }
}

fn supervise(
    config: &InitConfig,
    parked: Result<Parked, String>,
    mut execs: Execs,
    control: &mut File,
    status: &mut File,
) -> i32 {
    let parked = match parked {
        Ok(p) => p,
        Err(reason) => {
            let _ = StatusMsg::SpawnFailed { reason }.send(status);
            return finish(config, control);
        }
    };
    // The agent first, so its first scan sees the workload. Whether it runs is the host's
    // to judge (it reports silence): its failure is not the workload's.
    if let Some(agent) = parked.agent {
        let _ = agent.release();
    }
    let (workload, workload_fd, reason) = parked.workload.release();
    if !reason.is_empty() {
        let _ = waitpid(workload, None);
        let _ = StatusMsg::SpawnFailed { reason }.send(status);
        return finish(config, control);
    }
    let sigfd = parked.sigfd;
    if StatusMsg::Started.send(status).is_err() {
        kill_all_and_reap();
        return 1;
    }

    let exit = loop {
        let (signal_ready, control_ready) = poll_two(&sigfd, control);
        if control_ready && !handle_command(config, &mut execs, control) {
            kill_all_and_reap();
            return 0;
        }
        if signal_ready {
            if let Ok(Some(info)) = sigfd.read_signal() {
                let signo = info.ssi_signo as i32;
                if signo != libc::SIGCHLD {
                    let _ = crate::pidfd::signal(&workload_fd, signo);
                }
            }
            if let Some(exit) = reap_children(&mut execs, Some(workload)) {
                break exit;
            }
        }
    };
    kill_all_and_reap();
    let _ = exit.send(status);
    finish(config, control)
}

/// After the workload is over: keep the namespaces for artifact export if the cell declared
/// artifacts (until the supervisor closes the control pipe), else exit at once.
fn finish(config: &InitConfig, control: &mut File) -> i32 {
    if config.keep_after_exit {
        wait_for_close(control)
    } else {
        0
    }
}

/// Reap every exited child (forgetting execs whose reaper ended); the workload's status when
/// it is among them.
fn reap_children(execs: &mut Execs, workload: Option<Pid>) -> Option<StatusMsg> {
    loop {
        let status = match waitpid(None, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return None,
            Ok(status) => status,
        };
        let Some(pid) = status.pid() else { continue };
        execs.reaped(pid);
        if Some(pid) != workload {
            continue;
        }
        match status {
            WaitStatus::Exited(_, code) => return Some(StatusMsg::Exited { code }),
            WaitStatus::Signaled(_, sig, _) => {
                return Some(StatusMsg::Signaled { signal: sig as i32 })
            }
            _ => continue,
        }
    }
}

/// Kill every other process of the cell and reap them all.
fn kill_all_and_reap() {
    // SAFETY: as PID 1 of the cell's pid namespace this reaches every other process in it.
    unsafe { libc::kill(-1, libc::SIGKILL) };
    while waitpid(None, Some(WaitPidFlag::__WALL)).is_ok() {}
}

/// Point our stdout/stderr at `/dev/null`: our copies of the workload's output pipes must
/// close, or the supervisor's readers never see EOF.
fn release_outputs() {
    if let Ok(null) = File::open("/dev/null") {
        for fd in [1, 2] {
            // SAFETY: replacing our own stdout/stderr with /dev/null.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

/// Block until the supervisor closes the control pipe (keeps the mount namespace for export).
fn wait_for_close(control: &mut File) -> i32 {
    release_outputs();
    let mut buf = [0u8; 16];
    loop {
        match control.read(&mut buf) {
            Ok(0) => return 0,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return 0,
        }
    }
}

/// In the forked child: drop to the workload's identity, confine, wait on `go`, exec.
/// Returns only on failure, with the reason.
fn become_workload(config: &InitConfig, exec: &Exec, mut go: File) -> String {
    let step = || -> Result<(), String> {
        nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
        confine_self(config, exec, &config.cwd)
    };
    if let Err(reason) = step() {
        return reason;
    }
    // Parked: everything but the exec is done. EOF means init gave up on us.
    let mut byte = [0u8; 1];
    loop {
        match go.read(&mut byte) {
            Ok(1) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // SAFETY: leave quietly; nothing of the workload ran.
            _ => unsafe { libc::_exit(0) },
        }
    }
    execve(exec)
}

/// In a forked child of init (after `setsid`): the workload's identity and every confinement,
/// in the order the kernel needs, up to just before `execve`. Shared by the workload, the
/// telemetry agent and every exec, so all three are confined exactly alike.
pub(crate) fn confine_self(config: &InitConfig, exec: &Exec, cwd: &str) -> Result<(), String> {
    {
        // Init run in the clone is not dumpable, which hands our /proc/self to the host's root
        // and would refuse the oom_score_adj write below. Until its exec (which sets
        // dumpability afresh) this child runs only our code.
        // SAFETY: prctl on this process only.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
            .map_err(|e| format!("reset signal mask: {e}"))?;
        if exec.quiet {
            let null = File::options()
                .write(true)
                .open("/dev/null")
                .map_err(|e| format!("open /dev/null: {e}"))?;
            for fd in [1, 2] {
                // SAFETY: replacing this child's own stdout/stderr.
                if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
                    return Err(format!(
                        "redirect output: {}",
                        std::io::Error::last_os_error()
                    ));
                }
            }
        }
        // Init shares the cell's memory limit: make the workload the OOM killer's first choice,
        // so init survives to report the exit. Raising the score needs no privilege (lowering
        // init's would need CAP_SYS_RESOURCE, which hosts often withhold).
        std::fs::write("/proc/self/oom_score_adj", "1000")
            .map_err(|e| format!("raise oom_score_adj: {e}"))?;
        nix::unistd::chdir(cwd).map_err(|e| format!("chdir to {cwd}: {e}"))?;
        nix::unistd::setgroups(&[]).map_err(|e| format!("setgroups([]): {e}"))?;
        caps::drop_all_capabilities().map_err(|e| e.to_string())?;
        let gid = nix::unistd::Gid::from_raw(config.gid);
        let uid = nix::unistd::Uid::from_raw(config.uid);
        nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("setresgid: {e}"))?;
        nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("setresuid: {e}"))?;
        caps::set_no_new_privs().map_err(|e| e.to_string())?;
        // No expected ABI: the kernel had no Landlock and the spec allows that (`minAbi: 0`).
        let restrict = match config.expected_landlock_abi {
            Some(_) => landlock_rules::restrict_self,
            None => landlock_rules::restrict_self_best_effort,
        };
        let applied = restrict(&exec.landlock).map_err(|e| e.to_string())?;
        if applied != config.expected_landlock_abi {
            return Err(format!(
                "Landlock ABI {applied:?} applied but {:?} was reported; refusing to run with \
                 evidence that does not match",
                config.expected_landlock_abi
            ));
        }
        // Seccomp last: everything above needs syscalls the filter denies.
        seccompiler::apply_filter(&exec.seccomp).map_err(|e| format!("apply seccomp: {e}"))?;
        Ok(())
    }
}

/// `execve` the prepared program; returns only on failure, with the reason.
pub(crate) fn execve(exec: &Exec) -> String {
    let argv: Vec<*const libc::c_char> = exec
        .argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = exec
        .env
        .iter()
        .map(|e| e.as_ptr().cast())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    // SAFETY: NUL-terminated strings and null-terminated pointer arrays that outlive the call.
    unsafe { libc::execve(exec.path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    let err = std::io::Error::last_os_error();
    format!(
        "execve {}: {err}",
        String::from_utf8_lossy(exec.path.as_bytes())
    )
}

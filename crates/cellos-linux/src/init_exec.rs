//! Execs inside a running cell, on init's side.
//!
//! For each exec init clones a reaper into a pid namespace of its own (`CLONE_NEWPID`), so
//! the reaper is PID 1 there and every process the command starts lives in that namespace:
//! killing the reaper kills the whole tree at once, however the command daemonises, with no
//! cgroup per exec (the same on cgroup v1 and v2). The reaper forks the command, which takes
//! exactly the workload's confinement ([`crate::init::confine_self`]) and execs; the reaper
//! reports the start and the exit on the exec's own report pipe, then reaps whatever the
//! command left running in the background until its namespace is empty. Init itself only
//! starts reapers and kills them on request, so it never blocks on an exec.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use zeroize::Zeroizing;

use crate::init::{
    confine_self, confined_exec, execve, resolve_program, terminate_env, workload_env, Exec,
};
use crate::plan::InitConfig;
use crate::protocol::{recv_fds, ExecFrame, ExecReport, SecretFrame, EXEC_FDS};

/// The running execs of a cell, by id.
pub(crate) struct Execs {
    /// The workload's environment (with secrets when they are delivered as variables).
    base_env: Vec<Zeroizing<Vec<u8>>>,
    running: HashMap<u64, (Pid, OwnedFd)>,
}

impl Execs {
    pub(crate) fn new(config: &InitConfig, secrets: &[SecretFrame]) -> Self {
        Self {
            base_env: workload_env(config, secrets),
            running: HashMap::new(),
        }
    }

    /// Read one exec request and its descriptors, and start it. An error means the control
    /// channel is broken (init then ends the cell); a request that cannot run is reported on
    /// its own report pipe.
    pub(crate) fn start(&mut self, config: &InitConfig, control: &mut File) -> io::Result<()> {
        let frame = ExecFrame::read(control)?;
        let fds = recv_fds(std::os::fd::AsFd::as_fd(control), EXEC_FDS)?;
        let Ok::<[OwnedFd; EXEC_FDS], _>([stdin, stdout, stderr, report]) = fds.try_into() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "exec descriptors",
            ));
        };
        let mut report = File::from(report);
        let exec = match self.prepare(config, &frame) {
            Ok(exec) => exec,
            Err(reason) => {
                let _ = ExecReport::SpawnFailed { reason }.send(&mut report);
                return Ok(());
            }
        };
        let cwd = frame.cwd.clone().unwrap_or_else(|| config.cwd.clone());
        let io = ExecIo {
            stdio: [stdin, stdout, stderr],
            report,
            tty: frame.tty,
        };
        // A failed clone drops the report pipe unwritten: the supervisor sees it close without
        // a start and reports the exec as not started.
        if let Some(reaper) = spawn_reaper(config, &exec, &cwd, io) {
            self.running.insert(frame.id, reaper);
        }
        Ok(())
    }

    /// Read an exec id and kill that exec's whole process tree.
    pub(crate) fn kill(&mut self, control: &mut File) -> io::Result<()> {
        let mut id = [0u8; 8];
        control.read_exact(&mut id)?;
        if let Some((_, pidfd)) = self.running.get(&u64::from_le_bytes(id)) {
            let _ = crate::pidfd::signal(pidfd, libc::SIGKILL);
        }
        Ok(())
    }

    /// A child of init was reaped: forget it if it was an exec's reaper.
    pub(crate) fn reaped(&mut self, pid: Pid) {
        self.running.retain(|_, (p, _)| *p != pid);
    }

    fn prepare(&self, config: &InitConfig, frame: &ExecFrame) -> Result<Exec, String> {
        let mut env: Vec<Zeroizing<Vec<u8>>> = self
            .base_env
            .iter()
            .filter(|e| {
                let name = e.split(|b| *b == b'=').next().unwrap_or(&[]);
                !frame
                    .env
                    .iter()
                    .any(|o| o.as_bytes().split(|b| *b == b'=').next() == Some(name))
            })
            .cloned()
            .collect();
        env.extend(
            frame
                .env
                .iter()
                .map(|e| Zeroizing::new(e.as_bytes().to_vec())),
        );
        terminate_env(&mut env)?;
        let path_var = env
            .iter()
            .find_map(|e| e.strip_prefix(b"PATH="))
            .map(|v| String::from_utf8_lossy(&v[..v.len() - 1]).into_owned())
            .unwrap_or_else(|| crate::plan::DEFAULT_PATH.to_owned());
        let argv0 = frame.argv.first().ok_or("argv is empty")?;
        let path = if argv0.contains('/') {
            Path::new(argv0).to_path_buf()
        } else {
            resolve_program(argv0, &path_var)?
        };
        confined_exec(config, &path, &frame.argv, env, false)
    }
}

/// The exec's descriptors as init received them.
struct ExecIo {
    stdio: [OwnedFd; 3],
    report: File,
    tty: bool,
}

/// Clone the reaper as PID 1 of a new pid namespace; returns its pid and a pidfd for it.
fn spawn_reaper(config: &InitConfig, exec: &Exec, cwd: &str, io: ExecIo) -> Option<(Pid, OwnedFd)> {
    let mut pidfd: std::os::fd::RawFd = -1;
    // SAFETY: init is single-threaded, so the child may allocate and call anything; it never
    // returns into init's frames (it ends in `_exit`).
    let pid = unsafe {
        crate::clone::fork_like_clone(libc::CLONE_NEWPID | libc::CLONE_PIDFD, Some(&mut pidfd))
    }
    .ok()?;
    if pid == 0 {
        let code = reaper(config, exec, cwd, io);
        // SAFETY: end the reaper without running init's destructors.
        unsafe { libc::_exit(code) }
    }
    drop(io);
    // SAFETY: CLONE_PIDFD stored a new descriptor that we now own.
    let pidfd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(pidfd) };
    Some((Pid::from_raw(pid), pidfd))
}

/// PID 1 of the exec's namespace: fork the command, report its start and exit, then reap
/// what it left behind until the namespace is empty.
fn reaper(config: &InitConfig, exec: &Exec, cwd: &str, io: ExecIo) -> i32 {
    let ExecIo {
        stdio,
        mut report,
        tty,
    } = io;
    // SAFETY: prctl on this process only: die with init.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    let command = match start_command(config, exec, cwd, stdio, tty) {
        Ok(command) => command,
        Err(reason) => {
            let _ = ExecReport::SpawnFailed { reason }.send(&mut report);
            return 0;
        }
    };
    if ExecReport::Started.send(&mut report).is_err() {
        return 1;
    }
    if let Some(exit) = wait_for(command) {
        let _ = exit.send(&mut report);
    }
    drop(report);
    // Background processes the command started run on; the namespace ends with the last.
    while !matches!(
        waitpid(None, Some(WaitPidFlag::__WALL)),
        Err(nix::errno::Errno::ECHILD)
    ) {}
    0
}

/// Fork the command and wait for its `execve`: its pid, or why it could not start.
fn start_command(
    config: &InitConfig,
    exec: &Exec,
    cwd: &str,
    stdio: [OwnedFd; 3],
    tty: bool,
) -> Result<Pid, String> {
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("pipe for exec status: {e}"))?;
    // SAFETY: the reaper is single-threaded.
    let command = match unsafe { nix::unistd::fork() } {
        Err(e) => return Err(format!("fork: {e}")),
        Ok(ForkResult::Child) => {
            drop(err_r);
            let reason = become_command(config, exec, cwd, &stdio, tty);
            let _ = File::from(err_w).write_all(reason.as_bytes());
            // SAFETY: terminate the failed child without running destructors.
            unsafe { libc::_exit(127) }
        }
        Ok(ForkResult::Parent { child }) => child,
    };
    // Our copies must close, or the supervisor never sees the command's output end.
    drop((stdio, err_w));
    let mut reason = String::new();
    let _ = File::from(err_r).read_to_string(&mut reason);
    if reason.is_empty() {
        Ok(command)
    } else {
        let _ = waitpid(command, None);
        Err(reason)
    }
}

/// Reap children until `command` ends; how it ended (`None` if it could not be waited for).
fn wait_for(command: Pid) -> Option<ExecReport> {
    loop {
        match waitpid(None, Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == command => {
                return Some(ExecReport::Exited { code })
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == command => {
                return Some(ExecReport::Signaled { signal: sig as i32 })
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return None,
        }
    }
}

/// In the command's child: take the exec's descriptors as 0, 1, 2 (and the terminal as the
/// controlling one), confine exactly like the workload, exec. Returns only on failure.
fn become_command(
    config: &InitConfig,
    exec: &Exec,
    cwd: &str,
    stdio: &[OwnedFd; 3],
    tty: bool,
) -> String {
    for (fd, target) in stdio.iter().zip(0..) {
        // SAFETY: placing descriptors we own onto this child's standard numbers.
        if unsafe { libc::dup2(fd.as_raw_fd(), target) } < 0 {
            return format!("dup2 onto fd {target}: {}", io::Error::last_os_error());
        }
    }
    if let Err(e) = nix::unistd::setsid() {
        return format!("setsid: {e}");
    }
    // SAFETY: TIOCSCTTY on our stdin, a terminal we just became the session leader of.
    if tty && unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
        return format!(
            "make the terminal the controlling one: {}",
            io::Error::last_os_error()
        );
    }
    if let Err(reason) = confine_self(config, exec, cwd) {
        return reason;
    }
    execve(exec)
}

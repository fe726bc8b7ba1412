//! Starting the cell's init in fresh namespaces.
//!
//! We call the raw `clone` system call with a null stack, which behaves like `fork` with
//! namespace flags: the child continues on a copy-on-write copy of our stack and becomes init:
//! in the clone itself with [`InitMode::InClone`] (which needs this process single-threaded
//! and never to have held a signing key, see [`crate::init_in_clone`]), or by exec'ing the
//! init binary with [`InitMode::Exec`]. `nix::sched::clone` (and glibc's `clone`) instead need a
//! separately allocated stack and run a closure on it, which buys nothing here and costs an
//! allocation and a guard page per cell.
//! When the cell has a v2 leaf we use `clone3` with `CLONE_INTO_CGROUP` (same fork-like null
//! stack), so the child is born in it; v1 leaves are joined by the child itself, writing `"0"`
//! to their `tasks` files before anything else. Neither takes the kernel's global threadgroup
//! lock that a parent-side `cgroup.procs` write takes (an RCU grace period, ~9 ms when idle).
//!
//! Until it becomes init the child runs in a copy of a possibly multi-threaded process, so it
//! only makes async-signal-safe calls on data prepared before the clone: `prctl`, `write`,
//! `dup2`, `read`, `execveat`, `_exit`. A step that fails writes a
//! [`StatusMsg::StartFailed`](crate::protocol::StatusMsg) line (formatted on the stack) to the
//! status pipe and exits with the step's code, so the supervisor can name it.
//!
//! An exec'd init is exec'd from a descriptor ([`InitExe`]) that the supervisor, as host root,
//! opened: the child already holds the cell's ids, and a directory on the way to the binary
//! that only host root may search (`/root` is 0700 on Debian) would refuse a path lookup.
//!
//! The clone also returns a pidfd for the child (`CLONE_PIDFD`): every signal the supervisor
//! sends init goes through it.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that cloned exits, not the process: the thread
//! that calls [`spawn`] must outlive the cell (the supervisor runs each cell from one thread).

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use crate::cgroup::JoinHandles;
use crate::error::LinuxError;
use crate::init_in_clone::{self, ProcessStrings};
use crate::protocol::{
    start_failure_line, Handoff, StartStep, CONTROL_FD, RELEASE, START_FAILURE_LINE_MAX, STATUS_FD,
};
use crate::refusal::{Refusal, Step};

/// `CLONE_INTO_CGROUP` (linux/sched.h, 5.7+); not exported by the libc crate.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// How the cell's init starts: a choice of the composition root, which knows whether its
/// process stays single-threaded and keyless up to every create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitMode {
    /// Run init in the clone itself (no exec, most of a millisecond saved per cell). The
    /// cloning process must be single-threaded and never have held a signing key (see
    /// [`crate::init_in_clone`]); otherwise create is refused ([`InCloneRefusal`]) rather
    /// than quietly paying for an exec.
    InClone,
    /// Exec the init binary: works in any process (a long-lived, multi-threaded supervisor),
    /// and keeps the supervisor's memory out of every cell by construction.
    Exec,
}

/// Why init may not run in the clone of this process ([`InitMode::InClone`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InCloneRefusal {
    #[error(
        "init cannot run in the clone (InitMode::InClone): this process has more than one \
         thread, and the clone's copy of it could deadlock on a lock another thread holds; use \
         InitMode::Exec in a multi-threaded supervisor"
    )]
    MultiThreaded,
    #[error(
        "init cannot run in the clone (InitMode::InClone): this process has held a signing \
         key, which the clone would copy into the cell's init; use InitMode::Exec in a \
         supervisor that loads its signing key before creating cells"
    )]
    KeyMaterialHeld,
    #[error(
        "init cannot run in the clone (InitMode::InClone): the kernel does not report where \
         this process's argv and environment are (/proc/self/stat), so init could not scrub \
         them; use InitMode::Exec"
    )]
    NoProcessStrings,
}

/// What init run in the clone needs, checked right before the clone: a thread started or a
/// key loaded after any earlier check would count.
fn in_clone_strings() -> Result<&'static ProcessStrings, InCloneRefusal> {
    if !init_in_clone::single_threaded() {
        return Err(InCloneRefusal::MultiThreaded);
    }
    if cellos_core::integrity::key_material_held() {
        return Err(InCloneRefusal::KeyMaterialHeld);
    }
    ProcessStrings::of_self().ok_or(InCloneRefusal::NoProcessStrings)
}

/// The init binary, opened once by the supervisor (host root) and exec'd by descriptor.
#[derive(Debug)]
pub struct InitExe {
    fd: OwnedFd,
    path: PathBuf,
    /// `argv[0]`: the binary's file name, so the cell's `/proc/1/cmdline` shows no host path.
    name: CString,
}

impl InitExe {
    /// Open `path` (`O_PATH`, close-on-exec): one lookup, by the supervisor, whatever the
    /// modes of the directories on the way.
    pub fn open(path: &Path) -> Result<InitExe, LinuxError> {
        use std::os::unix::ffi::OsStrExt;
        let fd = rustix::fs::open(
            path,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| {
            LinuxError::io(format!("open init executable {}", path.display()), e.into())
        })?;
        let st = rustix::fs::fstat(&fd).map_err(|e| {
            LinuxError::io(format!("stat init executable {}", path.display()), e.into())
        })?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
            return Err(LinuxError::Refused {
                what: format!("init executable '{}' is not a regular file", path.display()),
            });
        }
        let name = path.file_name().unwrap_or(path.as_os_str()).as_bytes();
        let name = CString::new(name).map_err(|_| LinuxError::Refused {
            what: "init executable path contains a NUL byte".into(),
        })?;
        Ok(InitExe {
            fd,
            path: path.to_path_buf(),
            name,
        })
    }

    /// Where it was opened (for messages: the exec itself never looks the path up).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `struct clone_args` as of Linux 5.7 (`CLONE_ARGS_SIZE_VER2`). Written by hand: neither
/// libc, nix nor rustix expose `clone3` with a fork-like null stack.
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Namespaces every cell gets at clone time. The cgroup namespace is entered by init itself,
/// after the parent has moved it into the cell's cgroup, so that cgroup becomes its root.
pub const CLONE_NAMESPACES: libc::c_int = libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS;

/// Lowest descriptor used for the staging copies of inherited fds; always above every target,
/// so dup'ing one onto its target never clobbers another staging copy.
const STAGING_MIN_FD: RawFd = 64;

/// Everything the child needs, prepared before the clone so the child does not allocate.
pub struct InitCommand {
    /// Staging copy of the init binary's descriptor: its own number may be a dup target.
    exe: OwnedFd,
    argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
    /// (staging copy, target fd) pairs; staging copies are close-on-exec.
    fds: Vec<(OwnedFd, RawFd)>,
    /// How the child enters the cell's cgroups (see module docs).
    cgroup: JoinHandles,
    /// The plan and secrets, for an init run in the clone (see [`Spawned::handoff`]).
    handoff: Handoff,
    /// Staging copy of the status pipe, where a failed step is reported (-1: none).
    status: RawFd,
    mode: InitMode,
}

/// A cloned cell init.
pub struct Spawned {
    /// Its host pid.
    pub pid: i32,
    /// A pidfd for it: the only way the supervisor signals it.
    pub pidfd: OwnedFd,
    /// Whether it was born in the v2 leaf (if not, the caller must move it there).
    pub in_v2_leaf: bool,
    /// The plan, handed back when the child execs init: the caller then sends it as the
    /// config frame. `None` when init runs in the clone, which took it from memory.
    pub handoff: Option<Handoff>,
}

impl InitCommand {
    /// `fds` are dup'ed onto their targets in the child; everything else is closed on exec.
    pub fn new(
        exe: &InitExe,
        mode: InitMode,
        args: &[String],
        fds: &[(BorrowedFd<'_>, RawFd)],
        cgroup: JoinHandles,
        handoff: Handoff,
    ) -> Result<InitCommand, LinuxError> {
        let mut argv = vec![exe.name.clone()];
        for a in args {
            argv.push(CString::new(a.as_bytes()).map_err(|_| LinuxError::Refused {
                what: "init argument contains a NUL byte".into(),
            })?);
        }
        let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut staged = Vec::with_capacity(fds.len());
        let min = fds
            .iter()
            .map(|(_, t)| *t + 1)
            .max()
            .unwrap_or(0)
            .max(STAGING_MIN_FD);
        for (fd, target) in fds {
            let copy = rustix::io::fcntl_dupfd_cloexec(fd, min).map_err(|e| {
                LinuxError::errno("stage descriptor for cell init", e.raw_os_error())
            })?;
            staged.push((copy, *target));
        }
        let exe = rustix::io::fcntl_dupfd_cloexec(&exe.fd, min)
            .map_err(|e| LinuxError::errno("stage init executable descriptor", e.raw_os_error()))?;
        let status = staged
            .iter()
            .find(|(_, target)| *target == STATUS_FD)
            .map_or(-1, |(copy, _)| copy.as_raw_fd());
        Ok(InitCommand {
            exe,
            argv,
            argv_ptrs,
            envp_ptrs: vec![std::ptr::null()],
            fds: staged,
            cgroup,
            handoff,
            status,
            mode,
        })
    }

    /// Clone the child in new namespaces and the cell's cgroups. It waits (blocked on the
    /// control pipe, which must be among the inherited fds as [`CONTROL_FD`]) for [`RELEASE`]
    /// before becoming init; EOF on that pipe makes it exit.
    pub fn spawn(self) -> Result<Spawned, LinuxError> {
        debug_assert_eq!(self.argv.len() + 1, self.argv_ptrs.len());
        let in_clone = match self.mode {
            InitMode::InClone => Some(in_clone_strings()?),
            InitMode::Exec => None,
        };
        let mut into_v2 = false;
        let mut pid = -1;
        let mut pidfd: RawFd = -1;
        if let Some(leaf) = &self.cgroup.v2_leaf {
            let args = CloneArgs {
                flags: (CLONE_NAMESPACES | libc::CLONE_PIDFD) as u64 | CLONE_INTO_CGROUP,
                pidfd: &mut pidfd as *mut RawFd as u64,
                exit_signal: libc::SIGCHLD as u64,
                cgroup: leaf.as_raw_fd() as u64,
                ..CloneArgs::default()
            };
            // SAFETY: fork-like clone3 (null stack); the child only runs `child_after_clone`,
            // which makes async-signal-safe calls on memory prepared above and never returns.
            pid = unsafe {
                libc::syscall(
                    libc::SYS_clone3,
                    &args as *const CloneArgs,
                    std::mem::size_of::<CloneArgs>(),
                )
            };
            if pid == 0 {
                // SAFETY: we are the freshly cloned child.
                unsafe { self.child_after_clone(in_clone) }
            }
            into_v2 = pid > 0;
            let errno = std::io::Error::last_os_error().raw_os_error();
            // Older kernels lack clone3 or CLONE_INTO_CGROUP: fall back to plain clone.
            if pid < 0 && !matches!(errno, Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL)) {
                return Err(clone_error(std::io::Error::last_os_error()));
            }
        }
        if pid < 0 {
            // SAFETY: the child only runs `child_after_clone`, as above; with CLONE_PIDFD the
            // kernel stores the pidfd in `pidfd`.
            pid = match unsafe {
                fork_like_clone(CLONE_NAMESPACES | libc::CLONE_PIDFD, Some(&mut pidfd))
            } {
                // SAFETY: we are the freshly cloned child.
                Ok(0) => unsafe { self.child_after_clone(in_clone) },
                Ok(child) => child as libc::c_long,
                Err(e) => return Err(clone_error(e)),
            };
        }
        // SAFETY: the kernel installed this descriptor for us (close-on-exec) with the child.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        Ok(Spawned {
            pid: pid as i32,
            pidfd,
            in_v2_leaf: into_v2,
            handoff: in_clone.is_none().then_some(self.handoff),
        })
    }

    /// Child side of the clone. Only async-signal-safe calls from here on, up to init (which
    /// `in_clone` runs right here, the process having been single-threaded).
    unsafe fn child_after_clone(&self, in_clone: Option<&ProcessStrings>) -> ! {
        // Die with the thread that cloned us (see module docs).
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        // Join the v1 leaves ourselves: "0" is the writing thread, and we are single-threaded.
        for tasks in &self.cgroup.v1_tasks {
            if libc::write(tasks.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                self.fail(StartStep::JoinCgroupV1);
            }
        }
        for (staged, target) in &self.fds {
            if libc::dup2(staged.as_raw_fd(), *target) < 0 {
                self.fail(StartStep::InheritFds);
            }
        }
        // Block until the parent has written our id maps and moved us into the cgroup. EOF
        // (the parent died or gave up) means exit: the pipe also closes the PDEATHSIG race
        // between clone and prctl above.
        let mut byte = 0u8;
        loop {
            let n = libc::read(CONTROL_FD, (&mut byte as *mut u8).cast(), 1);
            if n == 1 && byte == RELEASE {
                break;
            }
            if n < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            if n == 0 {
                // The supervisor gave up on us: it knows why, there is nothing to report.
                libc::_exit(StartStep::AwaitRelease.exit_code());
            }
            self.fail(StartStep::AwaitRelease);
        }
        // We still carry our host ids (root), which are not mapped in the new namespace; exec
        // would compute our capabilities from those and drop them all. Become the namespace's
        // root first (init run in the clone wants those ids too). Raw system calls: glibc's
        // set*id wrappers broadcast to every thread of the (copied) process through signals,
        // which would hang in this single-threaded copy.
        if libc::syscall(libc::SYS_setresgid, 0, 0, 0) != 0
            || libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
            || libc::syscall(libc::SYS_setresuid, 0, 0, 0) != 0
        {
            self.fail(StartStep::BecomeRoot);
        }
        if let Some(strings) = in_clone {
            init_in_clone::become_init(strings, &self.handoff);
        }
        // By descriptor, not by path (see module docs). The descriptor is close-on-exec, which
        // only matters for scripts: init is an ELF binary.
        libc::syscall(
            libc::SYS_execveat,
            self.exe.as_raw_fd(),
            c"".as_ptr(),
            self.argv_ptrs.as_ptr(),
            self.envp_ptrs.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
        self.fail(StartStep::ExecInit);
    }

    /// Report that `step` failed (with the current errno) on the status pipe and exit with
    /// its code. Async-signal-safe: the line is formatted on the stack.
    unsafe fn fail(&self, step: StartStep) -> ! {
        let errno = *libc::__errno_location();
        let mut line = [0u8; START_FAILURE_LINE_MAX];
        let len = start_failure_line(step, errno, &mut line);
        libc::write(self.status, line.as_ptr().cast(), len);
        libc::_exit(step.exit_code());
    }
}

/// The error for a child that reported `step` failing with `errno`: the step, the errno and
/// what to change. `exe` is the init binary, `host_root` the host uid the cell's root maps to.
pub fn start_failure(step: StartStep, errno: i32, exe: &Path, host_root: u32) -> LinuxError {
    let err = std::io::Error::from_raw_os_error(errno);
    let exe = exe.display();
    let (what, fix) = match step {
        StartStep::JoinCgroupV1 => (
            "join the cell's cgroup v1 leaves (write to their tasks files)",
            "check that the cgroup v1 hierarchies under /sys/fs/cgroup are mounted read-write \
             and the cellos cgroups are below their pids limit (`cellos doctor`)"
                .to_owned(),
        ),
        StartStep::InheritFds => (
            "install the cell's inherited descriptors (dup2)",
            "raise the open-file limit of the cellos process (ulimit -n)".to_owned(),
        ),
        StartStep::AwaitRelease => (
            "wait for the supervisor's release byte",
            "the control socket between supervisor and cell failed; run the cell again".to_owned(),
        ),
        StartStep::BecomeRoot => (
            "become the cell's root (setresgid, setgroups, setresuid to 0 in its user namespace)",
            format!(
                "the cell's uid/gid maps (host ids from {host_root}) were not accepted: check that \
                 no LSM policy denies setgroups or id changes in user namespaces (`cellos doctor`)"
            ),
        ),
        StartStep::ExecInit => {
            let fix = match errno {
                libc::EACCES => format!(
                    "the cell's root (host uid {host_root}) may not execute {exe}: make it \
                     executable by others (chmod o+x {exe}) on a mount without noexec; the \
                     directories on its way need no permission, the supervisor opened it"
                ),
                libc::ENOENT => format!(
                    "{exe} or its ELF interpreter is missing: install cellos-cell-init (a static \
                     binary) next to cellos"
                ),
                libc::ENOEXEC | libc::ELIBBAD => format!(
                    "{exe} is not an executable for this machine: rebuild it for this \
                     architecture"
                ),
                libc::ENOSYS => {
                    return LinuxError::missing(
                        "execveat(2)",
                        format!("run on Linux 3.19 or newer to start cells from {exe} ({err})"),
                    )
                }
                _ => format!("execveat of {exe} failed; see execve(2) for this errno"),
            };
            ("exec the cell's init", fix)
        }
    };
    LinuxError::Setup {
        what: format!("start cell init: {what}"),
        detail: format!("{err}; fix: {fix}"),
    }
}

/// The raw `clone` system call with a null stack, which behaves like `fork` with `flags` (see
/// the module docs); the child's exit signal is SIGCHLD. With `CLONE_PIDFD` in `flags` the kernel
/// stores the child's pidfd in `pidfd`. Returns the child's pid in the parent and 0 in the child.
///
/// # Safety
/// The child continues on a copy of the caller's stack, in a copy of a possibly multi-threaded
/// process: it may only make async-signal-safe calls on memory prepared before the call, and it
/// must end in `execve` or `_exit`, never return into the caller's frames.
pub(crate) unsafe fn fork_like_clone(
    flags: libc::c_int,
    pidfd: Option<&mut RawFd>,
) -> std::io::Result<i32> {
    let parent_tid = pidfd.map_or(std::ptr::null_mut(), |fd| fd as *mut RawFd);
    let r = libc::syscall(
        libc::SYS_clone,
        (flags | libc::SIGCHLD) as libc::c_ulong,
        std::ptr::null_mut::<libc::c_void>(),
        parent_tid,
        std::ptr::null_mut::<libc::c_void>(),
        0usize,
    );
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r as i32)
    }
}

fn clone_error(err: std::io::Error) -> LinuxError {
    let errno = err.raw_os_error().unwrap_or(0);
    Refusal::new(Step::CloneNamespaces, "for the cell's init", errno).into()
}

/// Reap `pid` (blocking), retrying on EINTR. Returns the raw wait status.
pub fn reap(pid: i32) -> Option<i32> {
    let mut status = 0;
    loop {
        // SAFETY: plain waitpid on our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if r == pid {
            return Some(status);
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failed_step_is_named_with_its_errno_and_a_fix() {
        for step in StartStep::ALL {
            let msg = start_failure(step, libc::EPERM, Path::new("/x/init"), 7).to_string();
            assert!(msg.starts_with("start cell init: "), "{msg}");
            assert!(msg.contains("(os error 1)"), "{msg}");
            assert!(msg.contains("; fix: "), "{msg}");
            assert!(!msg.contains("Broken pipe"), "{msg}");
        }
    }

    #[test]
    fn an_init_the_cell_may_not_execute_is_named_with_its_path_and_the_cells_uid() {
        let msg = start_failure(StartStep::ExecInit, libc::EACCES, Path::new("/x/init"), 7);
        let msg = msg.to_string();
        assert!(msg.contains("exec the cell's init"), "{msg}");
        assert!(msg.contains("host uid 7"), "{msg}");
        assert!(msg.contains("chmod o+x /x/init"), "{msg}");
        let missing = start_failure(StartStep::ExecInit, libc::ENOSYS, Path::new("/x/init"), 7);
        assert!(
            matches!(missing, LinuxError::MissingFeature { .. }),
            "{missing}"
        );
    }

    #[test]
    fn init_in_the_clone_of_a_multi_threaded_process_is_refused_with_the_fix() {
        // The test harness runs tests on threads of their own.
        let refusal = in_clone_strings().unwrap_err();
        assert_eq!(refusal, InCloneRefusal::MultiThreaded);
        let port = cellos_core::ports::PortError::from(LinuxError::from(refusal));
        assert_eq!(port.kind, cellos_core::ports::PortErrorKind::Refused);
        assert!(
            port.message
                .contains("use InitMode::Exec in a multi-threaded supervisor"),
            "{port}"
        );
    }

    #[test]
    fn the_init_binary_is_named_by_its_file_name_and_must_be_a_regular_file() {
        let exe = InitExe::open(Path::new("/bin/sh")).unwrap();
        assert_eq!(exe.name.to_bytes(), b"sh");
        assert_eq!(exe.path(), Path::new("/bin/sh"));
        let dir = InitExe::open(Path::new("/")).unwrap_err();
        assert!(matches!(dir, LinuxError::Refused { .. }), "{dir}");
        let gone = InitExe::open(Path::new("/nonexistent/init")).unwrap_err();
        assert!(gone.to_string().contains("/nonexistent/init"), "{gone}");
    }
}

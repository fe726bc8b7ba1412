//! Starting the cell's init in fresh namespaces.
//!
//! We call the raw `clone` system call with a null stack, which behaves like `fork` with
//! namespace flags: the child continues on a copy-on-write copy of our stack and becomes init:
//! in the clone itself when this process is single-threaded (see [`crate::init_in_clone`]),
//! else by exec'ing the init binary. `nix::sched::clone` (and glibc's `clone`) instead need a
//! separately allocated stack and run a closure on it, which buys nothing here and costs an
//! allocation and a guard page per cell.
//! When the cell has a v2 leaf we use `clone3` with `CLONE_INTO_CGROUP` (same fork-like null
//! stack), so the child is born in it; v1 leaves are joined by the child itself, writing `"0"`
//! to their `tasks` files before anything else. Neither takes the kernel's global threadgroup
//! lock that a parent-side `cgroup.procs` write takes (an RCU grace period, ~9 ms when idle).
//!
//! Until it becomes init the child runs in a copy of a possibly multi-threaded process, so it
//! only makes async-signal-safe calls on data prepared before the clone: `prctl`, `write`,
//! `dup2`, `read`, `execve`, `_exit`.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that cloned exits, not the process: the thread
//! that calls [`spawn`] must outlive the cell (the supervisor runs each cell from one thread).

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use crate::cgroup::JoinHandles;
use crate::error::LinuxError;
use crate::init_in_clone::{self, ProcessStrings};
use crate::protocol::{Handoff, CONTROL_FD, RELEASE};
use crate::refusal::{Refusal, Step};

/// `CLONE_INTO_CGROUP` (linux/sched.h, 5.7+); not exported by the libc crate.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

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
    exe: CString,
    argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
    /// (staging copy, target fd) pairs; staging copies are close-on-exec.
    fds: Vec<(OwnedFd, RawFd)>,
    /// How the child enters the cell's cgroups (see module docs).
    cgroup: JoinHandles,
    /// The plan and secrets, for an init run in the clone (see [`Spawned::handoff`]).
    handoff: Handoff,
}

/// A cloned cell init.
pub struct Spawned {
    /// Its host pid.
    pub pid: i32,
    /// Whether it was born in the v2 leaf (if not, the caller must move it there).
    pub in_v2_leaf: bool,
    /// The plan, handed back when the child execs init: the caller then sends it as the
    /// config frame. `None` when init runs in the clone, which took it from memory.
    pub handoff: Option<Handoff>,
}

impl InitCommand {
    /// `fds` are dup'ed onto their targets in the child; everything else is closed on exec.
    pub fn new(
        exe: &std::path::Path,
        args: &[String],
        fds: &[(BorrowedFd<'_>, RawFd)],
        cgroup: JoinHandles,
        handoff: Handoff,
    ) -> Result<InitCommand, LinuxError> {
        use std::os::unix::ffi::OsStrExt;
        let cstr = |b: &[u8], what: &str| {
            CString::new(b).map_err(|_| LinuxError::Refused {
                what: format!("{what} contains a NUL byte"),
            })
        };
        let exe_c = cstr(exe.as_os_str().as_bytes(), "init executable path")?;
        let mut argv = vec![exe_c.clone()];
        for a in args {
            argv.push(cstr(a.as_bytes(), "init argument")?);
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
        Ok(InitCommand {
            exe: exe_c,
            argv,
            argv_ptrs,
            envp_ptrs: vec![std::ptr::null()],
            fds: staged,
            cgroup,
            handoff,
        })
    }

    /// Clone the child in new namespaces and the cell's cgroups. It waits (blocked on the
    /// control pipe, which must be among the inherited fds as [`CONTROL_FD`]) for [`RELEASE`]
    /// before becoming init; EOF on that pipe makes it exit.
    pub fn spawn(self) -> Result<Spawned, LinuxError> {
        debug_assert_eq!(self.argv.len() + 1, self.argv_ptrs.len());
        // Decided before the clone: a copy of a single-threaded process that has never held a
        // signing key may run init itself.
        let in_clone = (init_in_clone::single_threaded()
            && !cellos_core::integrity::key_material_held())
        .then(ProcessStrings::of_self)
        .flatten();
        let mut into_v2 = false;
        let mut pid = -1;
        if let Some(leaf) = &self.cgroup.v2_leaf {
            let args = CloneArgs {
                flags: CLONE_NAMESPACES as u64 | CLONE_INTO_CGROUP,
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
            let flags = (CLONE_NAMESPACES | libc::SIGCHLD) as libc::c_ulong;
            // SAFETY: as above, with the classic fork-like clone.
            pid = unsafe {
                libc::syscall(
                    libc::SYS_clone,
                    flags,
                    std::ptr::null_mut::<libc::c_void>(),
                    std::ptr::null_mut::<libc::c_void>(),
                    std::ptr::null_mut::<libc::c_void>(),
                    0usize,
                )
            };
            if pid == 0 {
                // SAFETY: we are the freshly cloned child.
                unsafe { self.child_after_clone(in_clone) }
            }
        }
        if pid < 0 {
            return Err(clone_error(std::io::Error::last_os_error()));
        }
        Ok(Spawned {
            pid: pid as i32,
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
                libc::_exit(123);
            }
        }
        for (staged, target) in &self.fds {
            if libc::dup2(staged.as_raw_fd(), *target) < 0 {
                libc::_exit(126);
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
            libc::_exit(125);
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
            libc::_exit(124);
        }
        if let Some(strings) = in_clone {
            init_in_clone::become_init(strings, &self.handoff);
        }
        libc::execve(
            self.exe.as_ptr(),
            self.argv_ptrs.as_ptr(),
            self.envp_ptrs.as_ptr(),
        );
        libc::_exit(127);
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

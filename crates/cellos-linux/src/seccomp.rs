//! The cell's seccomp filter: an allow-list.
//!
//! The workload already runs without capabilities in its own namespaces; the filter narrows the
//! kernel surface still reachable from there to the calls ordinary programs make (files,
//! memory, processes, threads, signals, sockets, SysV and POSIX IPC). Everything with a history
//! of privilege escalations (new namespaces, mounts, BPF, io_uring, keyrings, perf,
//! userfaultfd, ptrace, ...) is left out, and so is every call this profile does not name:
//!
//! - a call a reviewed kernel has but the profile does not allow fails with `EPERM`, an
//!   ordinary permission error;
//! - `clone3` fails with `ENOSYS`: its flags sit behind a pointer the filter cannot read, and on
//!   `ENOSYS` libc falls back to `clone`, whose flags the filter does check;
//! - a number above [`LAST_REVIEWED`] (a call from a newer kernel, or the x32 range) fails with
//!   `ENOSYS`, as on a kernel that lacks it, so libc falls back to the older call it uses there.
//!
//! The program is a binary search over ranges of syscall numbers with one verdict each (see
//! [`dispatch`]); only `clone`, `personality` and `socket`, whose arguments decide, and calls
//! from a foreign architecture run the program seccompiler compiles from their rules. The tests
//! check the search against seccompiler's program for the whole policy, call by call.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};
use sha2::{Digest, Sha256};

use crate::error::LinuxError;

/// Name recorded in isolation evidence for [`default_profile`]. `v1` was a deny list over an
/// allow-by-default policy.
pub const DEFAULT_PROFILE_NAME: &str = "cellos-default-v2";

/// The highest syscall number this profile was reviewed against: `mseal`, the last call of
/// Linux 6.12's table. Since Linux 5.1 every architecture gives a new call the same number, so
/// this one bound serves both tables. Anything above it fails with `ENOSYS`.
pub const LAST_REVIEWED: u32 = 462;

/// Calls of the unified table (same number on every architecture) that the libc crate does not
/// name for every target.
mod unified {
    /// `fchmodat` with flags: glibc 2.39 uses it for `lchmod`-style calls.
    pub const FCHMODAT2: i64 = 452;
    /// Shadow stacks for new threads, when glibc runs with CET/GCS enabled.
    pub const MAP_SHADOW_STACK: i64 = 453;
    /// The futex2 calls, which only wait on and wake the caller's own memory.
    pub const FUTEX_WAKE: i64 = 454;
    pub const FUTEX_WAIT: i64 = 455;
    pub const FUTEX_REQUEUE: i64 = 456;
}

/// Calls allowed whatever their arguments, on every supported architecture.
const ALLOWED: &[i64] = &[
    // File descriptors and I/O.
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_lseek,
    libc::SYS_close,
    libc::SYS_close_range,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_fcntl,
    libc::SYS_ioctl,
    libc::SYS_flock,
    libc::SYS_pipe2,
    libc::SYS_copy_file_range,
    libc::SYS_sendfile,
    libc::SYS_splice,
    libc::SYS_tee,
    libc::SYS_vmsplice,
    // Paths and metadata (Landlock and the mount layout decide where).
    libc::SYS_openat,
    libc::SYS_openat2,
    libc::SYS_newfstatat,
    libc::SYS_fstat,
    libc::SYS_statx,
    libc::SYS_statfs,
    libc::SYS_fstatfs,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_getdents64,
    libc::SYS_getcwd,
    libc::SYS_chdir,
    libc::SYS_fchdir,
    libc::SYS_mkdirat,
    libc::SYS_unlinkat,
    libc::SYS_renameat2,
    libc::SYS_linkat,
    libc::SYS_symlinkat,
    libc::SYS_readlinkat,
    libc::SYS_mknodat,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    unified::FCHMODAT2,
    libc::SYS_fchown,
    libc::SYS_fchownat,
    libc::SYS_umask,
    libc::SYS_truncate,
    libc::SYS_ftruncate,
    libc::SYS_fallocate,
    libc::SYS_fadvise64,
    libc::SYS_readahead,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_sync,
    libc::SYS_syncfs,
    libc::SYS_utimensat,
    libc::SYS_setxattr,
    libc::SYS_lsetxattr,
    libc::SYS_fsetxattr,
    libc::SYS_getxattr,
    libc::SYS_lgetxattr,
    libc::SYS_fgetxattr,
    libc::SYS_listxattr,
    libc::SYS_llistxattr,
    libc::SYS_flistxattr,
    libc::SYS_removexattr,
    libc::SYS_lremovexattr,
    libc::SYS_fremovexattr,
    libc::SYS_inotify_init1,
    libc::SYS_inotify_add_watch,
    libc::SYS_inotify_rm_watch,
    // Memory.
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_mremap,
    libc::SYS_msync,
    libc::SYS_madvise,
    libc::SYS_mincore,
    libc::SYS_mlock,
    libc::SYS_mlock2,
    libc::SYS_munlock,
    libc::SYS_mlockall,
    libc::SYS_munlockall,
    libc::SYS_remap_file_pages,
    libc::SYS_membarrier,
    libc::SYS_memfd_create,
    libc::SYS_memfd_secret,
    libc::SYS_pkey_alloc,
    libc::SYS_pkey_free,
    libc::SYS_pkey_mprotect,
    libc::SYS_mseal,
    unified::MAP_SHADOW_STACK,
    // Waiting and events.
    libc::SYS_eventfd2,
    libc::SYS_signalfd4,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_settime,
    libc::SYS_timerfd_gettime,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_ppoll,
    libc::SYS_pselect6,
    libc::SYS_io_setup,
    libc::SYS_io_destroy,
    libc::SYS_io_submit,
    libc::SYS_io_cancel,
    libc::SYS_io_getevents,
    // Sockets (the network namespace and nftables decide what they reach; `socket` is ruled
    // by its family, see `allow_rules`).
    libc::SYS_socketpair,
    libc::SYS_bind,
    libc::SYS_connect,
    libc::SYS_listen,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_sendmmsg,
    libc::SYS_recvmmsg,
    libc::SYS_shutdown,
    libc::SYS_setsockopt,
    libc::SYS_getsockopt,
    // Processes and threads (`clone` is ruled by its flags, see `allow_rules`).
    libc::SYS_execve,
    libc::SYS_execveat,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_wait4,
    libc::SYS_waitid,
    libc::SYS_set_tid_address,
    libc::SYS_set_robust_list,
    libc::SYS_get_robust_list,
    libc::SYS_futex,
    libc::SYS_futex_waitv,
    unified::FUTEX_WAKE,
    unified::FUTEX_WAIT,
    unified::FUTEX_REQUEUE,
    libc::SYS_rseq,
    libc::SYS_restart_syscall,
    libc::SYS_getpid,
    libc::SYS_getppid,
    libc::SYS_gettid,
    libc::SYS_getpgid,
    libc::SYS_setpgid,
    libc::SYS_getsid,
    libc::SYS_setsid,
    libc::SYS_getpriority,
    libc::SYS_setpriority,
    libc::SYS_prctl,
    libc::SYS_getrusage,
    libc::SYS_prlimit64,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_setaffinity,
    libc::SYS_sched_getparam,
    libc::SYS_sched_setparam,
    libc::SYS_sched_getscheduler,
    libc::SYS_sched_setscheduler,
    libc::SYS_sched_get_priority_max,
    libc::SYS_sched_get_priority_min,
    libc::SYS_sched_rr_get_interval,
    libc::SYS_sched_getattr,
    libc::SYS_sched_setattr,
    libc::SYS_ioprio_get,
    libc::SYS_ioprio_set,
    // Signals, to the cell's own processes (the pid namespace bounds them).
    libc::SYS_kill,
    libc::SYS_tkill,
    libc::SYS_tgkill,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigpending,
    libc::SYS_rt_sigtimedwait,
    libc::SYS_rt_sigqueueinfo,
    libc::SYS_rt_tgsigqueueinfo,
    libc::SYS_rt_sigsuspend,
    libc::SYS_sigaltstack,
    libc::SYS_pidfd_open,
    libc::SYS_pidfd_send_signal,
    libc::SYS_process_mrelease,
    // Identity: without capabilities these only move between the ids a process already has.
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_getresuid,
    libc::SYS_getresgid,
    libc::SYS_getgroups,
    libc::SYS_setuid,
    libc::SYS_setgid,
    libc::SYS_setreuid,
    libc::SYS_setregid,
    libc::SYS_setresuid,
    libc::SYS_setresgid,
    libc::SYS_setfsuid,
    libc::SYS_setfsgid,
    libc::SYS_setgroups,
    libc::SYS_capget,
    libc::SYS_capset,
    // Further self-confinement (nested sandboxes) only ever narrows what a process may do.
    libc::SYS_seccomp,
    libc::SYS_landlock_create_ruleset,
    libc::SYS_landlock_add_rule,
    libc::SYS_landlock_restrict_self,
    // Time and system information (reading only; setting the clock is left out).
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_gettimeofday,
    libc::SYS_getitimer,
    libc::SYS_setitimer,
    libc::SYS_timer_create,
    libc::SYS_timer_settime,
    libc::SYS_timer_gettime,
    libc::SYS_timer_getoverrun,
    libc::SYS_timer_delete,
    libc::SYS_times,
    libc::SYS_sysinfo,
    libc::SYS_uname,
    libc::SYS_getcpu,
    libc::SYS_getrandom,
    // POSIX and SysV IPC (the cell has its own IPC namespace).
    libc::SYS_mq_open,
    libc::SYS_mq_unlink,
    libc::SYS_mq_timedsend,
    libc::SYS_mq_timedreceive,
    libc::SYS_mq_notify,
    libc::SYS_mq_getsetattr,
    libc::SYS_shmget,
    libc::SYS_shmat,
    libc::SYS_shmdt,
    libc::SYS_shmctl,
    libc::SYS_semget,
    libc::SYS_semop,
    libc::SYS_semctl,
    libc::SYS_semtimedop,
    libc::SYS_msgget,
    libc::SYS_msgsnd,
    libc::SYS_msgrcv,
    libc::SYS_msgctl,
];

/// x86_64's older calls, which the generic table of aarch64 replaced by the `*at` forms above.
#[cfg(target_arch = "x86_64")]
const ALLOWED_ARCH: &[i64] = &[
    libc::SYS_open,
    libc::SYS_creat,
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_access,
    libc::SYS_getdents,
    libc::SYS_mkdir,
    libc::SYS_rmdir,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_link,
    libc::SYS_unlink,
    libc::SYS_symlink,
    libc::SYS_readlink,
    libc::SYS_mknod,
    libc::SYS_chmod,
    libc::SYS_chown,
    libc::SYS_lchown,
    libc::SYS_utime,
    libc::SYS_utimes,
    libc::SYS_futimesat,
    libc::SYS_sync_file_range,
    libc::SYS_dup2,
    libc::SYS_pipe,
    libc::SYS_eventfd,
    libc::SYS_signalfd,
    libc::SYS_epoll_create,
    libc::SYS_epoll_wait,
    libc::SYS_poll,
    libc::SYS_select,
    libc::SYS_inotify_init,
    libc::SYS_alarm,
    libc::SYS_pause,
    libc::SYS_time,
    libc::SYS_fork,
    libc::SYS_vfork,
    libc::SYS_getpgrp,
    libc::SYS_getrlimit,
    libc::SYS_setrlimit,
    // Thread-local storage setup.
    libc::SYS_arch_prctl,
];

#[cfg(not(target_arch = "x86_64"))]
const ALLOWED_ARCH: &[i64] = &[];

/// Calls that fail with `ENOSYS` rather than `EPERM` although a reviewed kernel has them,
/// because libc treats only `ENOSYS` as "use the older call": `clone3` (flags behind a pointer;
/// glibc then uses `clone`, which the filter can check).
const ENOSYS_CALLS: &[i64] = &[libc::SYS_clone3];

/// A compiled seccomp program and its identity for evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeccompProfile {
    pub name: String,
    /// Hex SHA-256 of the BPF instructions (8 bytes each: code LE16, jt, jf, k LE32).
    pub sha256: String,
    program: BpfProgram,
}

impl SeccompProfile {
    /// Install the filter on the calling thread (sets `no_new_privs` first, as the kernel
    /// requires for unprivileged filters). Meant for the cell's init just before exec; the
    /// success path does not allocate.
    pub fn apply(&self) -> Result<(), LinuxError> {
        seccompiler::apply_filter(&self.program).map_err(|e| LinuxError::Setup {
            what: format!("install seccomp profile {}", self.name),
            detail: e.to_string(),
        })
    }

    pub fn program(&self) -> &BpfProgram {
        &self.program
    }
}

/// The default cell profile, compiled once per process.
pub fn default_profile() -> Result<SeccompProfile, LinuxError> {
    static CACHE: OnceLock<SeccompProfile> = OnceLock::new();
    if let Some(profile) = CACHE.get() {
        return Ok(profile.clone());
    }
    let profile = compile_default()?;
    Ok(CACHE.get_or_init(|| profile).clone())
}

/// `clone` flags that create namespaces: `NEWNS`, `NEWCGROUP`, `NEWUTS`, `NEWIPC`, `NEWUSER`,
/// `NEWPID`, `NEWNET` and `NEWTIME` (0x80, not exported by libc for every target).
const NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u64
    | 0x80;

/// `personality` values allowed: plain Linux, 32-bit Linux, UNAME26 variants, and the query.
const ALLOWED_PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// `AF_VSOCK` (not exported by libc for every target): vsock is not network-namespaced, so
/// such a socket would reach the host's (or hypervisor's) vsock services past the cell's
/// network namespace and nftables.
const AF_VSOCK: u64 = 40;

/// Every allow rule of the profile: the plainly allowed calls (no conditions), `clone` without
/// namespace flags, `personality` with an allowed persona and `socket` of any family but vsock.
fn allow_rules() -> Result<BTreeMap<i64, Vec<SeccompRule>>, LinuxError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = ALLOWED
        .iter()
        .chain(ALLOWED_ARCH)
        .map(|&nr| (nr, Vec::new()))
        .collect();
    let no_namespace = SeccompCondition::new(
        0,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::MaskedEq(NAMESPACE_FLAGS),
        0,
    )
    .and_then(|cond| SeccompRule::new(vec![cond]))
    .map_err(build_error)?;
    rules.insert(libc::SYS_clone, vec![no_namespace]);
    let personas = ALLOWED_PERSONALITIES
        .iter()
        .map(|&p| {
            SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, p)
                .and_then(|cond| SeccompRule::new(vec![cond]))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(build_error)?;
    rules.insert(libc::SYS_personality, personas);
    let not_vsock = SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, AF_VSOCK)
        .and_then(|cond| SeccompRule::new(vec![cond]))
        .map_err(build_error)?;
    rules.insert(libc::SYS_socket, vec![not_vsock]);
    Ok(rules)
}

fn build_error(e: seccompiler::BackendError) -> LinuxError {
    LinuxError::Setup {
        what: format!("compile seccomp profile {DEFAULT_PROFILE_NAME}"),
        detail: e.to_string(),
    }
}

fn target_arch() -> Result<TargetArch, LinuxError> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|_| {
        LinuxError::missing(
            format!("seccomp for architecture {}", std::env::consts::ARCH),
            "CellOS seccomp profiles are built for x86_64 and aarch64; run on one of those",
        )
    })
}

/// seccompiler's program for `rules`: a call that matches one is allowed, anything else fails
/// with `EPERM`, and a call from a foreign architecture kills the process.
fn allow_program(
    arch: TargetArch,
    rules: BTreeMap<i64, Vec<SeccompRule>>,
) -> Result<BpfProgram, LinuxError> {
    SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM.unsigned_abs()),
        SeccompAction::Allow,
        arch,
    )
    .and_then(BpfProgram::try_from)
    .map_err(build_error)
}

/// What the profile does with one syscall number of the native architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Allow,
    Eperm,
    Enosys,
    /// The arguments decide: run seccompiler's program of the argument rules.
    Argued,
}

/// The verdict of every native syscall number, as ranges: each entry is the first number of a
/// run of numbers with the same verdict, which lasts until the next entry (the last one to
/// `u32::MAX`).
fn ranges(rules: &BTreeMap<i64, Vec<SeccompRule>>) -> Vec<(u32, Verdict)> {
    let verdict = |nr: u32| match rules.get(&i64::from(nr)) {
        Some(conditions) if conditions.is_empty() => Verdict::Allow,
        Some(_) => Verdict::Argued,
        None if ENOSYS_CALLS.contains(&i64::from(nr)) => Verdict::Enosys,
        None if nr > LAST_REVIEWED => Verdict::Enosys,
        None => Verdict::Eperm,
    };
    let mut out: Vec<(u32, Verdict)> = Vec::new();
    for nr in 0..=LAST_REVIEWED + 1 {
        let v = verdict(nr);
        if out.last().map(|&(_, last)| last) != Some(v) {
            out.push((nr, v));
        }
    }
    out
}

/// The search, then seccompiler's program for the argument rules: about log2(ranges)
/// comparisons decide any call whose number alone decides. The kernel evaluates a new filter
/// for every syscall number when it is installed (to cache the ones it always allows), so the
/// shorter the paths, the cheaper each cell's install.
fn compile_default() -> Result<SeccompProfile, LinuxError> {
    let arch = target_arch()?;
    let rules = allow_rules()?;
    let ranges = ranges(&rules);
    let argued = rules.into_iter().filter(|(_, r)| !r.is_empty()).collect();
    let program = dispatch(arch, &ranges, allow_program(arch, argued)?)?;
    Ok(SeccompProfile {
        name: DEFAULT_PROFILE_NAME.into(),
        sha256: program_sha256(&program),
        program,
    })
}

/// `AUDIT_ARCH_*` of `arch` (linux/audit.h), what `seccomp_data.arch` holds.
fn audit_arch(arch: TargetArch) -> u32 {
    match arch {
        TargetArch::x86_64 => 0xc000_003e,
        TargetArch::aarch64 => 0xc000_00b7,
    }
}

/// Put a binary search over `ranges` (see [`ranges`]) in front of `full`: a native call gets
/// its range's verdict at a leaf, and `Argued` calls and every foreign-arch call run `full`.
/// Hand-written because seccompiler emits one linear chain of comparisons per syscall number
/// and cannot express a range.
fn dispatch(
    arch: TargetArch,
    ranges: &[(u32, Verdict)],
    full: BpfProgram,
) -> Result<BpfProgram, LinuxError> {
    const SECCOMP_DATA_NR_OFFSET: u32 = 0;
    const SECCOMP_DATA_ARCH_OFFSET: u32 = 4;
    let mut head = vec![
        Op::Ins(load(SECCOMP_DATA_ARCH_OFFSET)),
        Op::Ins(sock_filter {
            code: BPF_JMP_JEQ_K,
            jt: 1,
            jf: 0,
            k: audit_arch(arch),
        }),
        Op::Full,
        Op::Ins(load(SECCOMP_DATA_NR_OFFSET)),
    ];
    head.extend(search(ranges)?);
    let len = head.len();
    let mut program: BpfProgram = head
        .into_iter()
        .enumerate()
        .map(|(i, op)| match op {
            Op::Ins(ins) => ins,
            // `ja k` continues at pc + 1 + k; `full` starts right after the search.
            Op::Full => sock_filter {
                code: BPF_JMP_JA,
                jt: 0,
                jf: 0,
                k: u32::try_from(len - i - 1).unwrap_or(u32::MAX),
            },
        })
        .collect();
    program.extend(full);
    Ok(program)
}

/// One instruction of the search, or a jump to the full program (resolved once laid out).
enum Op {
    Ins(sock_filter),
    Full,
}

/// Search `ranges` (non-empty, sorted by first number) for the syscall number in A: a leaf
/// returns its range's verdict; inner nodes split on `jge` at the first number of the upper
/// half, so every path is about log2(ranges.len()) comparisons long.
fn search(ranges: &[(u32, Verdict)]) -> Result<Vec<Op>, LinuxError> {
    let (low, high) = match ranges {
        [] => return Ok(Vec::new()),
        [(_, verdict)] => return Ok(vec![leaf(*verdict)]),
        _ => ranges.split_at(ranges.len() / 2),
    };
    let low = search(low)?;
    let jump = u8::try_from(low.len()).map_err(|_| LinuxError::Setup {
        what: format!("compile seccomp profile {DEFAULT_PROFILE_NAME}"),
        detail: "syscall search tree too deep for BPF's 8-bit jumps".into(),
    })?;
    let mut ops = vec![Op::Ins(sock_filter {
        code: BPF_JMP_JGE_K,
        jt: jump,
        jf: 0,
        k: high[0].0,
    })];
    ops.extend(low);
    ops.extend(search(high)?);
    Ok(ops)
}

fn leaf(verdict: Verdict) -> Op {
    match verdict {
        Verdict::Allow => Op::Ins(ret(SECCOMP_RET_ALLOW)),
        Verdict::Eperm => Op::Ins(ret(SECCOMP_RET_ERRNO | libc::EPERM.unsigned_abs())),
        Verdict::Enosys => Op::Ins(ret(SECCOMP_RET_ERRNO | libc::ENOSYS.unsigned_abs())),
        Verdict::Argued => Op::Full,
    }
}

fn load(offset: u32) -> sock_filter {
    sock_filter {
        code: BPF_LD_W_ABS,
        jt: 0,
        jf: 0,
        k: offset,
    }
}

fn ret(k: u32) -> sock_filter {
    sock_filter {
        code: BPF_RET_K,
        jt: 0,
        jf: 0,
        k,
    }
}

/// `BPF_LD | BPF_W | BPF_ABS` (0x00 | 0x00 | 0x20).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JGE_K: u16 = 0x05 | 0x30;
const BPF_JMP_JEQ_K: u16 = 0x05 | 0x10;
const BPF_JMP_JA: u16 = 0x05;
const BPF_RET_K: u16 = 0x06;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;

/// Digest of the program in the kernel's `struct sock_filter` layout (little-endian fields).
fn program_sha256(program: &[sock_filter]) -> String {
    let mut hasher = Sha256::new();
    for ins in program {
        hasher.update(ins.code.to_le_bytes());
        hasher.update([ins.jt, ins.jf]);
        hasher.update(ins.k.to_le_bytes());
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the deny list of `cellos-default-v1` named: each must stay refused.
    const V1_DENIED: &[i64] = &[
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_fsopen,
        libc::SYS_fsmount,
        libc::SYS_fsconfig,
        libc::SYS_fspick,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        libc::SYS_mount_setattr,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_pidfd_getfd,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_reboot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_acct,
        libc::SYS_quotactl,
        libc::SYS_quotactl_fd,
        libc::SYS_syslog,
        libc::SYS_lookup_dcookie,
        libc::SYS_vhangup,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_settimeofday,
        libc::SYS_adjtimex,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_iopl,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_ioperm,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_uselib,
    ];

    const EPERM: u32 = SECCOMP_RET_ERRNO | libc::EPERM as u32;
    const ENOSYS: u32 = SECCOMP_RET_ERRNO | libc::ENOSYS as u32;

    /// A classic-BPF interpreter for the instructions these programs use, over a
    /// `seccomp_data` (nr, arch, six arguments). Returns the verdict and how many instructions
    /// ran. Unknown instructions fail the test.
    fn run_counted(program: &[sock_filter], nr: u32, arch: u32, args: [u64; 6]) -> (u32, usize) {
        let mut data = Vec::with_capacity(64);
        data.extend(nr.to_le_bytes());
        data.extend(arch.to_le_bytes());
        data.extend(0u64.to_le_bytes());
        for a in args {
            data.extend(a.to_le_bytes());
        }
        let (mut a, mut pc, mut steps) = (0u32, 0usize, 0usize);
        loop {
            let ins = &program[pc];
            pc += 1;
            steps += 1;
            let cond = |taken: bool| if taken { ins.jt } else { ins.jf } as usize;
            match ins.code {
                0x20 => {
                    let k = ins.k as usize;
                    a = u32::from_le_bytes(data[k..k + 4].try_into().unwrap());
                }
                0x54 => a &= ins.k,
                0x05 => pc += ins.k as usize,
                0x15 => pc += cond(a == ins.k),
                0x25 => pc += cond(a > ins.k),
                0x35 => pc += cond(a >= ins.k),
                0x45 => pc += cond(a & ins.k != 0),
                0x06 => return (ins.k, steps),
                code => panic!("instruction {code:#x} at {}", pc - 1),
            }
        }
    }

    fn run(program: &[sock_filter], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
        run_counted(program, nr, arch, args).0
    }

    /// Run `first`; where it would allow, continue with `second` instead (every `ret ALLOW` of
    /// `first` becomes a forward jump to the start of `second`, which reloads what it needs).
    fn chain(first: BpfProgram, second: BpfProgram) -> BpfProgram {
        let len = first.len();
        let mut out: BpfProgram = first
            .into_iter()
            .enumerate()
            .map(|(i, ins)| {
                if ins.code == BPF_RET_K && ins.k == SECCOMP_RET_ALLOW {
                    let k = u32::try_from(len - i - 1).unwrap();
                    sock_filter {
                        code: BPF_JMP_JA,
                        jt: 0,
                        jf: 0,
                        k,
                    }
                } else {
                    ins
                }
            })
            .collect();
        out.extend(second);
        out
    }

    /// The whole policy as seccompiler compiles it, one comparison per syscall number: a
    /// native number above `LAST_REVIEWED` gets `ENOSYS` (the one range, five instructions by
    /// hand), then the `ENOSYS` calls, then every allow rule with `EPERM` for the rest.
    fn reference(arch: TargetArch) -> BpfProgram {
        let mut program = vec![
            load(4),
            sock_filter {
                code: BPF_JMP_JEQ_K,
                jt: 0,
                jf: 3,
                k: audit_arch(arch),
            },
            load(0),
            sock_filter {
                code: 0x25, // jgt
                jt: 0,
                jf: 1,
                k: LAST_REVIEWED,
            },
            ret(ENOSYS),
        ];
        let enosys: BpfProgram = SeccompFilter::new(
            ENOSYS_CALLS.iter().map(|&nr| (nr, Vec::new())).collect(),
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS.unsigned_abs()),
            arch,
        )
        .and_then(BpfProgram::try_from)
        .expect("compile the ENOSYS calls");
        let allow = allow_program(arch, allow_rules().expect("rules")).expect("compile");
        program.extend(chain(enosys, allow));
        program
    }

    #[test]
    fn default_profile_is_deterministic_and_named() {
        let a = compile_default().expect("compile");
        let b = default_profile().expect("compile cached");
        assert_eq!(a.sha256, b.sha256);
        assert_eq!(a.sha256.len(), 64);
        assert_eq!(a.name, DEFAULT_PROFILE_NAME);
        assert_eq!(a.sha256, program_sha256(a.program()));
    }

    #[test]
    fn the_search_decides_every_syscall_as_seccompilers_program_of_the_policy_does() {
        let arch = target_arch().expect("arch");
        let reference = reference(arch);
        let fast = default_profile().expect("compile").program;
        assert!(
            fast.len() * 2 < reference.len(),
            "{} vs {}",
            fast.len(),
            reference.len()
        );
        let native = audit_arch(arch);
        let arg_sets = [
            [0u64; 6],
            [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0],
            [libc::SIGCHLD as u64, 0, 0, 0, 0, 0],
            [0x80 | libc::SIGCHLD as u64, 0, 0, 0, 0, 0],
            [0x8, 0, 0, 0, 0, 0],
            [0x0040_0000, 0, 0, 0, 0, 0],
            [AF_VSOCK, libc::SOCK_STREAM as u64, 0, 0, 0, 0],
            [libc::AF_UNIX as u64, libc::SOCK_STREAM as u64, 0, 0, 0, 0],
            [u64::MAX; 6],
        ];
        let (mut allowed, mut eperm, mut enosys) = (0, 0, 0);
        let x32 = 0x4000_0000;
        for nr in (0..1024).chain([x32, x32 | libc::SYS_read as u32, u32::MAX]) {
            for arch in [native, 0x4000_0003, 0] {
                for args in arg_sets {
                    let expected = run(&reference, nr, arch, args);
                    assert_eq!(
                        run(&fast, nr, arch, args),
                        expected,
                        "nr {nr} arch {arch:#x} args {args:?}"
                    );
                    allowed += usize::from(expected == SECCOMP_RET_ALLOW);
                    eperm += usize::from(expected == EPERM);
                    enosys += usize::from(expected == ENOSYS);
                }
            }
        }
        assert!(allowed > 0 && eperm > 0 && enosys > 0);
    }

    #[test]
    fn unnamed_calls_are_refused_and_named_ones_allowed() {
        let fast = default_profile().expect("compile").program;
        let native = audit_arch(target_arch().expect("arch"));
        let verdict = |nr: i64, arg0: u64| run(&fast, nr as u32, native, [arg0, 0, 0, 0, 0, 0]);
        for &nr in V1_DENIED {
            assert_eq!(verdict(nr, 0), EPERM, "syscall {nr}");
        }
        // Never named by either profile: refused only because the list does not name it.
        assert_eq!(verdict(libc::SYS_kcmp, 0), EPERM);
        assert_eq!(verdict(libc::SYS_clone3, 0), ENOSYS);
        for nr in [i64::from(LAST_REVIEWED) + 1, 1000, 0x4000_0000] {
            assert_eq!(verdict(nr, 0), ENOSYS, "syscall {nr}");
        }
        assert_eq!(verdict(libc::SYS_clone, libc::CLONE_NEWUSER as u64), EPERM);
        assert_eq!(verdict(libc::SYS_clone, 0x80), EPERM, "CLONE_NEWTIME");
        let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
        assert_eq!(verdict(libc::SYS_clone, thread), SECCOMP_RET_ALLOW);
        assert_eq!(verdict(libc::SYS_personality, 0x0040_0000), EPERM);
        assert_eq!(
            verdict(libc::SYS_personality, 0xffff_ffff),
            SECCOMP_RET_ALLOW
        );
        assert_eq!(verdict(libc::SYS_socket, AF_VSOCK), EPERM);
        let inet = libc::AF_INET as u64;
        assert_eq!(verdict(libc::SYS_socket, inet), SECCOMP_RET_ALLOW);
        for &nr in ALLOWED.iter().chain(ALLOWED_ARCH) {
            assert_eq!(verdict(nr, 0), SECCOMP_RET_ALLOW, "syscall {nr}");
        }
        assert_ne!(
            run(&fast, libc::SYS_read as u32, 0x4000_0003, [0; 6]),
            SECCOMP_RET_ALLOW
        );
    }

    /// The install cost (the kernel runs the filter for every syscall number) and each
    /// refused call's cost follow the longest path: bounded by the depth of a balanced search.
    #[test]
    fn every_number_is_decided_after_a_balanced_search() {
        let arch = target_arch().expect("arch");
        let fast = default_profile().expect("compile").program;
        let ranges = ranges(&allow_rules().expect("rules"));
        let depth = usize::BITS - (ranges.len() - 1).leading_zeros();
        // arch load and check, number load, the comparisons, the return.
        let bound = 3 + depth as usize + 1;
        for nr in 0..1024 {
            if ranges_verdict(&ranges, nr) == Verdict::Argued {
                continue;
            }
            let (_, steps) = run_counted(&fast, nr, audit_arch(arch), [0; 6]);
            assert!(
                steps <= bound,
                "nr {nr}: {steps} instructions, bound {bound}"
            );
        }
    }

    fn ranges_verdict(ranges: &[(u32, Verdict)], nr: u32) -> Verdict {
        ranges
            .iter()
            .rev()
            .find(|&&(first, _)| first <= nr)
            .map(|&(_, v)| v)
            .unwrap()
    }

    #[test]
    fn chain_turns_every_allow_of_the_first_program_into_a_jump_to_the_second() {
        let arch = target_arch().expect("arch");
        let first = allow_program(arch, allow_rules().expect("rules")).expect("compile");
        let second = vec![ret(ENOSYS)];
        let chained = chain(first.clone(), second.clone());
        assert_eq!(&chained[first.len()..], second.as_slice());
        let mut jumps = 0;
        for (n, (before, after)) in first.iter().zip(&chained).enumerate() {
            if before.code == BPF_RET_K && before.k == SECCOMP_RET_ALLOW {
                assert_eq!(after.code, BPF_JMP_JA);
                assert_eq!(n + 1 + after.k as usize, first.len());
                jumps += 1;
            } else {
                assert_eq!(before, after);
            }
        }
        assert!(jumps > 0);
    }
}

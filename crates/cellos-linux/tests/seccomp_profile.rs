//! The default seccomp profile (an allow-list), applied for real in a child process just before
//! exec.
//!
//! Each probe runs in the `pre_exec` hook of a child: the filter is installed, one raw system
//! call is made, and its errno is handed back to the parent as the spawn error. Programs are then
//! run under the filter to show ordinary work (fork, threads, exec) still succeeds.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Output, Stdio};

use cellos_linux::seccomp::{default_profile, SeccompProfile};

/// A raw system call made by a probe child.
type Probe = fn() -> libc::c_long;

/// Errno of `call` made after installing `profile` (or without a filter when `None`), as seen
/// from the parent; `0` when the call succeeded.
fn errno_in_child(profile: Option<&SeccompProfile>, call: Probe) -> i32 {
    let profile = profile.cloned();
    let mut cmd = Command::new("true");
    // SAFETY: the hook only installs the filter and makes one raw syscall.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(p) = &profile {
                p.apply()
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
            }
            if call() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Report success as a distinctive error so the parent can tell it apart.
            Err(std::io::Error::from_raw_os_error(0))
        });
    }
    match cmd.spawn() {
        Ok(mut child) => panic!("hook did not report: {:?}", child.wait()),
        Err(e) => e.raw_os_error().expect("errno from the hook"),
    }
}

fn run_filtered(program: &str, args: &[&str]) -> Output {
    let profile = default_profile().expect("profile");
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null());
    // SAFETY: the hook only installs the filter.
    unsafe {
        cmd.pre_exec(move || {
            profile
                .apply()
                .map_err(|e| std::io::Error::other(e.to_string()))
        });
    }
    cmd.output().expect("run filtered program")
}

fn unshare_user() -> libc::c_long {
    unsafe { libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER) }
}
fn mount_tmpfs() -> libc::c_long {
    let src = c"none".as_ptr();
    let target = c"/nonexistent-cellos-target".as_ptr();
    let fstype = c"tmpfs".as_ptr();
    unsafe { libc::syscall(libc::SYS_mount, src, target, fstype, 0, 0) }
}
fn bpf_prog_load() -> libc::c_long {
    unsafe { libc::syscall(libc::SYS_bpf, 5, std::ptr::null::<u8>(), 0) }
}
fn io_uring_setup() -> libc::c_long {
    unsafe { libc::syscall(libc::SYS_io_uring_setup, 1, std::ptr::null::<u8>()) }
}
fn setns_bad_fd() -> libc::c_long {
    unsafe { libc::syscall(libc::SYS_setns, -1, 0) }
}
fn ptrace_traceme() -> libc::c_long {
    unsafe { libc::syscall(libc::SYS_ptrace, libc::PTRACE_TRACEME, 0, 0, 0) }
}
fn keyctl_get_keyring() -> libc::c_long {
    unsafe { libc::syscall(libc::SYS_keyctl, 0, -3, 0) }
}
fn clone_newns_with_fs() -> libc::c_long {
    // CLONE_NEWNS together with CLONE_FS is invalid: without the filter the kernel says EINVAL,
    // so no process is ever created here.
    let flags = libc::CLONE_NEWNS | libc::CLONE_FS | libc::SIGCHLD;
    unsafe { libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0) }
}
fn clone3_null() -> libc::c_long {
    unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0) }
}
fn personality_no_aslr() -> libc::c_long {
    unsafe { libc::syscall(libc::SYS_personality, 0x0040000) }
}
fn personality_query() -> libc::c_long {
    unsafe { libc::syscall(libc::SYS_personality, 0xffff_ffffu32) }
}
fn kcmp_self() -> libc::c_long {
    // KCMP_FILE of fd 1 with itself: 0 ("same file") without the filter.
    let pid = std::process::id();
    unsafe { libc::syscall(libc::SYS_kcmp, pid, pid, 0, 1, 1) }
}
fn syscall_1000() -> libc::c_long {
    unsafe { libc::syscall(1000, 0, 0, 0) }
}
fn getxattrat_bad_fd() -> libc::c_long {
    // Linux 6.13's getxattrat (464), above the reviewed table.
    unsafe { libc::syscall(464, -1, c"x".as_ptr(), 0, c"user.x".as_ptr(), 0, 0) }
}
fn socket_vsock() -> libc::c_long {
    unsafe { libc::syscall(libc::SYS_socket, 40, libc::SOCK_STREAM, 0) }
}
fn socket_unix() -> libc::c_long {
    unsafe { libc::syscall(libc::SYS_socket, libc::AF_UNIX, libc::SOCK_STREAM, 0) }
}
fn getpid() -> libc::c_long {
    unsafe { libc::syscall(libc::SYS_getpid) }
}

#[test]
fn denied_syscalls_fail_with_eperm_only_under_the_filter() {
    let profile = default_profile().expect("profile");
    let cases: [(&str, Probe); 10] = [
        ("unshare(CLONE_NEWUSER)", unshare_user),
        ("mount", mount_tmpfs),
        ("bpf", bpf_prog_load),
        ("io_uring_setup", io_uring_setup),
        ("setns", setns_bad_fd),
        ("ptrace(TRACEME)", ptrace_traceme),
        ("keyctl", keyctl_get_keyring),
        ("clone(CLONE_NEWNS)", clone_newns_with_fs),
        ("personality(ADDR_NO_RANDOMIZE)", personality_no_aslr),
        ("socket(AF_VSOCK)", socket_vsock),
    ];
    for (name, call) in cases {
        let unfiltered = errno_in_child(None, call);
        assert_ne!(
            unfiltered,
            libc::EPERM,
            "{name}: EPERM even without the filter"
        );
        assert_eq!(errno_in_child(Some(&profile), call), libc::EPERM, "{name}");
    }
}

#[test]
fn clone3_fails_with_enosys_so_libc_falls_back_to_clone() {
    let profile = default_profile().expect("profile");
    assert_ne!(errno_in_child(None, clone3_null), libc::ENOSYS);
    assert_eq!(errno_in_child(Some(&profile), clone3_null), libc::ENOSYS);
}

#[test]
fn a_call_the_list_does_not_name_fails_with_eperm() {
    let profile = default_profile().expect("profile");
    assert_eq!(errno_in_child(None, kcmp_self), 0, "kcmp works unfiltered");
    assert_eq!(errno_in_child(Some(&profile), kcmp_self), libc::EPERM);
}

#[test]
fn numbers_above_the_reviewed_table_fail_with_enosys() {
    let profile = default_profile().expect("profile");
    assert_eq!(errno_in_child(Some(&profile), syscall_1000), libc::ENOSYS);
    assert_eq!(
        errno_in_child(Some(&profile), getxattrat_bad_fd),
        libc::ENOSYS
    );
}

#[test]
fn ordinary_syscalls_are_allowed() {
    let profile = default_profile().expect("profile");
    assert_eq!(errno_in_child(Some(&profile), getpid), 0);
    assert_eq!(errno_in_child(Some(&profile), personality_query), 0);
    assert_eq!(errno_in_child(Some(&profile), socket_unix), 0);
}

#[test]
fn programs_run_under_the_filter_but_cannot_unshare_or_mount() {
    let out = run_filtered(
        "sh",
        &["-c", "echo start; (echo sub) & wait; exec echo done"],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "start\nsub\ndone\n");

    // Threads: glibc's pthread_create tries clone3 first and must fall back to clone.
    let out = run_filtered(
        "python3",
        &[
            "-c",
            "import threading; t = threading.Thread(target=print, args=('thread',)); \
             t.start(); t.join()",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "thread\n");

    let out = run_filtered("unshare", &["-U", "true"]);
    assert!(
        !out.status.success(),
        "unshare -U succeeded under the filter"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
        "{out:?}"
    );

    let out = run_filtered("mount", &["-t", "tmpfs", "none", "/mnt"]);
    assert!(!out.status.success(), "mount succeeded under the filter");
}

/// Calls from a foreign ABI (i386 `int 0x80`) bypass per-number rules, so the filter kills the
/// process instead. Without the filter the same call works, which proves the probe is real.
#[cfg(target_arch = "x86_64")]
#[test]
fn foreign_arch_syscalls_kill_the_process() {
    fn i386_getpid_status(profile: Option<SeccompProfile>) -> std::process::ExitStatus {
        let mut cmd = Command::new("true");
        // SAFETY: the hook installs the filter and makes one i386 getpid system call.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(p) = &profile {
                    p.apply()
                        .map_err(|e| std::io::Error::other(e.to_string()))?;
                }
                let ret: u64;
                std::arch::asm!(
                    "int 0x80",
                    inlateout("rax") 20u64 => ret, // __NR_getpid on i386
                    out("r8") _, out("r9") _, out("r10") _, out("r11") _,
                );
                if ret > 0xffff_f000 {
                    return Err(std::io::Error::other("i386 getpid failed"));
                }
                Ok(())
            });
        }
        cmd.status().expect("spawn")
    }
    assert!(
        i386_getpid_status(None).success(),
        "i386 syscalls unusable on this host"
    );
    let profile = default_profile().expect("profile");
    assert_eq!(
        i386_getpid_status(Some(profile)).signal(),
        Some(libc::SIGSYS)
    );
}

#[test]
fn profile_identity_is_the_digest_of_its_program() {
    use sha2::{Digest, Sha256};
    let profile = default_profile().expect("profile");
    assert_eq!(profile.name, "cellos-default-v2");
    let mut hasher = Sha256::new();
    for ins in profile.program() {
        hasher.update(ins.code.to_le_bytes());
        hasher.update([ins.jt, ins.jf]);
        hasher.update(ins.k.to_le_bytes());
    }
    assert_eq!(profile.sha256, hex::encode(hasher.finalize()));
}

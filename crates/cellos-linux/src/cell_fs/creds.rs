//! Running filesystem work as the cell's workload user.
//!
//! The supervisor is host root. An operation inside a cell must not be able to read or write
//! anything the workload itself could not, so each operation runs on a short-lived dedicated
//! thread that first switches *its own* credentials to the workload's host uid/gid (which
//! also empties its capability sets). Files it creates then belong to the workload, and DAC,
//! read-only mounts and the rest of the kernel's checks apply as they would to the workload.
//!
//! Why raw syscalls: on Linux credentials are per thread. glibc's `setresuid(3)` and friends
//! emulate POSIX process-wide semantics by signalling every thread of the process and
//! changing each one (the "setxid broadcast"), which would drop the whole supervisor to the
//! workload user. `syscall(SYS_setresuid, ...)` changes only the calling thread, and that
//! thread exits when the operation is done, so the privileges are never given back on a
//! thread that ran workload-influenced work.

use std::thread::{Scope, ScopedJoinHandle};

use super::error::CellFsError;

/// Host uid and gid the workload runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsIds {
    pub uid: u32,
    pub gid: u32,
}

/// Run `f` on a fresh thread that runs as `ids`, and wait for it.
pub(crate) fn run_as<T, F>(ids: FsIds, path: &str, f: F) -> Result<T, CellFsError>
where
    T: Send,
    F: FnOnce() -> Result<T, CellFsError> + Send,
{
    std::thread::scope(|s| {
        let handle = spawn_as(s, ids, path, f)?;
        join(handle, path)
    })
}

/// Start `f` on a fresh thread in `scope` that runs as `ids`; [`join`] it.
pub(crate) fn spawn_as<'scope, 'env, T, F>(
    scope: &'scope Scope<'scope, 'env>,
    ids: FsIds,
    path: &str,
    f: F,
) -> Result<ScopedJoinHandle<'scope, Result<T, CellFsError>>, CellFsError>
where
    T: Send + 'scope,
    F: FnOnce() -> Result<T, CellFsError> + Send + 'scope,
{
    let owned_path = path.to_string();
    std::thread::Builder::new()
        .name("cellos-cell-fs".into())
        .spawn_scoped(scope, move || {
            become_workload(ids).map_err(|source| CellFsError::Io {
                op: "switch the operation's thread to the workload's uid/gid",
                path: owned_path,
                source,
            })?;
            f()
        })
        .map_err(|source| CellFsError::Io {
            op: "start the operation's thread",
            path: path.to_string(),
            source,
        })
}

pub(crate) fn join<T>(
    handle: ScopedJoinHandle<'_, Result<T, CellFsError>>,
    path: &str,
) -> Result<T, CellFsError> {
    handle.join().unwrap_or_else(|_| {
        Err(CellFsError::Io {
            op: "file operation (its thread panicked)",
            path: path.to_string(),
            source: std::io::Error::other("the operation's thread panicked"),
        })
    })
}

/// Switch the calling thread (only) to `ids`, with no supplementary groups, no capabilities,
/// a private umask of 022, and the process marked non-dumpable.
fn become_workload(ids: FsIds) -> std::io::Result<()> {
    // Own cwd/root/umask (CLONE_FS is shared between threads): the umask of created files and
    // directories is then ours, not whatever the supervisor's is.
    rustix::thread::unshare(rustix::thread::UnshareFlags::FS)?;
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));

    // While this thread runs as the workload's uid it must not be ptrace-able by processes of
    // that uid: it shares the supervisor's memory. The kernel itself marks the process
    // non-dumpable when a thread's euid changes, unless `fs.suid_dumpable` is 1; set it before
    // and after, so the protection does not depend on that sysctl. Dumpability belongs to the
    // whole process and is deliberately not restored afterwards: another operation's thread
    // may still be running as a workload. (The supervisor runs as root, so this only hides
    // its /proc entries from other users and disables its core dumps; forked cell children
    // set their own dumpability.)
    set_non_dumpable()?;

    let (uid, gid) = (ids.uid as libc::c_long, ids.gid as libc::c_long);
    // SAFETY: raw syscalls with integer arguments and a NULL list (size 0) for setgroups; they
    // touch no memory of ours and change only the calling thread's credentials (see the
    // module comment for why not the glibc wrappers).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_setgroups,
            0 as libc::c_long,
            std::ptr::null::<libc::gid_t>(),
        )
    };
    check(rc)?;
    // SAFETY: as above, integer arguments only.
    let rc = unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) };
    check(rc)?;
    // SAFETY: as above, integer arguments only. Dropping every uid from 0 to non-zero clears
    // the thread's permitted, effective and ambient capabilities.
    let rc = unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) };
    check(rc)?;
    set_non_dumpable()?;

    // Verify rather than trust: the operation must never run with the supervisor's ids.
    let (r, e, s) = thread_resuid()?;
    if (r, e, s) != (ids.uid, ids.uid, ids.uid) {
        return Err(std::io::Error::other(format!(
            "the thread still runs as uid {r}/{e}/{s}, not {}",
            ids.uid
        )));
    }
    Ok(())
}

fn set_non_dumpable() -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong, 0, 0, 0) };
    check(rc as libc::c_long)
}

fn thread_resuid() -> std::io::Result<(u32, u32, u32)> {
    let (mut r, mut e, mut s): (libc::uid_t, libc::uid_t, libc::uid_t) = (0, 0, 0);
    // SAFETY: the three pointers are to live, writable, correctly typed locals.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_getresuid,
            &mut r as *mut libc::uid_t,
            &mut e as *mut libc::uid_t,
            &mut s as *mut libc::uid_t,
        )
    };
    check(rc)?;
    Ok((r, e, s))
}

fn check(rc: libc::c_long) -> std::io::Result<()> {
    if rc == -1 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drop_is_per_thread() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let ids = FsIds {
            uid: 0x7000_0000 + 4242,
            gid: 0x7000_0000 + 4242,
        };
        let seen = run_as(ids, "/", || {
            Ok((thread_resuid().unwrap(), rustix::process::getgid().as_raw()))
        })
        .unwrap();
        assert_eq!(seen.0, (ids.uid, ids.uid, ids.uid));
        assert_eq!(seen.1, ids.gid);
        // This thread (and the rest of the process) is still root.
        assert_eq!(thread_resuid().unwrap(), (0, 0, 0));
    }
}

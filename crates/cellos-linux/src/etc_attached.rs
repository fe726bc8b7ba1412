//! The cell's `/etc` overlay on kernels that refuse a detached lower layer.
//!
//! Linux before 6.15 takes only mounts attached in the caller's mount namespace as overlay
//! layers: with the per-cell layer a detached tmpfs, `FSCONFIG_CMD_CREATE` fails with `EINVAL`
//! (`overlayfs: failed to clone lowerpath`, Debian 12's 6.1). There the supervisor builds the
//! same overlay in a helper cloned into a private mount namespace that shares its descriptor
//! table: the helper attaches the layer on a staging directory, opens the host layers again in
//! its own namespace (without following symlinks; descriptors opened by the supervisor name
//! the supervisor's mounts, which the kernel refuses from another namespace), mounts the
//! overlay (read-only, nosuid, nodev) with every layer named through `/proc/self/fd`, and
//! clones it into a detached tree (`open_tree`) that lands in the shared table. The staging mounts end with the
//! helper's namespace; the overlay keeps private copies of its layers, and init attaches the
//! tree exactly as it attaches the usual one.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::clone::{fork_like_clone, reap};
use crate::error::LinuxError;
use crate::refusal::{Refusal, Step};
use crate::safe_path::fd_path;

/// The helper's steps, in order; it reports the index of the one that failed. `None`: a plain
/// file operation, reported as I/O.
const STEPS: &[(Option<Step>, &str)] = &[
    (Some(Step::MakePrivate), "for the /etc helper's namespace"),
    (
        Some(Step::MoveMount),
        "of the /etc layer onto its staging directory",
    ),
    (None, "open a lower layer of /etc in the helper's namespace"),
    (
        Some(Step::Mount { fstype: "overlay" }),
        "for the cell's /etc (attached layers)",
    ),
    (Some(Step::OpenTree), "of the cell's /etc overlay"),
];

/// The read-only overlay of `layer` (a detached tmpfs) over the host directories `lowers`
/// (top first, symlink-free), as a detached tree.
pub fn overlay(layer: &OwnedFd, lowers: &[&Path]) -> Result<OwnedFd, LinuxError> {
    let staging = tempfile::Builder::new()
        .prefix(".cellos-etc-")
        .tempdir()
        .map_err(|e| LinuxError::io("create the /etc staging directory", e))?;
    let (layer_dir, ovl_dir) = (staging.path().join("layer"), staging.path().join("etc"));
    for dir in [&layer_dir, &ovl_dir] {
        std::fs::create_dir(dir)
            .map_err(|e| LinuxError::io(format!("create {}", dir.display()), e))?;
    }
    // Descriptor numbers the helper's own opens of `lowers` are moved to (dup3), so that the
    // overlay's options can be written before the clone.
    let slots = lowers
        .iter()
        .map(|_| rustix::io::dup(layer))
        .collect::<Result<Vec<OwnedFd>, _>>()
        .map_err(|e| LinuxError::errno("reserve descriptors for /etc", e.raw_os_error()))?;
    let lowerdir: Vec<String> = std::iter::once(layer)
        .chain(slots.iter())
        .map(fd_path)
        .collect();
    let helper = Helper {
        layer: layer.as_raw_fd(),
        layer_dir: cstr(&layer_dir)?,
        ovl_dir: cstr(&ovl_dir)?,
        lowers: lowers
            .iter()
            .zip(&slots)
            .map(|(p, slot)| Ok((cstr(p)?, slot.as_raw_fd())))
            .collect::<Result<_, LinuxError>>()?,
        data: CString::new(format!("lowerdir={}", lowerdir.join(":"))).map_err(|_| {
            LinuxError::Refused {
                what: "overlay options contain NUL".into(),
            }
        })?,
    };
    let (report_r, report_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| LinuxError::errno("pipe for the /etc helper", e.raw_os_error()))?;
    let pid = helper.spawn(report_w.as_raw_fd())?;
    // The table is shared: our write end is the helper's, so it closes only once the helper
    // is gone; its report then waits in the pipe.
    let status = reap(pid);
    drop(report_w);
    drop(slots);
    let mut report = Vec::new();
    let read = std::fs::File::from(report_r).read_to_end(&mut report);
    read.map_err(|e| LinuxError::io("read the /etc helper's report", e))?;
    outcome(&report, status)
}

fn cstr(p: &Path) -> Result<CString, LinuxError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| LinuxError::Refused {
        what: format!("path {} contains NUL", p.display()),
    })
}

/// The tree the helper left in the shared table, or the step it could not take.
fn outcome(report: &[u8], status: Option<i32>) -> Result<OwnedFd, LinuxError> {
    match *report {
        [0, a, b, c, d] => {
            let fd = i32::from_ne_bytes([a, b, c, d]);
            // SAFETY: the helper opened `fd` in the descriptor table it shares with us and
            // exited; nothing else owns it.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        }
        [index, a, b, c, d] => {
            let (step, target) = STEPS[(index as usize - 1).min(STEPS.len() - 1)];
            let errno = i32::from_ne_bytes([a, b, c, d]);
            Err(match step {
                Some(step) => Refusal::new(step, target, errno).into(),
                None => LinuxError::errno(target, errno),
            })
        }
        _ => Err(LinuxError::Setup {
            what: "/etc helper".into(),
            detail: format!("ended without a report (wait status {status:?})"),
        }),
    }
}

/// `struct open_how` of `openat2(2)` (libc's is non-exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// What the helper needs, prepared before the clone: it may only make system calls.
struct Helper {
    layer: i32,
    layer_dir: CString,
    ovl_dir: CString,
    /// Host layer paths and the descriptor number each is to be opened at.
    lowers: Vec<(CString, i32)>,
    data: CString,
}

impl Helper {
    fn spawn(&self, report: i32) -> Result<i32, LinuxError> {
        // SAFETY: the child runs only `main`, which makes raw system calls on memory prepared
        // above and never returns.
        match unsafe { fork_like_clone(libc::CLONE_NEWNS | libc::CLONE_FILES, None) } {
            // SAFETY: we are the freshly cloned helper.
            Ok(0) => unsafe { self.main(report) },
            Ok(pid) => Ok(pid),
            Err(e) => Err(LinuxError::io("clone the /etc helper", e)),
        }
    }

    /// Report `[0, fd]` on success or `[step index + 1, errno]`, then exit.
    ///
    /// # Safety
    /// Only in the freshly cloned helper: it makes raw system calls on `self` (prepared before
    /// the clone) and never allocates, since the supervisor may be multi-threaded.
    unsafe fn main(&self, report: i32) -> ! {
        let message = match self.steps() {
            Ok(fd) => {
                let b = fd.to_ne_bytes();
                [0, b[0], b[1], b[2], b[3]]
            }
            Err((index, errno)) => {
                let b = errno.to_ne_bytes();
                [index + 1, b[0], b[1], b[2], b[3]]
            }
        };
        libc::write(report, message.as_ptr().cast(), message.len());
        libc::_exit(0)
    }

    /// The steps; the tree's descriptor, or the index into [`STEPS`] and the errno.
    ///
    /// # Safety
    /// As [`Helper::main`]: pointers are to `self`'s C strings and to locals.
    unsafe fn steps(&self) -> Result<i32, (u8, i32)> {
        let errno = || *libc::__errno_location();
        let null = std::ptr::null::<libc::c_char>();
        // Nothing mounted here may propagate to the host.
        let private = libc::MS_REC | libc::MS_PRIVATE;
        if libc::mount(null, c"/".as_ptr(), null, private, std::ptr::null()) != 0 {
            return Err((0, errno()));
        }
        let from_fd = libc::MOVE_MOUNT_F_EMPTY_PATH as libc::c_uint;
        let moved = libc::syscall(
            libc::SYS_move_mount,
            self.layer,
            c"".as_ptr(),
            libc::AT_FDCWD,
            self.layer_dir.as_ptr(),
            from_fd,
        );
        if moved != 0 {
            return Err((1, errno()));
        }
        let how = OpenHow {
            flags: (libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC) as u64,
            mode: 0,
            resolve: libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
        };
        for (path, slot) in &self.lowers {
            let size = std::mem::size_of::<OpenHow>();
            let fd = libc::syscall(libc::SYS_openat2, libc::AT_FDCWD, path.as_ptr(), &how, size);
            if fd < 0 || libc::dup3(fd as i32, *slot, libc::O_CLOEXEC) < 0 {
                return Err((2, errno()));
            }
            libc::close(fd as i32);
        }
        let overlay = c"overlay".as_ptr();
        let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
        if libc::mount(
            overlay,
            self.ovl_dir.as_ptr(),
            overlay,
            flags,
            self.data.as_ptr().cast(),
        ) != 0
        {
            return Err((3, errno()));
        }
        let clone = (libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC) as libc::c_uint;
        let tree = libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            self.ovl_dir.as_ptr(),
            clone,
        );
        if tree < 0 {
            return Err((4, errno()));
        }
        Ok(tree as i32)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::os::fd::AsFd;

    use rustix::fs::{Mode, OFlags, StatVfsMountFlags};

    use super::*;
    use crate::{etc_mask, trees};

    fn read(tree: &OwnedFd, name: &str) -> Result<String, rustix::io::Errno> {
        let fd = rustix::fs::openat(tree.as_fd(), name, OFlags::RDONLY, Mode::empty())?;
        Ok(std::fs::read_to_string(fd_path(&fd)).unwrap())
    }

    fn names(tree: &OwnedFd) -> BTreeSet<String> {
        let dir = rustix::fs::openat(
            tree.as_fd(),
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        std::fs::read_dir(fd_path(&dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Forces the fallback on this kernel (which would accept the detached layer) and checks it
    /// gives what the usual overlay gives: the cell's files, host secrets hidden, read-only,
    /// nosuid and nodev, and no staging mount left behind.
    #[test]
    fn the_attached_fallback_builds_the_same_read_only_masked_etc() {
        let etc = tempfile::tempdir().unwrap();
        std::fs::write(etc.path().join("passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        std::fs::write(etc.path().join("shadow"), "root:secret\n").unwrap();
        std::fs::write(etc.path().join("hostname"), "the-host\n").unwrap();
        let state = tempfile::tempdir().unwrap();
        let mask = etc_mask::ensure_mask(state.path(), etc.path()).unwrap();
        let lowers = [mask.as_path(), etc.path()];
        let resolv = Some("nameserver 10.213.0.1\n");

        let layer = trees::cell_layer("fallback-cell", resolv).unwrap();
        let tree = overlay(&layer, &lowers).expect("fallback overlay");
        assert_eq!(read(&tree, "hostname").unwrap(), "fallback-cell\n");
        assert_eq!(
            read(&tree, "resolv.conf").unwrap(),
            "nameserver 10.213.0.1\n"
        );
        assert!(read(&tree, "hosts")
            .unwrap()
            .contains("localhost fallback-cell"));
        assert_eq!(
            read(&tree, "passwd").unwrap(),
            "root:x:0:0::/root:/bin/sh\n"
        );
        assert_eq!(read(&tree, "shadow"), Err(rustix::io::Errno::NOENT));
        let created = rustix::fs::openat(
            tree.as_fd(),
            "planted",
            OFlags::WRONLY | OFlags::CREATE,
            Mode::from_raw_mode(0o644),
        );
        assert_eq!(created.err(), Some(rustix::io::Errno::ROFS));
        let flags = rustix::fs::fstatvfs(&tree).unwrap().f_flag;
        for flag in [
            StatVfsMountFlags::RDONLY,
            StatVfsMountFlags::NOSUID,
            StatVfsMountFlags::NODEV,
        ] {
            assert!(flags.contains(flag), "{flags:?}");
        }

        let usual = trees::etc_overlay("fallback-cell", Some(&mask), etc.path(), resolv).unwrap();
        assert_eq!(names(&tree), names(&usual));

        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(".cellos-etc-"),
            "staging mount left on the host"
        );
    }

    #[test]
    fn a_refused_helper_step_is_named() {
        let err = outcome(&[4, 22, 0, 0, 0], Some(0)).unwrap_err();
        let LinuxError::Kernel(r) = err else {
            panic!("not a refusal");
        };
        assert_eq!(r.step, Step::Mount { fstype: "overlay" });
        assert_eq!(r.errno, libc::EINVAL);
        assert!(outcome(&[], Some(9)).is_err());
    }
}

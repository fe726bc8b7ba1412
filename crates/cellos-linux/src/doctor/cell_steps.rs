//! Trying the kernel steps of a cell's setup the way a cell takes them.
//!
//! The supervisor side runs the backend's own code ([`trees::clone_tree`],
//! [`trees::etc_overlay`]) in this process. The cell side runs in a child cloned into the
//! cell's namespaces with the cell's id map, which attaches those detached trees onto a
//! tmpfs root, makes it read-only, mounts `/proc`, enters a cgroup namespace, sets its
//! hostname and pivots — the order init uses. A refusal is reported with the same
//! [`Refusal`] a cell would print.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::backend::DEFAULT_UID_BASE;
use crate::clone::{fork_like_clone, reap, CLONE_NAMESPACES};
use crate::error::LinuxError;
use crate::idmap::{write_maps, IdMap};
use crate::refusal::{Namespace, Refusal, Step};
use crate::trees::{self, EtcBuild, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY};

/// The cell-side steps in the order the child takes them; the child reports the index of the
/// one that failed. `None`: a plain file operation, reported as I/O.
const CHILD_STEPS: &[(Option<Step>, &str)] = &[
    (
        Some(Step::Unshare(Namespace::Cgroup)),
        "for the cell's init",
    ),
    (Some(Step::MakePrivate), "for / private"),
    (Some(Step::Mount { fstype: "tmpfs" }), "for the cell's root"),
    (None, "open and populate the cell's root"),
    (Some(Step::MoveMount), "of /etc (a host tree) into the cell"),
    (Some(Step::MoveMount), "of the /etc overlay into the cell"),
    (Some(Step::MountSetattr), "on the cell's root (read-only)"),
    (Some(Step::Mount { fstype: "proc" }), "for /proc"),
    (Some(Step::Sethostname), "in the cell"),
    (None, "chdir into the cell's root"),
    (Some(Step::PivotRoot), "into the cell's root"),
    (Some(Step::Umount), "of the host's root"),
];

/// Byte the parent sends once the child's id maps are written.
const RELEASE: u8 = b'r';

/// The detached trees the supervisor side made, for [`cell_side`].
pub struct Trees {
    tree: OwnedFd,
    etc: OwnedFd,
    /// How this kernel let the `/etc` overlay be built.
    pub etc_build: EtcBuild,
}

/// The supervisor-side steps: a detached read-only copy of a host tree and the `/etc`
/// overlay (`fsopen`/`fsconfig`/`fsmount` of tmpfs and overlay), as for every cell.
pub fn supervisor_side() -> Result<Trees, LinuxError> {
    let read_only = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    let tree = trees::clone_tree(Path::new("/etc"), read_only, "/etc")?;
    let (etc, etc_build) =
        trees::etc_overlay_built("cellos-doctor", None, Path::new("/etc"), None)?;
    Ok(Trees {
        tree,
        etc,
        etc_build,
    })
}

/// The cell-side steps, in a child in the cell's namespaces, with `trees` from
/// [`supervisor_side`].
pub fn cell_side(trees: Trees) -> Result<(), LinuxError> {
    let dir = tempfile::tempdir().map_err(|e| LinuxError::io("create a probe directory", e))?;
    let child = Child::new(dir.path(), trees)?;
    let (release_r, release_w) = pipe()?;
    let (result_r, result_w) = pipe()?;
    let pid = child.clone_into_namespaces(&release_r, &result_w)?;
    drop((release_r, result_w));
    let released = write_maps(pid, &IdMap::cell_range(DEFAULT_UID_BASE)?)
        .and_then(|()| write_byte(&release_w, RELEASE));
    drop(release_w);
    let mut report = Vec::new();
    let read = std::fs::File::from(result_r).read_to_end(&mut report);
    let status = reap(pid);
    released?;
    read.map_err(|e| LinuxError::io("read the probe child's report", e))?;
    child_outcome(&report, status)
}

/// What the child's report and exit status say.
fn child_outcome(report: &[u8], status: Option<i32>) -> Result<(), LinuxError> {
    if let [index, e0, e1, e2, e3] = *report {
        let errno = i32::from_ne_bytes([e0, e1, e2, e3]);
        let (step, target) = CHILD_STEPS
            .get(index as usize)
            .copied()
            .unwrap_or((None, "an unknown step"));
        return Err(match step {
            Some(step) => Refusal::new(step, target, errno).into(),
            None => LinuxError::errno(target, errno),
        });
    }
    match status {
        Some(s) if libc::WIFEXITED(s) && libc::WEXITSTATUS(s) == 0 => Ok(()),
        other => Err(LinuxError::Setup {
            what: "cell-side probe".into(),
            detail: format!("the probe child ended without a report (wait status {other:?})"),
        }),
    }
}

/// Everything the child needs, prepared before the clone: it may only make system calls.
struct Child {
    root: CString,
    proc_dir: CString,
    tree: OwnedFd,
    etc: OwnedFd,
}

impl Child {
    fn new(dir: &Path, Trees { tree, etc, .. }: Trees) -> Result<Self, LinuxError> {
        let c = |p: &Path| {
            CString::new(p.as_os_str().as_bytes()).map_err(|_| LinuxError::Refused {
                what: format!("probe path {} contains NUL", p.display()),
            })
        };
        Ok(Child {
            root: c(dir)?,
            proc_dir: c(&dir.join("proc"))?,
            tree,
            etc,
        })
    }

    /// Clone a child into the cell's namespaces (as [`crate::clone`] does for init); it waits
    /// for [`RELEASE`] on `release`, takes the steps and reports on `result`.
    fn clone_into_namespaces(
        &self,
        release: &OwnedFd,
        result: &OwnedFd,
    ) -> Result<i32, LinuxError> {
        // SAFETY: the child runs only `child_main`, which makes raw system calls on memory
        // prepared above and never returns.
        let pid = match unsafe { fork_like_clone(CLONE_NAMESPACES, None) } {
            // SAFETY: we are the freshly cloned child.
            Ok(0) => unsafe { self.child_main(release.as_raw_fd(), result.as_raw_fd()) },
            Ok(pid) => pid,
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(0);
                return Err(Refusal::new(Step::CloneNamespaces, "for a probe cell", errno).into());
            }
        };
        Ok(pid)
    }

    /// The child: wait for the id maps, become the namespace's root, take [`CHILD_STEPS`].
    ///
    /// # Safety
    /// Only in the freshly cloned child: it makes raw system calls on `self` (prepared before
    /// the clone) and never allocates, since the parent may be multi-threaded.
    unsafe fn child_main(&self, release: i32, result: i32) -> ! {
        let mut byte = 0u8;
        if libc::read(release, (&mut byte as *mut u8).cast(), 1) != 1 || byte != RELEASE {
            libc::_exit(2);
        }
        if libc::syscall(libc::SYS_setresgid, 0, 0, 0) != 0
            || libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
            || libc::syscall(libc::SYS_setresuid, 0, 0, 0) != 0
        {
            libc::_exit(3);
        }
        let failed = self.steps();
        if let Err((index, errno)) = failed {
            let e = errno.to_ne_bytes();
            let report = [index, e[0], e[1], e[2], e[3]];
            libc::write(result, report.as_ptr().cast(), report.len());
            libc::_exit(1);
        }
        libc::_exit(0)
    }

    /// The steps; on failure the index into [`CHILD_STEPS`] and the errno.
    ///
    /// # Safety
    /// As [`Child::child_main`]: pointers are to `self`'s C strings and to locals.
    unsafe fn steps(&self) -> Result<(), (u8, i32)> {
        let check = |index: u8, rc: libc::c_long| {
            if rc < 0 {
                Err((index, *libc::__errno_location()))
            } else {
                Ok(())
            }
        };
        let empty = c"".as_ptr();
        check(0, libc::unshare(libc::CLONE_NEWCGROUP).into())?;
        let private = libc::MS_REC | libc::MS_PRIVATE;
        check(
            1,
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                private,
                std::ptr::null(),
            )
            .into(),
        )?;
        let tmpfs = c"tmpfs".as_ptr();
        let nosuid_nodev = libc::MS_NOSUID | libc::MS_NODEV;
        check(
            2,
            libc::mount(
                tmpfs,
                self.root.as_ptr(),
                tmpfs,
                nosuid_nodev,
                c"mode=0755,size=64k".as_ptr().cast(),
            )
            .into(),
        )?;
        let root = libc::open(
            self.root.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        check(3, root.into())?;
        for dir in [c"host", c"etc", c"proc"] {
            check(3, libc::mkdirat(root, dir.as_ptr(), 0o755).into())?;
        }
        let from_fd = libc::MOVE_MOUNT_F_EMPTY_PATH as libc::c_uint;
        for (index, tree, target) in [(4, &self.tree, c"host"), (5, &self.etc, c"etc")] {
            let rc = libc::syscall(
                libc::SYS_move_mount,
                tree.as_raw_fd(),
                empty,
                root,
                target.as_ptr(),
                from_fd,
            );
            check(index, rc)?;
        }
        // `struct mount_attr { attr_set, attr_clr, propagation, userns_fd }`.
        let attr = [
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
            0u64,
            0,
            0,
        ];
        let at = (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint;
        let rc = libc::syscall(
            libc::SYS_mount_setattr,
            root,
            empty,
            at,
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        );
        check(6, rc)?;
        let proc = c"proc".as_ptr();
        let proc_flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        check(
            7,
            libc::mount(
                proc,
                self.proc_dir.as_ptr(),
                proc,
                proc_flags,
                std::ptr::null(),
            )
            .into(),
        )?;
        let name = b"cellos-doctor";
        check(
            8,
            libc::sethostname(name.as_ptr().cast(), name.len()).into(),
        )?;
        check(9, libc::chdir(self.root.as_ptr()).into())?;
        let dot = c".".as_ptr();
        check(10, libc::syscall(libc::SYS_pivot_root, dot, dot))?;
        check(11, libc::umount2(dot, libc::MNT_DETACH).into())
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), LinuxError> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| LinuxError::errno("pipe for the probe child", e.raw_os_error()))
}

fn write_byte(fd: &OwnedFd, byte: u8) -> Result<(), LinuxError> {
    // SAFETY: `fd` is a pipe we own; writing one byte from a local.
    let n = unsafe { libc::write(fd.as_raw_fd(), (&byte as *const u8).cast(), 1) };
    if n == 1 {
        Ok(())
    } else {
        Err(LinuxError::last_os_error("release the probe child"))
    }
}

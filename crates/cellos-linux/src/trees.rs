//! Detached mount trees, prepared by the supervisor and attached by init.
//!
//! The cell's init is root only inside its user namespace: it cannot look up host paths that
//! are not world-searchable (a `0700` state directory, a private project directory). So every
//! host path a cell gets is opened here, by the supervisor (real root), as a detached mount
//! tree: `open_tree(OPEN_TREE_CLONE)` for binds, `fsmount` for the `/etc` overlay. Flags are
//! added while the tree is detached (`mount_setattr`), so there is never a writable window,
//! and the descriptor is sent to init (`SCM_RIGHTS`, while init is still starting up), which
//! only `move_mount`s it into place. Init performs no host path lookup for these, so nothing
//! can be swapped under it either.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags};
use rustix::mount::{
    fsconfig_create, fsconfig_set_string, fsmount, fsopen, open_tree, FsMountFlags, FsOpenFlags,
    MountAttrFlags, OpenTreeFlags,
};

use crate::error::LinuxError;
use crate::etc_attached;
use crate::plan::{InitConfig, MountPlan, RootEntry};
use crate::refusal::{Refusal, Step};
use crate::safe_path;

pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;

/// `struct mount_attr` of `mount_setattr(2)` (libc does not export it).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Add `attrs` to the mount at `dirfd`+`path` (empty path: `dirfd` itself) and every mount
/// below it. Raw syscall: neither nix nor rustix 0.38 wraps `mount_setattr`.
pub fn mount_setattr(
    dirfd: BorrowedFd<'_>,
    path: &str,
    attrs: u64,
    what: &str,
) -> Result<(), LinuxError> {
    let c_path = CString::new(path).map_err(|_| LinuxError::Refused {
        what: format!("{what}: path contains NUL"),
    })?;
    let attr = MountAttr {
        attr_set: attrs,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = libc::AT_RECURSIVE
        | if path.is_empty() {
            libc::AT_EMPTY_PATH
        } else {
            0
        };
    // SAFETY: valid C string and attribute struct for the duration of the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd.as_raw_fd(),
            c_path.as_ptr(),
            flags as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        return Err(Refusal::new(Step::MountSetattr, format!("on {what}"), errno).into());
    }
    Ok(())
}

/// A detached copy of the mount tree at host `source` (recursive), with `attrs` added.
/// `source` must be symlink-free (validated by the plan; re-checked here).
pub fn clone_tree(source: &Path, attrs: u64, what: &str) -> Result<OwnedFd, LinuxError> {
    let src = safe_path::open_host_path(source)
        .map_err(|e| LinuxError::io(format!("open {} for {what}", source.display()), e))?;
    let tree = open_tree(
        src.as_fd(),
        "",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_RECURSIVE
            | OpenTreeFlags::AT_EMPTY_PATH,
    )
    .map_err(|e| {
        LinuxError::kernel(
            Step::OpenTree,
            format!("of {} for {what}", source.display()),
            e,
        )
    })?;
    mount_setattr(tree.as_fd(), "", attrs, what)?;
    Ok(tree)
}

/// The cell's `/etc`: a detached read-only overlay of a per-cell layer (`hostname`, `hosts`
/// on a small private tmpfs) over the optional `mask` (whiteouts of host secrets) over
/// `etc`. Layers are named through `/proc/self/fd`, so no path of ours needs escaping.
/// A networked cell's `resolv.conf` lives in the per-cell layer too, hiding the host's.
/// A kernel that refuses the detached layer gets the same overlay built over attached layers
/// ([`etc_attached`]).
pub fn etc_overlay(
    cell_id: &str,
    mask: Option<&Path>,
    etc: &Path,
    resolv_conf: Option<&str>,
) -> Result<OwnedFd, LinuxError> {
    etc_overlay_built(cell_id, mask, etc, resolv_conf).map(|(tree, _)| tree)
}

/// How [`etc_overlay`] built the overlay on this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtcBuild {
    /// Straight from the detached per-cell layer.
    Detached,
    /// Over attached layers, the kernel having refused the detached one.
    AttachedFallback,
}

/// [`etc_overlay`], saying which way it was built (for `cellos doctor`).
pub fn etc_overlay_built(
    cell_id: &str,
    mask: Option<&Path>,
    etc: &Path,
    resolv_conf: Option<&str>,
) -> Result<(OwnedFd, EtcBuild), LinuxError> {
    let layer = cell_layer(cell_id, resolv_conf)?;
    let mut lowers = Vec::new();
    for dir in mask.into_iter().chain(std::iter::once(etc)) {
        let fd = safe_path::open_host_path(dir)
            .map_err(|e| LinuxError::io(format!("open {} for /etc", dir.display()), e))?;
        lowers.push(fd);
    }
    match detached_overlay(&layer, &lowers) {
        Err(e) if refuses_detached_layer(&e) => {
            let paths: Vec<&Path> = mask.into_iter().chain(std::iter::once(etc)).collect();
            let tree = etc_attached::overlay(&layer, &paths)?;
            Ok((tree, EtcBuild::AttachedFallback))
        }
        built => Ok((built?, EtcBuild::Detached)),
    }
}

/// The per-cell layer: `hostname`, `hosts` and (networked cells) `resolv.conf` on a small
/// detached tmpfs.
pub fn cell_layer(cell_id: &str, resolv_conf: Option<&str>) -> Result<OwnedFd, LinuxError> {
    let tmp = new_fs("tmpfs", &[("size", "64k"), ("mode", "0755")])?;
    let layer = fsmount(
        tmp.as_fd(),
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV,
    )
    .map_err(|e| {
        fs_refusal(
            Step::Fsmount { fstype: "tmpfs" },
            "of the /etc layer",
            e,
            &tmp,
        )
    })?;
    let hosts =
        format!("127.0.0.1\tlocalhost {cell_id}\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    write_at(layer.as_fd(), "hostname", format!("{cell_id}\n").as_bytes())?;
    write_at(layer.as_fd(), "hosts", hosts.as_bytes())?;
    if let Some(text) = resolv_conf {
        write_at(layer.as_fd(), "resolv.conf", text.as_bytes())?;
    }
    Ok(layer)
}

/// The overlay built straight from the detached `layer` (Linux 6.15+ accepts it).
fn detached_overlay(layer: &OwnedFd, lowers: &[OwnedFd]) -> Result<OwnedFd, LinuxError> {
    let lower: Vec<String> = std::iter::once(safe_path::fd_path(layer))
        .chain(lowers.iter().map(safe_path::fd_path))
        .collect();
    let ovl = new_fs("overlay", &[("lowerdir", &lower.join(":"))])?;
    fsmount(
        ovl.as_fd(),
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_RDONLY
            | MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV,
    )
    .map_err(|e| {
        fs_refusal(
            Step::Fsmount { fstype: "overlay" },
            "of the cell's /etc",
            e,
            &ovl,
        )
    })
}

/// Creating the overlay failed the way kernels before 6.15 refuse a detached lower layer.
fn refuses_detached_layer(err: &LinuxError) -> bool {
    matches!(
        err,
        LinuxError::Kernel(Refusal {
            step: Step::FsconfigCreate { fstype: "overlay" },
            errno: libc::EINVAL,
            ..
        })
    )
}

/// A created filesystem context of `fstype` with `options` set (`fsopen`, `fsconfig`s and
/// `FSCONFIG_CMD_CREATE`); a refusal carries the kernel's log of the context.
fn new_fs(fstype: &'static str, options: &[(&str, &str)]) -> Result<OwnedFd, LinuxError> {
    let fs = fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(|e| LinuxError::kernel(Step::Fsopen { fstype }, "for the cell's /etc", e))?;
    for (key, value) in options {
        fsconfig_set_string(fs.as_fd(), *key, *value)
            .map_err(|e| fs_refusal(Step::Fsconfig { fstype }, format!("{key}={value}"), e, &fs))?;
    }
    fsconfig_create(fs.as_fd()).map_err(|e| {
        fs_refusal(
            Step::FsconfigCreate { fstype },
            "for the cell's /etc",
            e,
            &fs,
        )
    })?;
    Ok(fs)
}

fn fs_refusal(
    step: Step,
    target: impl Into<String>,
    e: rustix::io::Errno,
    fs: &OwnedFd,
) -> LinuxError {
    Refusal::with_fs_log(step, target, e.raw_os_error(), fs.as_fd()).into()
}

/// The host trees of one plan, opened in [`InitConfig::number_trees`] order.
pub fn open_all(config: &InitConfig) -> Result<Vec<OwnedFd>, LinuxError> {
    let read_only = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    let mut trees = Vec::with_capacity(config.tree_count());
    for entry in &config.root {
        if let RootEntry::Dir { name, source, .. } | RootEntry::File { name, source, .. } = entry {
            trees.push(clone_tree(source, read_only, &format!("/{name}"))?);
        }
    }
    for m in &config.mounts {
        if let MountPlan::Bind {
            source,
            target,
            read_only: ro,
            ..
        } = m
        {
            let attrs = if *ro {
                read_only
            } else {
                MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV
            };
            trees.push(clone_tree(source, attrs, target)?);
        }
    }
    if let Some(etc) = &config.etc_source {
        trees.push(etc_overlay(
            &config.cell_id,
            config.etc_mask.as_deref(),
            etc,
            config.resolv_conf.as_deref(),
        )?);
    }
    Ok(trees)
}

/// The trees init received, taken one by one as they are attached.
pub struct Received(Vec<Option<OwnedFd>>);

impl Received {
    pub fn new(fds: Vec<OwnedFd>) -> Self {
        Self(fds.into_iter().map(Some).collect())
    }

    /// The tree numbered `index`; each can be taken once.
    pub fn take(&mut self, index: usize) -> Result<OwnedFd, LinuxError> {
        self.0
            .get_mut(index)
            .and_then(Option::take)
            .ok_or_else(|| LinuxError::Setup {
                what: "cell config".into(),
                detail: format!("mount tree {index} missing or used twice"),
            })
    }
}

fn write_at(dir: BorrowedFd<'_>, name: &str, content: &[u8]) -> Result<(), LinuxError> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map_err(|e| LinuxError::errno(format!("create /etc/{name} for the cell"), e.raw_os_error()))?;
    std::fs::File::from(fd)
        .write_all(content)
        .map_err(|e| LinuxError::io(format!("write /etc/{name} for the cell"), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refusal::Refusal;

    #[test]
    fn a_refused_overlay_option_carries_the_kernels_own_message() {
        let err = new_fs("overlay", &[("cellos-bogus", "1")]).unwrap_err();
        let LinuxError::Kernel(Refusal {
            step, kernel_log, ..
        }) = &err
        else {
            panic!("not a kernel refusal: {err:?}");
        };
        assert_eq!(*step, Step::Fsconfig { fstype: "overlay" });
        assert_eq!(
            kernel_log,
            &["e overlay: Unknown parameter 'cellos-bogus'".to_owned()]
        );
        let text = err.to_string();
        assert!(
            text.starts_with(
                "fsconfig(overlay, FSCONFIG_SET_STRING) cellos-bogus=1 refused with EINVAL \
                 (Invalid argument); kernel says: e overlay: Unknown parameter 'cellos-bogus'; \
                 likely cause: the kernel rejected the filesystem's configuration; fix: check \
                 the option the kernel names"
            ),
            "{text}"
        );
    }

    #[test]
    fn only_an_overlay_create_einval_takes_the_attached_fallback() {
        let refusal = |step, errno| LinuxError::Kernel(Refusal::new(step, "for /etc", errno));
        let create = Step::FsconfigCreate { fstype: "overlay" };
        assert!(refuses_detached_layer(&refusal(create, libc::EINVAL)));
        assert!(!refuses_detached_layer(&refusal(create, libc::EPERM)));
        let tmpfs = Step::FsconfigCreate { fstype: "tmpfs" };
        assert!(!refuses_detached_layer(&refusal(tmpfs, libc::EINVAL)));
        let option = Step::Fsconfig { fstype: "overlay" };
        assert!(!refuses_detached_layer(&refusal(option, libc::EINVAL)));
    }
}

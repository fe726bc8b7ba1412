//! Building the cell's root filesystem (runs inside init, in the cell's mount namespace).
//!
//! The new root is a small tmpfs holding mount points only. System directories (or an image's
//! top-level entries), declared binds and the `/etc` overlay arrive as detached, already
//! read-only mount trees from the supervisor ([`crate::trees`]) and are attached with
//! `move_mount`; symlinks among the top-level entries are recreated as symlinks. Then the whole
//! base tree is made read-only, nosuid and nodev in one `mount_setattr(AT_RECURSIVE)` call, and
//! only then are the writable and special mounts added on top (devices, `/proc`, `/dev/pts`,
//! `/dev/shm`, `/tmp`, workspace, read-write binds). `mount_setattr` only *adds* flags, so the
//! locked flags of host mounts (nosuid/nodev/noexec) are kept without reading them back first,
//! which the classic `MS_REMOUNT|MS_BIND` dance has to do.
//!
//! Everything we create in or mount onto is resolved with `openat2(RESOLVE_NO_SYMLINKS)` and
//! addressed through its descriptor, so an image cannot redirect a mount with a symlink.

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use cellos_core::spec::SecretDeliveryMode;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use rustix::fs::{Mode, OFlags};

use crate::error::LinuxError;
use crate::plan::{InitConfig, MountPlan, RootEntry};
use crate::protocol::SecretFrame;
use crate::refusal::{Refusal, Step};
use crate::safe_path::{self, fd_path, Kind};
use crate::trees::{
    mount_setattr, Received, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY,
};

/// Device nodes bound from the host into the cell's `/dev`.
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

fn setup(what: &str, detail: impl std::fmt::Display) -> LinuxError {
    LinuxError::Setup {
        what: what.to_owned(),
        detail: detail.to_string(),
    }
}

/// `mount(2)`; `fstype: None` is a bind (`MS_BIND`) or a propagation change.
fn do_mount(
    source: Option<&str>,
    target: &str,
    fstype: Option<&'static str>,
    flags: MsFlags,
    data: Option<&str>,
    what: &str,
) -> Result<(), LinuxError> {
    let step = match fstype {
        Some(fstype) => Step::Mount { fstype },
        None if flags.contains(MsFlags::MS_BIND) => Step::BindMount,
        None => Step::MakePrivate,
    };
    mount(source, target, fstype, flags, data)
        .map_err(|e| Refusal::new(step, format!("for {what}"), e as i32).into())
}

/// Build the root described by `config` and pivot into it. On return the process's root and
/// cwd are the new root, and the host's tree is no longer reachable.
pub fn build_and_pivot(
    config: &InitConfig,
    secrets: &[SecretFrame],
    trees: &mut Received,
) -> Result<(), LinuxError> {
    // Nothing we mount may propagate back to the host (or in from it).
    do_mount(
        None,
        "/",
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
        "/ private",
    )?;

    let build = config
        .build_dir
        .to_str()
        .ok_or_else(|| setup("build directory", "not UTF-8"))?;
    do_mount(
        Some("tmpfs"),
        build,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755,size=4m"),
        "root tmpfs",
    )?;
    let root = rustix::fs::open(
        build,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| LinuxError::errno("open new root", e.raw_os_error()))?;
    let root = root.as_fd();

    for entry in &config.root {
        root_entry(root, entry, trees)?;
    }
    for dir in ["proc", "dev", "tmp", "run", "run/cellos", "etc"] {
        mkdir(root, dir, 0o755)?;
    }
    etc(root, config, trees)?;
    dev_base(root, build)?;
    if config.secret_delivery == SecretDeliveryMode::File && !secrets.is_empty() {
        secrets_tmpfs(root, build, config, secrets)?;
    }
    // Create mount points inside the base tmpfs now, while it is writable. Targets inside
    // other mounts (a workspace, an image directory) are created or checked when mounted.
    for m in &config.mounts {
        let _ = safe_path::ensure(root, m.target(), mount_kind(m));
    }

    mount_setattr(
        root,
        "",
        MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        "the cell's root (read-only)",
    )?;

    dev_mounts(root, build)?;
    do_mount(
        Some("proc"),
        &format!("{build}/proc"),
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
        "/proc",
    )?;
    do_mount(
        Some("tmpfs"),
        &format!("{build}/tmp"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
        "/tmp",
    )?;
    for m in &config.mounts {
        user_mount(root, m, config, trees)?;
    }

    pivot(build)
}

fn mount_kind(m: &MountPlan) -> Kind {
    match m {
        MountPlan::Bind { is_dir: false, .. } => Kind::File,
        _ => Kind::Dir,
    }
}

fn mkdir(root: BorrowedFd<'_>, rel: &str, mode: u32) -> Result<(), LinuxError> {
    match rustix::fs::mkdirat(root, rel, Mode::from_raw_mode(mode)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
        Err(e) => Err(LinuxError::errno(
            format!("mkdir /{rel} in the cell"),
            e.raw_os_error(),
        )),
    }
}

fn write_file(
    root: BorrowedFd<'_>,
    rel: &str,
    mode: u32,
    content: &[u8],
) -> Result<OwnedFd, LinuxError> {
    let fd = rustix::fs::openat(
        root,
        rel,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )
    .map_err(|e| LinuxError::errno(format!("create /{rel} in the cell"), e.raw_os_error()))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(content)
        .map_err(|e| LinuxError::io(format!("write /{rel} in the cell"), e))?;
    Ok(file.into())
}

fn root_entry(
    root: BorrowedFd<'_>,
    entry: &RootEntry,
    trees: &mut Received,
) -> Result<(), LinuxError> {
    match entry {
        RootEntry::Symlink { name, target } => rustix::fs::symlinkat(target, root, name.as_str())
            .map_err(|e| {
                LinuxError::errno(format!("symlink /{name} in the cell"), e.raw_os_error())
            }),
        RootEntry::Dir { name, fd, .. } => attach(root, name, Kind::Dir, trees.take(*fd)?),
        RootEntry::File { name, fd, .. } => attach(root, name, Kind::File, trees.take(*fd)?),
    }
}

/// Attach the detached `tree` at `rel` (created without following symlinks), then close our
/// handle on it.
fn attach(root: BorrowedFd<'_>, rel: &str, kind: Kind, tree: OwnedFd) -> Result<(), LinuxError> {
    use rustix::mount::{move_mount, MoveMountFlags};
    let target = safe_path::ensure(root, rel, kind).map_err(|e| {
        LinuxError::io(
            format!(
                "mount point {rel} (must be creatable inside the cell and contain no symlink; \
                 inside a read-only directory it must already exist)"
            ),
            e,
        )
    })?;
    move_mount(
        tree.as_fd(),
        "",
        target.as_fd(),
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|e| {
        let rel = rel.trim_start_matches('/');
        LinuxError::kernel(Step::MoveMount, format!("of /{rel} into the cell"), e)
    })
}

/// `/etc`: the supervisor's detached overlay, or (image without `/etc`) just the two files.
fn etc(root: BorrowedFd<'_>, config: &InitConfig, trees: &mut Received) -> Result<(), LinuxError> {
    match config.etc_fd {
        Some(fd) => attach(root, "etc", Kind::Dir, trees.take(fd)?),
        None => {
            let hosts = format!("127.0.0.1\tlocalhost {}\n", config.cell_id);
            write_file(
                root,
                "etc/hostname",
                0o644,
                format!("{}\n", config.cell_id).as_bytes(),
            )?;
            write_file(root, "etc/hosts", 0o644, hosts.as_bytes())?;
            if let Some(text) = &config.resolv_conf {
                write_file(root, "etc/resolv.conf", 0o644, text.as_bytes())?;
            }
            Ok(())
        }
    }
}

/// `/dev` tmpfs with device placeholders, standard symlinks and mount points.
fn dev_base(root: BorrowedFd<'_>, build: &str) -> Result<(), LinuxError> {
    do_mount(
        Some("tmpfs"),
        &format!("{build}/dev"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=64k"),
        "/dev tmpfs",
    )?;
    for dev in DEVICES {
        if Path::new("/dev").join(dev).exists() {
            write_file(root, &format!("dev/{dev}"), 0o666, b"")?;
        }
    }
    mkdir(root, "dev/pts", 0o755)?;
    mkdir(root, "dev/shm", 0o1777)?;
    for (name, target) in [
        ("dev/ptmx", "pts/ptmx"),
        ("dev/fd", "/proc/self/fd"),
        ("dev/stdin", "/proc/self/fd/0"),
        ("dev/stdout", "/proc/self/fd/1"),
        ("dev/stderr", "/proc/self/fd/2"),
    ] {
        rustix::fs::symlinkat(target, root, name)
            .map_err(|e| LinuxError::errno(format!("symlink /{name}"), e.raw_os_error()))?;
    }
    Ok(())
}

/// Device binds, a private devpts instance and `/dev/shm`.
fn dev_mounts(root: BorrowedFd<'_>, build: &str) -> Result<(), LinuxError> {
    for dev in DEVICES {
        let host = format!("/dev/{dev}");
        if !Path::new(&host).exists() {
            continue;
        }
        let target = safe_path::open_in_root(root, &format!("dev/{dev}"), OFlags::PATH)
            .map_err(|e| LinuxError::io(format!("open /dev/{dev} placeholder"), e))?;
        do_mount(
            Some(&host),
            &fd_path(&target),
            None,
            MsFlags::MS_BIND,
            None,
            &host,
        )?;
    }
    do_mount(
        Some("devpts"),
        &format!("{build}/dev/pts"),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
        "/dev/pts",
    )?;
    do_mount(
        Some("tmpfs"),
        &format!("{build}/dev/shm"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
        "/dev/shm",
    )
}

/// `/run/secrets`: a private tmpfs, directory 0500 and files 0400, owned by the workload.
fn secrets_tmpfs(
    root: BorrowedFd<'_>,
    build: &str,
    config: &InitConfig,
    secrets: &[SecretFrame],
) -> Result<(), LinuxError> {
    mkdir(root, "run/secrets", 0o755)?;
    let size: usize = secrets.iter().map(|s| s.value.len() + 4096).sum::<usize>() + 4096;
    do_mount(
        Some("tmpfs"),
        &format!("{build}/run/secrets"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(&format!("mode=0700,size={size}")),
        "/run/secrets tmpfs",
    )?;
    let dir = safe_path::open_in_root(root, "run/secrets", OFlags::RDONLY | OFlags::DIRECTORY)
        .map_err(|e| LinuxError::io("open /run/secrets", e))?;
    let (uid, gid) = (Some(config.uid), Some(config.gid));
    for secret in secrets {
        let fd = write_file(dir.as_fd(), &secret.key, 0o400, &secret.value)
            .map_err(|_| setup("write secret file", format!("/run/secrets/{}", secret.key)))?;
        std::os::unix::fs::fchown(&fd, uid, gid)
            .map_err(|e| LinuxError::io(format!("chown /run/secrets/{}", secret.key), e))?;
    }
    std::os::unix::fs::fchown(&dir, uid, gid)
        .map_err(|e| LinuxError::io("chown /run/secrets", e))?;
    rustix::fs::fchmod(&dir, Mode::from_raw_mode(0o500))
        .map_err(|e| LinuxError::errno("chmod /run/secrets", e.raw_os_error()))
}

/// A declared mount or the workspace, on a target created without following symlinks.
fn user_mount(
    root: BorrowedFd<'_>,
    m: &MountPlan,
    config: &InitConfig,
    trees: &mut Received,
) -> Result<(), LinuxError> {
    let target_name = m.target();
    match m {
        MountPlan::Bind { fd, .. } => attach(root, target_name, mount_kind(m), trees.take(*fd)?),
        MountPlan::Tmpfs { size_bytes, .. } => {
            let target = safe_path::ensure(root, target_name, Kind::Dir).map_err(|e| {
                LinuxError::io(
                    format!(
                        "workspace {target_name} (must be creatable inside the cell and contain \
                         no symlink)"
                    ),
                    e,
                )
            })?;
            do_mount(
                Some("tmpfs"),
                &fd_path(&target),
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some(&format!("mode=0755,size={size_bytes}")),
                target_name,
            )?;
            // Resolve the path again (not the fd) to reach the new mount's root; fchown needs
            // a real descriptor, not O_PATH.
            let mounted =
                safe_path::open_in_root(root, target_name, OFlags::RDONLY | OFlags::DIRECTORY)
                    .map_err(|e| LinuxError::io(format!("open workspace {target_name}"), e))?;
            std::os::unix::fs::fchown(&mounted, Some(config.uid), Some(config.gid))
                .map_err(|e| LinuxError::io(format!("chown workspace {target_name}"), e))
        }
    }
}

/// Make `build` the root: `pivot_root(".", ".")` stacks the old root on top of the new one,
/// and a lazy unmount drops it, with no `put_old` directory left behind.
fn pivot(build: &str) -> Result<(), LinuxError> {
    nix::unistd::chdir(build).map_err(|e| LinuxError::errno("chdir new root", e as i32))?;
    nix::unistd::pivot_root(".", ".")
        .map_err(|e| Refusal::new(Step::PivotRoot, "into the cell's root", e as i32))?;
    umount2(".", MntFlags::MNT_DETACH)
        .map_err(|e| Refusal::new(Step::Umount, "of the host's root", e as i32))?;
    nix::unistd::chdir("/").map_err(|e| LinuxError::errno("chdir /", e as i32))
}

//! Symlink-proof path handling with `openat2(2)`.
//!
//! A cell's tree can contain directories controlled by someone else (an image, a shared
//! workspace). Anything we create, mount onto or read there is resolved with
//! `RESOLVE_NO_SYMLINKS` (and `RESOLVE_IN_ROOT`/`RESOLVE_BENEATH`), so a planted symlink makes
//! the operation fail instead of redirecting it to the host.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path};

use rustix::fs::{Mode, OFlags, ResolveFlags, CWD};

/// Flags for resolving inside a cell tree: no symlinks at all, no magic links, no escape.
fn in_root() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
}

/// What [`ensure`] should find or create at the end of the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// Open `rel` (a cell path; leading `/` allowed) under `root` for reading, refusing symlinks
/// anywhere along it, and `..` that would leave the root.
pub fn open_in_root(root: BorrowedFd<'_>, rel: &str, flags: OFlags) -> io::Result<OwnedFd> {
    let rel = rel.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    Ok(rustix::fs::openat2(
        root,
        rel,
        flags | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        in_root(),
    )?)
}

/// Open a host path as `O_PATH` without following any symlink (the supervisor validated it as
/// symlink-free; one appearing since is an attack or a race, and is refused).
pub fn open_host_path(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat2(
        CWD,
        path,
        OFlags::PATH | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )?)
}

/// Find or create `rel` under `root` as a directory or an empty file, creating missing parent
/// directories (mode 0755) one component at a time without following symlinks. Returns an
/// `O_PATH` descriptor of the final entry, suitable as a mount target via [`fd_path`].
pub fn ensure(root: BorrowedFd<'_>, rel: &str, kind: Kind) -> io::Result<OwnedFd> {
    let comps: Vec<&std::ffi::OsStr> = Path::new(rel)
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(Ok(n)),
            Component::RootDir | Component::CurDir => None,
            Component::ParentDir | Component::Prefix(_) => Some(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "path contains '..'",
            ))),
        })
        .collect::<io::Result<_>>()?;
    let Some((last, parents)) = comps.split_last() else {
        return Ok(rustix::io::dup(root)?);
    };
    let mut dir = rustix::io::dup(root)?;
    for comp in parents {
        dir = step_dir(dir.as_fd(), comp)?;
    }
    match kind {
        Kind::Dir => step_dir(dir.as_fd(), last),
        Kind::File => {
            match rustix::fs::openat(
                dir.as_fd(),
                *last,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            ) {
                Ok(_) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
            let fd = beneath(dir.as_fd(), last, OFlags::PATH)?;
            let stat = rustix::fs::fstat(&fd)?;
            if rustix::fs::FileType::from_raw_mode(stat.st_mode)
                != rustix::fs::FileType::RegularFile
            {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "exists and is not a regular file",
                ));
            }
            Ok(fd)
        }
    }
}

fn step_dir(dir: BorrowedFd<'_>, name: &std::ffi::OsStr) -> io::Result<OwnedFd> {
    match beneath(dir, name, OFlags::PATH | OFlags::DIRECTORY) {
        Ok(fd) => Ok(fd),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
            beneath(dir, name, OFlags::PATH | OFlags::DIRECTORY)
        }
        Err(e) => Err(e),
    }
}

fn beneath(dir: BorrowedFd<'_>, name: &std::ffi::OsStr, flags: OFlags) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat2(
        dir,
        name,
        flags | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )?)
}

/// `/proc/self/fd/N`: lets path-based calls (mount) act on exactly the object `fd` names.
pub fn fd_path(fd: &impl AsRawFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ensure_creates_parents_and_refuses_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root =
            rustix::fs::open(dir.path(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        ensure(root.as_fd(), "/a/b/c", Kind::Dir).unwrap();
        assert!(dir.path().join("a/b/c").is_dir());
        ensure(root.as_fd(), "/a/f", Kind::File).unwrap();
        assert!(dir.path().join("a/f").is_file());

        std::os::unix::fs::symlink("/etc", dir.path().join("evil")).unwrap();
        assert!(ensure(root.as_fd(), "/evil/x", Kind::Dir).is_err());
        assert!(!Path::new("/etc/x").exists());
        assert!(ensure(root.as_fd(), "/evil", Kind::Dir).is_err());
        assert!(ensure(root.as_fd(), "/a/../../x", Kind::Dir).is_err());
    }

    #[test]
    fn open_in_root_refuses_symlinks_and_escapes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ok"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link")).unwrap();
        let root =
            rustix::fs::open(dir.path(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        assert!(open_in_root(root.as_fd(), "/ok", OFlags::RDONLY).is_ok());
        assert!(open_in_root(root.as_fd(), "/link", OFlags::RDONLY).is_err());
        // `..` is clamped to the root, never above it.
        assert!(open_in_root(root.as_fd(), "../../ok", OFlags::RDONLY).is_ok());
        assert!(open_in_root(root.as_fd(), "../../etc/passwd", OFlags::RDONLY).is_err());
    }
}

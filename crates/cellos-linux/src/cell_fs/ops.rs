//! The filesystem work of each operation. Everything here runs on the workload's thread (see
//! [`super::creds`]) and reaches the cell only through the root descriptor:
//!
//! * every multi-component lookup is `openat2(root, ..., RESOLVE_IN_ROOT |
//!   RESOLVE_NO_MAGICLINKS)`: `..` and absolute symlinks stay at the cell's root, magic links
//!   (`/proc/*/root`, `/proc/*/fd/*`) are refused;
//! * the last component is then handled with `*at` calls on the held parent descriptor,
//!   with `O_NOFOLLOW`/`AT_SYMLINK_NOFOLLOW`, so swapping something for a symlink between
//!   two steps can never redirect an operation.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::mpsc::Receiver;

use cellos_core::session::{FileEntry, FileKind, FileStat, FileWritten};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;
use sha2::{Digest, Sha256};

use super::error::CellFsError;
use super::path::{CellPath, NAME_MAX};

/// Deepest directory tree a recursive remove descends into (each level holds a descriptor).
pub const MAX_REMOVE_DEPTH: usize = 512;

/// What the caller's thread feeds a write with.
pub(crate) enum Chunk {
    Data(Vec<u8>),
    Failed(std::io::Error),
    End,
}

fn resolve_flags() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
}

/// Resolve `rel` (relative to the root) with `openat2`, retrying the kernel's EAGAIN (a
/// concurrent rename or mount while resolving `..` under `RESOLVE_IN_ROOT`).
fn resolve(
    root: BorrowedFd<'_>,
    rel: &str,
    flags: OFlags,
    op: &'static str,
    path: &str,
) -> Result<OwnedFd, CellFsError> {
    let mut attempts = 0;
    loop {
        match rustix::fs::openat2(
            root,
            rel,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            resolve_flags(),
        ) {
            Ok(fd) => return Ok(fd),
            Err(Errno::AGAIN | Errno::INTR) if attempts < 64 => attempts += 1,
            Err(e) => return Err(CellFsError::from_errno(op, path, e)),
        }
    }
}

/// `O_PATH` descriptor of the directory holding `p`'s last component.
fn open_parent(root: BorrowedFd<'_>, p: &CellPath<'_>, path: &str) -> Result<OwnedFd, CellFsError> {
    resolve(
        root,
        &p.parent_rel(),
        OFlags::PATH | OFlags::DIRECTORY,
        "open the parent directory",
        path,
    )
    .map_err(|e| match e {
        CellFsError::NotFound { path, .. } => CellFsError::NotFound {
            path,
            hint: " (its parent directory is missing; create it with mkdir and parents)",
        },
        e => e,
    })
}

/// Open `name` in `parent` without following a symlink or crossing into anything but `name`.
fn open_name<P: rustix::path::Arg + Copy>(
    parent: BorrowedFd<'_>,
    name: P,
    flags: OFlags,
) -> rustix::io::Result<OwnedFd> {
    loop {
        match rustix::fs::openat(
            parent,
            name,
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Err(Errno::INTR) => continue,
            r => return r,
        }
    }
}

/// The error for `name` in `parent` failing to open with `err`: a symlink (ELOOP under
/// `O_NOFOLLOW`) and a non-directory are told apart by looking at what is there.
fn classify_open_error(
    parent: BorrowedFd<'_>,
    name: &str,
    err: Errno,
    op: &'static str,
    path: &str,
) -> CellFsError {
    if matches!(err, Errno::LOOP | Errno::NOTDIR) {
        if let Ok(st) = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Symlink => {
                    return CellFsError::IsASymlink {
                        path: path.to_string(),
                        target: link_target(parent, name).unwrap_or_else(|| "?".into()),
                    }
                }
                FileType::Directory => {}
                _ if err == Errno::NOTDIR => {
                    return CellFsError::NotADirectory {
                        path: path.to_string(),
                    }
                }
                _ => {}
            }
        }
    }
    CellFsError::from_errno(op, path, err)
}

fn link_target(dir: BorrowedFd<'_>, name: &str) -> Option<String> {
    rustix::fs::readlinkat(dir, name, Vec::new())
        .ok()
        .map(|t| t.to_string_lossy().into_owned())
}

pub(crate) fn kind_of(st: &Stat) -> FileKind {
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => FileKind::File,
        FileType::Directory => FileKind::Directory,
        FileType::Symlink => FileKind::Symlink,
        _ => FileKind::Other,
    }
}

fn file_stat(path: &str, st: &Stat, link_target: Option<String>) -> FileStat {
    FileStat {
        path: path.to_string(),
        kind: kind_of(st),
        size: st.st_size as u64,
        mode: st.st_mode & 0o7777,
        modified_unix: st.st_mtime as i64,
        link_target,
    }
}

pub(crate) fn stat(root: BorrowedFd<'_>, path: &str) -> Result<FileStat, CellFsError> {
    let p = CellPath::parse(path)?;
    let fd = match p.name() {
        None => resolve(
            root,
            &p.full_rel(),
            OFlags::PATH | OFlags::DIRECTORY,
            "stat",
            path,
        )?,
        Some(name) => {
            let parent = open_parent(root, &p, path)?;
            open_name(parent.as_fd(), name, OFlags::PATH)
                .map_err(|e| CellFsError::from_errno("stat", path, e))?
        }
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| CellFsError::from_errno("stat", path, e))?;
    // An O_PATH|O_NOFOLLOW descriptor of a symlink is the link itself; readlinkat with an empty
    // name reads it, so the target belongs to exactly the entry that was stat'ed.
    let target = if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
        link_target(fd.as_fd(), "")
    } else {
        None
    };
    Ok(file_stat(path, &st, target))
}

pub(crate) fn read(
    root: BorrowedFd<'_>,
    path: &str,
    max_bytes: u64,
) -> Result<(FileStat, File), CellFsError> {
    let p = CellPath::parse(path)?;
    let Some(name) = p.name() else {
        return Err(CellFsError::IsADirectory {
            path: path.to_string(),
            hint: "list it instead",
        });
    };
    let parent = open_parent(root, &p, path)?;
    // O_NONBLOCK: opening a FIFO must not hang the operation (it is refused below anyway).
    let fd = open_name(
        parent.as_fd(),
        name,
        OFlags::RDONLY | OFlags::NOCTTY | OFlags::NONBLOCK,
    )
    .map_err(|e| classify_open_error(parent.as_fd(), name, e, "open for reading", path))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| CellFsError::from_errno("stat", path, e))?;
    match kind_of(&st) {
        FileKind::File => {}
        FileKind::Directory => {
            return Err(CellFsError::IsADirectory {
                path: path.to_string(),
                hint: "list it instead",
            })
        }
        kind => {
            return Err(CellFsError::NotARegularFile {
                path: path.to_string(),
                kind,
            })
        }
    }
    if st.st_size as u64 > max_bytes {
        return Err(CellFsError::TooLarge {
            path: path.to_string(),
            limit: max_bytes,
        });
    }
    rustix::fs::fcntl_setfl(&fd, OFlags::empty())
        .map_err(|e| CellFsError::from_errno("clear O_NONBLOCK", path, e))?;
    Ok((file_stat(path, &st, None), File::from(fd)))
}

pub(crate) fn list(root: BorrowedFd<'_>, path: &str) -> Result<Vec<FileEntry>, CellFsError> {
    let p = CellPath::parse(path)?;
    let dir = match p.name() {
        None => resolve(
            root,
            &p.full_rel(),
            OFlags::RDONLY | OFlags::DIRECTORY,
            "open the directory",
            path,
        )?,
        Some(name) => {
            let parent = open_parent(root, &p, path)?;
            open_name(parent.as_fd(), name, OFlags::RDONLY | OFlags::DIRECTORY).map_err(|e| {
                classify_open_error(parent.as_fd(), name, e, "open the directory", path)
            })?
        }
    };
    let names = read_names(&dir, path)?;
    let mut entries = Vec::with_capacity(names.len());
    for (name, d_type) in names {
        let entry = match rustix::fs::statat(&dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => FileEntry {
                name: name.to_string_lossy().into_owned(),
                kind: kind_of(&st),
                size: st.st_size as u64,
                mode: st.st_mode & 0o7777,
                modified_unix: st.st_mtime as i64,
            },
            Err(Errno::NOENT) => continue, // removed since it was listed
            // Readable but not searchable: the kind is known from the directory entry only.
            Err(_) => FileEntry {
                name: name.to_string_lossy().into_owned(),
                kind: d_type,
                size: 0,
                mode: 0,
                modified_unix: 0,
            },
        };
        entries.push(entry);
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// Names (without `.` and `..`) and kinds of the entries of the open directory `dir`.
fn read_names(dir: &OwnedFd, path: &str) -> Result<Vec<(CString, FileKind)>, CellFsError> {
    let dup = dir.try_clone().map_err(|source| CellFsError::Io {
        op: "duplicate a descriptor",
        path: path.to_string(),
        source,
    })?;
    let mut it = rustix::fs::Dir::new(dup)
        .map_err(|e| CellFsError::from_errno("read the directory", path, e))?;
    let mut names = Vec::new();
    while let Some(entry) = it.read() {
        let entry = entry.map_err(|e| CellFsError::from_errno("read the directory", path, e))?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let kind = match entry.file_type() {
            FileType::RegularFile => FileKind::File,
            FileType::Directory => FileKind::Directory,
            FileType::Symlink => FileKind::Symlink,
            _ => FileKind::Other,
        };
        names.push((name.to_owned(), kind));
    }
    Ok(names)
}

pub(crate) fn mkdir(root: BorrowedFd<'_>, path: &str, parents: bool) -> Result<(), CellFsError> {
    let p = CellPath::parse(path)?;
    if !parents {
        let Some(name) = p.name() else {
            resolve(
                root,
                &p.full_rel(),
                OFlags::PATH | OFlags::DIRECTORY,
                "open the directory",
                path,
            )?;
            return Err(CellFsError::AlreadyExists {
                path: path.to_string(),
            });
        };
        let parent = open_parent(root, &p, path)?;
        return rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o755))
            .map_err(|e| CellFsError::from_errno("mkdir", path, e));
    }
    // One component at a time, each prefix resolved afresh from the root: an existing one
    // (also through a symlink, which stays inside the cell) is accepted, a missing one created
    // in its held parent.
    let mut parent_rel = ".".to_string();
    for (rel, comp) in p.prefixes() {
        let dir = OFlags::PATH | OFlags::DIRECTORY;
        match resolve(root, &rel, dir, "open the directory", path) {
            Ok(_) => {}
            Err(CellFsError::NotFound { .. }) if comp != ".." => {
                let parent = resolve(root, &parent_rel, dir, "open the parent directory", path)?;
                match rustix::fs::mkdirat(&parent, comp, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(CellFsError::from_errno("mkdir", path, e)),
                }
                // A dangling symlink in the way makes this NotFound rather than a loop.
                resolve(root, &rel, dir, "open the new directory", path)?;
            }
            Err(e) => return Err(e),
        }
        parent_rel = rel;
    }
    Ok(())
}

pub(crate) fn remove(root: BorrowedFd<'_>, path: &str, recursive: bool) -> Result<(), CellFsError> {
    let p = CellPath::parse(path)?;
    let Some(name) = p.name() else {
        return Err(CellFsError::invalid(
            path,
            "it names the cell's root (or ends in `..`); name the entry to remove",
        ));
    };
    let parent = open_parent(root, &p, path)?;
    let st = rustix::fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| CellFsError::from_errno("stat", path, e))?;
    if kind_of(&st) != FileKind::Directory {
        return unlink(parent.as_fd(), name, AtFlags::empty(), path);
    }
    if recursive {
        let name = CString::new(name)
            .map_err(|_| CellFsError::invalid(path, "the path contains a NUL byte"))?;
        remove_tree(parent.as_fd(), &name, path, 0)
    } else {
        unlink(parent.as_fd(), name, AtFlags::REMOVEDIR, path)
    }
}

fn unlink(
    dir: BorrowedFd<'_>,
    name: impl rustix::path::Arg,
    flags: AtFlags,
    path: &str,
) -> Result<(), CellFsError> {
    rustix::fs::unlinkat(dir, name, flags).map_err(|e| CellFsError::from_errno("remove", path, e))
}

/// Remove directory `name` of `parent` with everything in it. Subdirectories are opened with
/// `O_NOFOLLOW|O_DIRECTORY` from their held parent: a symlink (also one swapped in during the
/// walk) is unlinked itself, never entered. Names are raw bytes: entries read from a listing
/// need not be UTF-8.
fn remove_tree(
    parent: BorrowedFd<'_>,
    name: &CStr,
    path: &str,
    depth: usize,
) -> Result<(), CellFsError> {
    if depth >= MAX_REMOVE_DEPTH {
        return Err(CellFsError::Io {
            op: "remove recursively",
            path: path.to_string(),
            source: std::io::Error::other(format!(
                "the tree is deeper than {MAX_REMOVE_DEPTH} levels; remove its deepest part first"
            )),
        });
    }
    let dir = match open_name(parent, name, OFlags::RDONLY | OFlags::DIRECTORY) {
        Ok(dir) => dir,
        // No longer a directory (swapped since it was looked at): remove what is there now.
        Err(Errno::LOOP | Errno::NOTDIR) => return unlink(parent, name, AtFlags::empty(), path),
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(CellFsError::from_errno("open the directory", path, e)),
    };
    for (entry, kind) in read_names(&dir, path)? {
        let sub = format!("{}/{}", path.trim_end_matches('/'), entry.to_string_lossy());
        let is_dir = match kind {
            FileKind::Directory => true,
            FileKind::Other => {
                rustix::fs::statat(&dir, entry.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
                    .map(|st| kind_of(&st) == FileKind::Directory)
                    .unwrap_or(false)
            }
            _ => false,
        };
        if is_dir {
            remove_tree(dir.as_fd(), &entry, &sub, depth + 1)?;
            continue;
        }
        match rustix::fs::unlinkat(&dir, entry.as_c_str(), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            // Became a directory since it was listed.
            Err(Errno::ISDIR) => remove_tree(dir.as_fd(), &entry, &sub, depth + 1)?,
            Err(e) => return Err(CellFsError::from_errno("remove", &sub, e)),
        }
    }
    match rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(CellFsError::from_errno("remove the directory", path, e)),
    }
}

/// Default mode of written files.
pub const DEFAULT_FILE_MODE: u32 = 0o644;

/// Unlinks the temporary file unless disarmed (every error path of a write leaves no residue).
struct TempFile<'a> {
    parent: BorrowedFd<'a>,
    name: String,
    armed: bool,
}

impl Drop for TempFile<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = rustix::fs::unlinkat(self.parent, self.name.as_str(), AtFlags::empty());
        }
    }
}

fn random_suffix() -> std::io::Result<String> {
    let mut buf = [0u8; 8];
    // SAFETY: `buf` is a live, writable buffer of exactly the length passed.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != buf.len() as isize {
        return Err(std::io::Error::last_os_error());
    }
    Ok(hex::encode(buf))
}

/// Create `.<name>.cellos-<random>` in `parent`, exclusively and without following anything.
fn create_temp<'a>(
    parent: BorrowedFd<'a>,
    name: &str,
    path: &str,
) -> Result<(TempFile<'a>, File), CellFsError> {
    // Keep the temporary name within NAME_MAX: cut a long name at a character boundary.
    const EXTRA: usize = ".".len() + ".cellos-".len() + 16;
    let mut keep = name.len().min(NAME_MAX - EXTRA);
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    let mut attempts = 0;
    loop {
        let suffix = random_suffix().map_err(|source| CellFsError::Io {
            op: "draw a random name",
            path: path.to_string(),
            source,
        })?;
        let tmp = format!(".{}.cellos-{suffix}", &name[..keep]);
        match rustix::fs::openat(
            parent,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => {
                return Ok((
                    TempFile {
                        parent,
                        name: tmp,
                        armed: true,
                    },
                    File::from(fd),
                ))
            }
            Err(Errno::EXIST | Errno::INTR) if attempts < 16 => attempts += 1,
            Err(e) => {
                return Err(CellFsError::from_errno(
                    "create the temporary file",
                    path,
                    e,
                ))
            }
        }
    }
}

/// Write what arrives on `chunks` to a temporary file next to `path` and rename it onto
/// `path`: readers see the old content or the new one, never a part.
pub(crate) fn write(
    root: BorrowedFd<'_>,
    path: &str,
    mode: u32,
    max_bytes: u64,
    chunks: Receiver<Chunk>,
) -> Result<FileWritten, CellFsError> {
    let p = CellPath::parse(path)?;
    let Some(name) = p.name() else {
        return Err(CellFsError::invalid(
            path,
            "it names a directory (the cell's root, or ends in `..`); name the file to write",
        ));
    };
    let parent = open_parent(root, &p, path)?;
    match rustix::fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if kind_of(&st) == FileKind::Directory => {
            return Err(CellFsError::IsADirectory {
                path: path.to_string(),
                hint: "a file cannot replace it; remove it first or write to a path inside it",
            })
        }
        Ok(_) | Err(Errno::NOENT) => {}
        Err(e) => return Err(CellFsError::from_errno("stat", path, e)),
    }
    let (mut temp, mut file) = create_temp(parent.as_fd(), name, path)?;
    let io = |op: &'static str| {
        move |source: std::io::Error| CellFsError::Io {
            op,
            path: path.to_string(),
            source,
        }
    };

    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    loop {
        match chunks.recv() {
            Ok(Chunk::Data(buf)) => {
                size = size.saturating_add(buf.len() as u64);
                if size > max_bytes {
                    return Err(CellFsError::TooLarge {
                        path: path.to_string(),
                        limit: max_bytes,
                    });
                }
                file.write_all(&buf).map_err(|e| match e.raw_os_error() {
                    Some(errno) => {
                        CellFsError::from_errno("write", path, Errno::from_raw_os_error(errno))
                    }
                    None => io("write")(e),
                })?;
                hasher.update(&buf);
            }
            Ok(Chunk::Failed(e)) => return Err(io("read the content to write")(e)),
            Ok(Chunk::End) => break,
            Err(_) => {
                return Err(io("read the content to write")(std::io::Error::other(
                    "the content stopped before its end",
                )))
            }
        }
    }
    rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))
        .map_err(|e| CellFsError::from_errno("chmod the temporary file", path, e))?;
    file.sync_all().map_err(io("fsync"))?;
    drop(file);
    rustix::fs::renameat(&parent, temp.name.as_str(), &parent, name).map_err(|e| match e {
        Errno::ISDIR | Errno::NOTEMPTY | Errno::EXIST => CellFsError::IsADirectory {
            path: path.to_string(),
            hint: "a file cannot replace it; remove it first or write to a path inside it",
        },
        e => CellFsError::from_errno("rename into place", path, e),
    })?;
    temp.armed = false;
    // Make the rename durable too, when the workload may open the directory (best effort).
    if let Ok(dir) = rustix::fs::openat(
        &parent,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        let _ = rustix::fs::fsync(&dir);
    }
    Ok(FileWritten {
        path: path.to_string(),
        size,
        sha256: hex::encode(hasher.finalize()),
    })
}

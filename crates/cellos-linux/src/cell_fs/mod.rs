//! File operations inside a running cell that no path trick can escape.
//!
//! [`CellFs`] holds a descriptor of the cell's root (the supervisor opens
//! `/proc/<init pid>/root` with `O_PATH|O_DIRECTORY`) and the host uid/gid the workload runs
//! as. Paths are cell paths (absolute, `/workspace/a.txt`). Each operation:
//!
//! * validates the path ([`path::CellPath`]): absolute, no NUL, at most `PATH_MAX` bytes and
//!   `NAME_MAX` per component;
//! * runs on a short-lived thread that has dropped to the workload's ids ([`creds`]), so it can
//!   read and write only what the workload could, and creates files the workload owns;
//! * resolves everything but the last component with `openat2(RESOLVE_IN_ROOT |
//!   RESOLVE_NO_MAGICLINKS)` from the root — `..` and absolute symlinks stay at the cell's
//!   root, `/proc/*/root`-style magic links are refused — and acts on the last component
//!   with `*at` calls and `O_NOFOLLOW` on the held parent ([`ops`]). The last component is
//!   never followed: `stat` is `lstat`, reading or listing a symlink is refused, writing or
//!   removing one replaces or removes the link itself.
//!
//! `RESOLVE_NO_XDEV` is deliberately not used: the workspace and other mounts are separate
//! mounts inside the root.

pub mod creds;
pub mod error;
mod ops;
pub mod path;

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc::sync_channel;

use cellos_core::session::{FileEntry, FileStat, FileWritten};

pub use creds::FsIds;
pub use error::CellFsError;
pub use ops::{DEFAULT_FILE_MODE, MAX_REMOVE_DEPTH};

use ops::Chunk;

/// Size of the pieces a write's content is read and handed over in.
const CHUNK: usize = 64 * 1024;

/// File operations inside one running cell.
#[derive(Debug)]
pub struct CellFs {
    root: OwnedFd,
    ids: FsIds,
}

impl CellFs {
    /// `root`: the cell's root directory (`O_PATH|O_DIRECTORY` is enough), opened by the caller.
    /// `host_uid`/`host_gid`: the host ids the workload runs as; every operation runs as them.
    pub fn new(root: OwnedFd, host_uid: u32, host_gid: u32) -> Self {
        CellFs {
            root,
            ids: FsIds {
                uid: host_uid,
                gid: host_gid,
            },
        }
    }

    pub fn ids(&self) -> FsIds {
        self.ids
    }

    /// Open the regular file at `path` for reading. Refused if it is larger than `max_bytes`.
    /// The file can still grow afterwards: read at most `max_bytes + 1` bytes from it and treat
    /// getting that many as [`CellFsError::TooLarge`] (as [`Self::read_to_vec`] does).
    pub fn read(&self, path: &str, max_bytes: u64) -> Result<(FileStat, File), CellFsError> {
        let root = self.root.as_fd();
        creds::run_as(self.ids, path, || ops::read(root, path, max_bytes))
    }

    /// [`Self::read`] the whole file into memory, enforcing `max_bytes` while reading too.
    pub fn read_to_vec(
        &self,
        path: &str,
        max_bytes: u64,
    ) -> Result<(FileStat, Vec<u8>), CellFsError> {
        let (stat, file) = self.read(path, max_bytes)?;
        let mut buf = Vec::with_capacity(stat.size.min(max_bytes).min(1 << 20) as usize);
        file.take(max_bytes.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|source| CellFsError::Io {
                op: "read",
                path: path.to_string(),
                source,
            })?;
        if buf.len() as u64 > max_bytes {
            return Err(CellFsError::TooLarge {
                path: path.to_string(),
                limit: max_bytes,
            });
        }
        Ok((stat, buf))
    }

    /// Replace the file at `path` atomically with `content` (at most `max_bytes`), mode `mode`
    /// (permission bits only; default 0o644). Returns the size and SHA-256 of what was written.
    /// The parent directory must exist; an existing directory at `path` is refused.
    pub fn write(
        &self,
        path: &str,
        content: &mut dyn Read,
        mode: Option<u32>,
        max_bytes: u64,
    ) -> Result<FileWritten, CellFsError> {
        let mode = mode.unwrap_or(DEFAULT_FILE_MODE);
        if mode & !0o777 != 0 {
            return Err(CellFsError::InvalidMode {
                path: path.to_string(),
                mode,
            });
        }
        path::CellPath::parse(path)?;
        let root = self.root.as_fd();
        // `content` need not be `Send`, so it is read here and handed to the workload's thread
        // in chunks; the thread does every filesystem call.
        let (tx, rx) = sync_channel::<Chunk>(4);
        std::thread::scope(|s| {
            let handle = creds::spawn_as(s, self.ids, path, move || {
                ops::write(root, path, mode, max_bytes, rx)
            })?;
            let mut sent: u64 = 0;
            let mut buf = vec![0u8; CHUNK];
            loop {
                match content.read(&mut buf) {
                    Ok(0) => {
                        let _ = tx.send(Chunk::End);
                        break;
                    }
                    Ok(n) => {
                        sent = sent.saturating_add(n as u64);
                        // A send fails once the thread gave up (its error is returned below);
                        // past the limit it has given up with TooLarge, so stop reading.
                        if tx.send(Chunk::Data(buf[..n].to_vec())).is_err() || sent > max_bytes {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.send(Chunk::Failed(e));
                        break;
                    }
                }
            }
            drop(tx);
            creds::join(handle, path)
        })
    }

    /// `lstat` of `path`: a symlink is described, never followed.
    pub fn stat(&self, path: &str) -> Result<FileStat, CellFsError> {
        let root = self.root.as_fd();
        creds::run_as(self.ids, path, || ops::stat(root, path))
    }

    /// Entries of the directory at `path`, sorted by name, without `.` and `..`.
    pub fn list(&self, path: &str) -> Result<Vec<FileEntry>, CellFsError> {
        let root = self.root.as_fd();
        creds::run_as(self.ids, path, || ops::list(root, path))
    }

    /// Create the directory `path` (mode 0o755); with `parents`, also missing parents, and an
    /// existing directory is not an error.
    pub fn mkdir(&self, path: &str, parents: bool) -> Result<(), CellFsError> {
        let root = self.root.as_fd();
        creds::run_as(self.ids, path, || ops::mkdir(root, path, parents))
    }

    /// Remove `path`; a directory only when empty unless `recursive`. A symlink is removed
    /// itself, and a recursive remove never follows one.
    pub fn remove(&self, path: &str, recursive: bool) -> Result<(), CellFsError> {
        let root = self.root.as_fd();
        creds::run_as(self.ids, path, || ops::remove(root, path, recursive))
    }
}

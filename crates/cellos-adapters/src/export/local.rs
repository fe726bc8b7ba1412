//! `LocalExportSink`: artifacts land in `<root>/<cell-id>/<name>` on this machine.
//!
//! Safety of the write path:
//! - `cell-id` and `name` are single path components (no `/`, NUL, control characters, `.`
//!   or `..`), so neither can walk out of the root.
//! - `<root>/<cell-id>` is opened `O_DIRECTORY|O_NOFOLLOW` and everything below it is created
//!   relative to that directory descriptor (`openat`, `renameat`), so swapping the cell
//!   directory for a symlink cannot redirect the write. The root itself is operator
//!   configuration and may be a symlink.
//! - The artifact is streamed into a temporary file in the cell directory, hashed on the way,
//!   fsync'd, and renamed over the destination (atomic: readers see the old file or the whole
//!   new one, never a partial file), then the directory is fsync'd so the rename is durable.
//! - An existing destination that is a symlink or a directory is refused.
//!
//! Files are created `0600` and directories `0700`: exports are the output of untrusted work
//! and may carry anything it saw, so only the supervisor's user can read them until an
//! operator decides otherwise.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use cellos_core::ports::{ExportReceipt, ExportSink, PortError, PortErrorKind};
use cellos_core::spec::ExportTargetKind;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use sha2::{Digest, Sha256};

/// Longest accepted cell id, in bytes.
pub const MAX_CELL_ID_LEN: usize = 128;
/// Longest accepted artifact name, in bytes (the Linux `NAME_MAX`).
pub const MAX_EXPORT_NAME_LEN: usize = 255;

/// Copy buffer size: large enough for few syscalls, small enough to stream anything.
const COPY_CHUNK: usize = 64 * 1024;
/// Attempts at a fresh temporary name before giving up.
const TEMP_ATTEMPTS: u32 = 16;

const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;

/// Distinguishes temporary files of concurrent pushes within one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes artifacts below a root directory (by default `$CELLOS_HOME/exports`, chosen by the
/// caller).
#[derive(Debug, Clone)]
pub struct LocalExportSink {
    root: PathBuf,
    target_name: Option<String>,
}

impl LocalExportSink {
    /// `root` is made absolute (against the current directory) so receipts name absolute
    /// destinations; it is created on first push if missing.
    pub fn new(root: impl AsRef<Path>) -> Result<Self, PortError> {
        let root = std::path::absolute(root.as_ref()).map_err(|e| {
            PortError::new(
                PortErrorKind::Io,
                format!(
                    "cannot make export root {} absolute: {e}",
                    root.as_ref().display()
                ),
            )
        })?;
        Ok(LocalExportSink {
            root,
            target_name: None,
        })
    }

    /// Name of the `export.targets` entry this sink serves, recorded in receipts.
    pub fn with_target_name(mut self, name: impl Into<String>) -> Self {
        self.target_name = Some(name.into());
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn open_root(&self) -> Result<OwnedFd, PortError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&self.root)
            .map_err(|e| {
                PortError::new(
                    PortErrorKind::Io,
                    format!("cannot create export root {}: {e}", self.root.display()),
                )
            })?;
        rustix::fs::open(
            &self.root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| {
            PortError::new(
                PortErrorKind::Io,
                format!("cannot open export root {}: {errno}", self.root.display()),
            )
        })
    }

    /// Create (if needed) and open `<root>/<cell_id>` without following a symlink there.
    fn open_cell_dir(&self, root: &OwnedFd, cell_id: &str) -> Result<OwnedFd, PortError> {
        let path = self.root.join(cell_id);
        match rustix::fs::mkdirat(root, cell_id, Mode::from_raw_mode(DIR_MODE)) {
            Ok(()) => rustix::fs::fsync(root).map_err(|errno| io_error(&self.root, errno))?,
            Err(Errno::EXIST) => {}
            Err(errno) => return Err(io_error(&path, errno)),
        }
        rustix::fs::openat(
            root,
            cell_id,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| match errno {
            Errno::LOOP | Errno::NOTDIR => PortError::new(
                PortErrorKind::Refused,
                format!(
                    "export directory {} is a symlink or not a directory: remove it; exports are \
                     only written into real directories",
                    path.display()
                ),
            ),
            other => io_error(&path, other),
        })
    }
}

fn io_error(path: &Path, errno: impl std::fmt::Display) -> PortError {
    PortError::new(
        PortErrorKind::Io,
        format!("export to {} failed: {errno}", path.display()),
    )
}

/// Accept `value` as one plain path component of at most `max` bytes.
fn validate_component(field: &str, value: &str, max: usize) -> Result<(), PortError> {
    let problem = if value.is_empty() {
        Some("is empty".to_owned())
    } else if value.len() > max {
        Some(format!("is longer than {max} bytes"))
    } else if value == "." || value == ".." {
        Some("is a relative path component".to_owned())
    } else if value.contains('/') {
        Some("contains '/'".to_owned())
    } else if value.chars().any(char::is_control) {
        Some("contains a NUL or control character".to_owned())
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(why) => Err(PortError::new(
            PortErrorKind::Refused,
            format!("{field} {value:?} {why}: it must be a plain file name"),
        )),
    }
}

/// A temporary file in the cell directory, removed on drop unless renamed into place.
struct TempFile<'a> {
    dir: &'a OwnedFd,
    name: String,
    file: File,
    armed: bool,
}

impl<'a> TempFile<'a> {
    fn create(dir: &'a OwnedFd, cell_path: &Path) -> Result<Self, PortError> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut last = Errno::EXIST;
        for _ in 0..TEMP_ATTEMPTS {
            let name = format!(
                ".cellos-export.{}.{}.tmp",
                std::process::id(),
                TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
            );
            match rustix::fs::openat(dir, &name, flags, Mode::from_raw_mode(FILE_MODE)) {
                Ok(fd) => {
                    return Ok(TempFile {
                        dir,
                        name,
                        file: File::from(fd),
                        armed: true,
                    })
                }
                Err(Errno::EXIST) => last = Errno::EXIST,
                Err(errno) => return Err(io_error(cell_path, errno)),
            }
        }
        Err(io_error(cell_path, last))
    }
}

impl Drop for TempFile<'_> {
    fn drop(&mut self) {
        if self.armed {
            // Best effort: the push already failed and reports why.
            let _ = rustix::fs::unlinkat(self.dir, &self.name, AtFlags::empty());
        }
    }
}

/// Stream `content` into `out`, returning (sha256 hex, bytes copied).
fn copy_hashing(
    content: &mut dyn Read,
    out: &mut File,
    dest: &Path,
) -> Result<(String, u64), PortError> {
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut buf = vec![0u8; COPY_CHUNK];
    loop {
        let n = match content.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(PortError::new(
                    PortErrorKind::Io,
                    format!("reading the artifact for {} failed: {e}", dest.display()),
                ))
            }
        };
        let chunk = &buf[..n];
        hasher.update(chunk);
        out.write_all(chunk).map_err(|e| io_error(dest, e))?;
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

impl ExportSink for LocalExportSink {
    fn target_kind(&self) -> ExportTargetKind {
        ExportTargetKind::LocalPath
    }

    fn destination_hint(&self, cell_id: &str, name: &str) -> String {
        self.root.join(cell_id).join(name).display().to_string()
    }

    fn push(
        &self,
        cell_id: &str,
        name: &str,
        content: &mut dyn Read,
    ) -> Result<ExportReceipt, PortError> {
        validate_component("cell id", cell_id, MAX_CELL_ID_LEN)?;
        validate_component("export artifact name", name, MAX_EXPORT_NAME_LEN)?;
        let cell_path = self.root.join(cell_id);
        let dest = cell_path.join(name);

        let root = self.open_root()?;
        let cell_dir = self.open_cell_dir(&root, cell_id)?;
        let mut temp = TempFile::create(&cell_dir, &cell_path)?;
        let (sha256, size_bytes) = copy_hashing(content, &mut temp.file, &dest)?;
        rustix::fs::fchmod(temp.file.as_fd(), Mode::from_raw_mode(FILE_MODE))
            .map_err(|errno| io_error(&dest, errno))?;
        temp.file.sync_all().map_err(|e| io_error(&dest, e))?;

        match rustix::fs::statat(&cell_dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => {
                let kind = FileType::from_raw_mode(stat.st_mode);
                if kind != FileType::RegularFile {
                    return Err(PortError::new(
                        PortErrorKind::Refused,
                        format!(
                            "export destination {} exists and is a {kind:?}: only a regular file \
                             is replaced; remove it",
                            dest.display()
                        ),
                    ));
                }
            }
            Err(Errno::NOENT) => {}
            Err(errno) => return Err(io_error(&dest, errno)),
        }
        // `rename` replaces the directory entry itself and never follows a symlink, so even a
        // symlink planted after the check above is replaced, not written through.
        rustix::fs::renameat(&cell_dir, &temp.name, &cell_dir, name)
            .map_err(|errno| io_error(&dest, errno))?;
        temp.armed = false;
        rustix::fs::fsync(&cell_dir).map_err(|errno| io_error(&cell_path, errno))?;

        Ok(ExportReceipt {
            name: name.to_owned(),
            target_kind: ExportTargetKind::LocalPath,
            target_name: self.target_name.clone(),
            destination: dest.display().to_string(),
            sha256,
            size_bytes,
            attempts: 1,
        })
    }
}

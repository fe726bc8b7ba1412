//! `FileSecretBroker`: one secret per file, `<dir>/<KEY>`.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use cellos_core::ports::{PortError, PortErrorKind, SecretBroker, SecretValue};
use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;
use zeroize::Zeroizing;

use super::key::validate_secret_key;

/// Reads `<dir>/<KEY>` on every resolve.
///
/// Both the directory and the file are opened with `O_NOFOLLOW`, so a symlink as the
/// directory's last component or as the secret file is refused rather than followed (a symlink
/// could point a secret read at any file the supervisor can read). Components above the
/// directory are operator configuration and are resolved normally. The file is opened `O_NONBLOCK` so a FIFO cannot stall the
/// supervisor, then must be a regular file no larger than the size cap. The bytes are returned
/// exactly as stored (a trailing newline is part of the value).
#[derive(Debug, Clone)]
pub struct FileSecretBroker {
    dir: PathBuf,
    max_bytes: u64,
}

impl FileSecretBroker {
    /// Largest secret accepted by default: 1 MiB.
    pub const DEFAULT_MAX_BYTES: u64 = 1 << 20;

    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileSecretBroker {
            dir: dir.into(),
            max_bytes: Self::DEFAULT_MAX_BYTES,
        }
    }

    /// Change the size cap.
    pub fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn open_dir(&self) -> Result<OwnedFd, PortError> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        rustix::fs::open(&self.dir, flags, Mode::empty()).map_err(|errno| {
            let dir = self.dir.display();
            match errno {
                // O_NOFOLLOW|O_DIRECTORY on a symlink gives ELOOP or ENOTDIR depending on the
                // kernel path taken; both mean "not a real directory".
                Errno::LOOP | Errno::NOTDIR => PortError::new(
                    PortErrorKind::Refused,
                    format!(
                        "secret directory {dir} is a symlink or not a directory: point the file \
                         broker at the real directory"
                    ),
                ),
                Errno::NOENT => PortError::new(
                    PortErrorKind::NotFound,
                    format!("secret directory {dir} does not exist: create it or fix the path"),
                ),
                other => PortError::new(
                    PortErrorKind::Io,
                    format!("cannot open secret directory {dir}: {other}"),
                ),
            }
        })
    }

    fn open_secret(&self, dir: &OwnedFd, key: &str, cell_id: &str) -> Result<OwnedFd, PortError> {
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
        rustix::fs::openat(dir, key, flags, Mode::empty()).map_err(|errno| {
            let path = self.dir.join(key);
            let path = path.display();
            match errno {
                Errno::LOOP => PortError::new(
                    PortErrorKind::Refused,
                    format!("secret file {path} is a symlink: store the secret in a regular file"),
                ),
                Errno::NOENT => PortError::new(
                    PortErrorKind::NotFound,
                    format!("secret {key} for cell {cell_id} not found: no file {path}"),
                ),
                Errno::NXIO => PortError::new(
                    PortErrorKind::Refused,
                    format!("secret file {path} is a socket or device: store the secret in a regular file"),
                ),
                other => PortError::new(
                    PortErrorKind::Io,
                    format!("cannot open secret file {path}: {other}"),
                ),
            }
        })
    }
}

impl SecretBroker for FileSecretBroker {
    fn name(&self) -> &'static str {
        "file"
    }

    fn resolve(&self, key: &str, cell_id: &str) -> Result<SecretValue, PortError> {
        validate_secret_key(key)?;
        let dir = self.open_dir()?;
        let file = self.open_secret(&dir, key, cell_id)?;
        let path = self.dir.join(key);
        let io_error = |errno: Errno| {
            PortError::new(
                PortErrorKind::Io,
                format!("cannot read secret file {}: {errno}", path.display()),
            )
        };
        let stat = rustix::fs::fstat(&file).map_err(io_error)?;
        let file_type = FileType::from_raw_mode(stat.st_mode);
        if file_type != FileType::RegularFile {
            return Err(PortError::new(
                PortErrorKind::Refused,
                format!(
                    "secret file {} is a {file_type:?}, not a regular file: store the secret in a regular file",
                    path.display()
                ),
            ));
        }
        // A negative size cannot happen for a regular file; treat it as empty.
        let size = u64::try_from(stat.st_size).unwrap_or(0);
        if size > self.max_bytes {
            return Err(PortError::new(
                PortErrorKind::TooLarge,
                format!(
                    "secret file {} is {size} bytes; the limit is {} bytes",
                    path.display(),
                    self.max_bytes
                ),
            ));
        }
        // `size` <= max_bytes, which the caller chose to fit in memory.
        let expected = usize::try_from(size).map_err(|_| {
            PortError::new(
                PortErrorKind::TooLarge,
                format!("secret file {} does not fit in memory", path.display()),
            )
        })?;
        // One allocation of the final size (+1 to detect growth): the buffer never reallocates,
        // so no unzeroised copy of the secret is left behind in freed memory.
        let mut buf = Zeroizing::new(vec![0u8; expected + 1]);
        let mut filled = 0;
        while filled < buf.len() {
            match rustix::io::read(&file, &mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(Errno::INTR) => continue,
                Err(errno) => return Err(io_error(errno)),
            }
        }
        if filled > expected {
            return Err(PortError::new(
                PortErrorKind::Io,
                format!(
                    "secret file {} grew while being read: write secrets atomically (write a \
                     temporary file, then rename it into place)",
                    path.display()
                ),
            ));
        }
        buf.truncate(filled);
        Ok(SecretValue::new(std::mem::take(&mut *buf)))
    }

    /// Nothing is held between calls; see the module documentation.
    fn revoke_for_cell(&self, _cell_id: &str) -> Result<(), PortError> {
        Ok(())
    }
}

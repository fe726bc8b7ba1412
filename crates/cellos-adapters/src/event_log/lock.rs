//! Advisory lock shared by every process writing one log directory.
//!
//! The lock lives on a dedicated file rather than on the segment itself: rotation renames the
//! segment, and a lock held on a renamed file would no longer exclude the next writer.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustix::fs::{flock, FlockOperation};

/// Name of the lock file inside the log directory.
pub const LOCK_FILE: &str = "events.lock";

/// Holds `flock` on the lock file until dropped.
pub struct LogLock<'f> {
    file: &'f File,
}

impl<'f> LogLock<'f> {
    /// Block until this process holds the lock exclusively (writers) or shared (readers).
    pub fn acquire(file: &'f File, exclusive: bool) -> io::Result<Self> {
        let operation = if exclusive {
            FlockOperation::LockExclusive
        } else {
            FlockOperation::LockShared
        };
        flock(file, operation)?;
        Ok(Self { file })
    }
}

impl Drop for LogLock<'_> {
    fn drop(&mut self) {
        // Closing the file would release the lock as well; unlocking early keeps the handle
        // reusable. An error here leaves the lock to be released when the file is closed.
        let _ = flock(self.file, FlockOperation::Unlock);
    }
}

/// Open (creating if needed) the lock file of the log in `dir`.
pub fn open_lock_file(dir: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(dir.join(LOCK_FILE))
}

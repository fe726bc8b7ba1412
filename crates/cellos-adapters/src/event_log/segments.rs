//! Segment naming and reading the whole log in order.
//!
//! The live segment is `events.jsonl`. When it would grow past the size cap it is renamed to
//! `events.jsonl.<n>`, `n` = 1, 2, 3, ... (higher is newer), and a new `events.jsonl` starts.
//! The chain continues across segments: the first event of a new segment links to the last
//! event of the one before.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::lock::{LogLock, LOCK_FILE};

/// File name of the live segment.
pub const LIVE_SEGMENT: &str = "events.jsonl";

/// Number of a rotated segment file name (`events.jsonl.<n>`).
fn rotated_number(name: &str) -> Option<u64> {
    name.strip_prefix(LIVE_SEGMENT)?
        .strip_prefix('.')?
        .parse()
        .ok()
}

/// Rotated segments of the log in `dir`, oldest first, with their numbers.
pub fn rotated_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(n) = entry.file_name().to_str().and_then(rotated_number) {
            found.push((n, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Every segment of the log in `dir`, oldest first (the live one last, if it exists).
pub fn segments(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut all: Vec<PathBuf> = rotated_segments(dir)?.into_iter().map(|(_, p)| p).collect();
    let live = dir.join(LIVE_SEGMENT);
    if live.exists() {
        all.push(live);
    }
    Ok(all)
}

/// Lines of a whole log, across segments, in order. Each item is the line without its newline.
pub struct LogLines {
    files: std::vec::IntoIter<BufReader<File>>,
    current: Option<BufReader<File>>,
    buffer: String,
}

impl Iterator for LogLines {
    type Item = io::Result<String>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let reader = match &mut self.current {
                Some(reader) => reader,
                None => self.current.insert(self.files.next()?),
            };
            self.buffer.clear();
            match reader.read_line(&mut self.buffer) {
                Ok(0) => self.current = None,
                Ok(_) => {
                    let line = self.buffer.strip_suffix('\n').unwrap_or(&self.buffer);
                    return Some(Ok(line.to_owned()));
                }
                Err(e) => {
                    self.current = None;
                    return Some(Err(e));
                }
            }
        }
    }
}

/// Open a log for reading: `path` is a log directory (all its segments, in order) or a single
/// segment file. Segments are opened under the writers' lock, so a concurrent rotation cannot
/// make the reader skip or repeat a segment.
pub fn read_log_lines(path: &Path) -> io::Result<LogLines> {
    let files = if path.is_dir() {
        // No lock file means no writer ever wrote here; a read-only copy of a log is fine.
        let lock_file = File::open(path.join(LOCK_FILE)).ok();
        let _lock = lock_file
            .as_ref()
            .map(|f| LogLock::acquire(f, false))
            .transpose()?;
        segments(path)?
            .iter()
            .map(File::open)
            .collect::<io::Result<Vec<_>>>()?
    } else {
        vec![File::open(path)?]
    };
    Ok(LogLines {
        files: files
            .into_iter()
            .map(|f| BufReader::with_capacity(1 << 20, f))
            .collect::<Vec<_>>()
            .into_iter(),
        current: None,
        buffer: String::new(),
    })
}

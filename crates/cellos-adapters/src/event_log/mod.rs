//! Durable JSONL event log: the default EventSink.
//!
//! One sealed CloudEvent per line in `<home>/events.jsonl` (see [`segments`] for rotation).
//! Several processes may append to the same log: each append takes an exclusive `flock`,
//! learns the chain head from the segment's last line (cached while nobody else wrote), seals,
//! appends and fsyncs before releasing the lock, so the chain stays one unbroken sequence.

mod lock;
mod segments;
mod signer;
mod tail;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cellos_core::events::CloudEvent;
use cellos_core::integrity::{seal, ChainHead, Signer};
use cellos_core::ports::{EventSink, PortError, PortErrorKind};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub use lock::LOCK_FILE;
pub use segments::{read_log_lines, rotated_segments, segments, LogLines, LIVE_SEGMENT};
pub use signer::SignerLoader;

use lock::{open_lock_file, LogLock};
use signer::LogSigner;
use tail::read_tail;

/// Limits of a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// The live segment is rotated before an append would take it past this size.
    pub segment_max_bytes: u64,
    /// A sealed event whose line is longer than this is refused (never truncated).
    pub event_max_bytes: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_max_bytes: 64 << 20,
            event_max_bytes: 1 << 20,
        }
    }
}

/// What this process last saw at the end of the live segment.
struct CachedHead {
    dev: u64,
    ino: u64,
    size: u64,
    head: ChainHead,
}

struct WriterState {
    live: Option<File>,
    cached: Option<CachedHead>,
}

/// Append-only, fsync'd, hash-chained and signed JSONL event log.
pub struct JsonlEventLog {
    dir: PathBuf,
    signer: LogSigner,
    config: LogConfig,
    lock_file: File,
    state: Mutex<WriterState>,
}

impl std::fmt::Debug for JsonlEventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonlEventLog")
            .field("dir", &self.dir)
            .field("kid", &self.signer.kid())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn io_error(what: &str, path: &Path, e: io::Error) -> PortError {
    PortError::new(
        PortErrorKind::Io,
        format!("event log: {what} {}: {e}", path.display()),
    )
}

impl JsonlEventLog {
    /// Open (creating if needed) the log in directory `dir`, signing with `signer`.
    pub fn open(
        dir: impl Into<PathBuf>,
        signer: Signer,
        config: LogConfig,
    ) -> Result<Self, PortError> {
        Self::open_with(dir.into(), LogSigner::ready(signer), config)
    }

    /// Like [`JsonlEventLog::open`], with the signer loaded by `load` at the first append, so
    /// that the process holds no private key until it signs (see [`SignerLoader`]).
    pub fn open_deferred(
        dir: impl Into<PathBuf>,
        load: SignerLoader,
        config: LogConfig,
    ) -> Result<Self, PortError> {
        Self::open_with(dir.into(), LogSigner::deferred(load), config)
    }

    fn open_with(dir: PathBuf, signer: LogSigner, config: LogConfig) -> Result<Self, PortError> {
        std::fs::create_dir_all(&dir).map_err(|e| io_error("cannot create", &dir, e))?;
        let lock_file =
            open_lock_file(&dir).map_err(|e| io_error("cannot open lock in", &dir, e))?;
        Ok(Self {
            dir,
            signer,
            config,
            lock_file,
            state: Mutex::new(WriterState {
                live: None,
                cached: None,
            }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> LogConfig {
        self.config
    }

    fn live_path(&self) -> PathBuf {
        self.dir.join(LIVE_SEGMENT)
    }

    fn sync_dir(&self) -> Result<(), PortError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error("cannot sync directory", &self.dir, e))
    }

    /// The open live segment, reopened if another process rotated it away.
    fn open_live_segment(&self, state: &mut WriterState) -> Result<(), PortError> {
        let path = self.live_path();
        let on_disk = std::fs::metadata(&path).ok().map(|m| (m.dev(), m.ino()));
        let ours = state
            .live
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map(|m| (m.dev(), m.ino()));
        if on_disk.is_none() || on_disk != ours {
            state.cached = None;
            let file = OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .mode(0o640)
                .open(&path)
                .map_err(|e| io_error("cannot open", &path, e))?;
            if on_disk.is_none() {
                self.sync_dir()?;
            }
            state.live = Some(file);
        }
        Ok(())
    }

    /// Chain head at the end of the live segment of `size` bytes, read from disk. A torn
    /// final line (a writer died between write and fsync, so the append was never
    /// acknowledged) is cut off first.
    fn head_from_disk(&self, live: &File, size: u64) -> Result<ChainHead, PortError> {
        let path = self.live_path();
        let tail =
            read_tail(live, size).map_err(|e| io_error("cannot read the end of", &path, e))?;
        if tail.complete_len < size {
            live.set_len(tail.complete_len)
                .and_then(|()| live.sync_data())
                .map_err(|e| io_error("cannot cut the torn last line of", &path, e))?;
        }
        let line = match tail.last_line {
            Some(line) => line,
            None => match self.last_line_of_rotated()? {
                Some(line) => line,
                None => return Ok(ChainHead::genesis()),
            },
        };
        ChainHead::after_line(&line).map_err(|e| {
            PortError::new(
                PortErrorKind::Io,
                format!(
                    "event log {}: cannot continue the chain: {e}; run `cellos verify` on it",
                    self.dir.display()
                ),
            )
        })
    }

    fn last_line_of_rotated(&self) -> Result<Option<String>, PortError> {
        let rotated =
            rotated_segments(&self.dir).map_err(|e| io_error("cannot list", &self.dir, e))?;
        let Some((_, newest)) = rotated.last() else {
            return Ok(None);
        };
        let file = File::open(newest).map_err(|e| io_error("cannot open", newest, e))?;
        let size = file
            .metadata()
            .map_err(|e| io_error("cannot stat", newest, e))?
            .len();
        Ok(read_tail(&file, size)
            .map_err(|e| io_error("cannot read the end of", newest, e))?
            .last_line)
    }

    /// Rename the live segment to the next `events.jsonl.<n>`.
    fn rotate(&self, state: &mut WriterState) -> Result<(), PortError> {
        let next = rotated_segments(&self.dir)
            .map_err(|e| io_error("cannot list", &self.dir, e))?
            .last()
            .map_or(1, |(n, _)| n + 1);
        let target = self.dir.join(format!("{LIVE_SEGMENT}.{next}"));
        std::fs::rename(self.live_path(), &target)
            .map_err(|e| io_error("cannot rotate to", &target, e))?;
        self.sync_dir()?;
        state.live = None;
        state.cached = None;
        Ok(())
    }

    /// Seal and append `events` with one fsync. Nothing is written if any event is too large.
    fn append(&self, events: Vec<CloudEvent>) -> Result<Vec<CloudEvent>, PortError> {
        if events.is_empty() {
            return Ok(events);
        }
        // A poisoned mutex only means another thread panicked mid-append; the state is
        // re-validated against the file below, so it is safe to go on.
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let state = &mut *guard;
        let _lock = LogLock::acquire(&self.lock_file, true)
            .map_err(|e| io_error("cannot lock", &self.dir, e))?;
        let path = self.live_path();

        self.open_live_segment(state)?;
        let live = live_file(state, &path)?;
        let meta = live
            .metadata()
            .map_err(|e| io_error("cannot stat", &path, e))?;
        let (dev, ino, mut size) = (meta.dev(), meta.ino(), meta.len());
        let head = match &state.cached {
            Some(c) if (c.dev, c.ino, c.size) == (dev, ino, size) => c.head.clone(),
            _ => {
                let head = self.head_from_disk(live, size)?;
                size = live
                    .metadata()
                    .map_err(|e| io_error("cannot stat", &path, e))?
                    .len();
                head
            }
        };

        let (sealed, buffer, head) = self.seal_all(events, head)?;
        if size > 0 && size + buffer.len() as u64 > self.config.segment_max_bytes {
            self.rotate(state)?;
        }
        self.open_live_segment(state)?;
        let live = live_file(state, &path)?;
        let meta = live
            .metadata()
            .map_err(|e| io_error("cannot stat", &path, e))?;
        let (dev, ino, size) = (meta.dev(), meta.ino(), meta.len());

        let written = (&*live).write_all(&buffer).and_then(|()| live.sync_data());
        if let Err(e) = written {
            state.cached = None;
            return Err(io_error("cannot append to", &path, e));
        }
        state.cached = Some(CachedHead {
            dev,
            ino,
            size: size + buffer.len() as u64,
            head,
        });
        Ok(sealed)
    }

    /// Seal `events` after `head`; returns them, the bytes to append and the new head.
    fn seal_all(
        &self,
        events: Vec<CloudEvent>,
        mut head: ChainHead,
    ) -> Result<(Vec<CloudEvent>, Vec<u8>, ChainHead), PortError> {
        let mut sealed = Vec::with_capacity(events.len());
        let mut buffer = Vec::new();
        for mut event in events {
            fill_missing_identity(&mut event);
            let ty = event.ty.clone();
            let (event, next) = seal(event, &head, self.signer.get()?)
                .map_err(|e| PortError::new(PortErrorKind::Refused, format!("event {ty}: {e}")))?;
            if event.line.len() > self.config.event_max_bytes {
                return Err(PortError::new(
                    PortErrorKind::TooLarge,
                    format!(
                        "event {ty} is {} bytes sealed; the event log accepts at most {} \
                         (LogConfig::event_max_bytes); record less data in it",
                        event.line.len(),
                        self.config.event_max_bytes
                    ),
                ));
            }
            buffer.extend_from_slice(event.line.as_bytes());
            buffer.push(b'\n');
            sealed.push(event.event);
            head = next;
        }
        Ok((sealed, buffer, head))
    }
}

fn live_file<'s>(state: &'s WriterState, path: &Path) -> Result<&'s File, PortError> {
    state
        .live
        .as_ref()
        .ok_or_else(|| io_error("lost", path, io::ErrorKind::NotFound.into()))
}

/// The sink owns record identity: an event without an id gets a UUID v4, one without a time
/// gets the time it is appended.
fn fill_missing_identity(event: &mut CloudEvent) {
    if event.id.is_empty() {
        event.id = uuid::Uuid::new_v4().to_string();
    }
    if event.time.is_empty() {
        event.time = OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .unwrap_or_default();
    }
}

impl EventSink for JsonlEventLog {
    fn emit(&self, event: CloudEvent) -> Result<CloudEvent, PortError> {
        self.append(vec![event])?
            .pop()
            .ok_or_else(|| PortError::new(PortErrorKind::Io, "event log: append returned nothing"))
    }

    fn emit_batch(&self, events: Vec<CloudEvent>) -> Result<Vec<CloudEvent>, PortError> {
        self.append(events)
    }
}

/// Errors of reading a whole log.
#[derive(Debug, thiserror::Error)]
pub enum ReadLogError {
    #[error("cannot read event log {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("event log {path}, line {line}: not a CloudEvent: {source}")]
    Parse {
        path: PathBuf,
        line: u64,
        source: serde_json::Error,
    },
}

/// Every event of a log (`path` is a log directory or one segment file), in order.
pub fn read_log(path: &Path) -> Result<Vec<CloudEvent>, ReadLogError> {
    let io_err = |source| ReadLogError::Io {
        path: path.to_owned(),
        source,
    };
    let mut events = Vec::new();
    for (index, line) in read_log_lines(path).map_err(io_err)?.enumerate() {
        let line = line.map_err(io_err)?;
        let event = serde_json::from_str(&line).map_err(|source| ReadLogError::Parse {
            path: path.to_owned(),
            line: index as u64 + 1,
            source,
        })?;
        events.push(event);
    }
    Ok(events)
}

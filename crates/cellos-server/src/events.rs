//! The event feed: a tee in front of the signed log, so `/v1/events` pages and SSE followers
//! see every sealed event the moment it is durable, without re-reading the log.
//!
//! Emits go through one lock around the inner sink, so the index is in the log's own order.
//! An event appended by another process (a `cellos pause` on the same host) shows up as a
//! hole in the sequence; the hole is filled from disk at the next emit, before the new event
//! becomes visible, so readers never see a gap or a duplicate.
//!
//! Memory is bounded: the newest `kept` events are indexed; a page older than that is read
//! from the log on disk (or, for a feed without a log directory, refused with an `events`
//! problem naming the oldest kept sequence).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use cellos_adapters::event_log::{read_log_lines, rotated_segments, LIVE_SEGMENT};
use cellos_core::events::CloudEvent;
use cellos_core::ports::{EventSink, PortError};
use tokio::sync::watch;

/// Default number of events kept in memory.
pub const DEFAULT_KEPT_EVENTS: usize = 200_000;
/// Largest page `/v1/events` returns.
pub const MAX_PAGE: usize = 10_000;

/// Why a page cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("events after {after} are older than the {kept} kept in memory and this feed has no log on disk; the oldest kept is {oldest}")]
    OutsideWindow {
        after: u64,
        kept: usize,
        oldest: u64,
    },
    #[error("event log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A page of events.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub events: Vec<Arc<CloudEvent>>,
    /// The cursor of the next page: the last sequence looked at (the last returned one
    /// without a filter), or `after` when nothing newer exists.
    pub next: u64,
}

struct Index {
    events: VecDeque<Arc<CloudEvent>>,
    /// Sequence of the newest event indexed (0 before any).
    head: u64,
}

/// The tee: an [`EventSink`] that forwards to the real log and indexes what it sealed.
pub struct EventFeed {
    inner: Arc<dyn EventSink>,
    log_dir: Option<PathBuf>,
    kept: usize,
    emit_lock: Mutex<()>,
    index: RwLock<Index>,
    head_tx: watch::Sender<u64>,
    appended: AtomicU64,
}

impl EventFeed {
    /// A feed over `inner` with nothing indexed yet and no log on disk.
    pub fn new(inner: Arc<dyn EventSink>, kept: usize) -> Self {
        let (head_tx, _) = watch::channel(0);
        Self {
            inner,
            log_dir: None,
            kept: kept.max(1),
            emit_lock: Mutex::new(()),
            index: RwLock::new(Index {
                events: VecDeque::new(),
                head: 0,
            }),
            head_tx,
            appended: AtomicU64::new(0),
        }
    }

    /// A feed over the log in `dir`, with its history loaded, so `/v1/events` sees every
    /// event written before the server started.
    pub fn open(inner: Arc<dyn EventSink>, dir: &Path, kept: usize) -> Result<Self, FeedError> {
        let mut feed = Self::new(inner, kept);
        feed.log_dir = Some(dir.to_owned());
        feed.load_history(dir)?;
        Ok(feed)
    }

    /// Events appended through the feed since it started (`cellos_events_appended_total`).
    pub fn appended(&self) -> u64 {
        self.appended.load(Ordering::Relaxed)
    }

    /// Sequence of the newest event visible.
    pub fn head(&self) -> u64 {
        self.read_index().head
    }

    /// Wakes whenever the head moves.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.head_tx.subscribe()
    }

    fn read_index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        // An index update is a push and a pop; a panic between them loses nothing readers
        // depend on, so a poisoned lock is still usable.
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Index the newest `kept` events of the log on disk. A line that is not an event (the
    /// torn last line of a writer that died mid-append) is skipped, as the log itself cuts it.
    fn load_history(&self, dir: &Path) -> Result<(), FeedError> {
        if !log_exists(dir)? {
            return Ok(());
        }
        let io = |source| FeedError::Io {
            path: dir.to_owned(),
            source,
        };
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        for line in read_log_lines(dir).map_err(io)? {
            let line = line.map_err(io)?;
            let Ok(event) = serde_json::from_str::<CloudEvent>(&line) else {
                continue;
            };
            match event.cellosseq {
                Some(seq) if seq > index.head => index.head = seq,
                _ => continue,
            }
            index.events.push_back(Arc::new(event));
            if index.events.len() > self.kept {
                index.events.pop_front();
            }
        }
        self.head_tx.send_replace(index.head);
        Ok(())
    }

    /// Index sealed events (in sequence order), filling any hole from disk first.
    fn index_all(&self, events: Vec<CloudEvent>) {
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        for event in events {
            let Some(seq) = event.cellosseq else { continue };
            if seq <= index.head {
                continue;
            }
            if seq > index.head.saturating_add(1) {
                self.fill_hole(&mut index, seq);
            }
            index.head = seq;
            index.events.push_back(Arc::new(event));
            while index.events.len() > self.kept {
                index.events.pop_front();
            }
        }
        let head = index.head;
        drop(index);
        self.head_tx.send_replace(head);
    }

    /// Events another process appended between the indexed head and `before`.
    fn fill_hole(&self, index: &mut Index, before: u64) {
        let Some(dir) = &self.log_dir else { return };
        let missing = match scan_disk(dir, index.head, usize::MAX, None, Some(before)) {
            Ok(page) => page.events,
            Err(e) => {
                tracing::warn!(
                    "event feed: cannot read events {}..{before} of {}: {e}",
                    index.head.saturating_add(1),
                    dir.display()
                );
                return;
            }
        };
        for event in missing {
            if let Some(seq) = event.cellosseq {
                index.head = seq;
                index.events.push_back(event);
            }
        }
    }

    /// Up to `limit` events after sequence `after`, only those of cell `cell` if given.
    pub fn page(&self, after: u64, limit: usize, cell: Option<&str>) -> Result<Page, FeedError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let index = self.read_index();
        let oldest = index.events.front().and_then(|e| e.cellosseq);
        let in_window = match oldest {
            Some(oldest) => after.saturating_add(1) >= oldest,
            None => true,
        };
        if in_window {
            return Ok(page_from_index(&index, after, limit, cell));
        }
        let (kept, oldest) = (index.events.len(), oldest.unwrap_or(0));
        drop(index);
        match &self.log_dir {
            Some(dir) => scan_disk(dir, after, limit, cell, Some(oldest)),
            None => Err(FeedError::OutsideWindow {
                after,
                kept,
                oldest,
            }),
        }
    }
}

/// Whether `dir` holds any segment yet (a fresh home has none).
fn log_exists(dir: &Path) -> Result<bool, FeedError> {
    if dir.join(LIVE_SEGMENT).exists() {
        return Ok(true);
    }
    let rotated = rotated_segments(dir).map_err(|source| FeedError::Io {
        path: dir.to_owned(),
        source,
    })?;
    Ok(!rotated.is_empty())
}

fn page_from_index(index: &Index, after: u64, limit: usize, cell: Option<&str>) -> Page {
    let start = index
        .events
        .partition_point(|e| e.cellosseq.unwrap_or(0) <= after);
    let mut events = Vec::new();
    let mut next = after;
    for event in index.events.range(start..) {
        if events.len() == limit {
            break;
        }
        next = event.cellosseq.unwrap_or(next);
        if matches_cell(event, cell) {
            events.push(event.clone());
        }
    }
    Page { events, next }
}

fn matches_cell(event: &CloudEvent, cell: Option<&str>) -> bool {
    cell.is_none_or(|id| event.cell_id() == Some(id))
}

/// A page read from the log on disk, stopping before sequence `before`.
fn scan_disk(
    dir: &Path,
    after: u64,
    limit: usize,
    cell: Option<&str>,
    before: Option<u64>,
) -> Result<Page, FeedError> {
    let io = |source| FeedError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut events = Vec::new();
    let mut next = after;
    for line in read_log_lines(dir).map_err(io)? {
        let line = line.map_err(io)?;
        let Ok(event) = serde_json::from_str::<CloudEvent>(&line) else {
            continue;
        };
        let Some(seq) = event.cellosseq else { continue };
        if seq <= after {
            continue;
        }
        if before.is_some_and(|b| seq >= b) || events.len() == limit {
            break;
        }
        next = seq;
        if matches_cell(&event, cell) {
            events.push(Arc::new(event));
        }
    }
    Ok(Page { events, next })
}

impl EventSink for EventFeed {
    fn emit(&self, event: CloudEvent) -> Result<CloudEvent, PortError> {
        let _order = self.emit_lock.lock().unwrap_or_else(|p| p.into_inner());
        let sealed = self.inner.emit(event)?;
        self.appended.fetch_add(1, Ordering::Relaxed);
        self.index_all(vec![sealed.clone()]);
        Ok(sealed)
    }

    fn emit_batch(&self, events: Vec<CloudEvent>) -> Result<Vec<CloudEvent>, PortError> {
        let _order = self.emit_lock.lock().unwrap_or_else(|p| p.into_inner());
        let sealed = self.inner.emit_batch(events)?;
        self.appended
            .fetch_add(sealed.len() as u64, Ordering::Relaxed);
        self.index_all(sealed.clone());
        Ok(sealed)
    }
}

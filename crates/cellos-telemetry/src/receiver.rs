//! The per-cell host receiver.
//!
//! One Unix socket per cell, bound by the host under the cell's run directory before the
//! workload starts and bind-mounted into the cell. Attribution comes from *which receiver* the
//! bytes reached — every frame is stamped with the [`HostStamp`] this receiver was built with —
//! never from the payload.
//!
//! Threading: the supervisor is synchronous, so each cell gets one dedicated std thread that
//! multiplexes the listener and all of the cell's connections with `poll(2)`. One thread per
//! cell (not per connection) bounds what a hostile cell can make the host spawn, and needs no
//! async runtime in a synchronous supervisor. The thread hands results to the supervisor through
//! a bounded queue with non-blocking sends, so a flood can fill the queue but never block either
//! side; everything that is not delivered is counted.
//!
//! Per frame, in order: framing (length cap, checked before buffering), rate limit (a token
//! bucket per cell, checked before decoding so a flood costs little CPU), decode and version
//! gate, host stamping, delivery. Framing errors close that connection; the receiver keeps
//! serving the cell's other connections.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cellos_core::authority::AuthorityKind;
/// The receiver's counters are an event payload (`telemetry.v1.reported`), defined in core.
pub use cellos_core::events::ReceiverCounters;
use cellos_core::events::{AgentSilencedData, CloudEvent, EventFactory, TelemetryDeclaredData};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use time::OffsetDateTime;

use crate::keepalive::{KeepAliveTracker, DEFAULT_WINDOW};
use crate::wire::{self, GuestFrame, ProbeSource, Split, WireError};

pub use crate::wire::IN_CELL_SOCKET_PATH;
/// File name the backend should use for the socket in the cell's run directory.
pub const SOCKET_FILE_NAME: &str = "telemetry.sock";

/// How often the receiver thread wakes when nothing happens (keep-alive checks, flags).
const IDLE_TICK: Duration = Duration::from_millis(50);
/// Bytes read from one connection per read call.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes read from one connection per loop iteration, so one busy connection cannot starve
/// the others.
const READ_BUDGET: usize = 4 * READ_CHUNK;
/// Recent rejection reasons kept for the report.
const REJECTION_LOG: usize = 16;

/// Attribution the host holds for one cell. The receiver stamps it on every frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostStamp {
    pub cell_id: String,
    pub run_id: String,
    /// SHA-256 of the canonical spec the cell was admitted under.
    pub spec_hash: String,
}

/// Tuning of one receiver.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// Where to bind; the parent directory must exist and the path must not.
    pub socket_path: PathBuf,
    pub stamp: HostStamp,
    /// Items buffered for the supervisor before new ones are dropped (and counted).
    pub queue_capacity: usize,
    /// Sustained frames per second accepted from the cell.
    pub rate_per_sec: u32,
    /// Frames the cell may send in a burst above the sustained rate.
    pub burst: u32,
    /// Silence after which `AgentSilenced` is reported while the workload runs.
    pub keepalive_window: Duration,
    /// Simultaneous connections from the cell; further ones are closed at once (and counted).
    pub max_connections: usize,
}

impl ReceiverConfig {
    /// Defaults: 4096 queued items, 2000 frames/s with a burst of 10 000, 10 s keep-alive
    /// window, 16 connections.
    pub fn new(socket_path: impl Into<PathBuf>, stamp: HostStamp) -> Self {
        ReceiverConfig {
            socket_path: socket_path.into(),
            stamp,
            queue_capacity: 4096,
            rate_per_sec: 2000,
            burst: 10_000,
            keepalive_window: DEFAULT_WINDOW,
            max_connections: 16,
        }
    }
}

/// Why a receiver could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    #[error("telemetry socket {path}: already exists; remove the stale socket or use a fresh run directory")]
    SocketExists { path: PathBuf },
    #[error("telemetry socket {path}: bind failed: {source}")]
    Bind { path: PathBuf, source: io::Error },
    #[error("telemetry socket {path}: {what} failed: {source}")]
    Setup {
        path: PathBuf,
        what: &'static str,
        source: io::Error,
    },
    #[error("telemetry receiver config: {0}")]
    Config(&'static str),
}

/// A guest frame with host-held attribution. The frame itself has no attribution fields.
#[derive(Debug, Clone, PartialEq)]
pub struct StampedDeclaration {
    pub stamp: Arc<HostStamp>,
    /// Host wall-clock time the bytes were read.
    pub host_received_at: OffsetDateTime,
    pub frame: GuestFrame,
    /// Attribution (and other unknown) keys the guest sent that were dropped.
    pub dropped_keys: u32,
}

impl StampedDeclaration {
    /// The `telemetry.v1.declared` payload: host-stamped attribution, the guest's content kept
    /// as it was sent, authority `Declared`.
    pub fn event_data(&self) -> TelemetryDeclaredData {
        let f = &self.frame;
        TelemetryDeclaredData {
            run_id: self.stamp.run_id.clone(),
            spec_hash: self.stamp.spec_hash.clone(),
            host_received_at: rfc3339(self.host_received_at),
            probe_source: f.probe_source.as_str().to_owned(),
            guest_pid: Some(f.guest_pid),
            guest_comm: Some(f.guest_comm.clone()),
            guest_monotonic_ns: Some(f.guest_monotonic_ns),
            authority: AuthorityKind::Declared,
            declaration: serde_json::json!({
                "contentVersion": f.content_version,
                "probeSource": f.probe_source.as_str(),
                "detail": f.detail,
                "droppedKeys": self.dropped_keys,
            }),
        }
    }

    /// The unsealed event for this declaration, about the stamped cell.
    pub fn to_event(&self, factory: &EventFactory) -> CloudEvent {
        factory.telemetry_declared(
            self.host_received_at,
            &self.stamp.cell_id,
            &self.event_data(),
        )
    }
}

/// The agent went quiet for a whole window while the workload ran.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSilenced {
    pub stamp: Arc<HostStamp>,
    pub window: Duration,
    pub last_frame_at: Option<OffsetDateTime>,
    pub detected_at: OffsetDateTime,
}

impl AgentSilenced {
    pub fn event_data(&self) -> AgentSilencedData {
        AgentSilencedData {
            run_id: self.stamp.run_id.clone(),
            window_ms: u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX),
            last_seen: self.last_frame_at.map(rfc3339),
        }
    }

    pub fn to_event(&self, factory: &EventFactory) -> CloudEvent {
        factory.agent_silenced(self.detected_at, &self.stamp.cell_id, &self.event_data())
    }
}

/// What the receiver hands the supervisor.
#[derive(Debug, Clone, PartialEq)]
pub enum TelemetryItem {
    Declaration(StampedDeclaration),
    AgentSilenced(AgentSilenced),
}

#[derive(Default)]
struct AtomicCounters {
    frames: AtomicU64,
    delivered: AtomicU64,
    keepalives: AtomicU64,
    rate_limited: AtomicU64,
    queue_full: AtomicU64,
    malformed: AtomicU64,
    version_rejected: AtomicU64,
    dropped_keys: AtomicU64,
    silences_lost: AtomicU64,
    connections: AtomicU64,
    connections_refused: AtomicU64,
    connections_closed_malformed: AtomicU64,
}

impl AtomicCounters {
    fn snapshot(&self) -> ReceiverCounters {
        let g = |c: &AtomicU64| c.load(Ordering::SeqCst);
        ReceiverCounters {
            frames: g(&self.frames),
            delivered: g(&self.delivered),
            keepalives: g(&self.keepalives),
            rate_limited: g(&self.rate_limited),
            queue_full: g(&self.queue_full),
            malformed: g(&self.malformed),
            version_rejected: g(&self.version_rejected),
            dropped_keys: g(&self.dropped_keys),
            silences_lost: g(&self.silences_lost),
            connections: g(&self.connections),
            connections_refused: g(&self.connections_refused),
            connections_closed_malformed: g(&self.connections_closed_malformed),
        }
    }
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::SeqCst);
}

struct Shared {
    counters: AtomicCounters,
    workload_running: AtomicBool,
    stop: AtomicBool,
    rejections: Mutex<VecDeque<String>>,
}

impl Shared {
    fn reject(&self, error: &WireError) {
        if let Ok(mut log) = self.rejections.lock() {
            if log.len() == REJECTION_LOG {
                log.pop_front();
            }
            log.push_back(error.to_string());
        }
    }
}

/// A running per-cell receiver. Dropping it stops the thread and removes the socket file.
pub struct TelemetryReceiver {
    shared: Arc<Shared>,
    items: Receiver<TelemetryItem>,
    wake: UnixStream,
    thread: Option<JoinHandle<()>>,
    socket_path: PathBuf,
    stamp: Arc<HostStamp>,
}

impl std::fmt::Debug for TelemetryReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryReceiver")
            .field("socket_path", &self.socket_path)
            .field("stamp", &self.stamp)
            .finish_non_exhaustive()
    }
}

impl TelemetryReceiver {
    /// Bind the cell's socket and start its thread. Call before the workload starts.
    pub fn bind(config: ReceiverConfig) -> Result<Self, ReceiverError> {
        if config.queue_capacity == 0 {
            return Err(ReceiverError::Config("queue_capacity must be at least 1"));
        }
        if config.rate_per_sec == 0 || config.burst == 0 {
            return Err(ReceiverError::Config(
                "rate_per_sec and burst must be at least 1",
            ));
        }
        if config.max_connections == 0 {
            return Err(ReceiverError::Config("max_connections must be at least 1"));
        }
        let path = config.socket_path.clone();
        if path.symlink_metadata().is_ok() {
            return Err(ReceiverError::SocketExists { path });
        }
        let listener = UnixListener::bind(&path).map_err(|source| ReceiverError::Bind {
            path: path.clone(),
            source,
        })?;
        let setup = |what, source| ReceiverError::Setup {
            path: path.clone(),
            what,
            source,
        };
        // The cell's processes may run as any (mapped) uid; connecting needs write permission
        // on the socket inode. Who can reach the inode is decided by the run directory's
        // permissions and the bind mount, not by this mode.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))
            .map_err(|e| setup("chmod 0666", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| setup("set_nonblocking", e))?;
        let (wake, wake_rx) = UnixStream::pair().map_err(|e| setup("socketpair", e))?;
        wake_rx
            .set_nonblocking(true)
            .map_err(|e| setup("set_nonblocking", e))?;
        wake.set_nonblocking(true)
            .map_err(|e| setup("set_nonblocking", e))?;

        let shared = Arc::new(Shared {
            counters: AtomicCounters::default(),
            workload_running: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            rejections: Mutex::new(VecDeque::new()),
        });
        let stamp = Arc::new(config.stamp.clone());
        let (tx, items) = mpsc::sync_channel(config.queue_capacity);
        let worker = Worker {
            shared: Arc::clone(&shared),
            listener,
            wake: wake_rx,
            conns: Vec::new(),
            tx,
            stamp: Arc::clone(&stamp),
            bucket: TokenBucket::new(config.rate_per_sec, config.burst, Instant::now()),
            tracker: KeepAliveTracker::new(config.keepalive_window),
            armed: false,
            last_frame_wall: None,
            pending_silence: None,
            max_connections: config.max_connections,
        };
        let thread = std::thread::Builder::new()
            .name(format!("telemetry-{}", config.stamp.cell_id))
            .spawn(move || worker.run())
            .map_err(|e| setup("spawn receiver thread", e))?;
        Ok(TelemetryReceiver {
            shared,
            items,
            wake,
            thread: Some(thread),
            socket_path: path,
            stamp,
        })
    }

    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    pub fn stamp(&self) -> &HostStamp {
        &self.stamp
    }

    /// The workload is running: silence of the agent is reported from now on.
    pub fn workload_started(&self) {
        self.shared.workload_running.store(true, Ordering::SeqCst);
        self.nudge();
    }

    /// The workload ended: silence no longer matters.
    pub fn workload_exited(&self) {
        self.shared.workload_running.store(false, Ordering::SeqCst);
        self.nudge();
    }

    /// The next item, if one is queued. Never blocks.
    pub fn try_next(&self) -> Option<TelemetryItem> {
        self.items.try_recv().ok()
    }

    /// The next item, waiting at most `timeout`.
    pub fn next_timeout(&self, timeout: Duration) -> Option<TelemetryItem> {
        self.items.recv_timeout(timeout).ok()
    }

    /// Everything queued right now, without blocking.
    pub fn drain(&self) -> Vec<TelemetryItem> {
        self.items.try_iter().collect()
    }

    pub fn counters(&self) -> ReceiverCounters {
        self.shared.counters.snapshot()
    }

    /// The most recent reasons frames were rejected (oldest first, at most 16).
    pub fn recent_rejections(&self) -> Vec<String> {
        self.shared
            .rejections
            .lock()
            .map(|log| log.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Stop the thread, remove the socket file, and return the final counters. Items still
    /// queued are returned too, so nothing accepted is lost at teardown.
    pub fn shutdown(mut self) -> (ReceiverCounters, Vec<TelemetryItem>) {
        self.stop_thread();
        let rest = self.drain();
        (self.counters(), rest)
    }

    fn nudge(&self) {
        // A full wake pipe already guarantees a wake-up; nothing else can fail here that
        // matters, because the thread also wakes every IDLE_TICK.
        let _ = (&self.wake).write(b"w");
    }

    fn stop_thread(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.nudge();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.socket_path);
    }
}

impl Drop for TelemetryReceiver {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// Token bucket: `rate` tokens per second up to `burst`.
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: u32, burst: u32, now: Instant) -> Self {
        TokenBucket {
            rate: f64::from(rate),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
    }

    fn take(&mut self) -> bool {
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
}

enum ConnState {
    Open,
    Closed,
}

struct Worker {
    shared: Arc<Shared>,
    listener: UnixListener,
    wake: UnixStream,
    conns: Vec<Conn>,
    tx: SyncSender<TelemetryItem>,
    stamp: Arc<HostStamp>,
    bucket: TokenBucket,
    tracker: KeepAliveTracker,
    armed: bool,
    last_frame_wall: Option<OffsetDateTime>,
    pending_silence: Option<AgentSilenced>,
    max_connections: usize,
}

impl Worker {
    fn run(mut self) {
        let mut chunk = vec![0u8; READ_CHUNK];
        while !self.shared.stop.load(Ordering::SeqCst) {
            let (listener_ready, wake_ready, ready) = match self.wait() {
                Ok(r) => r,
                Err(_) => {
                    // EINTR or a transient poll failure: keep serving after a short pause.
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
            };
            if wake_ready {
                self.drain_wake();
            }
            if listener_ready {
                self.accept_all();
            }
            let now = Instant::now();
            self.bucket.refill(now);
            // Walk backwards so closed connections can be removed in place.
            for index in ready.into_iter().rev() {
                if let ConnState::Closed = self.serve(index, &mut chunk) {
                    self.conns.swap_remove(index);
                }
            }
            self.keepalive(Instant::now());
        }
        self.flush_pending_silence();
    }

    /// Poll the listener, the wake pipe and every connection; return what is readable.
    fn wait(&mut self) -> nix::Result<(bool, bool, Vec<usize>)> {
        let timeout = self
            .tracker
            .next_deadline(Instant::now())
            .map_or(IDLE_TICK, |d| d.min(IDLE_TICK));
        let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::ZERO);
        let flags = PollFlags::POLLIN;
        let mut fds = Vec::with_capacity(self.conns.len() + 2);
        fds.push(PollFd::new(self.listener.as_fd(), flags));
        fds.push(PollFd::new(self.wake.as_fd(), flags));
        fds.extend(
            self.conns
                .iter()
                .map(|c| PollFd::new(c.stream.as_fd(), flags)),
        );
        poll(&mut fds, timeout)?;
        let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        let conns = fds[2..]
            .iter()
            .enumerate()
            .filter(|(_, fd)| ready(fd))
            .map(|(i, _)| i)
            .collect();
        Ok((ready(&fds[0]), ready(&fds[1]), conns))
    }

    fn drain_wake(&mut self) {
        let mut scratch = [0u8; 64];
        while matches!((&self.wake).read(&mut scratch), Ok(n) if n > 0) {}
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.conns.len() >= self.max_connections {
                        bump(&self.shared.counters.connections_refused, 1);
                        continue; // dropping the stream closes it
                    }
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    bump(&self.shared.counters.connections, 1);
                    self.conns.push(Conn {
                        stream,
                        buf: Vec::new(),
                    });
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }

    /// Read what connection `index` has (within the budget) and process complete frames.
    fn serve(&mut self, index: usize, chunk: &mut [u8]) -> ConnState {
        let mut budget = READ_BUDGET;
        while budget > 0 {
            let read = (&self.conns[index].stream).read(chunk);
            match read {
                Ok(0) => {
                    let leftover = self.conns[index].buf.len();
                    if leftover > 0 {
                        let missing = match wire::split_frame(&self.conns[index].buf) {
                            Ok(Split::Incomplete { needed }) => needed.saturating_sub(leftover),
                            _ => 0,
                        };
                        self.malformed(&WireError::Truncated { missing });
                    }
                    return ConnState::Closed;
                }
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    self.conns[index].buf.extend_from_slice(&chunk[..n]);
                    let received_at = OffsetDateTime::now_utc();
                    let now = Instant::now();
                    if let ConnState::Closed = self.frames(index, received_at, now) {
                        bump(&self.shared.counters.connections_closed_malformed, 1);
                        return ConnState::Closed;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return ConnState::Open,
                Err(_) => return ConnState::Closed,
            }
        }
        ConnState::Open
    }

    /// Process every complete frame in connection `index`'s buffer.
    fn frames(&mut self, index: usize, received_at: OffsetDateTime, now: Instant) -> ConnState {
        let buf = std::mem::take(&mut self.conns[index].buf);
        let mut offset = 0;
        let state = loop {
            match wire::split_frame(&buf[offset..]) {
                Ok(Split::Incomplete { .. }) => break ConnState::Open,
                Ok(Split::Frame { payload, consumed }) => {
                    offset += consumed;
                    self.frame(payload, received_at, now);
                }
                Err(e) => {
                    // The length prefix itself is bad: the stream cannot be re-synchronised.
                    self.malformed(&e);
                    break ConnState::Closed;
                }
            }
        };
        if let ConnState::Open = state {
            let mut buf = buf;
            buf.drain(..offset);
            self.conns[index].buf = buf;
        }
        state
    }

    /// Classify one complete frame. `frames` is counted last, so an observer that sees
    /// `frames == n` also sees every one of those n frames classified, and an observer that
    /// receives an item already sees it counted as delivered.
    fn frame(&mut self, payload: &[u8], received_at: OffsetDateTime, now: Instant) {
        self.classify(payload, received_at, now);
        bump(&self.shared.counters.frames, 1);
    }

    fn classify(&mut self, payload: &[u8], received_at: OffsetDateTime, now: Instant) {
        let counters = &self.shared.counters;
        if !self.bucket.take() {
            bump(&counters.rate_limited, 1);
            return;
        }
        let decoded = match wire::decode_payload(payload) {
            Ok(decoded) => decoded,
            Err(e @ WireError::UnsupportedMajor { .. }) => {
                self.shared.reject(&e);
                bump(&counters.version_rejected, 1);
                return;
            }
            Err(e) => {
                self.shared.reject(&e);
                bump(&counters.malformed, 1);
                return;
            }
        };
        bump(&counters.dropped_keys, u64::from(decoded.dropped_keys));
        self.tracker.frame_seen(now);
        self.last_frame_wall = Some(received_at);
        if decoded.frame.probe_source == ProbeSource::Keepalive {
            bump(&counters.keepalives, 1);
            return;
        }
        let item = TelemetryItem::Declaration(StampedDeclaration {
            stamp: Arc::clone(&self.stamp),
            host_received_at: received_at,
            frame: decoded.frame,
            dropped_keys: decoded.dropped_keys,
        });
        bump(&counters.delivered, 1);
        if self.tx.try_send(item).is_err() {
            // Full, or the supervisor dropped its end: either way the item is not delivered.
            counters.delivered.fetch_sub(1, Ordering::SeqCst);
            bump(&counters.queue_full, 1);
        }
    }

    fn malformed(&self, error: &WireError) {
        self.shared.reject(error);
        bump(&self.shared.counters.malformed, 1);
        bump(&self.shared.counters.frames, 1);
    }

    fn keepalive(&mut self, now: Instant) {
        let running = self.shared.workload_running.load(Ordering::SeqCst);
        if running && !self.armed {
            self.tracker.arm(now);
            self.armed = true;
        } else if !running && self.armed {
            self.tracker.disarm();
            self.armed = false;
        }
        if let Some(silence) = self.tracker.poll(now) {
            self.pending_silence = Some(AgentSilenced {
                stamp: Arc::clone(&self.stamp),
                window: silence.window,
                last_frame_at: self.last_frame_wall,
                detected_at: OffsetDateTime::now_utc(),
            });
        }
        if let Some(silence) = self.pending_silence.take() {
            // A silence is never dropped for a full queue: it is retried on the next tick.
            if let Err(TrySendError::Full(TelemetryItem::AgentSilenced(silence))) =
                self.tx.try_send(TelemetryItem::AgentSilenced(silence))
            {
                self.pending_silence = Some(silence);
            }
        }
    }

    fn flush_pending_silence(&mut self) {
        if let Some(silence) = self.pending_silence.take() {
            if self
                .tx
                .try_send(TelemetryItem::AgentSilenced(silence))
                .is_err()
            {
                bump(&self.shared.counters.silences_lost, 1);
            }
        }
    }
}

fn rfc3339(time: OffsetDateTime) -> String {
    time.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| time.unix_timestamp().to_string())
}

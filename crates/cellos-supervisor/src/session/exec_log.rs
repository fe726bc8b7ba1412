//! The kept output of one exec: every byte it wrote, capped, re-readable from any offset and
//! followable while it runs, so a client that disconnects loses nothing it can ask for again.
//!
//! Offsets count bytes of both streams together, in the order they arrived; a frame carries
//! its stream, its offset and its bytes. Past the cap the oldest frames are dropped (and a
//! reader asking for them is told where the kept output now starts); the counts keep going.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cellos_core::session::ExecExit;
use serde::{Deserialize, Serialize};

/// Default cap of the kept output of one exec.
pub const DEFAULT_KEPT_BYTES: u64 = 8 << 20;

/// Which stream a frame came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A run of bytes of one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub stream: Stream,
    /// Offset of the first byte, counting both streams.
    pub offset: u64,
    pub data: Vec<u8>,
}

/// How an exec ended, as the supervisor judged it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecOutcome {
    pub exit: ExecExit,
    /// Killed because its `timeoutMs` ran out (status 124).
    pub timed_out: bool,
    /// Killed at a client's or the cell's end (delete, TTL, shutdown).
    pub killed: bool,
    pub duration_ms: u64,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
}

impl ExecOutcome {
    /// The status a shell would report: 124 after a timeout.
    pub fn status(&self) -> i32 {
        if self.timed_out {
            crate::lifecycle::EXIT_TIMEOUT
        } else {
            self.exit.status()
        }
    }
}

/// What a read returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub frames: Vec<Frame>,
    /// Where the next read should start.
    pub next: u64,
    /// The oldest offset still kept (later than the one asked for if output was dropped).
    pub first_kept: u64,
    /// Set once the exec has ended and every byte it wrote is in the log.
    pub outcome: Option<ExecOutcome>,
}

struct State {
    frames: VecDeque<Frame>,
    kept: u64,
    /// Offset one past the last byte received.
    end: u64,
    stdout_bytes: u64,
    stderr_bytes: u64,
    outcome: Option<ExecOutcome>,
}

/// The kept output of one exec.
pub struct ExecLog {
    id: String,
    cap: u64,
    state: Mutex<State>,
    changed: Condvar,
}

impl ExecLog {
    pub fn new(id: impl Into<String>, cap: u64) -> Self {
        Self {
            id: id.into(),
            cap: cap.max(1),
            state: Mutex::new(State {
                frames: VecDeque::new(),
                kept: 0,
                end: 0,
                stdout_bytes: 0,
                stderr_bytes: 0,
                outcome: None,
            }),
            changed: Condvar::new(),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A reader that panicked cannot leave the log inconsistent: each update is one step.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Append bytes the exec wrote.
    pub fn push(&self, stream: Stream, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let mut s = self.lock();
        if s.outcome.is_some() {
            // The exit is the last frame: what a background process writes later is dropped.
            return;
        }
        let offset = s.end;
        s.end += data.len() as u64;
        match stream {
            Stream::Stdout => s.stdout_bytes += data.len() as u64,
            Stream::Stderr => s.stderr_bytes += data.len() as u64,
        }
        s.kept += data.len() as u64;
        s.frames.push_back(Frame {
            stream,
            offset,
            data: data.to_vec(),
        });
        while s.kept > self.cap {
            match s.frames.pop_front() {
                Some(old) => s.kept -= old.data.len() as u64,
                None => break,
            }
        }
        drop(s);
        self.changed.notify_all();
    }

    /// Bytes written so far to stdout and stderr.
    pub fn counts(&self) -> (u64, u64) {
        let s = self.lock();
        (s.stdout_bytes, s.stderr_bytes)
    }

    /// Record the end; readers waiting for more see it at once.
    pub fn finish(&self, outcome: ExecOutcome) {
        self.lock().outcome = Some(outcome);
        self.changed.notify_all();
    }

    pub fn outcome(&self) -> Option<ExecOutcome> {
        self.lock().outcome.clone()
    }

    /// Frames from `offset` on (at most `max_bytes` of them, but at least one frame when any
    /// is there). With `wait`, blocks until there is something past `offset`, the exec ends,
    /// or `wait` passes.
    pub fn read(&self, offset: u64, max_bytes: usize, wait: Option<Duration>) -> Read {
        let deadline = wait.map(|w| Instant::now() + w);
        let mut s = self.lock();
        while let Some(deadline) = deadline {
            if s.end > offset || s.outcome.is_some() {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            s = self
                .changed
                .wait_timeout(s, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        let first_kept = s.frames.front().map_or(s.end, |f| f.offset);
        let mut frames = Vec::new();
        let mut taken = 0usize;
        let mut next = offset.max(first_kept);
        for f in &s.frames {
            let f_end = f.offset + f.data.len() as u64;
            if f_end <= next {
                continue;
            }
            if taken > 0 && taken + f.data.len() > max_bytes {
                break;
            }
            let skip = (next - f.offset) as usize;
            let data = f.data[skip..].to_vec();
            taken += data.len();
            frames.push(Frame {
                stream: f.stream,
                offset: next,
                data,
            });
            next = f_end;
        }
        let complete = next >= s.end;
        Read {
            frames,
            next,
            first_kept,
            outcome: if complete { s.outcome.clone() } else { None },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_resume_from_any_offset_across_streams() {
        let log = ExecLog::new("e1", 1 << 20);
        log.push(Stream::Stdout, b"hello ");
        log.push(Stream::Stderr, b"oops");
        log.push(Stream::Stdout, b"world");
        let all = log.read(0, usize::MAX, None);
        assert_eq!(all.frames.len(), 3);
        assert_eq!(all.next, 15);
        let mid = log.read(8, usize::MAX, None);
        assert_eq!(mid.frames[0].stream, Stream::Stderr);
        assert_eq!(mid.frames[0].data, b"ps");
        assert_eq!(mid.frames[1].data, b"world");
        assert_eq!(log.counts(), (11, 4));
    }

    #[test]
    fn the_cap_drops_the_oldest_and_says_where_output_starts() {
        let log = ExecLog::new("e1", 10);
        log.push(Stream::Stdout, b"0123456789");
        log.push(Stream::Stdout, b"abcdef");
        let read = log.read(0, usize::MAX, None);
        assert_eq!(read.first_kept, 10);
        assert_eq!(read.frames[0].offset, 10);
        assert_eq!(read.frames[0].data, b"abcdef");
        assert_eq!(log.counts().0, 16);
    }

    #[test]
    fn the_outcome_is_only_given_with_the_last_byte() {
        let log = ExecLog::new("e1", 1 << 20);
        log.push(Stream::Stdout, b"aaaa");
        log.push(Stream::Stdout, b"bbbb");
        log.finish(ExecOutcome {
            exit: ExecExit::Exited { code: 3 },
            timed_out: false,
            killed: false,
            duration_ms: 1,
            stdout_bytes: 8,
            stderr_bytes: 0,
        });
        let first = log.read(0, 4, None);
        assert_eq!(first.next, 4);
        assert!(first.outcome.is_none());
        let rest = log.read(first.next, 4, None);
        assert_eq!(rest.outcome.map(|o| o.status()), Some(3));
    }

    #[test]
    fn nothing_is_kept_after_the_exit() {
        let log = ExecLog::new("e1", 1 << 20);
        log.push(Stream::Stdout, b"before");
        log.finish(ExecOutcome {
            exit: ExecExit::Exited { code: 0 },
            timed_out: false,
            killed: false,
            duration_ms: 1,
            stdout_bytes: 6,
            stderr_bytes: 0,
        });
        log.push(Stream::Stdout, b"after");
        let read = log.read(0, usize::MAX, None);
        assert_eq!(read.frames.len(), 1);
        assert_eq!(read.next, 6);
        assert!(read.outcome.is_some());
    }

    #[test]
    fn a_follower_wakes_when_output_arrives() {
        let log = std::sync::Arc::new(ExecLog::new("e1", 1 << 20));
        let writer = log.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            writer.push(Stream::Stdout, b"late");
        });
        let read = log.read(0, usize::MAX, Some(Duration::from_secs(5)));
        assert_eq!(read.frames[0].data, b"late");
        t.join().unwrap();
    }
}

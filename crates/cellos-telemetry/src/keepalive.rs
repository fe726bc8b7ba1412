//! Keep-alive tracking: notice when the in-cell agent goes quiet, once per silence.
//!
//! Silence only means something while the workload runs, so the tracker is armed when the
//! workload starts and disarmed when it ends. Arming counts as "just heard from": an agent gets a
//! full window to say its first word. After the tracker reports a silence it stays quiet until a
//! frame arrives; the next silence after that is reported again. Time is passed in, so the logic
//! is deterministic and testable without sleeping.

use std::time::{Duration, Instant};

/// Default silence window.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);

/// One silence: the agent said nothing for `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Silence {
    pub window: Duration,
    /// When the last frame arrived, if one ever did while armed or before.
    pub last_frame: Option<Instant>,
}

/// Per-cell keep-alive state.
#[derive(Debug, Clone)]
pub struct KeepAliveTracker {
    window: Duration,
    last_frame: Option<Instant>,
    /// Start of the current quiet period (last frame, or arming time).
    quiet_since: Option<Instant>,
    armed: bool,
    reported: bool,
}

impl KeepAliveTracker {
    pub fn new(window: Duration) -> Self {
        KeepAliveTracker {
            window,
            last_frame: None,
            quiet_since: None,
            armed: false,
            reported: false,
        }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// The workload started: from now on silence is reported.
    pub fn arm(&mut self, now: Instant) {
        self.armed = true;
        self.reported = false;
        self.quiet_since = Some(self.last_frame.map_or(now, |last| last.max(now)));
    }

    /// The workload ended: silence no longer matters.
    pub fn disarm(&mut self) {
        self.armed = false;
    }

    /// A valid frame arrived: the current silence (if any) is over.
    pub fn frame_seen(&mut self, now: Instant) {
        self.last_frame = Some(now);
        self.quiet_since = Some(now);
        self.reported = false;
    }

    pub fn last_frame(&self) -> Option<Instant> {
        self.last_frame
    }

    /// The silence to report now, if the window has passed since the last frame (or arming) and
    /// this silence has not been reported yet.
    pub fn poll(&mut self, now: Instant) -> Option<Silence> {
        if !self.armed || self.reported {
            return None;
        }
        let since = self.quiet_since?;
        if now.saturating_duration_since(since) < self.window {
            return None;
        }
        self.reported = true;
        Some(Silence {
            window: self.window,
            last_frame: self.last_frame,
        })
    }

    /// How long until [`Self::poll`] could next report, for sleeping callers.
    pub fn next_deadline(&self, now: Instant) -> Option<Duration> {
        if !self.armed || self.reported {
            return None;
        }
        let since = self.quiet_since?;
        Some((since + self.window).saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(10);

    #[test]
    fn silence_is_reported_once_per_silence() {
        let t0 = Instant::now();
        let mut k = KeepAliveTracker::new(W);
        k.arm(t0);
        k.frame_seen(t0 + Duration::from_secs(1));
        assert_eq!(k.poll(t0 + Duration::from_secs(10)), None);
        let s = k.poll(t0 + Duration::from_secs(11)).unwrap();
        assert_eq!(s.last_frame, Some(t0 + Duration::from_secs(1)));
        assert_eq!(k.poll(t0 + Duration::from_secs(12)), None);
        assert_eq!(k.poll(t0 + Duration::from_secs(100)), None);
        // A frame ends the silence; the next silence is reported again.
        k.frame_seen(t0 + Duration::from_secs(101));
        assert_eq!(k.poll(t0 + Duration::from_secs(105)), None);
        assert!(k.poll(t0 + Duration::from_secs(111)).is_some());
        assert_eq!(k.poll(t0 + Duration::from_secs(200)), None);
    }

    #[test]
    fn nothing_is_reported_while_disarmed() {
        let t0 = Instant::now();
        let mut k = KeepAliveTracker::new(W);
        assert_eq!(k.poll(t0 + Duration::from_secs(60)), None);
        k.arm(t0);
        k.disarm();
        assert_eq!(k.poll(t0 + Duration::from_secs(60)), None);
        assert_eq!(k.next_deadline(t0), None);
    }

    #[test]
    fn an_agent_that_never_speaks_gets_one_window_from_arming() {
        let t0 = Instant::now();
        let mut k = KeepAliveTracker::new(W);
        k.arm(t0);
        assert_eq!(
            k.next_deadline(t0 + Duration::from_secs(4)),
            Some(Duration::from_secs(6))
        );
        assert_eq!(k.poll(t0 + Duration::from_secs(9)), None);
        let s = k.poll(t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(s.last_frame, None);
        assert_eq!(s.window, W);
    }
}

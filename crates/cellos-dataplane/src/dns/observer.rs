//! Evidence of the DNS authority: one event per query, exact counters, and a rate limiter that
//! coalesces events under load without losing counts.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

/// What the authority did with a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Verdict {
    /// The name is allowed; the query went upstream.
    Permitted,
    /// The name is not allowed (or the query is not a plain one-question query); answered
    /// REFUSED without leaving the host.
    Refused,
}

/// One answered query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryEvent {
    /// Queried name, lower-cased, without the trailing dot.
    pub name: String,
    /// Record type (`A`, `AAAA`, `TXT`, ...).
    pub qtype: String,
    pub verdict: Verdict,
    /// Records in the answer section the cell received.
    pub answers: u32,
    /// The matching allow-list pattern, or why the query was refused or failed.
    pub reason: Option<String>,
    /// Addresses removed from the answer because they point into a denied range.
    pub rebinding_dropped: Vec<IpAddr>,
}

/// Events suppressed by [`RateLimitedObserver`] during one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CoalescedQueries {
    pub permitted: u64,
    pub refused: u64,
}

/// Receives the authority's events. Called on the server's tasks: keep it quick.
pub trait DnsObserver: Send + Sync {
    fn query(&self, event: &QueryEvent);
    /// Summary of events a rate limiter held back.
    fn coalesced(&self, summary: &CoalescedQueries);
}

/// Exact totals, kept whatever the event rate.
#[derive(Debug, Default)]
pub struct DnsCounters {
    pub permitted: AtomicU64,
    pub refused: AtomicU64,
    /// Packets that were not a parseable DNS query; dropped without an answer.
    pub malformed: AtomicU64,
    /// A/AAAA records removed because they pointed into a denied range.
    pub rebinding_dropped: AtomicU64,
    /// Allowed queries the upstream did not answer (the cell got SERVFAIL).
    pub upstream_failures: AtomicU64,
}

/// A copy of [`DnsCounters`] at one instant, for the per-cell summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DnsCounts {
    pub permitted: u64,
    pub refused: u64,
    pub malformed: u64,
    pub rebinding_dropped: u64,
    pub upstream_failures: u64,
}

impl DnsCounters {
    pub fn snapshot(&self) -> DnsCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DnsCounts {
            permitted: get(&self.permitted),
            refused: get(&self.refused),
            malformed: get(&self.malformed),
            rebinding_dropped: get(&self.rebinding_dropped),
            upstream_failures: get(&self.upstream_failures),
        }
    }

    pub(crate) fn bump(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
    }
}

/// Forwards at most `per_window` query events per window to `inner`; the rest are counted
/// and reported as one [`CoalescedQueries`] when the next window opens or on [`Self::flush`].
pub struct RateLimitedObserver {
    inner: Arc<dyn DnsObserver>,
    per_window: u32,
    window: Duration,
    state: Mutex<WindowState>,
}

#[derive(Debug)]
struct WindowState {
    start: Instant,
    emitted: u32,
    held: CoalescedQueries,
}

impl RateLimitedObserver {
    /// At most `per_second` events per second reach `inner`.
    pub fn new(inner: Arc<dyn DnsObserver>, per_second: u32) -> Self {
        Self::with_window(inner, per_second, Duration::from_secs(1), Instant::now())
    }

    /// Explicit window length and start (tests drive the clock through [`Self::observe_at`]).
    pub fn with_window(
        inner: Arc<dyn DnsObserver>,
        per_window: u32,
        window: Duration,
        start: Instant,
    ) -> Self {
        Self {
            inner,
            per_window,
            window,
            state: Mutex::new(WindowState {
                start,
                emitted: 0,
                held: CoalescedQueries::default(),
            }),
        }
    }

    /// [`DnsObserver::query`] at an explicit instant.
    pub fn observe_at(&self, event: &QueryEvent, now: Instant) {
        let (forward, summary) = {
            let mut s = self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut summary = None;
            if now.saturating_duration_since(s.start) >= self.window {
                summary = take_held(&mut s.held);
                s.start = now;
                s.emitted = 0;
            }
            let forward = s.emitted < self.per_window;
            if forward {
                s.emitted += 1;
            } else {
                match event.verdict {
                    Verdict::Permitted => s.held.permitted += 1,
                    Verdict::Refused => s.held.refused += 1,
                }
            }
            (forward, summary)
        };
        if let Some(summary) = summary {
            self.inner.coalesced(&summary);
        }
        if forward {
            self.inner.query(event);
        }
    }

    /// Reports events still held back (call at cell teardown).
    pub fn flush(&self) {
        let summary = {
            let mut s = self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            take_held(&mut s.held)
        };
        if let Some(summary) = summary {
            self.inner.coalesced(&summary);
        }
    }
}

fn take_held(held: &mut CoalescedQueries) -> Option<CoalescedQueries> {
    let taken = std::mem::take(held);
    (taken != CoalescedQueries::default()).then_some(taken)
}

impl DnsObserver for RateLimitedObserver {
    fn query(&self, event: &QueryEvent) {
        self.observe_at(event, Instant::now());
    }

    fn coalesced(&self, summary: &CoalescedQueries) {
        self.inner.coalesced(summary);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        events: Mutex<Vec<QueryEvent>>,
        summaries: Mutex<Vec<CoalescedQueries>>,
    }

    impl DnsObserver for Recorder {
        fn query(&self, event: &QueryEvent) {
            self.events.lock().unwrap().push(event.clone());
        }
        fn coalesced(&self, summary: &CoalescedQueries) {
            self.summaries.lock().unwrap().push(*summary);
        }
    }

    fn event(verdict: Verdict) -> QueryEvent {
        QueryEvent {
            name: "x.test".into(),
            qtype: "A".into(),
            verdict,
            answers: 0,
            reason: None,
            rebinding_dropped: vec![],
        }
    }

    #[test]
    fn events_above_the_rate_are_coalesced_and_every_one_is_counted() {
        let rec = Arc::new(Recorder::default());
        let t0 = Instant::now();
        let rl = RateLimitedObserver::with_window(rec.clone(), 2, Duration::from_secs(1), t0);
        for i in 0..5 {
            let v = if i % 2 == 0 {
                Verdict::Refused
            } else {
                Verdict::Permitted
            };
            rl.observe_at(&event(v), t0);
        }
        assert_eq!(rec.events.lock().unwrap().len(), 2);
        assert!(rec.summaries.lock().unwrap().is_empty());
        // The next window reports what was held back, then forwards again.
        rl.observe_at(&event(Verdict::Refused), t0 + Duration::from_secs(1));
        assert_eq!(
            *rec.summaries.lock().unwrap(),
            vec![CoalescedQueries {
                permitted: 1,
                refused: 2
            }]
        );
        assert_eq!(rec.events.lock().unwrap().len(), 3);
    }

    #[test]
    fn flush_reports_held_events_once() {
        let rec = Arc::new(Recorder::default());
        let t0 = Instant::now();
        let rl = RateLimitedObserver::with_window(rec.clone(), 0, Duration::from_secs(1), t0);
        rl.observe_at(&event(Verdict::Refused), t0);
        rl.flush();
        rl.flush();
        assert_eq!(
            *rec.summaries.lock().unwrap(),
            vec![CoalescedQueries {
                permitted: 0,
                refused: 1
            }]
        );
    }
}

//! Events a running cell produces on its own (DNS and flow decisions, telemetry), handed to the
//! supervisor through the [`RuntimeEvidence`] port from the backend's threads.
//!
//! They are queued without I/O (an observer must never stall a DNS answer) and made durable in
//! arrival order: every 250 ms by a flusher thread that the first observed event starts (a cell
//! that observes nothing costs nothing), and at each of the recorder's barriers, ahead of its
//! own events. The tally is shared with the recorder, so the compliance summary counts exactly
//! what was appended, whoever appended it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use cellos_core::events::{CloudEvent, ComplianceCounts};
use cellos_core::ports::{EventSink, PortError, PortErrorKind, RuntimeEvidence};

/// How often observed events are appended while the cell runs.
const FLUSH_INTERVAL: Duration = Duration::from_millis(250);

/// What one run has appended so far.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) counts: ComplianceCounts,
    pub(crate) emitted: u64,
}

impl Tally {
    pub(crate) fn count(&mut self, events: &[CloudEvent]) {
        for event in events {
            self.counts.observe(event);
        }
        self.emitted += events.len() as u64;
    }
}

/// The queue behind one run's [`RuntimeEvidence`].
pub(crate) struct ObservedEvents {
    sink: Arc<dyn EventSink>,
    pending: Mutex<Vec<CloudEvent>>,
    tally: Mutex<Tally>,
    flusher_started: AtomicBool,
    /// A background append that failed; the next barrier reports it (evidence must not be
    /// lost silently).
    failed: Mutex<Option<String>>,
    me: Weak<ObservedEvents>,
}

/// A poisoned lock only means another thread panicked mid-update; the data stays usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ObservedEvents {
    pub(crate) fn new(sink: Arc<dyn EventSink>) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            sink,
            pending: Mutex::new(Vec::new()),
            tally: Mutex::new(Tally::default()),
            flusher_started: AtomicBool::new(false),
            failed: Mutex::new(None),
            me: me.clone(),
        })
    }

    pub(crate) fn tally(&self) -> MutexGuard<'_, Tally> {
        lock(&self.tally)
    }

    /// Take what is queued (counted in the tally) and hand it to `append`, which makes it
    /// durable together with the caller's own events. The queue stays locked meanwhile, so
    /// the flusher cannot append later observations ahead of these.
    pub(crate) fn append_with(
        &self,
        append: impl FnOnce(Vec<CloudEvent>) -> Result<(), PortError>,
    ) -> Result<(), PortError> {
        if let Some(message) = lock(&self.failed).take() {
            return Err(PortError::new(PortErrorKind::Io, message));
        }
        let mut pending = lock(&self.pending);
        let events = std::mem::take(&mut *pending);
        self.tally().count(&events);
        append(events)
    }

    fn append_pending(&self) -> Result<(), PortError> {
        // The pending lock is held across the append so two flushers cannot reorder batches.
        let mut pending = lock(&self.pending);
        if pending.is_empty() {
            return Ok(());
        }
        let events = std::mem::take(&mut *pending);
        self.tally().count(&events);
        self.sink.emit_batch(events).map(drop)
    }

    /// Appends every [`FLUSH_INTERVAL`] until the run (the last strong reference) is gone.
    fn start_flusher(&self) {
        let me = self.me.clone();
        let spawned = std::thread::Builder::new()
            .name("cellos-observed".into())
            .spawn(move || loop {
                std::thread::sleep(FLUSH_INTERVAL);
                let Some(queue) = me.upgrade() else { return };
                if let Err(err) = queue.append_pending() {
                    *lock(&queue.failed) = Some(format!("appending observed events: {err}"));
                    return;
                }
            });
        if let Err(err) = spawned {
            // The barriers still append everything; only the periodic appends are lost.
            tracing::warn!(%err, "no flusher thread for observed events");
        }
    }
}

impl RuntimeEvidence for ObservedEvents {
    fn observe(&self, event: CloudEvent) {
        lock(&self.pending).push(event);
        if !self.flusher_started.swap(true, Ordering::AcqRel) {
            self.start_flusher();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellos_core::events::EventFactory;
    use cellos_core::ports::LimitHit;
    use time::OffsetDateTime;

    /// Keeps what was appended, in order, and how many barriers it took.
    #[derive(Default)]
    struct MemorySink {
        appended: Mutex<Vec<CloudEvent>>,
        barriers: Mutex<u32>,
    }

    impl EventSink for MemorySink {
        fn emit(&self, event: CloudEvent) -> Result<CloudEvent, PortError> {
            self.appended.lock().unwrap().push(event.clone());
            *self.barriers.lock().unwrap() += 1;
            Ok(event)
        }

        fn emit_batch(&self, events: Vec<CloudEvent>) -> Result<Vec<CloudEvent>, PortError> {
            self.appended.lock().unwrap().extend(events.iter().cloned());
            *self.barriers.lock().unwrap() += 1;
            Ok(events)
        }
    }

    /// A barrier with nothing of the caller's own.
    fn flush(queue: &ObservedEvents, sink: &MemorySink) {
        queue
            .append_with(|events| {
                if events.is_empty() {
                    return Ok(());
                }
                sink.emit_batch(events).map(drop)
            })
            .unwrap();
    }

    fn hit(n: u64) -> CloudEvent {
        let factory = EventFactory::new("h", "test", Arc::new(|| "id".to_owned()));
        factory.limit_hit(
            OffsetDateTime::UNIX_EPOCH,
            "c",
            &LimitHit {
                limit: "pidsMax".into(),
                mechanism: "test".into(),
                count: n,
            },
        )
    }

    #[test]
    fn observed_events_are_appended_in_arrival_order_with_one_barrier_and_counted() {
        let sink = Arc::new(MemorySink::default());
        let queue = ObservedEvents::new(sink.clone());
        let observer: Arc<dyn RuntimeEvidence> = queue.clone();
        for n in 1..=3 {
            observer.observe(hit(n));
        }
        flush(&queue, &sink);
        let appended = sink.appended.lock().unwrap();
        let order: Vec<u64> = appended
            .iter()
            .map(|e| e.data["count"].as_u64().unwrap())
            .collect();
        assert_eq!(order, [1, 2, 3]);
        assert_eq!(*sink.barriers.lock().unwrap(), 1);
        let tally = queue.tally();
        assert_eq!((tally.emitted, tally.counts.limit_hits), (3, 3));
    }

    #[test]
    fn observed_events_become_durable_without_a_barrier() {
        let sink = Arc::new(MemorySink::default());
        let queue = ObservedEvents::new(sink.clone());
        queue.observe(hit(7));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sink.appended.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(sink.appended.lock().unwrap().len(), 1);
        assert_eq!(queue.tally().emitted, 1);
    }

    #[test]
    fn an_empty_queue_costs_no_barrier() {
        let sink = Arc::new(MemorySink::default());
        let queue = ObservedEvents::new(sink.clone());
        flush(&queue, &sink);
        assert_eq!(*sink.barriers.lock().unwrap(), 0);
    }
}

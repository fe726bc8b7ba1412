//! Events a running cell produces on its own (DNS and flow decisions, telemetry), handed to the
//! supervisor through the [`RuntimeEvidence`] port from the backend's threads.
//!
//! They are queued without I/O (an observer must never stall a DNS answer) and made durable in
//! arrival order: every 250 ms while the workload runs, and at each of the recorder's barriers,
//! ahead of its own events. The tally is shared with the recorder, so the compliance summary
//! counts exactly what was appended, whoever appended it.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use cellos_core::events::{CloudEvent, ComplianceCounts};
use cellos_core::ports::{EventSink, PortError, RuntimeEvidence};

/// How often observed events are appended while the workload runs.
pub(crate) const FLUSH_INTERVAL: Duration = Duration::from_millis(250);

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
#[derive(Default)]
pub(crate) struct ObservedEvents {
    pending: Mutex<Vec<CloudEvent>>,
    tally: Mutex<Tally>,
}

impl ObservedEvents {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The run's tally (a poisoned lock only means another thread panicked mid-count; the
    /// counts themselves stay usable).
    pub(crate) fn tally(&self) -> MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Append everything queued, in arrival order, with one durability barrier.
    pub(crate) fn flush(&self, sink: &dyn EventSink) -> Result<(), PortError> {
        let events = self.take();
        if events.is_empty() {
            return Ok(());
        }
        sink.emit_batch(events).map(drop)
    }

    /// Everything observed since the last take, counted in the tally; the caller appends it.
    pub(crate) fn take(&self) -> Vec<CloudEvent> {
        let events =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        self.tally().count(&events);
        events
    }
}

impl RuntimeEvidence for ObservedEvents {
    fn observe(&self, event: CloudEvent) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event);
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
        let queue = ObservedEvents::new();
        let sink = MemorySink::default();
        let observer: Arc<dyn RuntimeEvidence> = queue.clone();
        for n in 1..=3 {
            observer.observe(hit(n));
        }
        queue.flush(&sink).unwrap();
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
    fn an_empty_queue_costs_no_barrier() {
        let queue = ObservedEvents::new();
        let sink = MemorySink::default();
        queue.flush(&sink).unwrap();
        assert_eq!(*sink.barriers.lock().unwrap(), 0);
    }
}

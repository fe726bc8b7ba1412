//! Evidence for one cell: builds each step's events and appends them durably.
//!
//! A `Recorder` belongs to one run. It counts what it recorded, so the compliance summary at
//! the end is computed from the very events that were written, the same way a projector would.
//!
//! Events become durable at barriers, in one fsync'd batch each: before the workload's exec
//! (admission, secrets, isolation, started), before exports begin, after each export, and
//! before the run returns (completed, destroyed, summary). Between barriers the supervisor only
//! prepares or tears down host state that gives the workload nothing, and a crash there is
//! reconciled by `gc` with its own event; batching halves the fsyncs on every cell's path.

use std::sync::Arc;

use cellos_core::events::{
    CloudEvent, ComplianceSummaryData, EventFactory, EventKind, ExportFailedData, Outcome,
    SecretsData,
};
use cellos_core::policy::AdmissionDecision;
use cellos_core::ports::{
    EventSink, ExportReceipt, IsolationReport, LimitHit, PortError, TeardownReport, WorkloadOutcome,
};
use cellos_core::spec::{ExportTargetKind, SecretDeliveryMode};

use crate::observed::ObservedEvents;
use time::OffsetDateTime;

/// Records the events of one cell.
pub(crate) struct Recorder {
    sink: Arc<dyn EventSink>,
    factory: EventFactory,
    cell_id: String,
    run_id: String,
    /// The API caller every event recorded from now on is attributed to.
    actor: Option<String>,
    /// Shared with the cell's runtime observers: their events go first at every barrier.
    observed: Arc<ObservedEvents>,
    /// Built but not yet durable; appended at the next barrier, in order.
    staged: Vec<CloudEvent>,
}

impl Recorder {
    pub(crate) fn new(
        sink: &Arc<dyn EventSink>,
        factory: &EventFactory,
        cell_id: &str,
        run_id: &str,
    ) -> Self {
        Self {
            sink: sink.clone(),
            factory: factory.clone(),
            cell_id: cell_id.to_owned(),
            run_id: run_id.to_owned(),
            actor: None,
            observed: ObservedEvents::new(sink.clone()),
            staged: Vec::new(),
        }
    }

    /// Attribute what is recorded from now on to `actor` (an API caller).
    pub(crate) fn set_actor(&mut self, actor: Option<&str>) {
        self.actor = actor.map(str::to_owned);
    }

    /// Queue `events` for the next barrier.
    fn stage(&mut self, mut events: Vec<CloudEvent>) {
        if let Some(actor) = &self.actor {
            for e in &mut events {
                e.cellosactor = Some(actor.clone());
            }
        }
        self.observed.tally().count(&events);
        self.staged.extend(events);
    }

    /// Barrier: append everything staged with one fsync; all of it is durable on return.
    ///
    /// Staged and observed events are merged by occurrence time, so an event the cell observed
    /// while it was created (`network.enforced`) lands between the admission and the start
    /// that surround it, not before both.
    pub(crate) fn flush(&mut self) -> Result<(), PortError> {
        let staged = std::mem::take(&mut self.staged);
        let sink = &self.sink;
        self.observed.append_with(|observed| {
            if staged.is_empty() && observed.is_empty() {
                return Ok(());
            }
            sink.emit_batch(merge_by_time(staged, observed)).map(drop)
        })
    }

    /// Stage `events` and make them durable now.
    fn record(&mut self, events: Vec<CloudEvent>) -> Result<(), PortError> {
        self.stage(events);
        self.flush()
    }

    /// The port the cell's backend hands its runtime events to.
    pub(crate) fn observed(&self) -> Arc<ObservedEvents> {
        self.observed.clone()
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    pub(crate) fn admission(&mut self, spec_hash: &str, decision: &AdmissionDecision) {
        let event = self
            .factory
            .admission_decided(Self::now(), &self.cell_id, spec_hash, decision);
        self.stage(vec![event]);
    }

    /// One event per broker, naming the keys it delivered (never values).
    pub(crate) fn secrets_materialized(
        &mut self,
        delivered: &[(String, &'static str)],
        delivery: SecretDeliveryMode,
    ) {
        let events = self.secret_events(delivered, delivery, false);
        self.stage(events);
    }

    fn secret_events(
        &self,
        delivered: &[(String, &'static str)],
        delivery: SecretDeliveryMode,
        revoked: bool,
    ) -> Vec<CloudEvent> {
        let mut brokers: Vec<&str> = delivered.iter().map(|(_, b)| *b).collect();
        brokers.dedup();
        brokers
            .into_iter()
            .map(|broker| {
                let data = SecretsData {
                    keys: delivered
                        .iter()
                        .filter(|(_, b)| *b == broker)
                        .map(|(k, _)| k.clone())
                        .collect(),
                    broker: broker.to_string(),
                    delivery,
                };
                if revoked {
                    self.factory
                        .secrets_revoked(Self::now(), &self.cell_id, &data)
                } else {
                    self.factory
                        .secrets_materialized(Self::now(), &self.cell_id, &data)
                }
            })
            .collect()
    }

    /// `isolation.enforced` and `lifecycle.started`, durable together before the workload runs.
    pub(crate) fn started(
        &mut self,
        spec_hash: &str,
        isolation: &IsolationReport,
    ) -> Result<(), PortError> {
        let events = vec![
            self.factory
                .isolation_enforced(Self::now(), &self.cell_id, isolation),
            self.factory.lifecycle_started(
                Self::now(),
                &self.cell_id,
                spec_hash,
                &self.run_id,
                isolation,
            ),
        ];
        self.record(events)
    }

    /// `command.completed` plus one `limit.hit` per limit the workload ran into; staged until
    /// the next barrier (exports, or the end of the run).
    pub(crate) fn completed(&mut self, argv: &[String], outcome: &WorkloadOutcome) {
        let mut events =
            vec![self
                .factory
                .command_completed(Self::now(), &self.cell_id, argv, outcome)];
        events.extend(
            outcome
                .limit_hits
                .iter()
                .map(|hit: &LimitHit| self.factory.limit_hit(Self::now(), &self.cell_id, hit)),
        );
        self.stage(events);
    }

    pub(crate) fn export_completed(&mut self, receipt: &ExportReceipt) -> Result<(), PortError> {
        let event = self
            .factory
            .export_completed(Self::now(), &self.cell_id, receipt);
        self.record(vec![event])
    }

    pub(crate) fn export_failed(
        &mut self,
        artifact: &str,
        target_kind: ExportTargetKind,
        target_name: Option<&str>,
        destination: Option<&str>,
        error: &PortError,
    ) -> Result<(), PortError> {
        let data = ExportFailedData {
            artifact: artifact.to_string(),
            target_kind,
            target_name: target_name.map(str::to_string),
            destination: destination.unwrap_or("unresolved").to_string(),
            reason: error.to_string(),
        };
        let event = self
            .factory
            .export_failed(Self::now(), &self.cell_id, &data);
        self.record(vec![event])
    }

    /// The last word on a cell: secrets revoked, lifecycle destroyed, compliance summary —
    /// durable together with everything still staged. `reason` explains a cell that ended before it ran.
    pub(crate) fn finished(
        &mut self,
        revoked: &[(String, &'static str)],
        delivery: SecretDeliveryMode,
        outcome: Outcome,
        teardown: &TeardownReport,
        reason: Option<&str>,
    ) -> Result<(), PortError> {
        let mut events = self.secret_events(revoked, delivery, true);
        events.push(self.factory.lifecycle_destroyed(
            Self::now(),
            &self.run_id,
            outcome,
            teardown,
            reason,
        ));
        self.stage(events);
        // Whatever the cell observed up to its destruction is appended (in time order with
        // the staged events) before the summary that counts it, in one barrier.
        let staged = std::mem::take(&mut self.staged);
        let (sink, factory, observed) = (&self.sink, &self.factory, &self.observed);
        let (cell_id, run_id) = (&self.cell_id, &self.run_id);
        observed.append_with(|seen| {
            let summary = {
                let tally = observed.tally();
                ComplianceSummaryData {
                    run_id: run_id.to_string(),
                    outcome,
                    counts: tally.counts.clone(),
                    residue_free: teardown.residue_free(),
                    event_count: tally.emitted + 1,
                }
            };
            let mut batch = merge_by_time(staged, seen);
            batch.push(factory.compliance_summary(Self::now(), cell_id, &summary));
            sink.emit_batch(batch).map(drop)
        })
    }

    /// Record one event of `kind` about this cell now (durable on return).
    pub(crate) fn record_kind<T: serde::Serialize>(
        &mut self,
        kind: EventKind,
        data: &T,
    ) -> Result<(), PortError> {
        let event = self.factory.build(kind, Self::now(), &self.cell_id, data);
        self.record(vec![event])
    }

    /// Crash reconciliation of one orphaned cell.
    pub(crate) fn gc_reclaimed(&mut self, teardown: &TeardownReport) -> Result<(), PortError> {
        let event = self
            .factory
            .gc_reclaimed(Self::now(), &teardown.removed, teardown);
        self.record(vec![event])
    }
}

/// Merges two time-ordered event lists into one, by their `time` attribute (stable: on equal
/// times, and for unparsable ones, `staged` goes first).
fn merge_by_time(staged: Vec<CloudEvent>, observed: Vec<CloudEvent>) -> Vec<CloudEvent> {
    let at = |e: &CloudEvent| {
        OffsetDateTime::parse(&e.time, &time::format_description::well_known::Rfc3339).ok()
    };
    let mut out = Vec::with_capacity(staged.len() + observed.len());
    let mut observed = observed.into_iter().peekable();
    for event in staged {
        while let Some(next) = observed.peek() {
            match (at(next), at(&event)) {
                (Some(o), Some(s)) if o < s => out.extend(observed.next()),
                _ => break,
            }
        }
        out.push(event);
    }
    out.extend(observed);
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use cellos_core::events::EventFactory;
    use cellos_core::ports::LimitHit;
    use time::Duration;

    use super::*;

    fn at(secs: i64, limit: &str) -> CloudEvent {
        let factory = EventFactory::new("h", "t", Arc::new(|| "id".to_owned()));
        factory.limit_hit(
            OffsetDateTime::UNIX_EPOCH + Duration::milliseconds(secs * 1500),
            "c",
            &LimitHit {
                limit: limit.into(),
                mechanism: "m".into(),
                count: 1,
            },
        )
    }

    #[test]
    fn observed_events_land_between_the_staged_events_around_them() {
        let merged = merge_by_time(
            vec![at(1, "admission"), at(3, "started"), at(5, "completed")],
            vec![at(2, "enforced"), at(4, "dns"), at(6, "summary")],
        );
        let order: Vec<&str> = merged
            .iter()
            .map(|e| e.data["limit"].as_str().unwrap())
            .collect();
        assert_eq!(
            order,
            [
                "admission",
                "enforced",
                "started",
                "dns",
                "completed",
                "summary"
            ]
        );
    }
}

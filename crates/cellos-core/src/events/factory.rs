//! One-line construction of every catalogued event.

use std::sync::Arc;

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

use crate::authority::AuthorityKind;
use crate::policy::AdmissionDecision;
use crate::ports::{
    ExportReceipt, IsolationReport, LimitHit, Residue, TeardownReport, WorkloadOutcome,
};

use super::*;

/// Produces event ids. Core has no randomness, so the composition root injects one
/// (a UUID v4 generator in production, a counter in tests).
pub type IdGenerator = Arc<dyn Fn() -> String + Send + Sync>;

/// Builds events for one emitting component on one host. Every method returns an unsealed
/// [`CloudEvent`]; the sink seals it (sequence, chain, signature) when it is appended.
///
/// The occurrence time is a parameter because core has no clock: callers pass
/// `OffsetDateTime::now_utc()` (or a fixed time in tests).
#[derive(Clone)]
pub struct EventFactory {
    source: String,
    new_id: IdGenerator,
}

impl std::fmt::Debug for EventFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventFactory")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl EventFactory {
    /// Factory whose events have `source` = `//cellos/<hostname>/<component>`.
    pub fn new(hostname: &str, component: &str, new_id: IdGenerator) -> Self {
        Self {
            source: format!("//cellos/{hostname}/{component}"),
            new_id,
        }
    }

    /// The `source` attribute of every event this factory builds.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// An event of `kind` about `cell_id` carrying `data`.
    pub fn build<T: Serialize>(
        &self,
        kind: EventKind,
        time: OffsetDateTime,
        cell_id: &str,
        data: &T,
    ) -> CloudEvent {
        // Every payload in the catalogue is a plain struct with string keys, which serde_json
        // always serializes; the fallback only guards hand-written `Serialize` impls.
        let data = serde_json::to_value(data)
            .unwrap_or_else(|e| serde_json::json!({ "serializationError": e.to_string() }));
        CloudEvent {
            specversion: SPEC_VERSION.to_owned(),
            id: (self.new_id)(),
            source: self.source.clone(),
            ty: kind.as_type().to_owned(),
            subject: Some(cell_subject_urn(cell_id)),
            time: rfc3339(time),
            datacontenttype: DATA_CONTENT_TYPE.to_owned(),
            data,
            cellosactor: None,
            cellosseq: None,
            cellosprev: None,
            celloskid: None,
            cellossig: None,
        }
    }

    pub fn admission_decided(
        &self,
        time: OffsetDateTime,
        cell_id: &str,
        spec_hash: &str,
        decision: &AdmissionDecision,
    ) -> CloudEvent {
        let data = AdmissionDecidedData {
            spec_hash: spec_hash.to_owned(),
            decision: decision.clone(),
        };
        self.build(EventKind::AdmissionDecided, time, cell_id, &data)
    }

    pub fn lifecycle_started(
        &self,
        time: OffsetDateTime,
        cell_id: &str,
        spec_hash: &str,
        run_id: &str,
        isolation: &IsolationReport,
    ) -> CloudEvent {
        let data = LifecycleStartedData {
            spec_hash: spec_hash.to_owned(),
            run_id: run_id.to_owned(),
            isolation: IsolationSummary::from(isolation),
        };
        self.build(EventKind::LifecycleStarted, time, cell_id, &data)
    }

    pub fn lifecycle_destroyed(
        &self,
        time: OffsetDateTime,
        run_id: &str,
        outcome: Outcome,
        teardown: &TeardownReport,
        reason: Option<&str>,
    ) -> CloudEvent {
        let data = LifecycleDestroyedData {
            run_id: run_id.to_owned(),
            outcome,
            terminal_state: TerminalState::of(teardown),
            residue: teardown.residue.clone(),
            unverified: teardown.unverified.clone(),
            reason: reason.map(str::to_owned),
        };
        self.build(
            EventKind::LifecycleDestroyed,
            time,
            &teardown.cell_id,
            &data,
        )
    }

    /// `lifecycle.v1.paused` (`paused`) or `lifecycle.v1.resumed` (not `paused`).
    pub fn lifecycle_frozen(
        &self,
        time: OffsetDateTime,
        cell_id: &str,
        paused: bool,
        mechanism: &str,
    ) -> CloudEvent {
        let kind = if paused {
            EventKind::LifecyclePaused
        } else {
            EventKind::LifecycleResumed
        };
        let data = LifecycleFrozenData {
            mechanism: mechanism.to_owned(),
        };
        self.build(kind, time, cell_id, &data)
    }

    pub fn command_completed(
        &self,
        time: OffsetDateTime,
        cell_id: &str,
        argv: &[String],
        outcome: &WorkloadOutcome,
    ) -> CloudEvent {
        let data = CommandCompletedData::new(argv, outcome);
        self.build(EventKind::CommandCompleted, time, cell_id, &data)
    }

    pub fn isolation_enforced(
        &self,
        time: OffsetDateTime,
        cell_id: &str,
        report: &IsolationReport,
    ) -> CloudEvent {
        self.build(EventKind::IsolationEnforced, time, cell_id, report)
    }

    pub fn limit_hit(&self, time: OffsetDateTime, cell_id: &str, hit: &LimitHit) -> CloudEvent {
        self.build(EventKind::LimitHit, time, cell_id, hit)
    }

    pub fn secrets_materialized(
        &self,
        time: OffsetDateTime,
        cell_id: &str,
        data: &SecretsData,
    ) -> CloudEvent {
        self.build(EventKind::SecretsMaterialized, time, cell_id, data)
    }

    pub fn secrets_revoked(
        &self,
        time: OffsetDateTime,
        cell_id: &str,
        data: &SecretsData,
    ) -> CloudEvent {
        self.build(EventKind::SecretsRevoked, time, cell_id, data)
    }

    pub fn export_completed(
        &self,
        time: OffsetDateTime,
        cell_id: &str,
        receipt: &ExportReceipt,
    ) -> CloudEvent {
        self.build(EventKind::ExportCompleted, time, cell_id, receipt)
    }

    pub fn export_failed(
        &self,
        time: OffsetDateTime,
        cell_id: &str,
        data: &ExportFailedData,
    ) -> CloudEvent {
        self.build(EventKind::ExportFailed, time, cell_id, data)
    }

    pub fn network_enforced(
        &self,
        time: OffsetDateTime,
        cell_id: &str,
        data: &NetworkEnforcedData,
    ) -> CloudEvent {
        self.build(EventKind::NetworkEnforced, time, cell_id, data)
    }

    pub fn network_summary(
        &self,
        time: OffsetDateTime,
        cell_id: &str,
        data: &NetworkSummaryData,
    ) -> CloudEvent {
        self.build(EventKind::NetworkSummary, time, cell_id, data)
    }

    pub fn dns_query_permitted(
        &self,
        time: OffsetDateTime,
        cell_id: &str,
        data: &DnsQueryData,
    ) -> CloudEvent {
        self.build(EventKind::DnsQueryPermitted, time, cell_id, data)
    }

    pub fn dns_query_refused(
        &self,
        time: OffsetDateTime,
        cell_id: &str,
        data: &DnsQueryData,
    ) -> CloudEvent {
        self.build(EventKind::DnsQueryRefused, time, cell_id, data)
    }

    pub fn flow_decided(
        &self,
        time: OffsetDateTime,
        cell_id: &str,
        data: &FlowDecisionData,
    ) -> CloudEvent {
        self.build(EventKind::FlowDecided, time, cell_id, data)
    }

    /// A guest declaration. Its authority is always recorded as [`AuthorityKind::Declared`],
    /// whatever the caller filled in: the guest cannot raise its own trust.
    pub fn telemetry_declared(
        &self,
        time: OffsetDateTime,
        cell_id: &str,
        data: &TelemetryDeclaredData,
    ) -> CloudEvent {
        let data = TelemetryDeclaredData {
            authority: AuthorityKind::Declared,
            ..data.clone()
        };
        self.build(EventKind::TelemetryDeclared, time, cell_id, &data)
    }

    pub fn agent_silenced(
        &self,
        time: OffsetDateTime,
        cell_id: &str,
        data: &AgentSilencedData,
    ) -> CloudEvent {
        self.build(EventKind::AgentSilenced, time, cell_id, data)
    }

    pub fn violation_detected(
        &self,
        time: OffsetDateTime,
        cell_id: &str,
        data: &ViolationData,
    ) -> CloudEvent {
        self.build(EventKind::ViolationDetected, time, cell_id, data)
    }

    /// Host-probe process events carry `Observed` authority whatever the caller passed.
    fn observed_process(
        &self,
        kind: EventKind,
        time: OffsetDateTime,
        cell_id: &str,
        data: &ProcessObservedData,
    ) -> CloudEvent {
        let data = ProcessObservedData {
            authority: AuthorityKind::Observed,
            ..data.clone()
        };
        self.build(kind, time, cell_id, &data)
    }

    /// A process of the cell exec'd, as the host saw it. Authority is always
    /// [`AuthorityKind::Observed`]: only host probes produce these.
    pub fn process_spawned(
        &self,
        time: OffsetDateTime,
        cell_id: &str,
        data: &ProcessObservedData,
    ) -> CloudEvent {
        self.observed_process(EventKind::ProcessSpawned, time, cell_id, data)
    }

    /// A process of the cell exited, as the host saw it (authority `Observed`).
    pub fn process_exited(
        &self,
        time: OffsetDateTime,
        cell_id: &str,
        data: &ProcessObservedData,
    ) -> CloudEvent {
        self.observed_process(EventKind::ProcessExited, time, cell_id, data)
    }

    /// The cell's cgroup counters as the host read them (authority `Observed`).
    pub fn cgroup_sampled(
        &self,
        time: OffsetDateTime,
        cell_id: &str,
        run_id: &str,
        sample: &CgroupSample,
    ) -> CloudEvent {
        let data = CgroupSampledData {
            run_id: run_id.to_owned(),
            sample: *sample,
            authority: AuthorityKind::Observed,
        };
        self.build(EventKind::CgroupSampled, time, cell_id, &data)
    }

    /// The final account of a cell's telemetry channel (authority `Observed`: the host's own
    /// counters).
    pub fn telemetry_reported(
        &self,
        time: OffsetDateTime,
        cell_id: &str,
        data: &TelemetryReportData,
    ) -> CloudEvent {
        let data = TelemetryReportData {
            authority: AuthorityKind::Observed,
            ..data.clone()
        };
        self.build(EventKind::TelemetryReported, time, cell_id, &data)
    }

    pub fn compliance_summary(
        &self,
        time: OffsetDateTime,
        cell_id: &str,
        data: &ComplianceSummaryData,
    ) -> CloudEvent {
        self.build(EventKind::ComplianceSummary, time, cell_id, data)
    }

    /// Crash reconciliation of `teardown.cell_id`: `removed` is what it found and deleted.
    pub fn gc_reclaimed(
        &self,
        time: OffsetDateTime,
        removed: &[Residue],
        teardown: &TeardownReport,
    ) -> CloudEvent {
        let data = GcReclaimedData {
            removed: removed.to_vec(),
            residue: teardown.residue.clone(),
            unverified: teardown.unverified.clone(),
        };
        self.build(EventKind::GcReclaimed, time, &teardown.cell_id, &data)
    }
}

/// RFC 3339 in UTC. RFC 3339 only covers years 0000–9999; an instant outside that range (only
/// a broken clock produces one) is clamped to the nearest representable instant rather than
/// producing an event no CloudEvents reader accepts.
pub(crate) fn rfc3339(time: OffsetDateTime) -> String {
    let utc = time.to_offset(UtcOffset::UTC);
    utc.format(&Rfc3339).unwrap_or_else(|_| {
        if utc.year() < 0 {
            "0000-01-01T00:00:00Z".to_owned()
        } else {
            "9999-12-31T23:59:59.999999999Z".to_owned()
        }
    })
}

//! Counting what happened to a cell, for the compliance summary and the projection.

use serde::{Deserialize, Serialize};

use super::{CloudEvent, EventKind};

/// Counts of every kind of evidence recorded for one cell. Built by observing the cell's
/// events, so the summary a supervisor emits and the state a projector rebuilds agree.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComplianceCounts {
    pub admission_denials: u64,
    pub isolation_reports: u64,
    pub limit_hits: u64,
    pub secrets_materialized: u64,
    pub secrets_revoked: u64,
    pub exports_completed: u64,
    pub exports_failed: u64,
    pub network_rulesets: u64,
    pub dns_permitted: u64,
    pub dns_refused: u64,
    pub flows_allowed: u64,
    pub flows_denied: u64,
    pub declarations: u64,
    pub agent_silenced: u64,
    pub violations: u64,
    pub discrepancies: u64,
    /// Host-observed execs and exits of the cell's processes.
    #[serde(default)]
    pub processes_spawned: u64,
    #[serde(default)]
    pub processes_exited: u64,
}

impl ComplianceCounts {
    /// Count `event` (events of other kinds, and summaries themselves, are ignored).
    pub fn observe(&mut self, event: &CloudEvent) {
        let Some(kind) = event.kind() else { return };
        let field = |name: &str| event.data.get(name).and_then(|v| v.as_str());
        match kind {
            EventKind::AdmissionDecided => {
                let verdict = event.data.get("decision").and_then(|d| d.get("verdict"));
                if verdict.and_then(|v| v.as_str()) == Some("deny") {
                    self.admission_denials += 1;
                }
            }
            EventKind::IsolationEnforced => self.isolation_reports += 1,
            EventKind::LimitHit => self.limit_hits += 1,
            EventKind::SecretsMaterialized => self.secrets_materialized += 1,
            EventKind::SecretsRevoked => self.secrets_revoked += 1,
            EventKind::ExportCompleted => self.exports_completed += 1,
            EventKind::ExportFailed => self.exports_failed += 1,
            EventKind::NetworkEnforced => self.network_rulesets += 1,
            EventKind::DnsQueryPermitted => self.dns_permitted += 1,
            EventKind::DnsQueryRefused => self.dns_refused += 1,
            EventKind::FlowDecided => match field("decision") {
                Some("allow") => self.flows_allowed += 1,
                _ => self.flows_denied += 1,
            },
            EventKind::TelemetryDeclared => self.declarations += 1,
            EventKind::AgentSilenced => self.agent_silenced += 1,
            EventKind::ViolationDetected => match field("kind") {
                Some("discrepancy") => self.discrepancies += 1,
                _ => self.violations += 1,
            },
            EventKind::ProcessSpawned => self.processes_spawned += 1,
            EventKind::ProcessExited => self.processes_exited += 1,
            EventKind::CgroupSampled
            | EventKind::TelemetryReported
            | EventKind::LifecycleStarted
            | EventKind::LifecycleDestroyed
            | EventKind::LifecyclePaused
            | EventKind::LifecycleResumed
            | EventKind::CommandCompleted
            | EventKind::NetworkSummary
            | EventKind::ComplianceSummary
            | EventKind::GcReclaimed
            | EventKind::ExecStarted
            | EventKind::ExecCompleted
            | EventKind::FileWritten
            | EventKind::FileRead
            | EventKind::FileRemoved => {}
        }
    }
}

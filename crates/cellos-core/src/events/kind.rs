//! The catalogue of event types: one variant per `type` string CellOS emits.

/// Common prefix of every CellOS event type.
pub const TYPE_PREFIX: &str = "dev.cellos.events.cell.";

/// Every event type in the catalogue. The `type` string is
/// `dev.cellos.events.cell.<family>.v1.<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    AdmissionDecided,
    LifecycleStarted,
    LifecycleDestroyed,
    LifecyclePaused,
    LifecycleResumed,
    CommandCompleted,
    IsolationEnforced,
    LimitHit,
    SecretsMaterialized,
    SecretsRevoked,
    ExportCompleted,
    ExportFailed,
    NetworkEnforced,
    NetworkSummary,
    DnsQueryPermitted,
    DnsQueryRefused,
    FlowDecided,
    TelemetryDeclared,
    AgentSilenced,
    ViolationDetected,
    ProcessSpawned,
    ProcessExited,
    CgroupSampled,
    TelemetryReported,
    ComplianceSummary,
    GcReclaimed,
    ExecStarted,
    ExecCompleted,
    FileWritten,
    FileRead,
    FileRemoved,
}

impl EventKind {
    /// Every kind, in catalogue order.
    pub const ALL: [EventKind; 31] = [
        EventKind::AdmissionDecided,
        EventKind::LifecycleStarted,
        EventKind::LifecycleDestroyed,
        EventKind::LifecyclePaused,
        EventKind::LifecycleResumed,
        EventKind::CommandCompleted,
        EventKind::IsolationEnforced,
        EventKind::LimitHit,
        EventKind::SecretsMaterialized,
        EventKind::SecretsRevoked,
        EventKind::ExportCompleted,
        EventKind::ExportFailed,
        EventKind::NetworkEnforced,
        EventKind::NetworkSummary,
        EventKind::DnsQueryPermitted,
        EventKind::DnsQueryRefused,
        EventKind::FlowDecided,
        EventKind::TelemetryDeclared,
        EventKind::AgentSilenced,
        EventKind::ViolationDetected,
        EventKind::ProcessSpawned,
        EventKind::ProcessExited,
        EventKind::CgroupSampled,
        EventKind::TelemetryReported,
        EventKind::ComplianceSummary,
        EventKind::GcReclaimed,
        EventKind::ExecStarted,
        EventKind::ExecCompleted,
        EventKind::FileWritten,
        EventKind::FileRead,
        EventKind::FileRemoved,
    ];

    /// The full CloudEvents `type` string.
    pub const fn as_type(self) -> &'static str {
        match self {
            EventKind::AdmissionDecided => "dev.cellos.events.cell.admission.v1.decided",
            EventKind::LifecycleStarted => "dev.cellos.events.cell.lifecycle.v1.started",
            EventKind::LifecycleDestroyed => "dev.cellos.events.cell.lifecycle.v1.destroyed",
            EventKind::LifecyclePaused => "dev.cellos.events.cell.lifecycle.v1.paused",
            EventKind::LifecycleResumed => "dev.cellos.events.cell.lifecycle.v1.resumed",
            EventKind::CommandCompleted => "dev.cellos.events.cell.command.v1.completed",
            EventKind::IsolationEnforced => "dev.cellos.events.cell.isolation.v1.enforced",
            EventKind::LimitHit => "dev.cellos.events.cell.limit.v1.hit",
            EventKind::SecretsMaterialized => "dev.cellos.events.cell.secrets.v1.materialized",
            EventKind::SecretsRevoked => "dev.cellos.events.cell.secrets.v1.revoked",
            EventKind::ExportCompleted => "dev.cellos.events.cell.export.v1.completed",
            EventKind::ExportFailed => "dev.cellos.events.cell.export.v1.failed",
            EventKind::NetworkEnforced => "dev.cellos.events.cell.network.v1.enforced",
            EventKind::NetworkSummary => "dev.cellos.events.cell.network.v1.summary",
            EventKind::DnsQueryPermitted => "dev.cellos.events.cell.dns.v1.permitted",
            EventKind::DnsQueryRefused => "dev.cellos.events.cell.dns.v1.refused",
            EventKind::FlowDecided => "dev.cellos.events.cell.flow.v1.decided",
            EventKind::TelemetryDeclared => "dev.cellos.events.cell.telemetry.v1.declared",
            EventKind::AgentSilenced => "dev.cellos.events.cell.telemetry.v1.agent_silenced",
            EventKind::ViolationDetected => "dev.cellos.events.cell.violation.v1.detected",
            EventKind::ProcessSpawned => "dev.cellos.events.cell.process.v1.spawned",
            EventKind::ProcessExited => "dev.cellos.events.cell.process.v1.exited",
            EventKind::CgroupSampled => "dev.cellos.events.cell.telemetry.v1.cgroup_sampled",
            EventKind::TelemetryReported => "dev.cellos.events.cell.telemetry.v1.reported",
            EventKind::ComplianceSummary => "dev.cellos.events.cell.compliance.v1.summary",
            EventKind::GcReclaimed => "dev.cellos.events.cell.gc.v1.reclaimed",
            EventKind::ExecStarted => "dev.cellos.events.cell.exec.v1.started",
            EventKind::ExecCompleted => "dev.cellos.events.cell.exec.v1.completed",
            EventKind::FileWritten => "dev.cellos.events.cell.file.v1.written",
            EventKind::FileRead => "dev.cellos.events.cell.file.v1.read",
            EventKind::FileRemoved => "dev.cellos.events.cell.file.v1.removed",
        }
    }

    /// The kind named by a CloudEvents `type` string, if it is in the catalogue.
    pub fn from_type(ty: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_type() == ty)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_type())
    }
}

//! Typed `data` of every event family. Field names are camelCase on the wire.
//!
//! Payloads state what was *enforced* and by which mechanism, never only what was asked, and
//! never carry secret values.

use serde::{Deserialize, Serialize};

use crate::authority::AuthorityKind;
use crate::policy::AdmissionDecision;
use crate::ports::{
    IsolationReport, Residue, TeardownReport, UnverifiedResidue, WorkloadExit, WorkloadOutcome,
};
use crate::spec::{ExportTargetKind, SecretDeliveryMode};

use super::ComplianceCounts;

/// `admission.v1.decided`: the policy decision for a spec, with every reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionDecidedData {
    /// SHA-256 of the canonical spec that was judged.
    pub spec_hash: String,
    pub decision: AdmissionDecision,
}

/// The part of an [`IsolationReport`] worth repeating on `lifecycle.v1.started`; the full
/// report travels on `isolation.v1.enforced`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IsolationSummary {
    pub backend: String,
    pub namespaces: Vec<String>,
    pub rootfs: String,
    pub cgroup_version: String,
    pub seccomp_profile: String,
    pub landlock_abi: Option<u32>,
    pub network: String,
}

impl From<&IsolationReport> for IsolationSummary {
    fn from(report: &IsolationReport) -> Self {
        Self {
            backend: report.backend.clone(),
            namespaces: report.namespaces.clone(),
            rootfs: report.rootfs.clone(),
            cgroup_version: report.cgroup_version.clone(),
            seccomp_profile: report.seccomp_profile.clone(),
            landlock_abi: report.landlock_abi,
            network: report.network.clone(),
        }
    }
}

/// `lifecycle.v1.started`: the cell exists and its workload is about to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleStartedData {
    pub spec_hash: String,
    pub run_id: String,
    pub isolation: IsolationSummary,
}

/// Whether the cell did what it was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    Succeeded,
    Failed,
}

/// How teardown left the cell. Only `Clean` and `Forced` mean the residue check ran in full
/// and found nothing; the other two say why the host may still hold part of the cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TerminalState {
    /// Every process had exited before teardown, and nothing is left.
    Clean,
    /// Teardown had to kill processes, and nothing is left.
    Forced,
    /// Part of the residue check could not run (see `unverified`); nothing it could check
    /// is left.
    Unverified,
    /// The residue check found something left (see `residue`).
    Residue,
}

impl TerminalState {
    /// The state `teardown` left: found residue outranks unchecked classes, which outrank
    /// how the processes ended.
    pub fn of(teardown: &TeardownReport) -> Self {
        if !teardown.residue.is_empty() {
            TerminalState::Residue
        } else if !teardown.unverified.is_empty() {
            TerminalState::Unverified
        } else if teardown.forced {
            TerminalState::Forced
        } else {
            TerminalState::Clean
        }
    }
}

/// `lifecycle.v1.destroyed`: teardown finished; `residue` lists what the check still found,
/// `unverified` the classes it could not check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleDestroyedData {
    pub run_id: String,
    pub outcome: Outcome,
    pub terminal_state: TerminalState,
    pub residue: Vec<Residue>,
    #[serde(default)]
    pub unverified: Vec<UnverifiedResidue>,
    /// Why a cell ended before its workload ran (admission passed but secrets, create or
    /// evidence failed); absent for cells that ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `lifecycle.v1.paused` and `lifecycle.v1.resumed`: every process of the cell was frozen or
/// thawed; `mechanism` names the freezer that did it (e.g. `cgroup v2 cgroup.freeze`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleFrozenData {
    pub mechanism: String,
}

/// `command.v1.completed`: how the workload ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandCompletedData {
    pub argv: Vec<String>,
    /// Exit status when the workload exited by itself.
    pub exit_code: Option<i32>,
    /// Signal that ended the workload, when one did.
    pub signal: Option<i32>,
    pub duration_ms: u64,
    /// Why the workload never started, when it did not.
    pub spawn_error: Option<String>,
    pub timed_out: bool,
    /// The limit (`timeoutMs` or `ttlSeconds`) that ran out, when `timedOut`.
    pub timeout_limit: Option<String>,
}

impl CommandCompletedData {
    /// Payload describing `outcome` of running `argv`.
    pub fn new(argv: &[String], outcome: &WorkloadOutcome) -> Self {
        let (exit_code, signal, spawn_error, timeout_limit) = match &outcome.exit {
            WorkloadExit::Exited { code } => (Some(*code), None, None, None),
            WorkloadExit::Signaled { signal } => (None, Some(*signal), None, None),
            WorkloadExit::TimedOut { limit } => (None, None, None, Some(limit.clone())),
            WorkloadExit::SpawnFailed { reason } => (None, None, Some(reason.clone()), None),
        };
        Self {
            argv: argv.to_vec(),
            exit_code,
            signal,
            duration_ms: u64::try_from(outcome.duration.as_millis()).unwrap_or(u64::MAX),
            spawn_error,
            timed_out: timeout_limit.is_some(),
            timeout_limit,
        }
    }
}

/// `secrets.v1.materialized` / `secrets.v1.revoked`: which keys, never their values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretsData {
    pub keys: Vec<String>,
    /// Broker name (`file`, `env`, ...).
    pub broker: String,
    pub delivery: SecretDeliveryMode,
}

/// `export.v1.failed`: an artifact that did not reach its destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportFailedData {
    pub artifact: String,
    pub target_kind: ExportTargetKind,
    pub target_name: Option<String>,
    pub destination: String,
    pub reason: String,
}

/// `network.v1.enforced`: the egress ruleset installed for the cell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkEnforcedData {
    /// SHA-256 of the ruleset as loaded into the kernel.
    pub ruleset_sha256: String,
    /// e.g. `nftables inet table in cell netns`.
    pub mechanism: String,
    pub allowed_hosts: Vec<String>,
}

/// `network.v1.summary`: a networked cell's egress totals, read when it is destroyed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSummaryData {
    /// New flows the kernel let out (DNS authority, CIDR rules, DNS-pinned addresses).
    pub flows_allowed: u64,
    /// Packets of connection attempts the kernel dropped.
    pub flows_denied: u64,
    /// Of those, attempts towards denied ranges (private, link-local, the host, ...).
    pub denied_range: u64,
    /// Bytes the cell sent on allowed flows.
    pub bytes_out: u64,
    /// Bytes the cell received on allowed flows.
    pub bytes_in: u64,
    /// Flows the L7 gate let through, and the ones it refused (SNI/Host mismatch, ...).
    pub gate_allowed: u64,
    pub gate_denied: u64,
    pub dns_permitted: u64,
    pub dns_refused: u64,
    /// Queries that were not parseable DNS (dropped unanswered).
    pub dns_malformed: u64,
    /// Answer records dropped because they pointed into a denied range (rebinding).
    pub dns_rebinding_dropped: u64,
    pub dns_upstream_failures: u64,
    /// Query events not reported one by one because of the rate limit (still counted above).
    pub dns_events_coalesced: u64,
    /// Where the numbers come from.
    pub mechanism: String,
}

/// `dns.v1.permitted` / `dns.v1.refused`: one query the DNS proxy answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DnsQueryData {
    pub name: String,
    /// Record type, e.g. `A`, `AAAA`, `TXT`.
    pub query_type: String,
    pub answer_count: u32,
    /// Why the query was refused (or which allow-list entry matched).
    pub reason: Option<String>,
}

/// Whether a flow was let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FlowVerdict {
    Allow,
    Deny,
}

/// `flow.v1.decided`: one connection attempt and what the host did with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowDecisionData {
    pub dst: String,
    pub port: u16,
    /// `tcp`, `udp`, `icmp`, ...
    pub protocol: String,
    pub decision: FlowVerdict,
    pub reason: String,
    pub authority: AuthorityKind,
}

/// `telemetry.v1.declared`: a guest declaration with host-stamped attribution. The guest's
/// own content is kept verbatim in `declaration` and always typed [`AuthorityKind::Declared`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TelemetryDeclaredData {
    /// Host-stamped: set by the receiver, whatever the guest sent.
    pub run_id: String,
    pub spec_hash: String,
    /// RFC 3339 time the host received the frame.
    pub host_received_at: String,
    pub probe_source: String,
    pub guest_pid: Option<u32>,
    pub guest_comm: Option<String>,
    pub guest_monotonic_ns: Option<u64>,
    pub authority: AuthorityKind,
    pub declaration: serde_json::Value,
}

/// `telemetry.v1.agent_silenced`: the in-cell agent stopped talking within the keep-alive window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentSilencedData {
    pub run_id: String,
    pub window_ms: u64,
    /// RFC 3339 time the last frame arrived, if any did.
    pub last_seen: Option<String>,
}

/// What kind of finding a violation event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ViolationKind {
    /// Evidence disagrees with itself (e.g. the guest declared a host the spec never granted).
    Discrepancy,
    /// A rule was broken (e.g. residue after teardown, a denied syscall).
    Violation,
}

/// `violation.v1.detected`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ViolationData {
    pub kind: ViolationKind,
    /// Short name of the rule or invariant, e.g. `declaredSubsetOfSpec`.
    pub rule: String,
    pub detail: String,
    pub authority: AuthorityKind,
}

/// `compliance.v1.summary`: the last word on a cell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComplianceSummaryData {
    pub run_id: String,
    pub outcome: Outcome,
    pub counts: ComplianceCounts,
    /// True when the residue check after teardown ran in full and found nothing.
    pub residue_free: bool,
    /// Events emitted for this cell before the summary.
    pub event_count: u64,
}

/// `gc.v1.reclaimed`: what crash reconciliation removed of a dead run, and what remains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GcReclaimedData {
    pub removed: Vec<Residue>,
    pub residue: Vec<Residue>,
    #[serde(default)]
    pub unverified: Vec<UnverifiedResidue>,
}

/// `exec.v1.started`: a command started inside a running cell, and who asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecStartedData {
    pub exec_id: String,
    pub argv: Vec<String>,
    pub tty: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    pub caller: String,
}

/// `exec.v1.completed`: how an exec ended and what it wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecCompletedData {
    pub exec_id: String,
    pub argv: Vec<String>,
    /// The status a shell would report (124 after a timeout, 127 when it could not start).
    pub status: i32,
    pub exit: crate::session::ExecExit,
    pub timed_out: bool,
    pub killed: bool,
    /// Who killed it before it ended: a caller, or `system:*` for the cell's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub killed_by: Option<String>,
    pub duration_ms: u64,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    /// Who started it.
    pub caller: String,
}

/// `file.v1.written` / `file.v1.read`: a file moved into or out of a running cell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileTransferData {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub caller: String,
}

/// `file.v1.removed`: a path removed from a running cell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileRemovedData {
    pub path: String,
    pub recursive: bool,
    pub caller: String,
}

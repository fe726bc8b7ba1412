//! Projection: folding an event log into per-cell state.
//!
//! The log is the source of truth; every view of a cell (`cellos ps`, the HTTP API) is this
//! fold over it. Applying an event twice changes nothing (events are keyed by source and id),
//! so a projector can replay a log or a stream that redelivers.

use std::collections::{BTreeMap, HashSet};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::events::{
    AdmissionDecidedData, CgroupSample, CgroupSampledData, CloudEvent, CommandCompletedData,
    ComplianceCounts, ComplianceSummaryData, EventKind, ExecStartedData, ExportFailedData,
    GcReclaimedData, IsolationSummary, LifecycleDestroyedData, LifecycleFrozenData,
    LifecycleStartedData, NetworkEnforcedData, Outcome, ProcessObservedData, TelemetryReportData,
    TerminalState, ViolationData,
};
use crate::policy::Verdict;
use crate::ports::{
    ExportReceipt, IsolationReport, LimitEnforcement, LimitHit, Residue, UnverifiedResidue,
};

/// Where a cell is in its life. Ordered: a cell only moves forward, so replaying an older
/// event never moves it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    Admitted,
    Denied,
    Running,
    Completed,
    Exported,
    Destroyed,
}

/// When each step happened (RFC 3339, from the events' `time`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CellTimings {
    /// First event seen for the cell.
    pub created: Option<String>,
    pub started: Option<String>,
    pub completed: Option<String>,
    pub destroyed: Option<String>,
}

/// Most process argv0s a cell's view keeps; the rest are only counted (a fork bomb must not
/// grow every projection without bound).
pub const MAX_PROJECTED_PROCESSES: usize = 256;

/// What the cell's telemetry recorded: host-observed processes, the latest cgroup reading and
/// the channel's final account. Declaration and silence counts are in [`CellState::counts`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TelemetryView {
    /// argv0 of each host-observed exec, in log order (at most [`MAX_PROJECTED_PROCESSES`];
    /// `counts.processesSpawned` has them all).
    pub spawned: Vec<String>,
    pub last_cgroup_sample: Option<CgroupSample>,
    pub report: Option<TelemetryReportData>,
}

/// Everything the log says about one cell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CellState {
    pub cell_id: String,
    pub phase: Phase,
    pub run_id: Option<String>,
    pub spec_hash: Option<String>,
    pub verdict: Option<Verdict>,
    pub timings: CellTimings,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    /// Whether the last pause was not yet followed by a resume (a phase of its own would
    /// break the forward-only order of [`Phase`]).
    pub paused: bool,
    /// Execs started in the cell (`exec.v1.started`).
    #[serde(default)]
    pub execs: u64,
    /// The freezer of the last pause or resume.
    pub freezer: Option<String>,
    pub spawn_error: Option<String>,
    pub duration_ms: Option<u64>,
    pub isolation_summary: Option<IsolationSummary>,
    pub isolation: Option<IsolationReport>,
    /// Limits as enforced, each with its mechanism.
    pub limits: Vec<LimitEnforcement>,
    pub network: Option<NetworkEnforcedData>,
    pub exports: Vec<ExportReceipt>,
    pub export_failures: Vec<ExportFailedData>,
    pub limit_hits: Vec<LimitHit>,
    pub violations: Vec<ViolationData>,
    pub telemetry: TelemetryView,
    pub outcome: Option<Outcome>,
    pub terminal_state: Option<TerminalState>,
    /// What the last residue check (teardown or reclaim) still found.
    pub residue: Vec<Residue>,
    /// Residue classes the last check could not look for.
    pub unverified: Vec<UnverifiedResidue>,
    pub counts: ComplianceCounts,
    pub summary: Option<ComplianceSummaryData>,
    /// Events applied to this cell.
    pub events: u64,
    /// Highest `cellosseq` applied, when events were sealed.
    pub last_seq: Option<u64>,
    /// Catalogued events whose `data` did not have the expected shape.
    pub undecodable_events: u64,
}

impl CellState {
    fn new(cell_id: &str) -> Self {
        Self {
            cell_id: cell_id.to_owned(),
            phase: Phase::Admitted,
            run_id: None,
            spec_hash: None,
            verdict: None,
            timings: CellTimings::default(),
            exit_code: None,
            signal: None,
            timed_out: false,
            paused: false,
            execs: 0,
            freezer: None,
            spawn_error: None,
            duration_ms: None,
            isolation_summary: None,
            isolation: None,
            limits: Vec::new(),
            network: None,
            exports: Vec::new(),
            export_failures: Vec::new(),
            limit_hits: Vec::new(),
            violations: Vec::new(),
            telemetry: TelemetryView::default(),
            outcome: None,
            terminal_state: None,
            residue: Vec::new(),
            unverified: Vec::new(),
            counts: ComplianceCounts::default(),
            summary: None,
            events: 0,
            last_seq: None,
            undecodable_events: 0,
        }
    }

    fn advance(&mut self, phase: Phase) {
        self.phase = self.phase.max(phase);
    }

    fn apply(&mut self, kind: EventKind, event: &CloudEvent) -> Result<(), serde_json::Error> {
        self.events += 1;
        self.last_seq = self.last_seq.max(event.cellosseq);
        self.counts.observe(event);
        if self.timings.created.is_none() {
            self.timings.created = Some(event.time.clone());
        }
        let time = || Some(event.time.clone());
        match kind {
            EventKind::AdmissionDecided => {
                let data: AdmissionDecidedData = decode(event)?;
                self.spec_hash = Some(data.spec_hash);
                self.verdict = Some(data.decision.verdict);
                self.advance(match data.decision.verdict {
                    Verdict::Deny => Phase::Denied,
                    Verdict::Admit | Verdict::AuditOnly => Phase::Admitted,
                });
            }
            EventKind::LifecycleStarted => {
                let data: LifecycleStartedData = decode(event)?;
                self.spec_hash = Some(data.spec_hash);
                self.run_id = Some(data.run_id);
                self.isolation_summary = Some(data.isolation);
                self.timings.started = time();
                self.advance(Phase::Running);
            }
            EventKind::IsolationEnforced => {
                let report: IsolationReport = decode(event)?;
                self.limits = report.limits.clone();
                self.isolation = Some(report);
            }
            EventKind::CommandCompleted => {
                let data: CommandCompletedData = decode(event)?;
                self.exit_code = data.exit_code;
                self.signal = data.signal;
                self.timed_out = data.timed_out;
                self.spawn_error = data.spawn_error;
                self.duration_ms = Some(data.duration_ms);
                self.timings.completed = time();
                self.advance(Phase::Completed);
            }
            EventKind::LimitHit => self.limit_hits.push(decode(event)?),
            EventKind::ExportCompleted => {
                self.exports.push(decode(event)?);
                self.advance(Phase::Exported);
            }
            EventKind::ExportFailed => self.export_failures.push(decode(event)?),
            EventKind::NetworkEnforced => self.network = Some(decode(event)?),
            EventKind::ViolationDetected => self.violations.push(decode(event)?),
            EventKind::LifecycleDestroyed => {
                self.paused = false;
                let data: LifecycleDestroyedData = decode(event)?;
                self.outcome = Some(data.outcome);
                self.terminal_state = Some(data.terminal_state);
                self.residue = data.residue;
                self.unverified = data.unverified;
                self.timings.destroyed = time();
                self.advance(Phase::Destroyed);
            }
            EventKind::LifecyclePaused | EventKind::LifecycleResumed => {
                let data: LifecycleFrozenData = decode(event)?;
                self.paused = kind == EventKind::LifecyclePaused;
                self.freezer = Some(data.mechanism);
            }
            EventKind::GcReclaimed => {
                let data: GcReclaimedData = decode(event)?;
                self.residue = data.residue;
                self.unverified = data.unverified;
                if self.timings.destroyed.is_none() {
                    self.timings.destroyed = time();
                }
                self.advance(Phase::Destroyed);
            }
            EventKind::ComplianceSummary => self.summary = Some(decode(event)?),
            EventKind::ExecStarted => {
                let _: ExecStartedData = decode(event)?;
                self.execs += 1;
            }
            EventKind::ExecCompleted
            | EventKind::FileWritten
            | EventKind::FileRead
            | EventKind::FileRemoved => {}
            EventKind::ProcessSpawned => {
                let data: ProcessObservedData = decode(event)?;
                if self.telemetry.spawned.len() < MAX_PROJECTED_PROCESSES {
                    self.telemetry.spawned.push(data.argv0);
                }
            }
            EventKind::ProcessExited => {
                let _: ProcessObservedData = decode(event)?;
            }
            EventKind::CgroupSampled => {
                let data: CgroupSampledData = decode(event)?;
                self.telemetry.last_cgroup_sample = Some(data.sample);
            }
            EventKind::TelemetryReported => self.telemetry.report = Some(decode(event)?),
            EventKind::SecretsMaterialized
            | EventKind::SecretsRevoked
            | EventKind::DnsQueryPermitted
            | EventKind::DnsQueryRefused
            | EventKind::FlowDecided
            | EventKind::NetworkSummary
            | EventKind::TelemetryDeclared
            | EventKind::AgentSilenced => {}
        }
        Ok(())
    }
}

fn decode<T: DeserializeOwned>(event: &CloudEvent) -> Result<T, serde_json::Error> {
    T::deserialize(&event.data)
}

/// Incremental projector: apply events as they arrive, read [`Projector::cells`] any time.
#[derive(Debug, Clone, Default)]
pub struct Projector {
    cells: BTreeMap<String, CellState>,
    seen: HashSet<(String, String)>,
}

impl Projector {
    pub fn new() -> Self {
        Self::default()
    }

    /// Apply `event`. Returns false when it was ignored: already applied (same source and
    /// id), not about a cell, or not in the catalogue.
    pub fn apply(&mut self, event: &CloudEvent) -> bool {
        let (Some(kind), Some(cell_id)) = (event.kind(), event.cell_id()) else {
            return false;
        };
        if !self.seen.insert((event.source.clone(), event.id.clone())) {
            return false;
        }
        let cell = self
            .cells
            .entry(cell_id.to_owned())
            .or_insert_with(|| CellState::new(cell_id));
        if cell.apply(kind, event).is_err() {
            cell.undecodable_events += 1;
        }
        true
    }

    pub fn cells(&self) -> &BTreeMap<String, CellState> {
        &self.cells
    }

    pub fn into_cells(self) -> BTreeMap<String, CellState> {
        self.cells
    }
}

/// Fold `events` into per-cell state, keyed by cell id.
pub fn project<'a>(
    events: impl IntoIterator<Item = &'a CloudEvent>,
) -> BTreeMap<String, CellState> {
    let mut projector = Projector::new();
    for event in events {
        projector.apply(event);
    }
    projector.into_cells()
}

//! Payloads of what the host itself observed of a running cell (processes, cgroup counters) and
//! of the final account of its telemetry channel.
//!
//! These are `Observed` evidence: the host read them from the kernel (proc connector, cgroup
//! files, its own receiver's counters), the cell could not write them. Guest declarations are
//! in [`super::TelemetryDeclaredData`] and stay `Declared`.

use serde::{Deserialize, Serialize};

use crate::authority::AuthorityKind;

/// `process.v1.spawned` / `process.v1.exited`: one process of the cell, as the host saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessObservedData {
    /// Host pid.
    pub pid: u32,
    /// The pid inside the cell's pid namespace, when the process still existed to be read.
    pub ns_pid: Option<u32>,
    /// argv\[0\] of the exec (for an exit: of its last exec).
    pub argv0: String,
    /// Exit only.
    pub exit_code: Option<i32>,
    /// Exit only: the terminating signal.
    pub signal: Option<i32>,
    /// How the host knows, e.g. `netlink proc connector, cgroup-filtered`.
    pub mechanism: String,
    pub authority: AuthorityKind,
}

/// One reading of a cell's cgroup counters. `None` where the hierarchy has no such file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CgroupSample {
    pub memory_bytes: Option<u64>,
    pub memory_peak_bytes: Option<u64>,
    /// OOM kills in the cell (v1 `memory.oom_control oom_kill`, v2 `memory.events oom_kill`).
    pub oom_kills: Option<u64>,
    pub pids: Option<u64>,
    /// Forks refused by `pids.max` (`pids.events max`).
    pub pids_max_hits: Option<u64>,
    /// Memory pressure, `some avg10` ×100 (v2 only).
    pub memory_pressure_some_avg10_centi: Option<u64>,
    /// CPU pressure, `some avg10` ×100 (v2 only).
    pub cpu_pressure_some_avg10_centi: Option<u64>,
}

/// `telemetry.v1.cgroup_sampled`: the cell's cgroup counters, read by the host during the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CgroupSampledData {
    pub run_id: String,
    #[serde(flatten)]
    pub sample: CgroupSample,
    pub authority: AuthorityKind,
}

/// Counters of one cell's telemetry receiver. Every complete frame is counted exactly once in
/// one of `delivered`, `keepalives`, `rate_limited`, `queue_full`, `malformed`,
/// `version_rejected`; truncated tails (a connection closed mid-frame) count as `malformed`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiverCounters {
    /// Complete frames read (plus truncated tails).
    pub frames: u64,
    /// Declarations queued for the supervisor.
    pub delivered: u64,
    /// Keep-alive frames (they feed the tracker and are not queued).
    pub keepalives: u64,
    /// Frames over the cell's rate, dropped undecoded.
    pub rate_limited: u64,
    /// Declarations dropped because the supervisor's queue was full.
    pub queue_full: u64,
    /// Frames that failed framing or decoding.
    pub malformed: u64,
    /// Frames of an unknown major version.
    pub version_rejected: u64,
    /// Attribution and unknown keys dropped from otherwise valid frames.
    pub dropped_keys: u64,
    /// Silence reports dropped because the supervisor's queue stayed full until shutdown.
    pub silences_lost: u64,
    pub connections: u64,
    /// Connections closed at once because the cell had too many open.
    pub connections_refused: u64,
    /// Connections closed because of a framing error.
    pub connections_closed_malformed: u64,
}

impl ReceiverCounters {
    /// Frames that passed every check.
    pub fn accepted(&self) -> u64 {
        self.delivered + self.keepalives
    }

    /// Valid-looking frames dropped for load (rate limit or full queue).
    pub fn dropped(&self) -> u64 {
        self.rate_limited + self.queue_full
    }
}

/// Counters of one cell's host process probe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeCounters {
    /// Exec events of the cell's processes reported.
    pub execs: u64,
    pub exits: u64,
    /// Exec events whose process was gone before its cgroup could be read (it cannot be
    /// attributed to any cell).
    pub unattributable: u64,
    /// Observations dropped because the supervisor's queue was full.
    pub queue_full: u64,
    /// Times the kernel reported lost events (socket buffer overrun).
    pub overruns: u64,
}

/// `telemetry.v1.reported`: the final account of a cell's telemetry at teardown — what the
/// receiver accepted, dropped and rejected (and why), and what the host probe saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TelemetryReportData {
    pub run_id: String,
    pub receiver: ReceiverCounters,
    pub probe: Option<ProbeCounters>,
    /// The most recent reasons frames were rejected (oldest first).
    pub rejections: Vec<String>,
    pub last_cgroup_sample: Option<CgroupSample>,
    pub authority: AuthorityKind,
}

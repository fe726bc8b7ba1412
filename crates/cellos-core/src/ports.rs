//! Ports: the traits the rest of CellOS implements, and the values that cross them.
//!
//! The ports are synchronous on purpose. The run path is latency-critical (a cell should start
//! as fast as bubblewrap) and every host operation behind it is a blocking syscall; adapters that
//! need an async runtime (NATS, HTTP export) own one internally instead of forcing one on the
//! supervisor. Everything here is `Send + Sync` so adapters can be shared across threads.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::events::{CloudEvent, EventFactory};
use crate::session::{ExecExit, ExecRequest, FileEntry, FileStat, FileWritten, PtySize};
use crate::spec::{ExecutionCellSpec, ExportTargetKind, SecretDeliveryMode};

/// Error returned across a port. `kind` lets the supervisor map failures to exit codes and
/// events without string matching; `message` names the field or kernel feature and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct PortError {
    pub kind: PortErrorKind,
    pub message: String,
}

impl PortError {
    pub fn new(kind: PortErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortErrorKind {
    /// The host lacks a kernel feature a requested protection needs (fail closed).
    MissingFeature,
    /// The spec asked for something this adapter refuses (escape, bad path, ...).
    Refused,
    /// A named thing does not exist (secret, artifact, cell).
    NotFound,
    /// An I/O or system call failed.
    Io,
    /// A limit was exceeded (event too large, ...).
    TooLarge,
}

impl std::fmt::Display for PortErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PortErrorKind::MissingFeature => "missing kernel feature",
            PortErrorKind::Refused => "refused",
            PortErrorKind::NotFound => "not found",
            PortErrorKind::Io => "i/o error",
            PortErrorKind::TooLarge => "too large",
        })
    }
}

/// Append-only, durable event stream.
pub trait EventSink: Send + Sync {
    /// Seal (chain + sign) and durably append `event`. Returns the event as stored, with its
    /// integrity attributes. Must not return before the event is durable.
    fn emit(&self, event: CloudEvent) -> Result<CloudEvent, PortError>;

    /// Append several events with one durability barrier. Same guarantees as [`Self::emit`].
    fn emit_batch(&self, events: Vec<CloudEvent>) -> Result<Vec<CloudEvent>, PortError> {
        events.into_iter().map(|e| self.emit(e)).collect()
    }
}

/// A secret value. Zeroised when dropped; deliberately not `Debug`, `Clone` or `Serialize`.
pub struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

/// Resolves declared secret references for one cell; never ambient.
pub trait SecretBroker: Send + Sync {
    /// Short name recorded in events (`file`, `env`, ...).
    fn name(&self) -> &'static str;
    /// Resolve `key` for `cell_id`. Only keys in `spec.authority.secretRefs` are ever asked for.
    fn resolve(&self, key: &str, cell_id: &str) -> Result<SecretValue, PortError>;
    /// Drop anything held for `cell_id`. Called after teardown; idempotent.
    fn revoke_for_cell(&self, cell_id: &str) -> Result<(), PortError>;
}

/// Receipt of one exported artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportReceipt {
    pub name: String,
    pub target_kind: ExportTargetKind,
    pub target_name: Option<String>,
    pub destination: String,
    pub sha256: String,
    pub size_bytes: u64,
    /// Attempts the push took (1 when the first one succeeded).
    #[serde(default = "one_attempt")]
    pub attempts: u32,
}

fn one_attempt() -> u32 {
    1
}

/// Copies an artifact out of a cell to a destination.
pub trait ExportSink: Send + Sync {
    fn target_kind(&self) -> ExportTargetKind;
    /// Where `name` of `cell_id` would land, for failure events.
    fn destination_hint(&self, cell_id: &str, name: &str) -> String;
    /// Stream `content` to the destination and return a receipt with its digest and size.
    fn push(
        &self,
        cell_id: &str,
        name: &str,
        content: &mut dyn Read,
    ) -> Result<ExportReceipt, PortError>;
}

/// A model-inference request made on behalf of a cell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InferenceRequest {
    pub cell_id: String,
    pub model_hint: Option<String>,
    pub prompt: String,
    /// Authority budget: the broker must not return more tokens than this.
    pub max_tokens: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InferenceResponse {
    pub model: String,
    pub content: String,
    pub input_tokens: u32,
    pub output_tokens: u32,
}

/// Brokered inference, attributed to a cell. Cells never hold model credentials themselves.
pub trait InferenceBroker: Send + Sync {
    fn infer(&self, request: &InferenceRequest) -> Result<InferenceResponse, PortError>;
}

/// A secret handed to the backend for delivery into the cell.
pub struct DeliveredSecret {
    pub key: String,
    pub value: SecretValue,
}

/// Everything a backend needs to create one cell.
pub struct CellRequest<'a> {
    pub spec: &'a ExecutionCellSpec,
    /// SHA-256 of the canonical spec, for records and stamping.
    pub spec_hash: &'a str,
    pub run_id: &'a str,
    pub secrets: Vec<DeliveredSecret>,
    pub secret_delivery: SecretDeliveryMode,
    /// Live workload output. The backend copies bytes here as they arrive.
    pub stdout: Box<dyn Write + Send>,
    pub stderr: Box<dyn Write + Send>,
    /// Builds the events the cell produces while it runs (see [`RuntimeEvidence`]).
    pub factory: EventFactory,
    /// Where those events go.
    pub evidence: Arc<dyn RuntimeEvidence>,
}

/// Evidence a cell produces on its own while it runs, outside the supervisor's steps: DNS and
/// flow decisions, telemetry frames, host-observed processes. The backend builds each event
/// with [`CellRequest::factory`] on whatever thread observed it and hands it here.
///
/// `observe` never blocks on I/O (it is called from DNS servers and probe loops). The
/// supervisor makes what it received durable (sealed, in arrival order) periodically while
/// the workload runs and always before the run's final events, so the compliance summary
/// counts every observed event.
pub trait RuntimeEvidence: Send + Sync {
    fn observe(&self, event: CloudEvent);
}

/// One enforced limit and the mechanism that enforced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LimitEnforcement {
    /// Spec name of the limit: `memoryMaxBytes`, `pidsMax`, `cpuMillis`, `timeoutMs`, `ttlSeconds`.
    pub limit: String,
    pub value: u64,
    /// e.g. `cgroup v1 memory.limit_in_bytes+memory.memsw.limit_in_bytes`, `cgroup v2 pids.max`.
    pub mechanism: String,
}

/// What a backend actually applied to a cell (evidence, not intent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IsolationReport {
    pub backend: String,
    /// Namespaces the cell got: `user`, `pid`, `mnt`, `net`, `ipc`, `uts`, `cgroup`.
    pub namespaces: Vec<String>,
    /// `inside outside count` lines of the uid map.
    pub uid_map: String,
    /// Workload uid/gid inside the cell.
    pub workload_uid: u32,
    pub workload_gid: u32,
    /// `host`, `path:<dir>` or `oci:<digest>`.
    pub rootfs: String,
    pub seccomp_profile: String,
    /// SHA-256 of the compiled BPF program.
    pub seccomp_profile_sha256: String,
    /// Landlock ABI version applied, `None` when Landlock was not enforced.
    pub landlock_abi: Option<u32>,
    /// Whether Landlock confines the workload at all: `false` only for a cell whose spec
    /// allows running without it (`minAbi: 0`) on a kernel that has none. Events written
    /// before the field existed come from cells that were refused without Landlock.
    #[serde(default = "enforced_before_the_field")]
    pub landlock_enforced: bool,
    /// The lowest Landlock ABI the spec required (`filesystem.landlock.minAbi`, 0 = optional).
    #[serde(default = "required_before_the_field")]
    pub landlock_min_abi: u32,
    /// Landlock rights CellOS targets that this kernel could not enforce, by stable camelCase
    /// name (`truncate`, `ioctlDev` on ABI 2; every targeted right when Landlock is not
    /// enforced). Empty in events written before the field existed.
    #[serde(default)]
    pub landlock_unenforced: Vec<String>,
    /// Whether the workload may execute files where it can write (`/tmp`, the workspace,
    /// read-write mounts); `false` under `filesystem.noExecWritable`. Absent in events written
    /// before the field existed, when writable places were never executable.
    #[serde(default)]
    pub writable_exec: bool,
    pub capabilities: Vec<String>,
    pub no_new_privs: bool,
    /// `v2` or `v1`, as detected at run time.
    pub cgroup_version: String,
    pub limits: Vec<LimitEnforcement>,
    pub network: String,
}

/// Before `landlockEnforced` existed, a cell ran only under Landlock.
fn enforced_before_the_field() -> bool {
    true
}

/// Before `landlockMinAbi` existed, every cell required Landlock (any ABI).
fn required_before_the_field() -> u32 {
    crate::spec::DEFAULT_MIN_LANDLOCK_ABI
}

/// How the workload ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum WorkloadExit {
    Exited {
        code: i32,
    },
    Signaled {
        signal: i32,
    },
    /// Killed because `timeoutMs` (or the TTL) ran out.
    TimedOut {
        limit: String,
    },
    /// The workload never started (exec failed, ...).
    SpawnFailed {
        reason: String,
    },
}

/// A limit that was hit while the workload ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LimitHit {
    pub limit: String,
    /// Counter that proved it, e.g. `cgroup v1 memory.oom_control oom_kill=1`.
    pub mechanism: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadOutcome {
    pub exit: WorkloadExit,
    /// From exec of the workload to its end.
    pub duration: Duration,
    pub limit_hits: Vec<LimitHit>,
}

/// One kind of thing a destroyed cell could leave behind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Residue {
    /// `process`, `cgroup`, `mount`, `netns`, `veth`, `nftTable`, `route`, `listener`, `file`,
    /// `secret` (a broker could not revoke).
    pub class: String,
    pub detail: String,
}

/// A kind of residue the check could not look for (its source could not be read, its tool
/// could not run). The host may still hold it, so the cell is not clean: fail closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnverifiedResidue {
    /// The [`Residue::class`] that went unchecked, or `all` when destroy itself failed.
    pub class: String,
    /// Why the check could not run, naming the source or tool and the fix.
    pub reason: String,
}

/// Result of destroy or reclaim: what was removed and what (if anything) remains.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TeardownReport {
    pub cell_id: String,
    /// False when the cell was already gone (destroy is idempotent).
    pub destroyed: bool,
    /// Whether processes had to be killed (`forced`) or had all exited (`clean`).
    pub forced: bool,
    /// What teardown found and removed (processes, cgroups, records, ...).
    pub removed: Vec<Residue>,
    /// What the residue check still found.
    pub residue: Vec<Residue>,
    /// Residue classes the check could not look for.
    #[serde(default)]
    pub unverified: Vec<UnverifiedResidue>,
}

impl TeardownReport {
    /// Whether the check ran completely and found nothing: only then is the cell clean.
    pub fn residue_free(&self) -> bool {
        self.residue.is_empty() && self.unverified.is_empty()
    }
}

/// A running cell, owned by the supervisor.
pub trait Cell: Send {
    fn id(&self) -> &str;
    /// Protections applied at create time.
    fn isolation(&self) -> &IsolationReport;
    /// Exec the workload. `timeoutMs` counts from here.
    fn start(&mut self) -> Result<Instant, PortError>;
    /// Wait for the workload to end, killing it at `deadline`.
    fn wait(&mut self, deadline: Option<Instant>) -> Result<WorkloadOutcome, PortError>;
    /// Open a file inside the cell for export; symlink and `..` escapes are refused.
    fn open_artifact(&self, path: &str) -> Result<Box<dyn Read + Send>, PortError>;
    /// Kill everything, unmount, remove cgroups and scratch, then verify. Idempotent.
    fn destroy(&mut self) -> Result<TeardownReport, PortError>;
    /// The cell's exec and file surface, once started; `None` from backends without one.
    fn session(&self) -> Option<Arc<dyn CellSession>> {
        None
    }
}

/// The command and file surface of a running cell. Shared: many threads exec and move files
/// at once while the supervisor owns the [`Cell`] itself.
pub trait CellSession: Send + Sync {
    /// Start `request` inside the cell with exactly the workload's confinement.
    fn exec(&self, request: &ExecRequest) -> Result<ExecProcess, PortError>;
    /// Open a regular file for reading; refused above `max_bytes`.
    fn read_file(
        &self,
        path: &str,
        max_bytes: u64,
    ) -> Result<(FileStat, Box<dyn Read + Send>), PortError>;
    /// Replace `path` atomically with `content` (at most `max_bytes`).
    fn write_file(
        &self,
        path: &str,
        content: &mut dyn Read,
        mode: Option<u32>,
        max_bytes: u64,
    ) -> Result<FileWritten, PortError>;
    fn stat(&self, path: &str) -> Result<FileStat, PortError>;
    fn list(&self, path: &str) -> Result<Vec<FileEntry>, PortError>;
    fn mkdir(&self, path: &str, parents: bool) -> Result<(), PortError>;
    fn remove(&self, path: &str, recursive: bool) -> Result<(), PortError>;
    /// The limits the cell has hit so far, each with the counter that proves it (a session
    /// cell has no single workload whose end reports them). Backends that cannot tell return
    /// none.
    fn limit_hits(&self) -> Vec<LimitHit> {
        Vec::new()
    }
}

/// A started exec: its streams and its control.
pub struct ExecProcess {
    /// Present when the request asked for stdin (or has a terminal).
    pub stdin: Option<Box<dyn Write + Send>>,
    /// Standard output, or the terminal's output with a PTY.
    pub stdout: Box<dyn Read + Send>,
    /// Standard error; `None` with a PTY (the terminal carries both).
    pub stderr: Option<Box<dyn Read + Send>>,
    pub control: Box<dyn ExecControl>,
}

/// Waits for, kills and resizes one exec.
pub trait ExecControl: Send + Sync {
    /// The exit the cell reported, waiting until `deadline`; `Ok(None)` if it passed first.
    fn wait(&self, deadline: Option<Instant>) -> Result<Option<ExecExit>, PortError>;
    /// Kill every process the exec started, inside the cell.
    fn kill(&self) -> Result<(), PortError>;
    /// Set the window size of the exec's terminal.
    fn resize(&self, size: PtySize) -> Result<(), PortError>;
}

/// Maps a spec onto host isolation primitives.
pub trait CellBackend: Send + Sync {
    fn name(&self) -> &'static str;
    /// Create the cell (namespaces, rootfs, cgroup, hardening) without starting the workload.
    fn create(&self, request: CellRequest<'_>) -> Result<Box<dyn Cell>, PortError>;
    /// Clean up what a dead supervisor left of `cell_id` (crash reconciliation). Idempotent.
    fn reclaim(&self, cell_id: &str) -> Result<TeardownReport, PortError>;
    /// Cells whose supervisor is gone but whose host state (record, cgroup, ...) remains:
    /// what `cellos gc` reclaims. Cells of live supervisors are never listed.
    fn orphans(&self) -> Result<Vec<String>, PortError>;
    /// Cells currently known to this host (running or orphaned), for `cellos ps`.
    fn list(&self) -> Result<Vec<CellSummary>, PortError>;
    /// Send `signal` to the workload of a running cell (`cellos kill`).
    fn signal(&self, cell_id: &str, signal: i32) -> Result<(), PortError>;
    /// Freeze every process of a running cell (`cellos pause`); returns the mechanism used.
    fn pause(&self, cell_id: &str) -> Result<String, PortError>;
    /// Thaw a paused cell (`cellos resume`); returns the mechanism used.
    fn resume(&self, cell_id: &str) -> Result<String, PortError>;
}

/// A cell as seen by `cellos ps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CellSummary {
    pub cell_id: String,
    pub run_id: String,
    /// Unix seconds when the cell was created.
    pub created_unix: u64,
    /// Whether the supervising process is still alive.
    pub supervised: bool,
    /// Host pid of the cell's init, when running.
    pub init_pid: Option<i32>,
}

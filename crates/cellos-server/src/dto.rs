//! The API's wire types with their OpenAPI schemas. The values themselves live in
//! cellos-core and cellos-supervisor (which know nothing of HTTP); these mirror them field for
//! field, converted with `From`, so the schema is generated from the same code that
//! serializes the responses.

use std::collections::BTreeMap;
use std::sync::Arc;

use cellos_core::events::CloudEvent;
use cellos_core::ports::{
    IsolationReport, LimitEnforcement, Residue, TeardownReport, UnverifiedResidue,
};
use cellos_core::session::{
    ExecExit, ExecRequest, FileEntry, FileKind, FileStat, FileWritten, PtySize, MAX_EXEC_ARGS,
};
use cellos_supervisor::{CellInfo, CellState};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where a cell is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum CellStateDto {
    Running,
    Paused,
    Completed,
    Destroyed,
}

impl From<CellState> for CellStateDto {
    fn from(s: CellState) -> Self {
        match s {
            CellState::Running => Self::Running,
            CellState::Paused => Self::Paused,
            CellState::Completed => Self::Completed,
            CellState::Destroyed => Self::Destroyed,
        }
    }
}

impl From<CellStateDto> for CellState {
    fn from(s: CellStateDto) -> Self {
        match s {
            CellStateDto::Running => Self::Running,
            CellStateDto::Paused => Self::Paused,
            CellStateDto::Completed => Self::Completed,
            CellStateDto::Destroyed => Self::Destroyed,
        }
    }
}

/// One enforced limit and what enforced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LimitEnforcementDto {
    pub limit: String,
    pub value: u64,
    pub mechanism: String,
}

impl From<LimitEnforcement> for LimitEnforcementDto {
    fn from(l: LimitEnforcement) -> Self {
        Self {
            limit: l.limit,
            value: l.value,
            mechanism: l.mechanism,
        }
    }
}

/// What the backend applied to a cell (evidence, not intent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IsolationDto {
    pub backend: String,
    pub namespaces: Vec<String>,
    pub uid_map: String,
    pub workload_uid: u32,
    pub workload_gid: u32,
    pub rootfs: String,
    pub seccomp_profile: String,
    pub seccomp_profile_sha256: String,
    pub landlock_abi: Option<u32>,
    pub landlock_enforced: bool,
    pub landlock_min_abi: u32,
    pub landlock_unenforced: Vec<String>,
    pub writable_exec: bool,
    pub capabilities: Vec<String>,
    pub no_new_privs: bool,
    pub cgroup_version: String,
    pub limits: Vec<LimitEnforcementDto>,
    pub network: String,
}

impl From<IsolationReport> for IsolationDto {
    fn from(r: IsolationReport) -> Self {
        Self {
            backend: r.backend,
            namespaces: r.namespaces,
            uid_map: r.uid_map,
            workload_uid: r.workload_uid,
            workload_gid: r.workload_gid,
            rootfs: r.rootfs,
            seccomp_profile: r.seccomp_profile,
            seccomp_profile_sha256: r.seccomp_profile_sha256,
            landlock_abi: r.landlock_abi,
            landlock_enforced: r.landlock_enforced,
            landlock_min_abi: r.landlock_min_abi,
            landlock_unenforced: r.landlock_unenforced,
            writable_exec: r.writable_exec,
            capabilities: r.capabilities,
            no_new_privs: r.no_new_privs,
            cgroup_version: r.cgroup_version,
            limits: r.limits.into_iter().map(Into::into).collect(),
            network: r.network,
        }
    }
}

/// Something a destroyed cell left (or could have left) behind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResidueDto {
    pub class: String,
    pub detail: String,
}

impl From<Residue> for ResidueDto {
    fn from(r: Residue) -> Self {
        Self {
            class: r.class,
            detail: r.detail,
        }
    }
}

/// A residue class the check could not look for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnverifiedResidueDto {
    pub class: String,
    pub reason: String,
}

impl From<UnverifiedResidue> for UnverifiedResidueDto {
    fn from(r: UnverifiedResidue) -> Self {
        Self {
            class: r.class,
            reason: r.reason,
        }
    }
}

/// What destroy removed and verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TeardownDto {
    pub cell_id: String,
    pub destroyed: bool,
    pub forced: bool,
    pub removed: Vec<ResidueDto>,
    pub residue: Vec<ResidueDto>,
    pub unverified: Vec<UnverifiedResidueDto>,
    /// Whether the check ran completely and found nothing.
    pub residue_free: bool,
}

impl From<TeardownReport> for TeardownDto {
    fn from(r: TeardownReport) -> Self {
        let residue_free = r.residue_free();
        Self {
            cell_id: r.cell_id,
            destroyed: r.destroyed,
            forced: r.forced,
            removed: r.removed.into_iter().map(Into::into).collect(),
            residue: r.residue.into_iter().map(Into::into).collect(),
            unverified: r.unverified.into_iter().map(Into::into).collect(),
            residue_free,
        }
    }
}

/// A cell as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CellInfoDto {
    pub id: String,
    pub run_id: String,
    pub state: CellStateDto,
    /// False for a cell with `run` (it ends with its workload), true for a session cell.
    pub session: bool,
    pub spec_hash: String,
    /// RFC 3339.
    pub created: String,
    pub owner: String,
    pub execs: u64,
    /// RFC 3339 time of the last exec or file operation.
    pub last_activity: String,
    pub isolation: IsolationDto,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub teardown: Option<TeardownDto>,
}

impl From<CellInfo> for CellInfoDto {
    fn from(c: CellInfo) -> Self {
        Self {
            id: c.id,
            run_id: c.run_id,
            state: c.state.into(),
            session: c.session,
            spec_hash: c.spec_hash,
            created: c.created,
            owner: c.owner,
            execs: c.execs,
            last_activity: c.last_activity,
            isolation: c.isolation.into(),
            exit_status: c.exit_status,
            teardown: c.teardown.map(Into::into),
        }
    }
}

/// A page of cells.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CellPage {
    pub cells: Vec<CellInfoDto>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A terminal's window size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PtySizeDto {
    #[schema(minimum = 1)]
    pub rows: u16,
    #[schema(minimum = 1)]
    pub cols: u16,
}

impl From<PtySizeDto> for PtySize {
    fn from(p: PtySizeDto) -> Self {
        Self {
            rows: p.rows,
            cols: p.cols,
        }
    }
}

/// A non-negative JSON integer, written `1000` or `1000.0` (JSON, and the JSON Schema of the
/// document, make no difference between the two), or null.
fn json_integer<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error as _;
    let Some(number) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    let integral = number.as_u64().or_else(|| {
        number
            .as_f64()
            .filter(|f| f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(f))
            .map(|f| f as u64)
    });
    integral
        .map(Some)
        .ok_or_else(|| D::Error::custom(format!("{number} is not a non-negative integer")))
}

/// A string without NUL bytes (what an argument, a variable or a path can hold).
const NO_NUL: &str = "^[^\\u0000]*$";

fn no_nul_string(pattern: &str) -> utoipa::openapi::ObjectBuilder {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .pattern(Some(pattern))
}

/// `argv` as [`ExecRequest::problems`] checks it: 1 to [`MAX_EXEC_ARGS`] arguments, no NUL.
fn argv_schema() -> utoipa::openapi::Array {
    utoipa::openapi::ArrayBuilder::new()
        .items(no_nul_string(NO_NUL))
        .min_items(Some(1))
        .max_items(Some(MAX_EXEC_ARGS))
        .description(Some(
            "Program and arguments; `argv[0]` is looked up in the cell's `PATH` unless it holds `/`.",
        ))
        .build()
}

/// `env`: names non-empty without `=` or NUL, values without NUL.
fn env_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::Object)
        .property_names(Some(no_nul_string("^[^=\\u0000]+$")))
        .additional_properties(Some(no_nul_string(NO_NUL)))
        .description(Some(
            "Environment variables of the exec, over the cell's own",
        ))
        .build()
}

/// `cwd`: an absolute path inside the cell, or null for the cell's default.
fn cwd_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            utoipa::openapi::Type::String,
            utoipa::openapi::Type::Null,
        ]))
        .pattern(Some("^/[^\\u0000]*$"))
        .description(Some("Working directory: an absolute path inside the cell"))
        .build()
}

/// `POST /v1/cells/{id}/exec`: a command to run in the cell.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecBody {
    /// Program and arguments; `argv[0]` is looked up in the cell's `PATH` unless it holds `/`.
    #[schema(schema_with = argv_schema)]
    pub argv: Vec<String>,
    #[serde(default)]
    #[schema(schema_with = env_schema)]
    pub env: BTreeMap<String, String>,
    #[schema(schema_with = cwd_schema)]
    pub cwd: Option<String>,
    /// Kill the exec after this long and report status 124.
    #[serde(default, deserialize_with = "json_integer")]
    #[schema(minimum = 1)]
    pub timeout_ms: Option<u64>,
    /// UTF-8 text written to the exec's stdin, which is then closed.
    pub stdin: Option<String>,
    /// Kill the exec when the client disconnects (by default it runs on, re-readable).
    #[serde(default)]
    pub kill_on_disconnect: bool,
}

impl ExecBody {
    pub fn request(&self) -> ExecRequest {
        ExecRequest {
            argv: self.argv.clone(),
            env: self.env.clone(),
            cwd: self.cwd.clone(),
            timeout_ms: self.timeout_ms,
            pty: None,
            stdin: self.stdin.is_some(),
        }
    }
}

/// First message of `GET /v1/cells/{id}/exec/ws`: the exec, optionally on a terminal and
/// with stdin streamed as binary messages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WsExecBody {
    #[schema(schema_with = argv_schema)]
    pub argv: Vec<String>,
    #[serde(default)]
    #[schema(schema_with = env_schema)]
    pub env: BTreeMap<String, String>,
    #[schema(schema_with = cwd_schema)]
    pub cwd: Option<String>,
    #[serde(default, deserialize_with = "json_integer")]
    #[schema(minimum = 1)]
    pub timeout_ms: Option<u64>,
    pub pty: Option<PtySizeDto>,
    /// Whether binary messages will be written to stdin (else it reads `/dev/null`).
    #[serde(default)]
    pub stdin: bool,
    #[serde(default)]
    pub kill_on_disconnect: bool,
}

impl WsExecBody {
    pub fn request(&self) -> ExecRequest {
        ExecRequest {
            argv: self.argv.clone(),
            env: self.env.clone(),
            cwd: self.cwd.clone(),
            timeout_ms: self.timeout_ms,
            pty: self.pty.map(Into::into),
            stdin: self.stdin || self.pty.is_some(),
        }
    }
}

/// How an exec ended, as the cell reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum ExecExitDto {
    Exited { code: i32 },
    Signaled { signal: i32 },
    SpawnFailed { reason: String },
}

impl From<ExecExit> for ExecExitDto {
    fn from(e: ExecExit) -> Self {
        match e {
            ExecExit::Exited { code } => Self::Exited { code },
            ExecExit::Signaled { signal } => Self::Signaled { signal },
            ExecExit::SpawnFailed { reason } => Self::SpawnFailed { reason },
        }
    }
}

/// One frame of an exec stream (an NDJSON line, or a WebSocket text message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum ExecFrame {
    #[serde(rename_all = "camelCase")]
    Started { exec_id: String },
    /// Output; `data` when the bytes are UTF-8, else `dataBase64`.
    #[serde(rename_all = "camelCase")]
    Stdout {
        offset: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        data_base64: Option<String>,
    },
    #[serde(rename_all = "camelCase")]
    Stderr {
        offset: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        data_base64: Option<String>,
    },
    /// Output in `from..to` was dropped from the kept window before it was read.
    Gap { from: u64, to: u64 },
    #[serde(rename_all = "camelCase")]
    Exit {
        /// Shell-style status: 124 after a timeout, 128+N for signal N, 127 when it could
        /// not start.
        status: i32,
        exit: ExecExitDto,
        timed_out: bool,
        killed: bool,
        duration_ms: u64,
        stdout_bytes: u64,
        stderr_bytes: u64,
    },
    /// The stream failed before the exit (WebSocket only; HTTP answers with a problem).
    Error { problem: crate::problem::ApiProblem },
}

/// What a path inside the cell is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum FileKindDto {
    File,
    Directory,
    Symlink,
    Other,
}

impl From<FileKind> for FileKindDto {
    fn from(k: FileKind) -> Self {
        match k {
            FileKind::File => Self::File,
            FileKind::Directory => Self::Directory,
            FileKind::Symlink => Self::Symlink,
            FileKind::Other => Self::Other,
        }
    }
}

/// `stat` of a path inside the cell (symlinks are not followed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileStatDto {
    pub path: String,
    pub kind: FileKindDto,
    pub size: u64,
    /// Permission bits, e.g. 420 for 0644.
    pub mode: u32,
    pub modified_unix: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
}

impl From<FileStat> for FileStatDto {
    fn from(s: FileStat) -> Self {
        Self {
            path: s.path,
            kind: s.kind.into(),
            size: s.size,
            mode: s.mode,
            modified_unix: s.modified_unix,
            link_target: s.link_target,
        }
    }
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileEntryDto {
    pub name: String,
    pub kind: FileKindDto,
    pub size: u64,
    pub mode: u32,
    pub modified_unix: i64,
}

impl From<FileEntry> for FileEntryDto {
    fn from(e: FileEntry) -> Self {
        Self {
            name: e.name,
            kind: e.kind.into(),
            size: e.size,
            mode: e.mode,
            modified_unix: e.modified_unix,
        }
    }
}

/// A directory listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FileList {
    pub entries: Vec<FileEntryDto>,
}

/// A file written into the cell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileWrittenDto {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

impl From<FileWritten> for FileWrittenDto {
    fn from(w: FileWritten) -> Self {
        Self {
            path: w.path,
            size: w.size,
            sha256: w.sha256,
        }
    }
}

/// A sealed CloudEvents 1.0 event of the log (schema only: responses carry the stored event
/// exactly as it was signed, so it is never re-built).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[allow(dead_code)]
pub struct CloudEventSchema {
    pub specversion: String,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub subject: Option<String>,
    pub time: String,
    pub datacontenttype: String,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    /// Position in the log, from 1; the cursor of `/v1/events`.
    pub cellosseq: u64,
    pub cellosprev: String,
    pub celloskid: String,
    pub cellossig: String,
}

/// A page of events.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventPage {
    #[schema(value_type = Vec<CloudEventSchema>)]
    pub events: Vec<Arc<CloudEvent>>,
    /// Pass as `after` for the next page.
    pub next: u64,
}

/// `GET /v1/version`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Version {
    pub version: String,
    pub api: String,
}

/// `/healthz` and `/readyz`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout(body: &str) -> Result<Option<u64>, serde_json::Error> {
        serde_json::from_str::<ExecBody>(body).map(|b| b.timeout_ms)
    }

    #[test]
    fn a_timeout_is_any_json_integer() {
        assert_eq!(timeout(r#"{"argv":["true"]}"#).ok(), Some(None));
        assert_eq!(
            timeout(r#"{"argv":["true"],"timeoutMs":null}"#).ok(),
            Some(None)
        );
        assert_eq!(
            timeout(r#"{"argv":["true"],"timeoutMs":1000}"#).ok(),
            Some(Some(1000))
        );
        assert_eq!(
            timeout(r#"{"argv":["true"],"timeoutMs":1000.0}"#).ok(),
            Some(Some(1000))
        );
        assert_eq!(
            timeout(r#"{"argv":["true"],"timeoutMs":1e3}"#).ok(),
            Some(Some(1000))
        );
        for bad in ["1.5", "-1", "1e20", "\"5\""] {
            assert!(
                timeout(&format!(r#"{{"argv":["true"],"timeoutMs":{bad}}}"#)).is_err(),
                "{bad}"
            );
        }
    }
}

//! The cells of one MCP server: what each was granted and to whom, and the steps behind the
//! tools — narrow and admit, create, exec, run once, write — over the session registry that
//! `cellos serve` uses. Everything here blocks; the tools call it on the blocking pool.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use cellos_core::spec::{
    ExecutionCellDocument, ExecutionCellSpec, Metadata, API_VERSION, KIND_EXECUTION_CELL,
};
use cellos_supervisor::{Caller, CellInfo, Sessions};
use serde::Serialize;

use crate::args::{CommandArgs, FileArg, NarrowArgs, RunArgs};
use crate::error::ToolError;
use crate::exec::{self, Afterwards, ExecResult};
use crate::files;
use crate::narrow::{self, Widening};
use crate::profile::{Profile, Profiles};

/// Largest stdout (and stderr) one exec result carries.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 64 << 10;
/// Grants kept for cells that ended, for their evidence (the oldest are forgotten first).
const KEPT_ENDED_GRANTS: usize = 4096;

/// What a cell of this server was granted, and to whom.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    profile: String,
    owner: String,
    spec: ExecutionCellSpec,
    max_exec_timeout_ms: u64,
    created: std::time::Instant,
}

/// What every connection of one server shares.
pub struct McpState {
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) profiles: Profiles,
    pub(crate) home: PathBuf,
    /// The caller of a connection that carries no authenticated identity (stdio: whoever
    /// started the server).
    pub(crate) local_caller: Caller,
    max_output_bytes: usize,
    grants: Mutex<BTreeMap<String, Grant>>,
}

impl McpState {
    /// `home` holds the event log evidence is read from.
    pub fn new(
        sessions: Arc<Sessions>,
        profiles: Profiles,
        home: PathBuf,
        local_caller: Caller,
    ) -> Self {
        Self {
            sessions,
            profiles,
            home,
            local_caller,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            grants: Mutex::new(BTreeMap::new()),
        }
    }

    fn grants(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Grant>> {
        self.grants.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The grant of cell `id`, if `caller` owns it (another caller's cell is unknown to it).
    pub(crate) fn grant(&self, caller: &Caller, id: &str) -> Result<Grant, ToolError> {
        self.grants()
            .get(id)
            .filter(|g| g.owner == caller.subject)
            .cloned()
            .ok_or_else(|| ToolError::UnknownCell(id.to_owned()))
    }

    /// A guard that kills the exec a call waits for if the call is dropped first.
    pub(crate) fn kill_if_abandoned(&self, caller: &Caller) -> exec::KillIfAbandoned {
        exec::KillIfAbandoned {
            sessions: self.sessions.clone(),
            caller: caller.clone(),
            waiting: exec::Waiting::default(),
        }
    }

    fn profile(&self, name: &str) -> Result<&Profile, ToolError> {
        self.profiles
            .get(name)
            .ok_or_else(|| ToolError::UnknownProfile {
                asked: name.to_owned(),
                known: self.profiles.names().join(", "),
            })
    }

    fn remember(&self, id: String, grant: Grant) {
        let mut grants = self.grants();
        grants.insert(id, grant);
        if grants.len() > KEPT_ENDED_GRANTS {
            self.forget_ended(&mut grants);
        }
    }

    fn forget_ended(&self, grants: &mut BTreeMap<String, Grant>) {
        let mut ended: Vec<(std::time::Instant, String)> = grants
            .iter()
            .filter(|(id, _)| {
                self.sessions
                    .get(id)
                    .map_or(true, |c| c.state == cellos_supervisor::CellState::Destroyed)
            })
            .map(|(id, g)| (g.created, id.clone()))
            .collect();
        ended.sort();
        let excess = grants.len().saturating_sub(KEPT_ENDED_GRANTS);
        for (_, id) in ended.into_iter().take(excess) {
            grants.remove(&id);
        }
    }
}

/// What `sandbox_create` returns.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Created {
    id: String,
    profile: String,
    /// Every destination the cell may reach (`host:port`); empty: no network at all.
    may_reach: Vec<String>,
    ttl_seconds: Option<u64>,
    limits: cellos_core::spec::RunLimits,
    max_exec_timeout_ms: u64,
    files: Vec<cellos_core::session::FileWritten>,
}

/// What `run` returns: the command's result and the cell it ran in (now destroyed).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RunResult {
    id: String,
    #[serde(flatten)]
    result: ExecResult,
}

/// A new cell id: unique, so the log's record of each cell is its alone.
fn new_id() -> String {
    let uuid = uuid::Uuid::new_v4().simple().to_string();
    format!("mcp-{}", &uuid[..16])
}

/// Narrow, admit (refusing and recording a widening), create, and write the initial files.
pub(crate) fn create(
    state: &McpState,
    caller: &Caller,
    profile: &str,
    narrowing: &NarrowArgs,
    initial: &[FileArg],
) -> Result<Created, ToolError> {
    let profile = state.profile(profile)?;
    let contents = initial
        .iter()
        .enumerate()
        .map(|(i, f)| files::decode(&f.content, f.encoding, &format!("files[{i}].content")))
        .collect::<Result<Vec<_>, _>>()?;
    let id = new_id();
    let narrowed = narrow::narrow(profile, &id, narrowing)?;
    if !narrowed.widenings.is_empty() {
        return Err(refuse(
            state,
            caller,
            &profile.name,
            &narrowed.spec,
            narrowed.widenings,
        ));
    }
    let spec = narrowed.spec;
    state
        .sessions
        .create_with_policies(caller, document(profile, &spec), &profile.policies)?;
    state.remember(
        id.clone(),
        Grant {
            profile: profile.name.clone(),
            owner: caller.subject.clone(),
            spec: spec.clone(),
            max_exec_timeout_ms: profile.max_exec_timeout_ms,
            created: std::time::Instant::now(),
        },
    );
    let written = write_initial(state, caller, &id, initial, contents)?;
    Ok(Created {
        may_reach: narrow::reach(&spec.authority.egress_rules),
        ttl_seconds: spec.lifetime.as_ref().and_then(|l| l.ttl_seconds),
        limits: spec.cell_limits(),
        max_exec_timeout_ms: profile.max_exec_timeout_ms,
        profile: profile.name.clone(),
        files: written,
        id,
    })
}

/// The document of a cell of `profile`.
fn document(profile: &Profile, spec: &ExecutionCellSpec) -> ExecutionCellDocument {
    ExecutionCellDocument {
        api_version: API_VERSION.into(),
        kind: KIND_EXECUTION_CELL.into(),
        metadata: Metadata {
            name: Some(profile.name.clone()),
            ..Metadata::default()
        },
        spec: spec.clone(),
    }
}

/// Write a new cell's initial files; if one fails, the cell is destroyed (a call either gets
/// the cell it asked for or none).
fn write_initial(
    state: &McpState,
    caller: &Caller,
    id: &str,
    initial: &[FileArg],
    contents: Vec<Vec<u8>>,
) -> Result<Vec<cellos_core::session::FileWritten>, ToolError> {
    let mut written = Vec::new();
    for (file, content) in initial.iter().zip(contents) {
        match state
            .sessions
            .write_file(caller, id, &file.path, &content, file.mode)
        {
            Ok(w) => written.push(w),
            Err(err) => {
                let _ = state.sessions.destroy(caller, id);
                return Err(err.into());
            }
        }
    }
    Ok(written)
}

/// Record the refusal as an admission denial, and return it as the tool error.
fn refuse(
    state: &McpState,
    caller: &Caller,
    profile: &str,
    asked: &ExecutionCellSpec,
    widenings: Vec<Widening>,
) -> ToolError {
    let decision = narrow::denial(profile, &widenings);
    if let Err(err) = state.sessions.record_denial(caller, asked, &decision) {
        return err.into();
    }
    ToolError::Widened {
        profile: profile.to_owned(),
        widenings,
    }
}

pub(crate) fn exec_in(
    state: &McpState,
    caller: &Caller,
    id: &str,
    command: &CommandArgs,
    afterwards: Afterwards,
    waiting: &exec::Waiting,
) -> Result<ExecResult, ToolError> {
    let grant = state.grant(caller, id)?;
    let timeout = narrow::exec_timeout(
        grant.max_exec_timeout_ms,
        command.timeout_ms,
        &grant.profile,
    )
    .map_err(|w| refuse(state, caller, &grant.profile, &grant.spec, vec![w]))?;
    let request = exec::request(command, timeout)?;
    exec::run(
        &state.sessions,
        caller,
        exec::Run {
            id,
            request,
            stdin: command.stdin.as_deref(),
            max_output: state.max_output_bytes,
            afterwards,
        },
        waiting,
    )
}

/// `run`: a fresh cell, the command, and the cell's destruction whatever happened.
pub(crate) fn run_once(
    state: &McpState,
    caller: &Caller,
    args: &RunArgs,
    waiting: &exec::Waiting,
) -> Result<RunResult, ToolError> {
    let profile = state.profile(&args.profile)?;
    let command = args.command();
    // Checked before a cell is made for it.
    let timeout = narrow::exec_timeout(
        profile.max_exec_timeout_ms,
        command.timeout_ms,
        &profile.name,
    )
    .map_err(|w| {
        let mut asked = profile.template.clone();
        asked.id = new_id();
        refuse(state, caller, &profile.name, &asked, vec![w])
    })?;
    exec::request(&command, timeout)?;
    let created = create(state, caller, &args.profile, &args.narrowing(), &args.files)?;
    let result = exec_in(
        state,
        caller,
        &created.id,
        &command,
        Afterwards::CellGoes,
        waiting,
    );
    let destroyed = state.sessions.destroy(caller, &created.id);
    let result = result?;
    destroyed?;
    Ok(RunResult {
        id: created.id,
        result,
    })
}

pub(crate) fn write(
    state: &McpState,
    caller: &Caller,
    id: &str,
    file: &FileArg,
    field: &str,
) -> Result<cellos_core::session::FileWritten, ToolError> {
    let content = files::decode(&file.content, file.encoding, field)?;
    Ok(state
        .sessions
        .write_file(caller, id, &file.path, &content, file.mode)?)
}

/// What `sandbox_destroy` returns: the end as destroy verified it.
pub(crate) fn destroyed(info: CellInfo) -> serde_json::Value {
    let teardown = info.teardown.unwrap_or_default();
    serde_json::json!({
        "id": info.id,
        "destroyed": teardown.destroyed,
        "residueFree": teardown.residue_free(),
        "residue": teardown.residue,
        "unverified": teardown.unverified,
        "execs": info.execs,
    })
}

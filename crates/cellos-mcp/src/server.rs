//! The MCP server: one [`CellsMcp`] per connection (stdio, or each streamable HTTP session),
//! all over one shared [`McpState`] — the session registry `cellos serve` uses, the profiles,
//! and the grants of the cells this server created.
//!
//! Every tool runs its registry calls on the blocking pool, so a long exec never stalls the
//! others: one session may run many calls at once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use cellos_core::spec::{
    ExecutionCellDocument, ExecutionCellSpec, Metadata, API_VERSION, KIND_EXECUTION_CELL,
};
use cellos_supervisor::{Caller, CellInfo, Sessions};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::model::{CallToolResult, JsonObject, ServerCapabilities, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::{tool, tool_handler, tool_router, RoleServer, ServerHandler};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::args::{
    CommandArgs, CreateArgs, ExecArgs, FileArg, IdArgs, ListFilesArgs, NarrowArgs, ReadFileArgs,
    RunArgs, WriteFileArgs,
};
use crate::error::ToolError;
use crate::exec::{self, Afterwards, ExecResult};
use crate::narrow::{self, Widening};
use crate::profile::{Profile, Profiles};
use crate::{descriptions as d, evidence, files};

/// Largest stdout (and stderr) one exec result carries.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 64 << 10;
/// Grants kept for cells that ended, for their evidence (the oldest are forgotten first).
const KEPT_ENDED_GRANTS: usize = 4096;

/// What a cell of this server was granted, and to whom.
#[derive(Debug, Clone)]
struct Grant {
    profile: String,
    owner: String,
    spec: ExecutionCellSpec,
    max_exec_timeout_ms: u64,
    created: std::time::Instant,
}

/// What every connection of one server shares.
pub struct McpState {
    sessions: Arc<Sessions>,
    profiles: Profiles,
    home: PathBuf,
    /// The caller of a connection that carries no authenticated identity (stdio: whoever
    /// started the server).
    local_caller: Caller,
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
    fn grant(&self, caller: &Caller, id: &str) -> Result<Grant, ToolError> {
        self.grants()
            .get(id)
            .filter(|g| g.owner == caller.subject)
            .cloned()
            .ok_or_else(|| ToolError::UnknownCell(id.to_owned()))
    }

    /// A guard that kills the exec a call waits for if the call is dropped first.
    fn kill_if_abandoned(&self, caller: &Caller) -> exec::KillIfAbandoned {
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

/// One MCP connection's handler.
#[derive(Clone)]
pub struct CellsMcp {
    state: Arc<McpState>,
    tool_router: ToolRouter<Self>,
}

impl CellsMcp {
    pub fn new(state: Arc<McpState>) -> Self {
        Self {
            state,
            tool_router: Self::tool_router(),
        }
    }

    /// The caller of a request: the identity the HTTP layer authenticated, else (stdio) the
    /// local caller. An HTTP request without one is refused: it never falls back.
    fn caller(&self, ctx: &RequestContext<RoleServer>) -> Result<Caller, ToolError> {
        match ctx.extensions.get::<http::request::Parts>() {
            Some(parts) => parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
                ToolError::Internal("this HTTP request carries no authenticated caller".into())
            }),
            None => Ok(self.state.local_caller.clone()),
        }
    }
}

/// Parse a tool's arguments, naming the field of the first mistake.
fn parse<T: DeserializeOwned>(args: JsonObject) -> Result<T, ToolError> {
    serde_path_to_error::deserialize(serde_json::Value::Object(args)).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            String::new()
        } else {
            format!("{path}: ")
        };
        ToolError::BadArgument(format!("{at}{}", e.into_inner()))
    })
}

/// Run blocking registry work off the async workers.
async fn blocking<T, F>(f: F) -> Result<T, ToolError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ToolError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ToolError::Internal(format!("the tool's task failed: {e}")))?
}

/// `work`, unless the client cancels the request first (`notifications/cancelled`): then the
/// caller's guard, dropped right after, kills the exec the work waits for.
async fn until_cancelled<T>(
    ctx: &RequestContext<RoleServer>,
    work: impl std::future::Future<Output = Result<T, ToolError>>,
) -> Result<T, ToolError> {
    tokio::select! {
        result = work => result,
        () = ctx.ct.cancelled() => Err(ToolError::Cancelled),
    }
}

fn reply<T: Serialize>(result: Result<T, ToolError>) -> CallToolResult {
    match result.and_then(|v| {
        serde_json::to_value(v)
            .map_err(|e| ToolError::Internal(format!("encoding the result: {e}")))
    }) {
        Ok(value) => CallToolResult::structured(value),
        Err(err) => err.into_result(),
    }
}

fn schema<T: schemars::JsonSchema + 'static>() -> Arc<JsonObject> {
    rmcp::handler::server::common::schema_for_type::<T>()
}

/// What `sandbox_create` returns.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Created {
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
struct RunResult {
    id: String,
    #[serde(flatten)]
    result: ExecResult,
}

#[tool_router]
impl CellsMcp {
    #[tool(name = "sandbox_create", description = d::CREATE, input_schema = schema::<CreateArgs>())]
    async fn sandbox_create(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let state = self.state.clone();
        reply(
            async {
                let caller = self.caller(&ctx)?;
                let args: CreateArgs = parse(args)?;
                blocking(move || {
                    create(
                        &state,
                        &caller,
                        &args.profile,
                        &args.narrowing(),
                        &args.files,
                    )
                })
                .await
            }
            .await,
        )
    }

    #[tool(name = "sandbox_exec", description = d::EXEC, input_schema = schema::<ExecArgs>())]
    async fn sandbox_exec(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let state = self.state.clone();
        reply(
            async {
                let caller = self.caller(&ctx)?;
                let args: ExecArgs = parse(args)?;
                let guard = state.kill_if_abandoned(&caller);
                let waiting = guard.waiting.clone();
                let work = blocking(move || {
                    exec_in(
                        &state,
                        &caller,
                        &args.id,
                        &args.command(),
                        Afterwards::CellStays,
                        &waiting,
                    )
                });
                let result = until_cancelled(&ctx, work).await;
                drop(guard);
                result
            }
            .await,
        )
    }

    #[tool(name = "run", description = d::RUN, input_schema = schema::<RunArgs>())]
    async fn run(&self, args: JsonObject, ctx: RequestContext<RoleServer>) -> CallToolResult {
        let state = self.state.clone();
        reply(
            async {
                let caller = self.caller(&ctx)?;
                let args: RunArgs = parse(args)?;
                let guard = state.kill_if_abandoned(&caller);
                let waiting = guard.waiting.clone();
                let work = blocking(move || run_once(&state, &caller, &args, &waiting));
                let result = until_cancelled(&ctx, work).await;
                drop(guard);
                result
            }
            .await,
        )
    }

    #[tool(name = "sandbox_read_file", description = d::READ, input_schema = schema::<ReadFileArgs>())]
    async fn sandbox_read_file(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let state = self.state.clone();
        reply(
            async {
                let caller = self.caller(&ctx)?;
                let args: ReadFileArgs = parse(args)?;
                blocking(move || {
                    state.grant(&caller, &args.id)?;
                    let (stat, bytes) = state.sessions.read_file(&caller, &args.id, &args.path)?;
                    files::part(&stat, &bytes, args.encoding, args.offset, args.length)
                })
                .await
            }
            .await,
        )
    }

    #[tool(name = "sandbox_write_file", description = d::WRITE, input_schema = schema::<WriteFileArgs>())]
    async fn sandbox_write_file(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let state = self.state.clone();
        reply(
            async {
                let caller = self.caller(&ctx)?;
                let args: WriteFileArgs = parse(args)?;
                blocking(move || {
                    state.grant(&caller, &args.id)?;
                    write(&state, &caller, &args.id, &args.file(), "content")
                })
                .await
            }
            .await,
        )
    }

    #[tool(name = "sandbox_list_files", description = d::LIST, input_schema = schema::<ListFilesArgs>())]
    async fn sandbox_list_files(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let state = self.state.clone();
        reply(
            async {
                let caller = self.caller(&ctx)?;
                let args: ListFilesArgs = parse(args)?;
                blocking(move || {
                    state.grant(&caller, &args.id)?;
                    let path = args.path.unwrap_or_else(|| "/".into());
                    let entries = state.sessions.list_dir(&args.id, &path)?;
                    Ok(serde_json::json!({ "path": path, "entries": entries }))
                })
                .await
            }
            .await,
        )
    }

    #[tool(name = "sandbox_destroy", description = d::DESTROY, input_schema = schema::<IdArgs>())]
    async fn sandbox_destroy(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let state = self.state.clone();
        reply(
            async {
                let caller = self.caller(&ctx)?;
                let args: IdArgs = parse(args)?;
                blocking(move || {
                    state.grant(&caller, &args.id)?;
                    Ok(destroyed(state.sessions.destroy(&caller, &args.id)?))
                })
                .await
            }
            .await,
        )
    }

    #[tool(name = "sandbox_evidence", description = d::EVIDENCE, input_schema = schema::<IdArgs>())]
    async fn sandbox_evidence(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let state = self.state.clone();
        reply(
            async {
                let caller = self.caller(&ctx)?;
                let args: IdArgs = parse(args)?;
                blocking(move || {
                    state.grant(&caller, &args.id)?;
                    Ok(evidence::collect(&state.home, &args.id)?)
                })
                .await
            }
            .await,
        )
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for CellsMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(rmcp::model::Implementation::new(
                "cellos",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(d::instructions(&self.state.profiles))
    }
}

/// A new cell id: unique, so the log's record of each cell is its alone.
fn new_id() -> String {
    let uuid = uuid::Uuid::new_v4().simple().to_string();
    format!("mcp-{}", &uuid[..16])
}

/// Narrow, admit (refusing and recording a widening), create, and write the initial files.
fn create(
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
    let document = ExecutionCellDocument {
        api_version: API_VERSION.into(),
        kind: KIND_EXECUTION_CELL.into(),
        metadata: Metadata {
            name: Some(profile.name.clone()),
            ..Metadata::default()
        },
        spec: spec.clone(),
    };
    state
        .sessions
        .create_with_policies(caller, document, &profile.policies)?;
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
    let mut written = Vec::new();
    for (file, content) in initial.iter().zip(contents) {
        match state
            .sessions
            .write_file(caller, &id, &file.path, &content, file.mode)
        {
            Ok(w) => written.push(w),
            Err(err) => {
                let _ = state.sessions.destroy(caller, &id);
                return Err(err.into());
            }
        }
    }
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

fn exec_in(
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
        id,
        request,
        command.stdin.as_deref(),
        state.max_output_bytes,
        afterwards,
        waiting,
    )
}

/// `run`: a fresh cell, the command, and the cell's destruction whatever happened.
fn run_once(
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

fn write(
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
fn destroyed(info: CellInfo) -> serde_json::Value {
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

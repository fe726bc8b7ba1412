//! The MCP server: one [`CellsMcp`] per connection (stdio, or each streamable HTTP session),
//! all over one shared [`McpState`] (see [`crate::cells`]).
//!
//! Every tool runs its registry calls on the blocking pool, so a long exec never stalls the
//! others: one session may run many calls at once.

use std::sync::Arc;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::model::{CallToolResult, JsonObject, ServerCapabilities, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::{tool, tool_handler, tool_router, RoleServer, ServerHandler};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::args::{
    CreateArgs, ExecArgs, IdArgs, ListFilesArgs, ReadFileArgs, RunArgs, WriteFileArgs,
};
use crate::cells::{create, destroyed, exec_in, run_once, write, McpState};
use crate::error::ToolError;
use crate::exec::Afterwards;
use crate::{descriptions as d, evidence, files};
use cellos_supervisor::Caller;

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

impl CellsMcp {
    /// A call that runs to its end: the caller, the arguments (a mistake is a tool error
    /// naming the field), then `work` off the async workers.
    async fn call<A, T>(
        &self,
        args: JsonObject,
        ctx: &RequestContext<RoleServer>,
        work: impl FnOnce(&McpState, Caller, A) -> Result<T, ToolError> + Send + 'static,
    ) -> CallToolResult
    where
        A: DeserializeOwned + Send + 'static,
        T: Serialize + Send + 'static,
    {
        let state = self.state.clone();
        let prepared = self
            .caller(ctx)
            .and_then(|caller| Ok((caller, parse::<A>(args)?)));
        reply(match prepared {
            Ok((caller, args)) => blocking(move || work(&state, caller, args)).await,
            Err(e) => Err(e),
        })
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

#[tool_router]
impl CellsMcp {
    #[tool(name = "sandbox_create", description = d::CREATE, input_schema = schema::<CreateArgs>())]
    async fn sandbox_create(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        self.call(args, &ctx, |state, caller, args: CreateArgs| {
            create(
                state,
                &caller,
                &args.profile,
                &args.narrowing(),
                &args.files,
            )
        })
        .await
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
        self.call(args, &ctx, |state, caller, args: ReadFileArgs| {
            state.grant(&caller, &args.id)?;
            let (stat, bytes) = state.sessions.read_file(&caller, &args.id, &args.path)?;
            files::part(&stat, &bytes, args.encoding, args.offset, args.length)
        })
        .await
    }

    #[tool(name = "sandbox_write_file", description = d::WRITE, input_schema = schema::<WriteFileArgs>())]
    async fn sandbox_write_file(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        self.call(args, &ctx, |state, caller, args: WriteFileArgs| {
            state.grant(&caller, &args.id)?;
            write(state, &caller, &args.id, &args.file(), "content")
        })
        .await
    }

    #[tool(name = "sandbox_list_files", description = d::LIST, input_schema = schema::<ListFilesArgs>())]
    async fn sandbox_list_files(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        self.call(args, &ctx, |state, caller, args: ListFilesArgs| {
            state.grant(&caller, &args.id)?;
            let path = args.path.unwrap_or_else(|| "/".into());
            let entries = state.sessions.list_dir(&args.id, &path)?;
            Ok(serde_json::json!({ "path": path, "entries": entries }))
        })
        .await
    }

    #[tool(name = "sandbox_destroy", description = d::DESTROY, input_schema = schema::<IdArgs>())]
    async fn sandbox_destroy(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        self.call(args, &ctx, |state, caller, args: IdArgs| {
            state.grant(&caller, &args.id)?;
            Ok(destroyed(state.sessions.destroy(&caller, &args.id)?))
        })
        .await
    }

    #[tool(name = "sandbox_evidence", description = d::EVIDENCE, input_schema = schema::<IdArgs>())]
    async fn sandbox_evidence(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        self.call(args, &ctx, |state, caller, args: IdArgs| {
            state.grant(&caller, &args.id)?;
            Ok(evidence::collect(&state.home, &args.id)?)
        })
        .await
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

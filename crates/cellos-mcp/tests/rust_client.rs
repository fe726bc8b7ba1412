//! The MCP layer through the Rust SDK's own client over a duplex transport: the tools and their
//! schemas, and every refusal the layer makes before a cell is involved (bad arguments, unknown
//! cells and profiles, a widened profile, recorded in the real signed log). The cells behind
//! the tools are exercised end to end by crates/cellos/tests/mcp (the real binary, as root)
//! and tests/mcp (the Python SDK); here the backend refuses every create, so nothing pretends
//! to be a cell, and a backend refusal is shown to be a tool error too.

use std::sync::Arc;

use cellos_adapters::event_log::{read_log, JsonlEventLog, LogConfig};
use cellos_adapters::keys::KeyStore;
use cellos_core::events::{EventFactory, EventKind};
use cellos_core::ports::{
    Cell, CellBackend, CellRequest, CellSummary, ExportSink, PortError, PortErrorKind,
    TeardownReport,
};
use cellos_core::spec::ExportTarget;
use cellos_mcp::{CellsMcp, McpState, Profiles, TOOL_NAMES};
use cellos_supervisor::{Caller, ExportRouter, SessionConfig, Sessions, Supervisor};
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{json, Value};

struct RefusingBackend;

fn refused() -> PortError {
    PortError::new(PortErrorKind::Refused, "this test backend creates no cells")
}

impl CellBackend for RefusingBackend {
    fn name(&self) -> &'static str {
        "refusing-test-backend"
    }
    fn create(&self, _: CellRequest<'_>) -> Result<Box<dyn Cell>, PortError> {
        Err(refused())
    }
    fn reclaim(&self, cell_id: &str) -> Result<TeardownReport, PortError> {
        Ok(TeardownReport {
            cell_id: cell_id.to_owned(),
            ..TeardownReport::default()
        })
    }
    fn orphans(&self) -> Result<Vec<String>, PortError> {
        Ok(Vec::new())
    }
    fn list(&self) -> Result<Vec<CellSummary>, PortError> {
        Ok(Vec::new())
    }
    fn signal(&self, _: &str, _: i32) -> Result<(), PortError> {
        Err(refused())
    }
    fn pause(&self, _: &str) -> Result<String, PortError> {
        Err(refused())
    }
    fn resume(&self, _: &str) -> Result<String, PortError> {
        Err(refused())
    }
}

struct NoExports;

impl ExportRouter for NoExports {
    fn sink_for(&self, _: Option<&ExportTarget>) -> Result<Arc<dyn ExportSink>, PortError> {
        Err(refused())
    }
}

/// A client connected over a duplex pipe to a server over a signed log in `home`.
async fn connect(home: &std::path::Path) -> RunningService<RoleClient, ()> {
    let signer = KeyStore::new(home)
        .load_or_create_signer()
        .expect("signing key");
    let log = JsonlEventLog::open(home, signer, LogConfig::default()).expect("event log");
    let factory = EventFactory::new(
        "test",
        "supervisor",
        Arc::new(|| uuid::Uuid::new_v4().to_string()),
    );
    let supervisor = Supervisor::new(
        Arc::new(RefusingBackend),
        Arc::new(log),
        factory,
        Vec::new(),
        Arc::new(NoExports),
    );
    let sessions = Arc::new(Sessions::new(
        Arc::new(supervisor),
        Vec::new(),
        SessionConfig::default(),
    ));
    let caller = Caller {
        subject: "uid:4242".into(),
    };
    let state = Arc::new(McpState::new(
        sessions,
        Profiles::builtin().expect("built-in profiles"),
        home.to_owned(),
        caller,
    ));
    let (server_end, client_end) = tokio::io::duplex(1 << 16);
    tokio::spawn(async move {
        if let Ok(running) = CellsMcp::new(state).serve(server_end).await {
            let _ = running.waiting().await;
        }
    });
    ().serve(client_end).await.expect("client initializes")
}

async fn call(
    client: &RunningService<RoleClient, ()>,
    tool: &'static str,
    args: Value,
) -> CallToolResult {
    let Value::Object(args) = args else {
        panic!("arguments must be an object")
    };
    client
        .call_tool(CallToolRequestParams::new(tool).with_arguments(args))
        .await
        .expect("a tool error is a result, never a protocol failure")
}

fn error_text(result: &CallToolResult) -> String {
    assert_eq!(
        result.is_error,
        Some(true),
        "expected a tool error: {result:?}"
    );
    result.content[0]
        .as_text()
        .map(|t| t.text.clone())
        .expect("text content")
}

#[tokio::test]
async fn list_tools_names_every_tool_with_a_generated_input_schema() {
    let home = tempfile::tempdir().expect("tempdir");
    let client = connect(home.path()).await;
    let tools = client.list_all_tools().await.expect("list tools");
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort_unstable();
    let mut expected = TOOL_NAMES.to_vec();
    expected.sort_unstable();
    assert_eq!(names, expected);
    let exec = tools
        .iter()
        .find(|t| t.name == "sandbox_exec")
        .expect("sandbox_exec");
    let props = exec.input_schema["properties"]
        .as_object()
        .expect("properties");
    for field in ["id", "command", "argv", "cwd", "env", "stdin", "timeoutMs"] {
        assert!(props.contains_key(field), "sandbox_exec lacks {field}");
    }
    assert_eq!(exec.input_schema["additionalProperties"], json!(false));
    let info = client.peer_info().expect("server info");
    let instructions = info.instructions.as_deref().unwrap_or_default();
    assert!(instructions.contains("python"), "{instructions}");
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn a_widened_profile_is_refused_naming_the_field_and_limit_and_recorded_as_a_denial() {
    let home = tempfile::tempdir().expect("tempdir");
    let client = connect(home.path()).await;
    let result = call(
        &client,
        "run",
        json!({"profile": "python", "command": "true", "ttlSeconds": 301, "limits": {"pidsMax": 100000}}),
    )
    .await;
    let text = error_text(&result);
    assert!(
        text.contains("ttlSeconds: 301 s exceeds the limit of profile \"python\", 300 s"),
        "{text}"
    );
    assert!(text.contains("limits.pidsMax: 100000 processes"), "{text}");
    let events = read_log(home.path()).expect("read the log");
    let denial = events
        .iter()
        .find(|e| e.kind() == Some(EventKind::AdmissionDecided))
        .expect("the refusal is in the log");
    assert_eq!(denial.cellosactor.as_deref(), Some("uid:4242"));
    let decision = &denial.data["decision"];
    assert_eq!(decision["verdict"], json!("deny"));
    let paths: Vec<&str> = decision["violations"]
        .as_array()
        .expect("violations")
        .iter()
        .filter_map(|v| v["path"].as_str())
        .collect();
    assert_eq!(paths, ["ttlSeconds", "limits.pidsMax"]);
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn bad_arguments_unknown_cells_and_a_refused_create_are_tool_errors_and_the_session_goes_on()
{
    let home = tempfile::tempdir().expect("tempdir");
    let client = connect(home.path()).await;
    let cases: [(&'static str, Value, &str); 6] = [
        (
            "sandbox_exec",
            json!({"command": "true"}),
            "missing field `id`",
        ),
        (
            "run",
            json!({"profile": "python", "cmd": "x"}),
            "unknown field `cmd`",
        ),
        (
            "sandbox_create",
            json!({"profile": "python", "ttlSeconds": -1}),
            "ttlSeconds",
        ),
        (
            "sandbox_create",
            json!({"profile": "ruby"}),
            "no profile \"ruby\"; profiles: python",
        ),
        (
            "sandbox_destroy",
            json!({"id": "mcp-0"}),
            "no cell \"mcp-0\"",
        ),
        (
            "sandbox_create",
            json!({"profile": "python"}),
            "this test backend creates no cells",
        ),
    ];
    for (tool, args, expected) in cases {
        let text = error_text(&call(&client, tool, args).await);
        assert!(text.contains(expected), "{tool}: {text}");
    }
    let tools = client
        .list_all_tools()
        .await
        .expect("the session still answers");
    assert_eq!(tools.len(), TOOL_NAMES.len());
    client.cancel().await.expect("close");
}

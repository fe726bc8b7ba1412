//! `cellos mcp` on stdio, driven by the Rust MCP SDK's own client through its child-process
//! transport: real cells (root), the real signed log, and `cellos verify` over what the tools
//! recorded.

use std::process::Command as StdCommand;

use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{json, Value};

/// A client of `cellos mcp` in a fresh CELLOS_HOME.
async fn start(home: &std::path::Path) -> RunningService<RoleClient, ()> {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_cellos"));
    command
        .arg("--home")
        .arg(home)
        .arg("mcp")
        .env_remove("CELLOS_SECRETS_DIR");
    let transport = TokioChildProcess::new(command).expect("start cellos mcp");
    ().serve(transport).await.expect("initialize")
}

async fn call(client: &RunningService<RoleClient, ()>, tool: &'static str, args: Value) -> Value {
    let result = call_raw(client, tool, args).await;
    assert_ne!(result.is_error, Some(true), "{tool} failed: {result:?}");
    result.structured_content.expect("structured result")
}

async fn call_raw(
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
        .expect("tools/call")
}

#[tokio::test(flavor = "multi_thread")]
async fn run_prints_42_and_the_file_tools_round_trip_with_verified_evidence() {
    let home = tempfile::tempdir().expect("tempdir");
    let client = start(home.path()).await;

    let run = call(
        &client,
        "run",
        json!({"profile": "python", "command": "python3 -c 'print(6*7)'"}),
    )
    .await;
    assert_eq!(run["stdout"], json!("42\n"));
    assert_eq!(run["exitCode"], json!(0));

    let cell = call(
        &client,
        "sandbox_create",
        json!({"profile": "python", "ttlSeconds": 60}),
    )
    .await;
    let id = cell["id"].as_str().expect("id").to_owned();
    assert_eq!(cell["mayReach"], json!([]));
    call(
        &client,
        "sandbox_write_file",
        json!({"id": id, "path": "/work/a.txt", "content": "written\n"}),
    )
    .await;
    let cat = call(
        &client,
        "sandbox_exec",
        json!({"id": id, "argv": ["cat", "/work/a.txt"]}),
    )
    .await;
    assert_eq!(cat["stdout"], json!("written\n"));
    let read = call(
        &client,
        "sandbox_read_file",
        json!({"id": id, "path": "/work/a.txt"}),
    )
    .await;
    assert_eq!(read["content"], json!("written\n"));
    let listed = call(
        &client,
        "sandbox_list_files",
        json!({"id": id, "path": "/work"}),
    )
    .await;
    assert!(listed["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .any(|e| e["name"] == "a.txt"));
    let timed = call_raw(
        &client,
        "sandbox_exec",
        json!({"id": id, "command": "sleep 30", "timeoutMs": 300}),
    )
    .await;
    assert_eq!(timed.is_error, Some(true), "{timed:?}");
    let gone = call(&client, "sandbox_destroy", json!({"id": id})).await;
    assert_eq!(gone["residueFree"], json!(true));

    let evidence = call(&client, "sandbox_evidence", json!({"id": id})).await;
    assert_eq!(evidence["chainVerified"], json!(true));
    let files: Vec<&str> = evidence["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|e| e["data"]["event"].as_str())
        .collect();
    assert_eq!(files, ["file.v1.written", "file.v1.read"]);
    let completed: Vec<&Value> = evidence["execs"]
        .as_array()
        .expect("execs")
        .iter()
        .filter(|e| e["data"]["event"] == "exec.v1.completed")
        .collect();
    assert_eq!(completed.len(), 2);
    assert_eq!(completed[1]["data"]["timedOut"], json!(true));
    client.cancel().await.expect("close");

    let verify = StdCommand::new(env!("CARGO_BIN_EXE_cellos"))
        .arg("--home")
        .arg(home.path())
        .arg("verify")
        .output()
        .expect("cellos verify");
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cells_of_a_server_end_when_its_client_goes() {
    let home = tempfile::tempdir().expect("tempdir");
    let client = start(home.path()).await;
    let cell = call(&client, "sandbox_create", json!({"profile": "python"})).await;
    let id = cell["id"].as_str().expect("id").to_owned();
    client.cancel().await.expect("close");
    // Closing stdin ends the server, which destroys its cells before it exits.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let log = std::fs::read_to_string(home.path().join("events.jsonl")).unwrap_or_default();
        let destroyed = log.lines().any(|l| {
            l.contains("lifecycle.v1.destroyed") && l.contains(&format!("urn:cellos:cell:{id}\""))
        });
        if destroyed {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "cell {id} was not destroyed when the client left"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_exec_is_killed_and_the_session_goes_on() {
    use rmcp::model::{ClientRequest, Request};
    use rmcp::service::PeerRequestOptions;

    let home = tempfile::tempdir().expect("tempdir");
    let client = start(home.path()).await;
    let cell = call(&client, "sandbox_create", json!({"profile": "python"})).await;
    let id = cell["id"].as_str().expect("id").to_owned();
    let Value::Object(args) = json!({"id": id, "command": "sleep 60"}) else {
        unreachable!()
    };
    let request = ClientRequest::CallToolRequest(Request::new(
        CallToolRequestParams::new("sandbox_exec").with_arguments(args),
    ));
    let handle = client
        .send_cancellable_request(request, PeerRequestOptions::no_options())
        .await
        .expect("send");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    handle
        .cancel(Some("the agent moved on".into()))
        .await
        .expect("cancel");

    // The exec ends killed well before its 60 s, and the cell still takes execs.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let evidence = call(&client, "sandbox_evidence", json!({"id": id})).await;
        let killed = evidence["execs"]
            .as_array()
            .expect("execs")
            .iter()
            .any(|e| {
                e["data"]["event"] == "exec.v1.completed" && e["data"]["killed"] == json!(true)
            });
        if killed {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cancelled exec still runs"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let after = call(
        &client,
        "sandbox_exec",
        json!({"id": id, "command": "echo on"}),
    )
    .await;
    assert_eq!(after["stdout"], json!("on\n"));
    call(&client, "sandbox_destroy", json!({"id": id})).await;
    client.cancel().await.expect("close");
}

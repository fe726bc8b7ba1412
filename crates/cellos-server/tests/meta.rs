//! `/openapi.json` is an OpenAPI 3.1 document listing every route, and `/metrics` passes
//! `promtool check metrics` (install promtool: `apt-get install prometheus`; without it
//! this test fails rather than skipping).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{get, request, start};

/// Every route of the API with its method.
const ROUTES: &[(&str, &str)] = &[
    ("/v1/cells", "post"),
    ("/v1/cells", "get"),
    ("/v1/cells/{id}", "get"),
    ("/v1/cells/{id}", "delete"),
    ("/v1/cells/{id}/pause", "post"),
    ("/v1/cells/{id}/resume", "post"),
    ("/v1/cells/{id}/exec", "post"),
    ("/v1/cells/{id}/exec/ws", "get"),
    ("/v1/cells/{id}/execs/{exec}", "get"),
    ("/v1/cells/{id}/execs/{exec}/kill", "post"),
    ("/v1/cells/{id}/files", "get"),
    ("/v1/cells/{id}/files", "put"),
    ("/v1/cells/{id}/files", "delete"),
    ("/v1/cells/{id}/files/list", "get"),
    ("/v1/cells/{id}/files/stat", "get"),
    ("/v1/events", "get"),
    ("/v1/events/stream", "get"),
    ("/v1/version", "get"),
    ("/healthz", "get"),
    ("/readyz", "get"),
    ("/metrics", "get"),
    ("/openapi.json", "get"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_is_3_1_and_lists_every_route() {
    let server = start(|_, _| {}).await;
    let reply = server.unix(get("/openapi.json")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content_type(), "application/json");
    let doc = reply.json();
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "openapi: {}",
        doc["openapi"]
    );
    for (path, method) in ROUTES {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is not in the document"
        );
    }
    let mut operation_ids: Vec<&str> = doc["paths"]
        .as_object()
        .expect("paths")
        .values()
        .filter_map(|item| item.as_object())
        .flat_map(|item| item.values())
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    let all = operation_ids.len();
    operation_ids.sort_unstable();
    operation_ids.dedup();
    assert_eq!(operation_ids.len(), all, "operationIds must be unique");
    assert_eq!(all, ROUTES.len());
    let schemas = &doc["components"]["schemas"];
    for schema in [
        "ApiProblem",
        "CellInfoDto",
        "ExecBody",
        "ExecFrame",
        "FileStatDto",
        "EventPage",
    ] {
        assert!(schemas[schema].is_object(), "schema {schema} missing");
    }
    // Every $ref points at a schema the document defines.
    let text = serde_json::to_string(&doc).expect("json");
    for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = piece.split('"').next().unwrap_or_default();
        assert!(schemas[name].is_object(), "dangling $ref to {name}");
    }
}

fn promtool_check(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool must be installed (apt-get install prometheus) for this test");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool ran");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_name_every_series() {
    let server = start(|_, _| {}).await;
    // One create (refused) so the histograms and counters have samples.
    let _ = server
        .unix(request(
            "POST",
            "/v1/cells",
            Some("application/yaml"),
            b"kind: ExecutionCell\n",
        ))
        .await;
    let reply = server.unix(get("/metrics")).await;
    assert_eq!(reply.status, 200);
    assert!(reply.content_type().starts_with("text/plain"));
    let text = String::from_utf8(reply.body).expect("utf-8");
    for name in [
        "# TYPE cellos_cells gauge",
        "cellos_cells{state=\"running\"} 0",
        "cellos_cells{state=\"paused\"} 0",
        "# TYPE cellos_create_seconds histogram",
        "# TYPE cellos_exec_seconds histogram",
        "# TYPE cellos_destroy_seconds histogram",
        "# TYPE cellos_events_appended_total counter",
        "# TYPE cellos_denials_total counter",
        "# HELP cellos_cells",
    ] {
        assert!(text.contains(name), "{name:?} missing from:\n{text}");
    }
    let (ok, report) = promtool_check(&text);
    assert!(ok, "promtool check metrics failed:\n{report}\n{text}");
    assert!(
        report.trim().is_empty(),
        "promtool lint findings:\n{report}\n{text}"
    );
}

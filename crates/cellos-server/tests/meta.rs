//! `/openapi.json` is an OpenAPI 3.1 document listing every route, and `/metrics` passes
//! `promtool check metrics` (install promtool: `apt-get install prometheus`; without it
//! this test fails rather than skipping).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use cellos_core::ports::EventSink;
use common::{event, get, request, start};

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
    // Over TCP every route needs the token: each operation documents the 401 it can answer,
    // and every error response is a problem.
    for (path, method) in ROUTES {
        let responses = &doc["paths"][path][method]["responses"];
        assert!(
            responses["401"]["content"]["application/problem+json"].is_object(),
            "{method} {path} does not document 401 as a problem"
        );
        for (status, response) in responses.as_object().expect("responses") {
            if status.starts_with('4') || status.starts_with('5') {
                assert!(
                    response["content"]["application/problem+json"].is_object(),
                    "{method} {path} {status} is not application/problem+json"
                );
            }
        }
    }
    // A created cell links to the operations on it, by the camelCase `operationId`.
    let links = &doc["paths"]["/v1/cells"]["post"]["responses"]["201"]["links"];
    assert_eq!(links["getCell"]["operationId"], "getCell");
    assert_eq!(links["getCell"]["parameters"]["id"], "$response.body#/id");
    assert!(!text_of(&doc).contains("operation_id"));
    // Every $ref points at a schema the document defines.
    let text = serde_json::to_string(&doc).expect("json");
    for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = piece.split('"').next().unwrap_or_default();
        assert!(schemas[name].is_object(), "dangling $ref to {name}");
    }
}

fn text_of(doc: &serde_json::Value) -> String {
    serde_json::to_string(doc).expect("json")
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

/// Every sample's family has its `# HELP` and `# TYPE` lines before its first sample, the
/// way the text format 0.0.4 wants them (a histogram's `_bucket`, `_sum` and `_count`
/// belong to the histogram). Returns what is wrong, one finding a line.
fn exposition_findings(text: &str) -> Vec<String> {
    use std::collections::BTreeMap;
    let mut help = BTreeMap::new();
    let mut types: BTreeMap<&str, &str> = BTreeMap::new();
    let mut findings = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, doc) = rest.split_once(' ').unwrap_or((rest, ""));
            if doc.trim().is_empty() {
                findings.push(format!("{name}: empty HELP"));
            }
            help.insert(name, doc);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap_or((rest, ""));
            types.insert(name, ty);
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|suffix| name.strip_suffix(suffix))
                .find(|base| matches!(types.get(base), Some(&"histogram" | &"summary")))
                .unwrap_or(name);
            if !help.contains_key(family) {
                findings.push(format!("{family}: sample {name} before any HELP"));
            }
            match types.get(family) {
                None => findings.push(format!("{family}: sample {name} before any TYPE")),
                Some(&"counter") if !family.ends_with("_total") => {
                    findings.push(format!("{family}: a counter's name must end in _total"))
                }
                Some(_) => {}
            }
        }
    }
    findings.dedup();
    findings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_name_every_series() {
    let server = start(|_, _| {}).await;
    // One create (refused) so the histograms and counters have samples, and one event
    // appended through the feed so the events counter has a value of its own.
    let _ = server
        .unix(request(
            "POST",
            "/v1/cells",
            Some("application/yaml"),
            b"kind: ExecutionCell\n",
        ))
        .await;
    server
        .feed
        .emit(event("metrics-cell", 1))
        .expect("append one event");
    let reply = server.unix(get("/metrics")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.content_type(),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = String::from_utf8(reply.body).expect("utf-8");
    for name in [
        "# TYPE cellos_cells gauge",
        "cellos_cells{state=\"running\"} 0",
        "cellos_cells{state=\"paused\"} 0",
        "# TYPE cellos_create_seconds histogram",
        "# TYPE cellos_exec_seconds histogram",
        "# TYPE cellos_destroy_seconds histogram",
        "# HELP cellos_events_appended_total ",
        "# TYPE cellos_events_appended_total counter",
        "\ncellos_events_appended_total 1\n",
        "# TYPE cellos_denials_total counter",
        "# HELP cellos_cells",
    ] {
        assert!(text.contains(name), "{name:?} missing from:\n{text}");
    }
    let findings = exposition_findings(&text);
    assert!(findings.is_empty(), "{findings:#?}\n{text}");
    let (ok, report) = promtool_check(&text);
    assert!(ok, "promtool check metrics failed:\n{report}\n{text}");
    assert!(
        report.trim().is_empty(),
        "promtool lint findings:\n{report}\n{text}"
    );

    // Both checks catch a family without its HELP line (as the events counter once was).
    let no_help: String = text
        .lines()
        .filter(|line| !line.starts_with("# HELP cellos_events_appended_total"))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_eq!(
        exposition_findings(&no_help),
        ["cellos_events_appended_total: sample cellos_events_appended_total before any HELP"]
    );
    let (ok, report) = promtool_check(&no_help);
    assert!(
        !ok && report.contains("cellos_events_appended_total no help text"),
        "promtool missed the missing HELP: {report}"
    );
}

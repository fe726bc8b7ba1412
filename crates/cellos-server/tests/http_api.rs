//! The API over a real Unix socket: liveness, problem+json for every malformed input, and
//! spec problems located by path exactly as `cellos validate` reports them.
//!
//! Cells here come from a backend that refuses every create (see `common`), so only what
//! the HTTP layer decides is asserted.

mod common;

use common::{get, request, start};

const HELLO: &str = "apiVersion: cellos.io/v1
kind: ExecutionCell
metadata:
  name: hello
spec:
  id: hello
  run:
    argv: [/bin/true]
  lifetime:
    ttlSeconds: 60
  filesystem:
    rootfs: host
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_version_and_readyz_answer_on_the_unix_socket() {
    let server = start(|_, _| {}).await;
    let health = server.unix(get("/healthz")).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    assert_eq!(server.unix(get("/readyz")).await.status, 200);
    let version = server.unix(get("/v1/version")).await.json();
    assert_eq!(version["api"], "v1");
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_is_private_and_removed_at_stop() {
    use std::os::unix::fs::PermissionsExt;
    let server = start(|_, _| {}).await;
    let mode = std::fs::metadata(&server.socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let socket = server.socket.clone();
    server.stop().await.expect("clean stop");
    assert!(!socket.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_server_is_never_replaced_but_a_stale_socket_is() {
    let server = start(|_, _| {}).await;
    let second = cellos_server::listen::bind_unix(&server.socket).await;
    assert!(matches!(second, Err(cellos_server::ListenError::Live(_))));
    let socket = server.socket.clone();
    let dir = tempfile::tempdir().expect("tempdir");
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
    assert!(stale.exists());
    cellos_server::listen::bind_unix(&stale)
        .await
        .expect("a stale socket is replaced");
    server.stop().await.expect("clean stop");
    assert!(!socket.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_yaml_is_an_invalid_spec_problem_about_the_document() {
    let server = start(|_, _| {}).await;
    let reply = server
        .unix(request(
            "POST",
            "/v1/cells",
            Some("application/yaml"),
            b"kind: ExecutionCell\nspec: [unclosed\n",
        ))
        .await;
    let body = reply.problem(422, "invalid-spec");
    let problems = body["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 1);
    assert!(problems[0]["path"].is_string());
    assert!(problems[0]["message"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_spec_id_is_located_at_spec_id() {
    let server = start(|_, _| {}).await;
    let spec = HELLO.replace("  id: hello\n", "");
    let reply = server
        .unix(request(
            "POST",
            "/v1/cells",
            Some("text/yaml"),
            spec.as_bytes(),
        ))
        .await;
    let body = reply.problem(422, "invalid-spec");
    assert_eq!(body["problems"][0]["path"], "spec.id");
    assert!(body["problems"][0]["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("required")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_semantic_problem_comes_back_with_its_path() {
    let server = start(|_, _| {}).await;
    let spec = include_str!("../../../examples/invalid/header-and-id.yaml");
    let reply = server
        .unix(request(
            "POST",
            "/v1/cells",
            Some("application/yaml"),
            spec.as_bytes(),
        ))
        .await;
    let body = reply.problem(422, "invalid-spec");
    let paths: Vec<&str> = body["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter_map(|p| p["path"].as_str())
        .collect();
    for expected in ["apiVersion", "spec.id", "spec.run.argv[0]", "spec.run.cwd"] {
        assert!(
            paths.contains(&expected),
            "{expected} missing from {paths:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_spec_is_read_like_yaml() {
    let server = start(|_, _| {}).await;
    let reply = server
        .unix(request(
            "POST",
            "/v1/cells",
            Some("application/json; charset=utf-8"),
            br#"{"apiVersion":"cellos.io/v1","kind":"ExecutionCell","spec":{}}"#,
        ))
        .await;
    let body = reply.problem(422, "invalid-spec");
    assert_eq!(body["problems"][0]["path"], "spec.id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_spec_reaches_the_sessions_and_its_error_is_a_problem() {
    let server = start(|_, _| {}).await;
    let reply = server
        .unix(request(
            "POST",
            "/v1/cells",
            Some("application/yaml"),
            HELLO.as_bytes(),
        ))
        .await;
    // Whatever Sessions answers (today: the registry is being built), it is a problem.
    assert!(
        reply.status >= 400,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.content_type(), "application/problem+json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_media_types_and_huge_bodies_are_refused() {
    let server = start(|config, _| config.spec_body_limit = 1024).await;
    server
        .unix(request(
            "POST",
            "/v1/cells",
            Some("text/plain"),
            HELLO.as_bytes(),
        ))
        .await
        .problem(415, "unsupported-media-type");
    server
        .unix(request("POST", "/v1/cells", None, HELLO.as_bytes()))
        .await
        .problem(415, "unsupported-media-type");
    let huge = format!("{HELLO}#{}\n", "x".repeat(4096));
    server
        .unix(request(
            "POST",
            "/v1/cells",
            Some("application/yaml"),
            huge.as_bytes(),
        ))
        .await
        .problem(413, "too-large");
    server
        .unix(request(
            "POST",
            "/v1/cells",
            Some("application/yaml"),
            &[0xff, 0xfe, 0x00],
        ))
        .await
        .problem(400, "bad-request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_exec_requests_are_bad_requests() {
    let server = start(|_, _| {}).await;
    let exec = |body: &'static [u8], ct: Option<&'static str>| {
        request("POST", "/v1/cells/hello/exec", ct, body)
    };
    server
        .unix(exec(b"{not json", Some("application/json")))
        .await
        .problem(400, "bad-request");
    let wrong_field = server
        .unix(exec(br#"{"argv":"ls"}"#, Some("application/json")))
        .await
        .problem(400, "bad-request");
    assert!(wrong_field["detail"]
        .as_str()
        .is_some_and(|d| d.contains("argv")));
    server
        .unix(exec(br#"{"argv":[]}"#, Some("application/json")))
        .await
        .problem(400, "bad-request");
    server
        .unix(exec(
            br#"{"argv":["ls"],"bogus":1}"#,
            Some("application/json"),
        ))
        .await
        .problem(400, "bad-request");
    server
        .unix(exec(br#"{"argv":["ls"]}"#, Some("text/plain")))
        .await
        .problem(415, "unsupported-media-type");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_queries_unknown_routes_and_methods_are_problems() {
    let server = start(|_, _| {}).await;
    server
        .unix(get("/v1/cells?limit=lots"))
        .await
        .problem(400, "bad-request");
    server
        .unix(get("/v1/cells?limit=0"))
        .await
        .problem(400, "bad-request");
    server
        .unix(get("/v1/cells?state=sleeping"))
        .await
        .problem(400, "bad-request");
    server
        .unix(get("/v1/events?after=-1"))
        .await
        .problem(400, "bad-request");
    server
        .unix(get("/v1/cells/hello/files"))
        .await
        .problem(400, "bad-request");
    server
        .unix(request(
            "PUT",
            "/v1/cells/hello/files?path=/x&mode=999",
            None,
            b"x",
        ))
        .await
        .problem(400, "bad-request");
    server
        .unix(get("/v2/nothing"))
        .await
        .problem(404, "not-found");
    server
        .unix(request("PATCH", "/v1/cells", None, b""))
        .await
        .problem(405, "method-not-allowed");
    server
        .unix(get("/v1/cells/nope"))
        .await
        .problem(404, "not-found");
    let listing = server.unix(get("/v1/cells?state=running&limit=5")).await;
    assert_eq!(listing.status, 200);
    assert_eq!(listing.json()["cells"], serde_json::json!([]));
    server.stop().await.expect("clean stop");
}

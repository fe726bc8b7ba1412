//! No input makes the server panic or answer without a problem: every route gets malformed
//! bodies, content types and queries, and each answer is a success or a problem+json.

mod common;

use common::{request, start};

const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/cells"),
    ("GET", "/v1/cells"),
    ("GET", "/v1/cells/x"),
    ("DELETE", "/v1/cells/x"),
    ("POST", "/v1/cells/x/pause"),
    ("POST", "/v1/cells/x/resume"),
    ("POST", "/v1/cells/x/exec"),
    ("GET", "/v1/cells/x/exec/ws"),
    ("GET", "/v1/cells/x/execs/y"),
    ("POST", "/v1/cells/x/execs/y/kill"),
    ("GET", "/v1/cells/x/files"),
    ("PUT", "/v1/cells/x/files"),
    ("DELETE", "/v1/cells/x/files"),
    ("GET", "/v1/cells/x/files/list"),
    ("GET", "/v1/cells/x/files/stat"),
    ("GET", "/v1/events"),
    ("GET", "/v1/version"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
];

const QUERIES: &[&str] = &[
    "",
    "?path=/etc/passwd",
    "?path=",
    "?path=/a&mode=0o7777&kind=directory&parents=maybe",
    "?limit=99999999999999999999999&after=-5&cell=%00",
    "?offset=abc&follow=yes",
    "?state=running&cursor=%FF%FE",
    "?%%%=&&==",
    "?recursive=true&path=/&unknown=1",
];

const BODIES: &[(&[u8], Option<&str>)] = &[
    (b"", None),
    (b"{", Some("application/json")),
    (b"null", Some("application/json")),
    (b"[1,2,3]", Some("application/json")),
    (b"\xff\xfe\xfd", Some("application/yaml")),
    (b"kind: [\n", Some("text/yaml")),
    (
        b"{\"argv\":[\"a\\u0000b\"],\"env\":{\"=\":\"x\"},\"cwd\":\"rel\",\"timeoutMs\":0}",
        Some("application/json"),
    ),
    (b"\x00\x01\x02", Some("application/octet-stream")),
    (b"anything", Some("multipart/form-data; boundary=x")),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_garbage_with_a_problem_or_a_success() {
    let server = start(|_, _| {}).await;
    for (method, path) in ROUTES {
        for query in QUERIES {
            for (body, content_type) in BODIES {
                let uri = format!("{path}{query}");
                let reply = server
                    .unix(request(method, &uri, *content_type, body))
                    .await;
                let what = format!("{method} {uri} {content_type:?}");
                assert_ne!(
                    reply.status,
                    500,
                    "{what}: {}",
                    String::from_utf8_lossy(&reply.body)
                );
                if reply.status >= 400 {
                    assert_eq!(reply.content_type(), "application/problem+json", "{what}");
                    let problem = reply.json();
                    assert!(
                        problem["type"]
                            .as_str()
                            .is_some_and(|t| t.starts_with("https://cellos.dev/problems/")),
                        "{what}: {problem}"
                    );
                }
            }
        }
    }
    server.stop().await.expect("clean stop");
}

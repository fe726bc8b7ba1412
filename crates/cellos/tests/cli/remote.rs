//! The client commands against a stand-in server: a hyper HTTP/1 server on a real Unix socket
//! at CELLOS_HOME/cellos.sock, answering with canned responses of the API contract and
//! recording what it was sent. (Tests against the real `cellos serve` live with the server.)

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use crate::support::{stderr, stdout, Home};

/// One request as the stand-in server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    content_type: String,
    body: Vec<u8>,
}

/// A stand-in server on `socket`, running until the test's runtime is dropped.
struct FakeServer {
    seen: Arc<Mutex<Vec<Seen>>>,
    _runtime: tokio::runtime::Runtime,
}

const CELL: &str = r#"{"id":"s1","runId":"r1","state":"running","session":true,"specHash":"h",
"created":"2026-01-01T00:00:00Z","owner":"uid:0","execs":0,"lastActivity":"2026-01-01T00:00:00Z",
"isolation":{}}"#;

const DESTROYED: &str = r#"{"id":"s1","runId":"r1","state":"destroyed","session":true,"specHash":"h",
"created":"2026-01-01T00:00:00Z","owner":"uid:0","execs":1,"lastActivity":"2026-01-01T00:00:00Z",
"isolation":{},"teardown":{"cellId":"s1","destroyed":true,"forced":false,"removed":[],
"residue":[{"class":"cgroup","detail":"/sys/fs/cgroup/cellos/s1"}],"unverified":[],"residueFree":false}}"#;

/// Frames in the order the client must reproduce them; stdout has a chunk split in two.
const FRAMES: &str = concat!(
    r#"{"type":"started","execId":"e1"}"#,
    "\n",
    r#"{"type":"stdout","offset":0,"data":"one\n"}"#,
    "\n",
    r#"{"type":"stderr","offset":0,"dataBase64":"d2Fybgo="}"#,
    "\n",
    r#"{"type":"stdout","offset":4,"data":"two\n"}"#,
    "\n",
    r#"{"type":"exit","status":7,"exit":{"kind":"exited","code":7},"timedOut":false,"durationMs":3,"stdoutBytes":8,"stderrBytes":5}"#,
    "\n"
);

const PROBLEM: &str = r#"{"type":"https://cellos.dev/problems/invalid-spec","title":"The spec is invalid",
"status":422,"detail":"1 problem","problems":[{"path":"spec.run.argv","message":"must not be empty; name the program"}]}"#;

fn respond(status: u16, content_type: &str, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("response")
}

/// The canned answer to each route the tests use.
fn route(seen: &Seen) -> Response<Full<Bytes>> {
    match (seen.method.as_str(), seen.uri.as_str()) {
        ("POST", "/v1/cells") if seen.body.starts_with(b"bad") => {
            respond(422, "application/problem+json", PROBLEM)
        }
        ("POST", "/v1/cells") => respond(201, "application/json", CELL),
        ("POST", "/v1/cells/s1/exec") => respond(200, "application/x-ndjson", FRAMES),
        ("DELETE", "/v1/cells/s1") => respond(200, "application/json", DESTROYED),
        ("GET", "/v1/cells?limit=100") => respond(
            200,
            "application/json",
            &format!(r#"{{"cells":[{CELL}],"nextCursor":null}}"#),
        ),
        ("GET", "/v1/cells/s1/files/stat?path=/etc/motd") => respond(
            200,
            "application/json",
            r#"{"name":"motd","kind":"file","size":6,"mode":420,"modifiedUnix":0}"#,
        ),
        ("GET", "/v1/cells/s1/files/stat?path=/etc") => respond(
            200,
            "application/json",
            r#"{"name":"etc","kind":"directory","size":0,"mode":493,"modifiedUnix":0}"#,
        ),
        ("GET", "/v1/cells/s1/files?path=/etc/motd") => {
            respond(200, "application/octet-stream", "hello\n")
        }
        ("PUT", uri) if uri.starts_with("/v1/cells/s1/files?path=") => respond(
            200,
            "application/json",
            r#"{"path":"/x","size":1,"sha256":"00"}"#,
        ),
        _ => respond(
            404,
            "application/problem+json",
            r#"{"type":"https://cellos.dev/problems/not-found","title":"Not found","status":404,"detail":"no such route"}"#,
        ),
    }
}

async fn handle(
    mut request: Request<Incoming>,
    log: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.uri().path() == "/v1/cells/s1/exec/ws" {
        return Ok(upgrade(&mut request, log));
    }
    let method = request.method().to_string();
    let uri = request.uri().to_string();
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = match request.into_body().collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(_) => Vec::new(),
    };
    let seen = Seen {
        method,
        uri,
        content_type,
        body,
    };
    let response = route(&seen);
    log.lock().expect("log").push(seen);
    Ok(response)
}

/// Accept the WebSocket upgrade and run [`echo_exec`] on it.
fn upgrade(request: &mut Request<Incoming>, log: Arc<Mutex<Vec<Seen>>>) -> Response<Full<Bytes>> {
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    let key = request
        .headers()
        .get("sec-websocket-key")
        .map(|k| derive_accept_key(k.as_bytes()))
        .unwrap_or_default();
    let upgrading = hyper::upgrade::on(request);
    tokio::spawn(async move {
        if let Ok(upgraded) = upgrading.await {
            echo_exec(upgraded, log).await;
        }
    });
    Response::builder()
        .status(101)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", key)
        .body(Full::new(Bytes::new()))
        .expect("response")
}

/// An interactive exec of `cat`: records the exec message and every control message, sends
/// stdin back as stdout frames, and exits 3 at EOF.
async fn echo_exec(upgraded: hyper::upgrade::Upgraded, log: Arc<Mutex<Vec<Seen>>>) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::tungstenite::Message;
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        Role::Server,
        None,
    )
    .await;
    let record = |body: &[u8]| {
        log.lock().expect("log").push(Seen {
            method: "WS".into(),
            uri: "/v1/cells/s1/exec/ws".into(),
            content_type: String::new(),
            body: body.to_vec(),
        })
    };
    let frame = |text: String| Message::text(text);
    let _ = ws
        .send(frame(r#"{"type":"started","execId":"e2"}"#.into()))
        .await;
    let mut offset = 0;
    while let Some(Ok(message)) = ws.next().await {
        match message {
            // `q` ends the exec: on a raw terminal there is no EOF to wait for.
            Message::Binary(bytes) if bytes.contains(&b'q') => {
                let exit = r#"{"type":"exit","status":4,"exit":{"kind":"exited","code":4},"timedOut":false}"#;
                let _ = ws.send(frame(exit.into())).await;
                break;
            }
            Message::Binary(bytes) => {
                let data = String::from_utf8_lossy(&bytes).into_owned();
                let out = serde_json::json!({"type":"stdout","offset":offset,"data":data});
                offset += bytes.len();
                let _ = ws.send(frame(out.to_string())).await;
            }
            Message::Text(text) if text.as_str().contains("eof") => {
                record(text.as_bytes());
                let exit = r#"{"type":"exit","status":3,"exit":{"kind":"exited","code":3},"timedOut":false,"durationMs":1,"stdoutBytes":3,"stderrBytes":0}"#;
                let _ = ws.send(frame(exit.into())).await;
                break;
            }
            Message::Text(text) => record(text.as_bytes()),
            _ => {}
        }
    }
    let _ = ws.close(None).await;
}

impl FakeServer {
    fn start(socket: &Path) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(async { tokio::net::UnixListener::bind(socket) })
            .expect("bind socket");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |r| handle(r, log.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Self {
            seen,
            _runtime: runtime,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("log").clone()
    }
}

fn socket(home: &Home) -> PathBuf {
    home.path().join("cellos.sock")
}

#[test]
fn create_sends_the_spec_bytes_with_its_media_type_and_prints_the_id() {
    let home = Home::new();
    let server = FakeServer::start(&socket(&home));
    let yaml = home.path().join("cell.yaml");
    std::fs::write(&yaml, "apiVersion: cellos.io/v1\n").expect("write");
    let json = home.path().join("cell.json");
    std::fs::write(&json, "{\"apiVersion\":\"cellos.io/v1\"}").expect("write");

    for (file, media) in [(&yaml, "application/yaml"), (&json, "application/json")] {
        let out = home.cellos().arg("create").arg(file).output().expect("run");
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stdout(&out), "s1\n");
        let last = server.seen().pop().expect("a request");
        assert_eq!(
            (last.method.as_str(), last.uri.as_str()),
            ("POST", "/v1/cells")
        );
        assert_eq!(last.content_type, media);
        assert_eq!(last.body, std::fs::read(file).expect("read"));
    }
}

#[test]
fn exec_streams_frames_in_order_and_exits_with_the_exit_frames_status() {
    let home = Home::new();
    let server = FakeServer::start(&socket(&home));
    let out = home.run(&[
        "exec",
        "-e",
        "A=1",
        "--timeout-ms",
        "500",
        "s1",
        "--",
        "sh",
        "-c",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(stdout(&out), "one\ntwo\n");
    assert_eq!(stderr(&out), "warn\n");
    let sent = server.seen().pop().expect("a request");
    assert_eq!(sent.uri, "/v1/cells/s1/exec");
    assert_eq!(sent.content_type, "application/json");
    let body: serde_json::Value = serde_json::from_slice(&sent.body).expect("json body");
    assert_eq!(body["argv"], serde_json::json!(["sh", "-c", "x"]));
    assert_eq!(body["env"], serde_json::json!({"A": "1"}));
    assert_eq!(body["timeoutMs"], 500);
}

#[test]
fn a_problem_is_one_line_naming_the_field_and_exit_125() {
    let home = Home::new();
    let _server = FakeServer::start(&socket(&home));
    let spec = home.path().join("bad.yaml");
    std::fs::write(&spec, "bad: spec\n").expect("write");
    let out = home
        .cellos()
        .arg("create")
        .arg(&spec)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("spec.run.argv: must not be empty; name the program"),
        "{err}"
    );
    assert!(err.starts_with("cellos: "), "{err}");
}

#[test]
fn rm_names_what_the_teardown_left_and_exits_1() {
    let home = Home::new();
    let _server = FakeServer::start(&socket(&home));
    let out = home.run(&["rm", "s1"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "s1\n");
    assert!(
        stderr(&out).contains("left behind: cgroup /sys/fs/cgroup/cellos/s1"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn no_server_is_one_line_and_exit_125() {
    let home = Home::new();
    let out = home.run(&["exec", "s1", "true"]);
    assert_eq!(out.status.code(), Some(125));
    let expected = format!(
        "cellos: no server at unix:{} (start one with `cellos serve`, or set --server)\n",
        socket(&home).display()
    );
    assert_eq!(stderr(&out), expected);

    let out = home.run(&["--server", "http://10.1.2.3:80", "rm", "s1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("only allowed to a loopback"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn cp_copies_one_file_each_way_and_refuses_directories() {
    let home = Home::new();
    let server = FakeServer::start(&socket(&home));
    let local = home.path().join("script.sh");
    std::fs::write(&local, "echo hi\n").expect("write");
    std::fs::set_permissions(&local, std::os::unix::fs::PermissionsExt::from_mode(0o750))
        .expect("chmod");

    let out = home
        .cellos()
        .arg("cp")
        .arg(&local)
        .arg("s1:/work/")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let put = server.seen().pop().expect("a request");
    assert_eq!(put.method, "PUT");
    assert_eq!(put.uri, "/v1/cells/s1/files?path=/work/script.sh&mode=0750");
    assert_eq!(put.body, b"echo hi\n");

    let out = home.run(&["cp", "s1:/etc/motd", "-"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hello\n");
    let dir = home.path().join("into");
    std::fs::create_dir(&dir).expect("mkdir");
    let out = home
        .cellos()
        .args(["cp", "s1:/etc/motd"])
        .arg(&dir)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(dir.join("motd")).expect("copied"), b"hello\n");

    let out = home.run(&["cp", "s1:/etc", "-"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cp copies one file; use tar through exec for trees"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn ps_lists_the_servers_cells_after_the_local_ones() {
    let home = Home::new();
    let _server = FakeServer::start(&socket(&home));
    let out = home.run(&["ps"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let row = text
        .lines()
        .find(|l| l.starts_with("s1 "))
        .unwrap_or_else(|| panic!("no server cell: {text}"));
    for field in ["running", "2026-01-01T00:00:00Z", "uid:0"] {
        assert!(row.contains(field), "{row}");
    }
}

#[test]
fn interactive_exec_streams_stdin_over_the_websocket_and_sends_eof() {
    use std::io::Write;
    use std::process::Stdio;
    let home = Home::new();
    let server = FakeServer::start(&socket(&home));
    for (flags, pty) in [
        (&["-i"][..], serde_json::Value::Null),
        (
            &["-i", "-t"][..],
            serde_json::json!({"rows": 24, "cols": 80}),
        ),
    ] {
        let mut child = home
            .cellos()
            .arg("exec")
            .args(flags)
            .args(["s1", "cat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"abc").expect("write stdin");
        drop(stdin);
        let out = child.wait_with_output().expect("wait");
        assert_eq!(out.status.code(), Some(3), "{flags:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), "abc", "{flags:?}");
        let seen = server.seen();
        let ws: Vec<&Seen> = seen.iter().filter(|s| s.method == "WS").collect();
        let exec: serde_json::Value = serde_json::from_slice(&ws[ws.len() - 2].body).expect("json");
        assert_eq!(exec["argv"], serde_json::json!(["cat"]), "{flags:?}");
        assert_eq!(exec["stdin"], true, "{flags:?}");
        assert_eq!(exec["pty"], pty, "{flags:?}");
        assert_eq!(ws[ws.len() - 1].body, br#"{"eof":true}"#, "{flags:?}");
    }
}

#[test]
fn tty_exec_sizes_the_pty_from_the_terminal_and_restores_it_after() {
    use nix::sys::termios::{tcgetattr, LocalFlags};
    use std::io::Write;
    let home = Home::new();
    let server = FakeServer::start(&socket(&home));
    let size = nix::pty::Winsize {
        ws_row: 30,
        ws_col: 100,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
    let terminal = std::fs::File::from(pty.slave);
    let child = home
        .cellos()
        .args(["exec", "-it", "s1", "sh"])
        .stdin(terminal.try_clone().expect("dup"))
        .stdout(terminal.try_clone().expect("dup"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut keys = std::fs::File::from(pty.master);
    // Typed only once raw mode is on: before it, the line discipline would hold `q` back.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while tcgetattr(&terminal)
        .expect("tcgetattr")
        .local_flags
        .contains(LocalFlags::ICANON)
    {
        assert!(std::time::Instant::now() < deadline, "never went raw");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    keys.write_all(b"q").expect("type");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let restored = tcgetattr(&terminal).expect("tcgetattr");
    assert!(restored
        .local_flags
        .contains(LocalFlags::ICANON | LocalFlags::ECHO));
    let seen = server.seen();
    let exec = seen
        .iter()
        .find(|s| s.method == "WS")
        .expect("exec message");
    let exec: serde_json::Value = serde_json::from_slice(&exec.body).expect("json");
    assert_eq!(exec["pty"], serde_json::json!({"rows": 30, "cols": 100}));
}

#[test]
fn pause_of_a_cell_the_server_does_not_know_falls_back_to_local_cells() {
    let home = Home::new();
    let _server = FakeServer::start(&socket(&home));
    let out = home.run(&["pause", "nope"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(!stderr(&out).contains("no such route"), "{}", stderr(&out));

    // A server named on the command line is the only place looked at.
    let named = format!("unix:{}", socket(&home).display());
    let out = home.run(&["--server", &named, "resume", "nope"]);
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(stderr(&out), "cellos: Not found: no such route\n");
}

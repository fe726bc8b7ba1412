//! `http` exports of `cellos run` end to end: an artifact a destination refuses is kept in the
//! outbox with an `export.v1.failed` naming it, `cellos export ls` lists it, and
//! `cellos export retry` sends it once the destination takes it, recorded as
//! `export.v1.completed`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use crate::support::{events, events_of, sh, short_type, stderr, stdout, unique_id, Home};

/// One request's `Authorization` header and body.
type Received = (Option<String>, Vec<u8>);

/// A loopback HTTP server answering every request with the current `status`, keeping the
/// bodies and `Authorization` headers it got.
struct Destination {
    url: String,
    status: Arc<AtomicU16>,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Destination {
    fn start(status: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/drop", listener.local_addr().unwrap());
        let status = Arc::new(AtomicU16::new(status));
        let got = Arc::new(Mutex::new(Vec::new()));
        let (answer, log) = (status.clone(), got.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let (mut length, mut auth, mut line) = (0, None, String::new());
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    if lower.starts_with("authorization:") {
                        auth = Some(line[14..].trim().to_owned());
                    }
                    line.clear();
                }
                let mut body = vec![0u8; length];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                log.lock().unwrap().push((auth, body));
                let code = answer.load(Ordering::SeqCst);
                let mut stream = stream;
                let _ = write!(stream, "HTTP/1.1 {code} X\r\ncontent-length: 0\r\n\r\n");
            }
        });
        Self { url, status, got }
    }
}

#[test]
fn an_export_the_destination_refused_waits_in_the_outbox_until_retried() {
    let home = Home::new();
    let secrets = home.path().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    let token = secrets.join("DROP_TOKEN");
    std::fs::write(&token, "Bearer drop-0123").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let destination = Destination::start(503);

    let id = unique_id("remote-export");
    let body = format!(
        "{}  filesystem:\n    workspace: {{target: /work}}\n  export:\n    targets:\n      - {{name: drop, kind: http, url: '{}', retries: 1, timeoutSeconds: 10, credentials: {{authorizationRef: DROP_TOKEN}}}}\n    artifacts:\n      - {{name: report, path: /work/report.txt, target: drop}}\n",
        sh("echo remote-content > /work/report.txt"),
        destination.url
    );
    let spec = home.spec(&id, &body);
    let out = home.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        destination.got.lock().unwrap().len(),
        2,
        "1 attempt + 1 retry"
    );

    let all = events(&home);
    let failed = events_of(&all, &id)
        .into_iter()
        .find(|e| short_type(e) == "export.v1.failed")
        .expect("export.v1.failed");
    let reason = failed["data"]["reason"].as_str().unwrap().to_owned();
    assert!(reason.contains("503"), "{reason}");
    assert!(!reason.contains("drop-0123"), "{reason}");

    let ls = home.run(&["export", "ls", "--json"]);
    assert!(ls.status.success(), "{}", stderr(&ls));
    let waiting: serde_json::Value = serde_json::from_str(&stdout(&ls)).unwrap();
    let waiting = waiting.as_array().unwrap();
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    let export_id = waiting[0]["id"].as_str().unwrap().to_owned();
    assert!(reason.contains(&export_id), "{reason}");
    assert_eq!(waiting[0]["cellId"], id.as_str());

    destination.status.store(201, Ordering::SeqCst);
    let retry = home.run(&["export", "retry", &export_id]);
    assert_eq!(retry.status.code(), Some(0), "{}", stderr(&retry));
    let got = destination.got.lock().unwrap().clone();
    let (auth, last) = got.last().unwrap();
    assert_eq!(last, b"remote-content\n");
    assert_eq!(auth.as_deref(), Some("Bearer drop-0123"));

    let all = events(&home);
    let done = events_of(&all, &id)
        .into_iter()
        .find(|e| short_type(e) == "export.v1.completed")
        .expect("export.v1.completed after the retry");
    assert_eq!(done["data"]["attempts"], 1);
    assert_eq!(done["data"]["sizeBytes"], 15);
    let ls = home.run(&["export", "ls", "--json"]);
    assert_eq!(stdout(&ls).trim(), "[]");
    let again = home.run(&["export", "retry", &export_id]);
    assert_ne!(again.status.code(), Some(0));
    assert!(
        stderr(&again).contains("cellos export ls"),
        "{}",
        stderr(&again)
    );
    let verify = home.run(&["verify"]);
    assert!(verify.status.success(), "{}", stderr(&verify));
}

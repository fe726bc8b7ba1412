//! `http` export targets against a real HTTP server on loopback: the artifact arrives whole
//! with its credentials, failures are retried and counted, and an artifact the server never
//! takes stays in the outbox until `deliver` sends it again.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cellos_adapters::export::{deliver, ExportSecrets, Outbox, RemoteExportSink};
use cellos_adapters::secrets::FileSecretBroker;
use cellos_core::ports::{ExportSink, SecretBroker};
use cellos_core::spec::{ExportCredentials, ExportTarget, ExportTargetKind};
use sha2::{Digest, Sha256};

/// One request the server received.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    authorization: Option<String>,
    body: Vec<u8>,
}

/// A loopback HTTP/1.1 server answering requests with scripted statuses (200 once the script
/// is used up), recording each request.
struct Server {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Server {
    fn start(script: &[u16]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(
            script.iter().copied().collect::<VecDeque<u16>>(),
        ));
        let log = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let status = script.lock().unwrap().pop_front().unwrap_or(200);
                if let Some(request) = serve_one(stream, status) {
                    log.lock().unwrap().push(request);
                }
            }
        });
        Self { addr, received }
    }

    fn url(&self) -> String {
        format!("http://{}/up", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

fn serve_one(stream: std::net::TcpStream, status: u16) -> Option<Received> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let (mut length, mut authorization) = (0usize, None);
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().ok()?,
            "authorization" => authorization = Some(value.trim().to_owned()),
            _ => {}
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} Scripted\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    Some(Received {
        method,
        path,
        authorization,
        body,
    })
}

fn target(url: &str, retries: u32) -> ExportTarget {
    ExportTarget {
        name: "upload".into(),
        kind: ExportTargetKind::Http,
        path: None,
        url: Some(url.to_owned()),
        bucket: None,
        prefix: None,
        region: None,
        endpoint: None,
        credentials: Some(ExportCredentials {
            authorization_ref: Some("UPLOAD_TOKEN".into()),
            ..ExportCredentials::default()
        }),
        retries: Some(retries),
        timeout_seconds: Some(2),
    }
}

struct Host {
    dir: tempfile::TempDir,
    secrets: ExportSecrets,
}

impl Host {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let secrets_dir = dir.path().join("secrets");
        std::fs::create_dir(&secrets_dir).unwrap();
        std::fs::write(secrets_dir.join("UPLOAD_TOKEN"), "Bearer s3cret-upload").unwrap();
        let broker: Arc<dyn SecretBroker> = Arc::new(FileSecretBroker::new(secrets_dir));
        Self {
            secrets: ExportSecrets::new(vec![broker]),
            dir,
        }
    }

    fn outbox(&self) -> Outbox {
        Outbox::new(self.dir.path().join("outbox"))
    }

    fn sink(&self, target: ExportTarget) -> RemoteExportSink {
        RemoteExportSink::new(target, self.outbox(), self.secrets.clone()).unwrap()
    }
}

fn artifact(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[test]
fn an_artifact_arrives_whole_with_its_credential_and_leaves_the_outbox() {
    let server = Server::start(&[]);
    let host = Host::new();
    let data = artifact(3 << 20);
    let receipt = host
        .sink(target(&server.url(), 0))
        .push("cell-1", "report.bin", &mut data.as_slice())
        .unwrap();
    let got = server.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].method, "PUT");
    assert_eq!(got[0].path, "/up/cell-1/report.bin");
    assert_eq!(
        got[0].authorization.as_deref(),
        Some("Bearer s3cret-upload")
    );
    assert!(got[0].body == data, "the body arrived altered");
    assert_eq!(receipt.sha256, hex::encode(Sha256::digest(&data)));
    assert_eq!(receipt.size_bytes, data.len() as u64);
    assert_eq!(receipt.attempts, 1);
    assert_eq!(
        receipt.destination,
        format!("{}/cell-1/report.bin", server.url())
    );
    assert!(!receipt.destination.contains("s3cret"));
    assert!(host.outbox().list().unwrap().is_empty());
}

#[test]
fn a_server_that_fails_twice_then_succeeds_shows_three_attempts() {
    let server = Server::start(&[503, 500]);
    let host = Host::new();
    let receipt = host
        .sink(target(&server.url(), 3))
        .push("cell-2", "out.txt", &mut &b"hello"[..])
        .unwrap();
    assert_eq!(receipt.attempts, 3);
    let got = server.received();
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|r| r.body == b"hello"));
    assert!(host.outbox().list().unwrap().is_empty());
}

#[test]
fn an_artifact_the_server_never_takes_is_kept_and_can_be_sent_again() {
    let failing = Server::start(&[503, 503, 503]);
    let host = Host::new();
    let err = host
        .sink(target(&failing.url(), 2))
        .push("cell-3", "big.bin", &mut artifact(4096).as_slice())
        .unwrap_err();
    assert_eq!(failing.received().len(), 3, "1 attempt and 2 retries");
    let waiting = host.outbox().list().unwrap();
    assert_eq!(waiting.len(), 1);
    let staged = &waiting[0];
    assert!(err.message.contains(&staged.id), "{err}");
    assert!(err.message.contains("cellos export retry"), "{err}");
    assert!(err.message.contains("503"), "{err}");
    assert_eq!(staged.cell_id, "cell-3");
    assert_eq!(staged.size_bytes, 4096);

    // The destination is back (a new server standing in for it): the kept copy is sent.
    let healed = Server::start(&[]);
    let mut moved = staged.clone();
    moved.target.url = Some(healed.url());
    let receipt = deliver(&host.outbox(), &moved, &host.secrets).unwrap();
    assert_eq!(receipt.sha256, staged.sha256);
    assert_eq!(healed.received()[0].body, artifact(4096));
    assert!(host.outbox().list().unwrap().is_empty());
}

#[test]
fn a_refusal_is_not_retried_but_the_artifact_is_kept() {
    let server = Server::start(&[403, 403, 403]);
    let host = Host::new();
    let err = host
        .sink(target(&server.url(), 3))
        .push("cell-4", "x", &mut &b"x"[..])
        .unwrap_err();
    assert_eq!(server.received().len(), 1, "a 403 is final");
    assert!(err.message.contains("403"), "{err}");
    assert_eq!(host.outbox().list().unwrap().len(), 1);
}

#[test]
fn a_server_that_never_answers_times_out_per_attempt() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/up", listener.local_addr().unwrap());
    let hold = std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().take(2).collect();
        std::thread::sleep(Duration::from_secs(6));
        drop(held);
    });
    let host = Host::new();
    let mut t = target(&url, 1);
    t.timeout_seconds = Some(1);
    let started = std::time::Instant::now();
    let err = host
        .sink(t)
        .push("cell-5", "x", &mut &b"x"[..])
        .unwrap_err();
    assert!(err.message.contains("timeoutSeconds"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(host.outbox().list().unwrap().len(), 1);
    drop(hold);
}

#[test]
fn a_missing_credential_keeps_the_artifact_and_names_the_secret() {
    let server = Server::start(&[]);
    let host = Host::new();
    let mut t = target(&server.url(), 0);
    t.credentials = Some(ExportCredentials {
        authorization_ref: Some("NOT_THERE".into()),
        ..ExportCredentials::default()
    });
    let err = host
        .sink(t)
        .push("cell-6", "x", &mut &b"x"[..])
        .unwrap_err();
    assert!(err.message.contains("NOT_THERE"), "{err}");
    assert!(server.received().is_empty());
    assert_eq!(host.outbox().list().unwrap().len(), 1);
}

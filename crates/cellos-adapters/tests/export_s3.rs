//! `s3` export targets against a real S3-compatible server (`s3s-fs`, built from crates.io by
//! `scripts/test-tools.sh`) that checks SigV4 signatures: a 200 MiB artifact goes up by
//! multipart (seen on the wire by a loopback relay in front of the server) and arrives whole;
//! a wrong secret key is refused and the artifact kept.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cellos_adapters::export::{ExportSecrets, Outbox, RemoteExportSink, PART_BYTES};
use cellos_adapters::secrets::FileSecretBroker;
use cellos_core::ports::{ExportSink, SecretBroker};
use cellos_core::spec::{ExportCredentials, ExportTarget, ExportTargetKind};
use sha2::{Digest, Sha256};

const ACCESS_KEY: &str = "cellos-test-access";
const SECRET_KEY: &str = "cellos-test-secret-0123456789";
const BUCKET: &str = "artifacts";

fn s3s_fs() -> PathBuf {
    if let Some(path) = std::env::var_os("CELLOS_S3S_FS") {
        return path.into();
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/tools/bin/s3s-fs");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/test-tools.sh (scripts/test.sh does), or set CELLOS_S3S_FS",
        path.display()
    );
    path
}

/// A running `s3s-fs` on a temporary directory with one bucket.
struct S3Server {
    child: Child,
    addr: SocketAddr,
    root: tempfile::TempDir,
}

impl S3Server {
    fn start() -> Self {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join(BUCKET)).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(s3s_fs())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, addr, root }
    }

    fn object(&self, key: &str) -> PathBuf {
        self.root.path().join(BUCKET).join(key)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback relay in front of `upstream` that counts multipart requests in what clients
/// send (`?uploads` starts an upload, `partNumber=` is one part).
struct Relay {
    addr: SocketAddr,
    starts: Arc<AtomicUsize>,
    parts: Arc<AtomicUsize>,
}

impl Relay {
    fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (starts, parts) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (s, p) = (starts.clone(), parts.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(upstream) else {
                    return;
                };
                let (s, p) = (s.clone(), p.clone());
                let (client_r, server_w) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || copy_counting(client_r, server_w, &s, &p));
                std::thread::spawn(move || copy_plain(server, client));
            }
        });
        Self {
            addr,
            starts,
            parts,
        }
    }
}

fn copy_counting(
    mut from: TcpStream,
    mut to: TcpStream,
    starts: &AtomicUsize,
    parts: &AtomicUsize,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut tail: Vec<u8> = Vec::new();
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
        // Request lines may straddle reads: search the new bytes with the end of the previous
        // read in front, counting only matches that end in the new bytes.
        let old = tail.len();
        let mut window = std::mem::take(&mut tail);
        window.extend_from_slice(&buf[..n]);
        starts.fetch_add(count_new(&window, old, b"?uploads"), Ordering::Relaxed);
        parts.fetch_add(count_new(&window, old, b"partNumber="), Ordering::Relaxed);
        tail = window[window.len().saturating_sub(32)..].to_vec();
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// Matches of `needle` in `window` that end after its first `old` bytes.
fn count_new(window: &[u8], old: usize, needle: &[u8]) -> usize {
    window
        .windows(needle.len())
        .enumerate()
        .filter(|(i, w)| i + needle.len() > old && *w == needle)
        .count()
}

fn copy_plain(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(std::net::Shutdown::Write);
}

fn target(endpoint: SocketAddr, secret_ref: &str) -> ExportTarget {
    ExportTarget {
        name: "bucket".into(),
        kind: ExportTargetKind::S3,
        path: None,
        url: None,
        bucket: Some(BUCKET.into()),
        prefix: Some("runs/".into()),
        region: Some("us-east-1".into()),
        endpoint: Some(format!("http://{endpoint}")),
        credentials: Some(ExportCredentials {
            access_key_id_ref: Some("S3_ACCESS".into()),
            secret_access_key_ref: Some(secret_ref.into()),
            ..ExportCredentials::default()
        }),
        retries: Some(0),
        timeout_seconds: Some(120),
    }
}

fn host() -> (tempfile::TempDir, ExportSecrets) {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    std::fs::write(secrets.join("S3_ACCESS"), ACCESS_KEY).unwrap();
    std::fs::write(secrets.join("S3_SECRET"), SECRET_KEY).unwrap();
    std::fs::write(secrets.join("S3_WRONG"), "not-the-secret-key").unwrap();
    let broker: Arc<dyn SecretBroker> = Arc::new(FileSecretBroker::new(secrets));
    (dir, ExportSecrets::new(vec![broker]))
}

/// `len` bytes of a pattern, streamed (never held whole).
struct Pattern {
    left: u64,
    at: u64,
}

impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        for b in &mut buf[..n] {
            *b = (self.at.wrapping_mul(2_654_435_761) >> 13) as u8;
            self.at += 1;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn sha256_of(reader: &mut dyn Read) -> String {
    let mut hasher = Sha256::new();
    std::io::copy(reader, &mut hasher).unwrap();
    hex::encode(hasher.finalize())
}

#[test]
fn a_200_mib_artifact_goes_up_by_multipart_and_arrives_whole() {
    let server = S3Server::start();
    let relay = Relay::start(server.addr);
    let (dir, secrets) = host();
    let outbox = Outbox::new(dir.path().join("outbox"));
    let sink =
        RemoteExportSink::new(target(relay.addr, "S3_SECRET"), outbox.clone(), secrets).unwrap();
    let len: u64 = 200 << 20;
    let receipt = sink
        .push("cell-s3", "dataset.bin", &mut Pattern { left: len, at: 0 })
        .unwrap();

    let expected = sha256_of(&mut Pattern { left: len, at: 0 });
    assert_eq!(receipt.sha256, expected);
    assert_eq!(receipt.size_bytes, len);
    assert_eq!(
        receipt.destination,
        format!(
            "s3://{BUCKET}/runs/cell-s3/dataset.bin at http://{}",
            relay.addr
        )
    );
    let stored = server.object("runs/cell-s3/dataset.bin");
    assert_eq!(std::fs::metadata(&stored).unwrap().len(), len);
    assert_eq!(
        sha256_of(&mut std::fs::File::open(&stored).unwrap()),
        expected
    );
    assert_eq!(
        relay.starts.load(Ordering::Relaxed),
        1,
        "one multipart upload"
    );
    assert_eq!(
        relay.parts.load(Ordering::Relaxed),
        (len as usize).div_ceil(PART_BYTES),
        "every part went up as its own request"
    );
    assert!(outbox.list().unwrap().is_empty());
}

#[test]
fn a_small_artifact_is_one_signed_put() {
    let server = S3Server::start();
    let (dir, secrets) = host();
    let outbox = Outbox::new(dir.path().join("outbox"));
    let sink = RemoteExportSink::new(target(server.addr, "S3_SECRET"), outbox, secrets).unwrap();
    let receipt = sink
        .push("cell-s3", "small.txt", &mut &b"small"[..])
        .unwrap();
    assert_eq!(receipt.attempts, 1);
    assert_eq!(
        std::fs::read(server.object("runs/cell-s3/small.txt")).unwrap(),
        b"small"
    );
}

#[test]
fn a_wrong_secret_key_is_refused_by_the_signature_check_and_the_artifact_kept() {
    let server = S3Server::start();
    let (dir, secrets) = host();
    let outbox = Outbox::new(dir.path().join("outbox"));
    let sink =
        RemoteExportSink::new(target(server.addr, "S3_WRONG"), outbox.clone(), secrets).unwrap();
    let err = sink.push("cell-s3", "x.txt", &mut &b"x"[..]).unwrap_err();
    assert!(!server.object("runs/cell-s3/x.txt").exists());
    let waiting = outbox.list().unwrap();
    assert_eq!(waiting.len(), 1, "{err}");
    assert!(err.message.contains(&waiting[0].id), "{err}");
    assert!(!err.message.contains("not-the-secret-key"), "{err}");
}

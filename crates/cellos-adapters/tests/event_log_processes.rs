//! Several OS processes appending to one log at the same time produce one unbroken, verified
//! chain. The test binary re-runs itself as the writer processes.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use cellos_adapters::event_log::{read_log, read_log_lines, JsonlEventLog, LogConfig};
use cellos_core::events::EventFactory;
use cellos_core::integrity::{verify_stream, Keyring, Signer};
use cellos_core::ports::{EventSink, LimitHit};
use ed25519_dalek::SigningKey;
use time::OffsetDateTime;

const CHILD_DIR_ENV: &str = "CELLOS_TEST_EVENT_LOG_DIR";
const CHILD_INDEX_ENV: &str = "CELLOS_TEST_WRITER_INDEX";
const WRITERS: u64 = 4;
const SINGLES: u64 = 40;
const BATCHES: u64 = 10;
const BATCH_SIZE: u64 = 5;

fn signer() -> Signer {
    Signer::ed25519(SigningKey::from_bytes(&[5; 32]))
}

/// Writer process body: single appends interleaved with batches, with a small segment cap so
/// rotations race with appends of other processes.
fn write_as_child(dir: &Path, writer: u64) {
    let config = LogConfig {
        segment_max_bytes: 32 * 1024,
        ..LogConfig::default()
    };
    let log = JsonlEventLog::open(dir, signer(), config).unwrap();
    let factory = EventFactory::new(
        "test-host",
        &format!("writer-{writer}"),
        Arc::new(String::new),
    );
    let event = |n: u64| {
        let hit = LimitHit {
            limit: "pidsMax".to_owned(),
            mechanism: "cgroup v2 pids.events".to_owned(),
            count: n,
        };
        factory.limit_hit(OffsetDateTime::now_utc(), &format!("cell-{writer}"), &hit)
    };
    for n in 0..SINGLES {
        log.emit(event(n)).unwrap();
        if n % (SINGLES / BATCHES) == 0 {
            log.emit_batch((0..BATCH_SIZE).map(|i| event(1000 + n * 10 + i)).collect())
                .unwrap();
        }
    }
}

#[test]
fn concurrent_writer_processes_keep_one_chain() {
    if let (Some(dir), Some(index)) = (
        std::env::var_os(CHILD_DIR_ENV),
        std::env::var(CHILD_INDEX_ENV).ok(),
    ) {
        write_as_child(Path::new(&dir), index.parse().unwrap());
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..WRITERS)
        .map(|i| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "concurrent_writer_processes_keep_one_chain",
                    "--test-threads=1",
                ])
                .env(CHILD_DIR_ENV, dir.path())
                .env(CHILD_INDEX_ENV, i.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "a writer process failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let expected = WRITERS * (SINGLES + BATCHES * BATCH_SIZE);
    let lines: Vec<String> = read_log_lines(dir.path())
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut keys = Keyring::new();
    keys.add_ed25519(signer().verifying_key().unwrap());
    let report = verify_stream(lines.iter().map(String::as_str), &keys);
    assert!(report.is_ok(), "{:?}", report.failure);
    assert_eq!(report.verified, expected);

    // Every writer's events are all there, and each batch landed contiguously.
    let events = read_log(dir.path()).unwrap();
    for writer in 0..WRITERS {
        let source = format!("//cellos/test-host/writer-{writer}");
        let mine: Vec<_> = events.iter().filter(|e| e.source == source).collect();
        assert_eq!(mine.len() as u64, SINGLES + BATCHES * BATCH_SIZE);
    }
    for window in events.windows(BATCH_SIZE as usize) {
        let first = window[0].data["count"].as_u64().unwrap();
        if first >= 1000 && first % 10 == 0 {
            assert!(window.iter().all(|e| e.source == window[0].source));
        }
    }
    assert!(
        std::fs::read_dir(dir.path()).unwrap().count() > 2,
        "rotation happened"
    );
}

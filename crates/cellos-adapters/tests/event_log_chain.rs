//! The JSONL log: appends are sealed into one chain that verifies, across batches, rotation
//! and reopening; oversize events are refused whole; a torn last line is repaired; tampering
//! with the file is caught at the right sequence number.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use cellos_adapters::event_log::{read_log, read_log_lines, segments, JsonlEventLog, LogConfig};
use cellos_core::events::{CloudEvent, EventFactory};
use cellos_core::integrity::{verify_stream, FailureKind, Keyring, Signer, VerifyReport};
use cellos_core::ports::{EventSink, LimitHit, PortErrorKind};
use ed25519_dalek::SigningKey;
use time::OffsetDateTime;

fn signer() -> Signer {
    Signer::ed25519(SigningKey::from_bytes(&[9; 32]))
}

fn keyring() -> Keyring {
    let mut keys = Keyring::new();
    keys.add_ed25519(signer().verifying_key().unwrap());
    keys
}

fn factory() -> EventFactory {
    EventFactory::new("test-host", "supervisor", Arc::new(String::new))
}

fn event(n: u64, padding: usize) -> CloudEvent {
    let hit = LimitHit {
        limit: "pidsMax".to_owned(),
        mechanism: format!("cgroup v2 pids.events max={n} {}", "x".repeat(padding)),
        count: n,
    };
    factory().limit_hit(OffsetDateTime::now_utc(), "cell-1", &hit)
}

fn verify_dir(dir: &Path) -> VerifyReport {
    let lines: Vec<String> = read_log_lines(dir).unwrap().map(Result::unwrap).collect();
    verify_stream(lines.iter().map(String::as_str), &keyring())
}

fn open(dir: &Path, config: LogConfig) -> JsonlEventLog {
    JsonlEventLog::open(dir, signer(), config).unwrap()
}

#[test]
fn appends_and_batches_form_one_verified_chain() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default());
    let first = log.emit(event(1, 0)).unwrap();
    assert_eq!(first.cellosseq, Some(1));
    assert!(!first.id.is_empty(), "the sink assigns an id");
    let batch = log
        .emit_batch((2..=10).map(|n| event(n, 0)).collect())
        .unwrap();
    assert_eq!(batch.last().unwrap().cellosseq, Some(10));
    // A second handle (as after a restart) continues the same chain.
    let reopened = open(dir.path(), LogConfig::default());
    assert_eq!(reopened.emit(event(11, 0)).unwrap().cellosseq, Some(11));
    assert_eq!(log.emit(event(12, 0)).unwrap().cellosseq, Some(12));

    let report = verify_dir(dir.path());
    assert!(report.is_ok(), "{:?}", report.failure);
    assert_eq!(report.verified, 12);
    let events = read_log(dir.path()).unwrap();
    assert_eq!(events.len(), 12);
    assert_eq!(events[11].data["count"], 12);
}

#[test]
fn rotation_keeps_the_chain_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_max_bytes: 8 * 1024,
        ..LogConfig::default()
    };
    let log = open(dir.path(), config);
    for n in 1..=60 {
        log.emit(event(n, 200)).unwrap();
    }
    let files = segments(dir.path()).unwrap();
    assert!(files.len() > 3, "expected several segments, got {files:?}");
    for file in &files[..files.len() - 1] {
        let size = std::fs::metadata(file).unwrap().len();
        assert!(size <= config.segment_max_bytes, "{file:?} is {size} bytes");
    }
    assert!(files.last().unwrap().ends_with("events.jsonl"));
    let report = verify_dir(dir.path());
    assert!(report.is_ok(), "{:?}", report.failure);
    assert_eq!(report.verified, 60);
}

#[test]
fn oversize_event_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        event_max_bytes: 4096,
        ..LogConfig::default()
    };
    let log = open(dir.path(), config);
    log.emit(event(1, 0)).unwrap();
    let err = log.emit(event(2, 5000)).unwrap_err();
    assert_eq!(err.kind, PortErrorKind::TooLarge);
    // A batch with one oversize event is refused whole.
    let err = log
        .emit_batch(vec![event(2, 0), event(3, 5000)])
        .unwrap_err();
    assert_eq!(err.kind, PortErrorKind::TooLarge);
    assert_eq!(read_log(dir.path()).unwrap().len(), 1);
    assert_eq!(log.emit(event(2, 0)).unwrap().cellosseq, Some(2));
    assert!(verify_dir(dir.path()).is_ok());
}

#[test]
fn torn_last_line_is_cut_before_the_next_append() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default());
    log.emit_batch((1..=3).map(|n| event(n, 0)).collect())
        .unwrap();
    drop(log);
    let live = dir.path().join("events.jsonl");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&live)
        .unwrap();
    file.write_all(br#"{"specversion":"1.0","id":"torn"#)
        .unwrap();
    drop(file);

    let log = open(dir.path(), LogConfig::default());
    assert_eq!(log.emit(event(4, 0)).unwrap().cellosseq, Some(4));
    let report = verify_dir(dir.path());
    assert!(report.is_ok(), "{:?}", report.failure);
    assert_eq!(report.verified, 4);
}

#[test]
fn tampering_with_the_file_is_caught_at_its_seq() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default());
    log.emit_batch((1..=20).map(|n| event(n, 0)).collect())
        .unwrap();
    let live = dir.path().join("events.jsonl");
    let original = std::fs::read_to_string(&live).unwrap();

    // Flip one byte of seq 7's content.
    let tampered = original.replacen("max=7 ", "max=8 ", 1);
    std::fs::write(&live, &tampered).unwrap();
    let failure = verify_dir(dir.path()).failure.unwrap();
    assert_eq!(
        (failure.kind, failure.seq),
        (FailureKind::Tampered, Some(7))
    );

    // Delete seq 12.
    let mut lines: Vec<&str> = original.lines().collect();
    lines.remove(11);
    std::fs::write(&live, lines.join("\n") + "\n").unwrap();
    let failure = verify_dir(dir.path()).failure.unwrap();
    assert_eq!(
        (failure.kind, failure.seq),
        (FailureKind::Missing, Some(12))
    );

    // Swap seq 3 and 4.
    let mut lines: Vec<&str> = original.lines().collect();
    lines.swap(2, 3);
    std::fs::write(&live, lines.join("\n") + "\n").unwrap();
    let failure = verify_dir(dir.path()).failure.unwrap();
    assert_eq!(
        (failure.kind, failure.seq),
        (FailureKind::Reordered, Some(3))
    );
}

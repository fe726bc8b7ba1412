//! Event log throughput: signed appends (single and batched, each fsync'd), verification of a
//! whole log, projection, and plain serde_json parsing of the same lines for comparison.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use cellos_adapters::event_log::{read_log_lines, JsonlEventLog, LogConfig};
use cellos_core::events::{CloudEvent, EventFactory};
use cellos_core::integrity::{verify_stream, verify_stream_with, Keyring, SignatureCheck, Signer};
use cellos_core::ports::{EventSink, LimitHit};
use cellos_core::projection::project;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ed25519_dalek::SigningKey;
use time::OffsetDateTime;

const LOG_EVENTS: u64 = 10_000;
const BATCH: u64 = 64;

fn signer() -> Signer {
    Signer::ed25519(SigningKey::from_bytes(&[3; 32]))
}

fn factory() -> EventFactory {
    EventFactory::new("bench-host", "supervisor", Arc::new(String::new))
}

fn event(factory: &EventFactory, n: u64) -> CloudEvent {
    let hit = LimitHit {
        limit: "memoryMaxBytes".to_owned(),
        mechanism: "cgroup v2 memory.events oom_kill=1".to_owned(),
        count: n,
    };
    factory.limit_hit(OffsetDateTime::now_utc(), &format!("cell-{}", n % 50), &hit)
}

fn appends(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = JsonlEventLog::open(dir.path(), signer(), LogConfig::default()).expect("open log");
    let factory = factory();
    let mut group = c.benchmark_group("append");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    group.bench_function("single_fsync", |b| {
        b.iter_batched(
            || event(&factory, 1),
            |e| log.emit(e).expect("emit"),
            BatchSize::SmallInput,
        )
    });
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("batch64_fsync", |b| {
        b.iter_batched(
            || (0..BATCH).map(|n| event(&factory, n)).collect::<Vec<_>>(),
            |events| log.emit_batch(events).expect("emit batch"),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// A log of `LOG_EVENTS` sealed events, as lines.
fn sealed_log() -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = JsonlEventLog::open(dir.path(), signer(), LogConfig::default()).expect("open log");
    let factory = factory();
    for chunk in (0..LOG_EVENTS).collect::<Vec<_>>().chunks(1000) {
        log.emit_batch(chunk.iter().map(|&n| event(&factory, n)).collect())
            .expect("emit batch");
    }
    read_log_lines(dir.path())
        .expect("read log")
        .collect::<Result<_, _>>()
        .expect("read lines")
}

fn reading(c: &mut Criterion) {
    let lines = sealed_log();
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    let mut keys = Keyring::new();
    keys.add_ed25519(signer().verifying_key().expect("ed25519 key"));
    let events: Vec<CloudEvent> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("parse"))
        .collect();

    let mut group = c.benchmark_group("read");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(LOG_EVENTS));
    group.bench_function("serde_json_value_parse", |b| {
        b.iter(|| {
            for line in &lines {
                black_box(serde_json::from_str::<serde_json::Value>(line).expect("parse"));
            }
        })
    });
    group.bench_function("cloud_event_parse", |b| {
        b.iter(|| {
            for line in &lines {
                black_box(serde_json::from_str::<CloudEvent>(line).expect("parse"));
            }
        })
    });
    group.bench_function("verify_full", |b| {
        b.iter(|| {
            let report = verify_stream(lines.iter().map(String::as_str), &keys);
            assert!(report.is_ok());
            report
        })
    });
    group.bench_function("verify_anchors", |b| {
        b.iter(|| {
            let report = verify_stream_with(
                lines.iter().map(String::as_str),
                &keys,
                SignatureCheck::Anchors,
            );
            assert!(report.is_ok());
            report
        })
    });
    group.bench_function("project", |b| b.iter(|| project(&events)));
    group.finish();
    eprintln!("log: {LOG_EVENTS} events, {bytes} bytes");
}

criterion_group!(benches, appends, reading);
criterion_main!(benches);

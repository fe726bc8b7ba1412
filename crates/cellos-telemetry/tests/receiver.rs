//! The per-cell receiver over real Unix sockets: stamping, hostile frames, floods, keep-alive.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use cellos_core::authority::AuthorityKind;
use cellos_core::events::EventKind;
use cellos_telemetry::receiver::{ReceiverError, TelemetryItem, TelemetryReceiver};
use cellos_telemetry::wire::{encode_value, GuestFrame, ProbeSource, MAX_FRAME_BYTES};
use ciborium::value::Value;
use common::*;

pub fn frame(source: ProbeSource, pid: u32) -> GuestFrame {
    GuestFrame::new(source, pid, "workload", 1)
}

pub fn send(stream: &mut UnixStream, bytes: &[u8]) {
    stream.write_all(bytes).unwrap();
}

/// The next item, waiting (bounded) for it.
pub fn next_item(rx: &TelemetryReceiver) -> TelemetryItem {
    rx.next_timeout(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no item arrived: {:?}", rx.counters()))
}

fn declaration(item: TelemetryItem) -> cellos_telemetry::receiver::StampedDeclaration {
    match item {
        TelemetryItem::Declaration(d) => d,
        other => panic!("expected a declaration, got {other:?}"),
    }
}

#[test]
fn a_frame_is_decoded_stamped_and_becomes_a_declared_event() {
    let dir = tempfile::tempdir().unwrap();
    let rx = TelemetryReceiver::bind(config(dir.path(), "cell-a")).unwrap();
    let mut s = UnixStream::connect(rx.socket_path()).unwrap();
    let sent = frame(ProbeSource::NetIntent, 42).with_detail("destination", "api.example.com");
    send(&mut s, &sent.encode().unwrap());

    let d = declaration(next_item(&rx));
    assert_eq!(d.frame, sent);
    assert_eq!(d.stamp.cell_id, "cell-a");
    let event = d.to_event(&factory());
    assert_eq!(event.kind(), Some(EventKind::TelemetryDeclared));
    assert_eq!(event.cell_id(), Some("cell-a"));
    let data = d.event_data();
    assert_eq!(data.run_id, "run-cell-a");
    assert_eq!(data.spec_hash, stamp("cell-a").spec_hash);
    assert_eq!(data.authority, AuthorityKind::Declared);
    assert_eq!(data.probe_source, "net.intent");
    assert_eq!(data.guest_pid, Some(42));
    assert_eq!(data.declaration["detail"]["destination"], "api.example.com");
    assert_eq!(event.data["authority"], "declared");
    assert_eq!(rx.counters().delivered, 1);
}

#[test]
fn a_forged_cell_id_is_dropped_and_the_frame_is_stamped_with_the_sockets_cell() {
    let dir = tempfile::tempdir().unwrap();
    let a = TelemetryReceiver::bind(config(dir.path(), "cell-a")).unwrap();
    let b = TelemetryReceiver::bind(config(dir.path(), "cell-b")).unwrap();
    // Cell a claims to be cell b, at the top level and inside detail.
    let forged = Value::Map(vec![
        (
            Value::Text("content_version".into()),
            Value::Integer(0x0100.into()),
        ),
        (
            Value::Text("probe_source".into()),
            Value::Text("custom.x".into()),
        ),
        (Value::Text("guest_pid".into()), Value::Integer(3.into())),
        (Value::Text("guest_comm".into()), Value::Text("evil".into())),
        (
            Value::Text("guest_monotonic_ns".into()),
            Value::Integer(1.into()),
        ),
        (Value::Text("cell_id".into()), Value::Text("cell-b".into())),
        (
            Value::Text("run_id".into()),
            Value::Text("run-cell-b".into()),
        ),
        (
            Value::Text("detail".into()),
            Value::Map(vec![
                (Value::Text("cellId".into()), Value::Text("cell-b".into())),
                (Value::Text("value".into()), Value::Text("v".into())),
            ]),
        ),
    ]);
    let mut s = UnixStream::connect(a.socket_path()).unwrap();
    send(&mut s, &encode_value(&forged).unwrap());

    let d = declaration(next_item(&a));
    assert_eq!(d.stamp.cell_id, "cell-a");
    assert_eq!(d.dropped_keys, 3);
    let event = d.to_event(&factory());
    assert_eq!(event.cell_id(), Some("cell-a"));
    let text = serde_json::to_string(&event).unwrap();
    assert!(!text.contains("cell-b"), "{text}");
    assert_eq!(a.counters().dropped_keys, 3);
    assert!(b.try_next().is_none());
    assert_eq!(b.counters().frames, 0);
}

#[test]
fn unknown_major_versions_are_rejected_and_counted_and_the_connection_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let rx = TelemetryReceiver::bind(config(dir.path(), "cell-v")).unwrap();
    let mut s = UnixStream::connect(rx.socket_path()).unwrap();
    for version in [0x0200u16, 0x0000, 0xff00] {
        let mut f = frame(ProbeSource::Custom("custom.v".into()), 1);
        f.content_version = version;
        send(&mut s, &f.encode().unwrap());
    }
    send(
        &mut s,
        &frame(ProbeSource::Custom("custom.ok".into()), 1)
            .encode()
            .unwrap(),
    );
    let d = declaration(next_item(&rx));
    assert_eq!(d.frame.probe_source.as_str(), "custom.ok");
    let c = rx.counters();
    assert_eq!(c.version_rejected, 3);
    assert_eq!(c.delivered, 1);
    assert_eq!(c.malformed, 0);
    assert!(rx
        .recent_rejections()
        .iter()
        .all(|r| r.contains("unsupported wire major version")));
}

#[test]
fn truncated_and_oversized_frames_are_counted_close_their_connection_and_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let rx = TelemetryReceiver::bind(config(dir.path(), "cell-t")).unwrap();
    let mut good = UnixStream::connect(rx.socket_path()).unwrap();

    // Truncated: announce 100 bytes, send 10, hang up.
    let mut truncated = UnixStream::connect(rx.socket_path()).unwrap();
    let mut bytes = 100u32.to_le_bytes().to_vec();
    bytes.extend([0xa0; 10]);
    send(&mut truncated, &bytes);
    drop(truncated);
    wait_counters(&rx, "the truncated frame", |c| c.malformed == 1);

    // Oversized: the announced length alone is refused and the host hangs up.
    let mut oversized = UnixStream::connect(rx.socket_path()).unwrap();
    send(
        &mut oversized,
        &((MAX_FRAME_BYTES + 1) as u32).to_le_bytes(),
    );
    oversized
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(
        oversized.read(&mut byte).unwrap(),
        0,
        "host closed the connection"
    );

    // Undecodable CBOR inside a well-framed frame is counted too.
    send(&mut good, &[3, 0, 0, 0, 0xff, 0xff, 0xff]);
    send(
        &mut good,
        &frame(ProbeSource::ProcessSpawned, 5).encode().unwrap(),
    );
    let d = declaration(next_item(&rx));
    assert_eq!(d.frame.guest_pid, 5);
    let c = rx.counters();
    assert_eq!(c.malformed, 3, "{c:?}");
    assert_eq!(c.connections_closed_malformed, 1, "{c:?}");
    assert_eq!(c.delivered, 1);
    assert_eq!(rx.recent_rejections().len(), 3);
}

/// Send `total` frames in `batches` paced over about a second (100k frames/s).
fn flood(mut s: UnixStream, total: usize) {
    let one = frame(ProbeSource::Custom("custom.flood".into()), 7)
        .encode()
        .unwrap();
    let batches = 100;
    let batch: Vec<u8> = one.repeat(total / batches);
    let start = Instant::now();
    for i in 0..batches {
        s.write_all(&batch).unwrap();
        let due = start + Duration::from_millis(10 * (i as u64 + 1));
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
}

#[test]
fn a_flood_of_100k_frames_per_second_is_fully_accounted_while_the_supervisor_drains() {
    let dir = tempfile::tempdir().unwrap();
    let rx = TelemetryReceiver::bind(config(dir.path(), "cell-f")).unwrap();
    let s = UnixStream::connect(rx.socket_path()).unwrap();
    const SENT: u64 = 100_000;
    let sender = std::thread::spawn(move || flood(s, SENT as usize));
    let mut drained = 0u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while rx.counters().frames < SENT {
        assert!(Instant::now() < deadline, "{:?}", rx.counters());
        // The supervisor side only ever polls; it never waits on the receiver.
        drained += rx.drain().len() as u64;
        std::thread::sleep(Duration::from_millis(1));
    }
    sender.join().unwrap();
    drained += rx.drain().len() as u64;
    let c = rx.counters();
    assert_eq!(c.frames, SENT);
    assert_eq!(c.accepted() + c.dropped(), SENT, "{c:?}");
    assert_eq!(c.malformed + c.version_rejected, 0);
    assert_eq!(drained, c.delivered);
    assert!(
        c.rate_limited > 0,
        "the default rate is far below 100k/s: {c:?}"
    );
}

#[test]
fn a_flood_against_a_supervisor_that_never_drains_fills_the_queue_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "cell-q");
    cfg.queue_capacity = 100;
    cfg.rate_per_sec = 1_000_000;
    cfg.burst = 1_000_000;
    let rx = TelemetryReceiver::bind(cfg).unwrap();
    let s = UnixStream::connect(rx.socket_path()).unwrap();
    const SENT: u64 = 100_000;
    // The sender finishes although nobody drains: the receiver never pushes back on it.
    std::thread::spawn(move || flood(s, SENT as usize))
        .join()
        .unwrap();
    let c = wait_counters(&rx, "every frame", |c| c.frames == SENT);
    assert_eq!(c.delivered, 100);
    assert_eq!(c.queue_full, SENT - 100);
    assert_eq!(c.accepted() + c.dropped(), SENT);
    let (last, rest) = rx.shutdown();
    assert_eq!(rest.len(), 100);
    assert_eq!(last.frames, SENT);
}

#[test]
fn keepalive_silence_yields_exactly_one_event_per_silence() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "cell-k");
    cfg.keepalive_window = Duration::from_millis(200);
    let rx = TelemetryReceiver::bind(cfg).unwrap();
    let mut s = UnixStream::connect(rx.socket_path()).unwrap();
    rx.workload_started();
    send(&mut s, &frame(ProbeSource::Keepalive, 1).encode().unwrap());
    wait_counters(&rx, "the keep-alive", |c| c.keepalives == 1);

    let silenced = match next_item(&rx) {
        TelemetryItem::AgentSilenced(s) => s,
        other => panic!("{other:?}"),
    };
    assert_eq!(silenced.stamp.cell_id, "cell-k");
    assert!(silenced.last_frame_at.is_some());
    let event = silenced.to_event(&factory());
    assert_eq!(event.kind(), Some(EventKind::AgentSilenced));
    assert_eq!(event.data["windowMs"], 200);
    // Ten more windows of silence: still only the one report.
    assert!(rx.next_timeout(Duration::from_secs(2)).is_none());

    // The agent speaks again, then goes quiet again: a second report.
    send(&mut s, &frame(ProbeSource::Keepalive, 1).encode().unwrap());
    assert!(matches!(next_item(&rx), TelemetryItem::AgentSilenced(_)));
    // After the workload exits, silence is no longer reported.
    rx.workload_exited();
    send(&mut s, &frame(ProbeSource::Keepalive, 1).encode().unwrap());
    assert!(rx.next_timeout(Duration::from_secs(1)).is_none());
}

#[test]
fn binding_over_an_existing_path_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "cell-e");
    std::fs::write(&cfg.socket_path, b"").unwrap();
    assert!(matches!(
        TelemetryReceiver::bind(cfg),
        Err(ReceiverError::SocketExists { .. })
    ));
}

#[test]
fn shutdown_removes_the_socket_file() {
    let dir = tempfile::tempdir().unwrap();
    let rx = TelemetryReceiver::bind(config(dir.path(), "cell-s")).unwrap();
    let path = rx.socket_path().to_owned();
    assert!(path.exists());
    drop(rx);
    assert!(!path.exists());
}

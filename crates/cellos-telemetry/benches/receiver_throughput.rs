//! End-to-end receiver throughput: frames written to a real per-cell Unix socket, read,
//! framed, rate-checked, decoded, version-gated, host-stamped and queued by the receiver's one
//! thread, and drained by the caller. Reports decoded+stamped frames per second; the receiver
//! does all of that work on a single thread, so the figure is per core.
//!
//! Run: `cargo bench -p cellos-telemetry --bench receiver_throughput`.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use cellos_telemetry::receiver::{HostStamp, ReceiverConfig, TelemetryItem, TelemetryReceiver};
use cellos_telemetry::wire::{GuestFrame, ProbeSource};

const FRAMES: usize = 1_000_000;
const RUNS: usize = 5;

fn run_once(dir: &std::path::Path, run: usize) -> (f64, u64) {
    let mut cfg = ReceiverConfig::new(
        dir.join(format!("bench-{run}.sock")),
        HostStamp {
            cell_id: "bench-cell".into(),
            run_id: "bench-run".into(),
            spec_hash: "0".repeat(64),
        },
    );
    // Measure the pipeline, not the limiter or a full queue.
    cfg.rate_per_sec = u32::MAX;
    cfg.burst = u32::MAX;
    cfg.queue_capacity = 1 << 16;
    let rx = TelemetryReceiver::bind(cfg).expect("bind bench receiver");
    let frame = GuestFrame::new(ProbeSource::ProcessSpawned, 4242, "python3", 123_456_789)
        .with_detail("argv0", "/usr/bin/python3")
        .with_detail("ppid", "1");
    let one = frame.encode().expect("encode bench frame");
    let frame_bytes = one.len();
    let chunk: Vec<u8> = one.repeat(1000);
    let mut stream = UnixStream::connect(rx.socket_path()).expect("connect");

    let start = Instant::now();
    let sender = std::thread::spawn(move || {
        for _ in 0..FRAMES / 1000 {
            stream.write_all(&chunk).expect("write");
        }
        stream
    });
    let mut stamped = 0u64;
    loop {
        match rx.next_timeout(Duration::from_millis(200)) {
            Some(TelemetryItem::Declaration(d)) => {
                debug_assert_eq!(d.stamp.cell_id, "bench-cell");
                stamped += 1;
            }
            Some(TelemetryItem::AgentSilenced(_)) => {}
            None => {
                let c = rx.counters();
                assert!(c.frames > 0, "receiver stalled: {c:?}");
                if c.frames == FRAMES as u64 && stamped == c.delivered {
                    break;
                }
            }
        }
        if stamped.is_multiple_of(4096) || stamped >= FRAMES as u64 {
            let c = rx.counters();
            if c.frames == FRAMES as u64 && stamped == c.delivered {
                break;
            }
        }
    }
    let elapsed = start.elapsed();
    drop(sender.join());
    let c = rx.counters();
    if c.queue_full > 0 {
        println!(
            "  (queue full {} times: the drain fell behind)",
            c.queue_full
        );
    }
    (stamped as f64 / elapsed.as_secs_f64(), frame_bytes as u64)
}

fn main() {
    // `cargo test --benches` passes `--bench`-less arguments; run a tiny smoke pass there.
    if std::env::args().all(|a| a != "--bench") {
        println!("receiver_throughput: run with `cargo bench` to measure");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rates: Vec<f64> = Vec::new();
    let mut frame_bytes = 0;
    for run in 0..RUNS {
        let (rate, bytes) = run_once(dir.path(), run);
        frame_bytes = bytes;
        println!("run {run}: {rate:.0} frames/s");
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "receiver_throughput: {FRAMES} frames of {frame_bytes} bytes, median {:.0} decoded+stamped frames/s (min {:.0}, max {:.0}) on one receiver thread",
        rates[RUNS / 2],
        rates[0],
        rates[RUNS - 1]
    );
}

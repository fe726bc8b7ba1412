//! Helpers shared by the integration tests: real receivers on real sockets in a temp dir.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cellos_core::events::EventFactory;
use cellos_telemetry::receiver::{HostStamp, ReceiverConfig, ReceiverCounters, TelemetryReceiver};

pub fn stamp(cell: &str) -> HostStamp {
    HostStamp {
        cell_id: cell.into(),
        run_id: format!("run-{cell}"),
        spec_hash: format!("{:064x}", cell.len()),
    }
}

pub fn config(dir: &Path, cell: &str) -> ReceiverConfig {
    ReceiverConfig::new(dir.join(format!("{cell}.sock")), stamp(cell))
}

pub fn factory() -> EventFactory {
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    EventFactory::new(
        "test-host",
        "telemetry",
        Arc::new(move || {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            format!("id-{n}")
        }),
    )
}

/// Wait (bounded) until `cond` holds on the receiver's counters; panics with them otherwise.
pub fn wait_counters(
    rx: &TelemetryReceiver,
    what: &str,
    cond: impl Fn(&ReceiverCounters) -> bool,
) -> ReceiverCounters {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c = rx.counters();
        if cond(&c) {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {c:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

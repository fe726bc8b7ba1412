//! Prometheus metrics in the text exposition format (encoded by the `prometheus` crate,
//! which writes the HELP and TYPE lines): cells by state, how long creates, execs and
//! destroys take, events appended, and denials by kind.

use std::collections::BTreeMap;

use cellos_supervisor::CellState;
use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// Every state a cell can be in, so `cellos_cells` shows zeros instead of missing series.
const STATES: [CellState; 4] = [
    CellState::Running,
    CellState::Paused,
    CellState::Completed,
    CellState::Destroyed,
];

/// Denial kinds shown from the start (at zero), so a rate over them never starts missing.
const DENIAL_KINDS: [&str; 3] = ["admission-denied", "unauthorized", "refused"];

fn state_label(state: CellState) -> &'static str {
    match state {
        CellState::Running => "running",
        CellState::Paused => "paused",
        CellState::Completed => "completed",
        CellState::Destroyed => "destroyed",
    }
}

/// Why the metrics could not be set up or encoded.
#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    cells: IntGaugeVec,
    denials: IntCounterVec,
    events_appended: IntCounter,
    pub create_seconds: Histogram,
    pub exec_seconds: Histogram,
    pub destroy_seconds: Histogram,
}

/// Latency buckets from 1 ms to about 17 minutes.
fn seconds_histogram(name: &str, help: &str) -> Result<Histogram, MetricsError> {
    let buckets = exponential_buckets(0.001, 2.0, 21)?;
    Ok(Histogram::with_opts(
        HistogramOpts::new(name, help).buckets(buckets),
    )?)
}

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let cells = IntGaugeVec::new(
            Opts::new("cellos_cells", "Cells held by this server, by state"),
            &["state"],
        )?;
        let denials = IntCounterVec::new(
            Opts::new(
                "cellos_denials_total",
                "Requests denied: admission, authentication, refused cell operations",
            ),
            &["kind"],
        )?;
        let events_appended = IntCounter::new(
            "cellos_events_appended_total",
            "Events appended to the signed log through this server",
        )?;
        let create_seconds =
            seconds_histogram("cellos_create_seconds", "Time to admit and create a cell")?;
        let exec_seconds = seconds_histogram(
            "cellos_exec_seconds",
            "Duration of execs, from start to exit",
        )?;
        let destroy_seconds = seconds_histogram(
            "cellos_destroy_seconds",
            "Time to destroy a cell and verify nothing is left",
        )?;
        registry.register(Box::new(cells.clone()))?;
        registry.register(Box::new(create_seconds.clone()))?;
        registry.register(Box::new(exec_seconds.clone()))?;
        registry.register(Box::new(destroy_seconds.clone()))?;
        registry.register(Box::new(events_appended.clone()))?;
        registry.register(Box::new(denials.clone()))?;
        for state in STATES {
            cells.with_label_values(&[state_label(state)]).set(0);
        }
        for kind in DENIAL_KINDS {
            denials.with_label_values(&[kind]).reset();
        }
        Ok(Self {
            registry,
            cells,
            denials,
            events_appended,
            create_seconds,
            exec_seconds,
            destroy_seconds,
        })
    }

    /// Count one denial of `kind` (a problem slug such as `admission-denied`).
    pub fn deny(&self, kind: &str) {
        self.denials.with_label_values(&[kind]).inc();
    }

    /// The text exposition, with `cellos_cells` set from `counts` and the events counter
    /// brought up to `appended` (the feed's own count) first.
    pub fn render(
        &self,
        counts: &BTreeMap<CellState, u64>,
        appended: u64,
    ) -> Result<String, MetricsError> {
        let counted = self.events_appended.get();
        if appended > counted {
            self.events_appended.inc_by(appended - counted);
        }
        for state in STATES {
            let n = counts.get(&state).copied().unwrap_or(0);
            self.cells
                .with_label_values(&[state_label(state)])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

//! Prometheus metrics, encoded by `prometheus-client` (which writes the HELP and TYPE lines):
//! cells by state, how long creates, execs and destroys take, events appended, and denials.

use cellos_supervisor::CellState;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Every state a cell can be in, so `cellos_cells` shows zeros instead of missing series.
const STATES: [CellState; 4] = [
    CellState::Running,
    CellState::Paused,
    CellState::Completed,
    CellState::Destroyed,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum StateLabel {
    running,
    paused,
    completed,
    destroyed,
}

impl From<CellState> for StateLabel {
    fn from(state: CellState) -> Self {
        match state {
            CellState::Running => StateLabel::running,
            CellState::Paused => StateLabel::paused,
            CellState::Completed => StateLabel::completed,
            CellState::Destroyed => StateLabel::destroyed,
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: StateLabel,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    cells: Family<StateLabels, Gauge>,
    denials: Family<KindLabels, Counter>,
    pub create_seconds: Histogram,
    pub exec_seconds: Histogram,
    pub destroy_seconds: Histogram,
}

/// Latency buckets from 1 ms to about 33 minutes.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 21))
}

impl Metrics {
    /// `events_appended` is the feed's counter, so every event through it is counted.
    pub fn new(events_appended: Counter) -> Self {
        let mut registry = Registry::default();
        let cells = Family::<StateLabels, Gauge>::default();
        let denials = Family::<KindLabels, Counter>::default();
        let (create, exec, destroy) = (
            seconds_histogram(),
            seconds_histogram(),
            seconds_histogram(),
        );
        registry.register(
            "cellos_cells",
            "Cells held by this server, by state",
            cells.clone(),
        );
        registry.register(
            "cellos_create_seconds",
            "Time to admit and create a cell",
            create.clone(),
        );
        registry.register(
            "cellos_exec_seconds",
            "Duration of execs, from start to exit",
            exec.clone(),
        );
        registry.register(
            "cellos_destroy_seconds",
            "Time to destroy a cell and verify nothing is left",
            destroy.clone(),
        );
        registry.register(
            "cellos_events_appended",
            "Events appended to the signed log through this server",
            events_appended,
        );
        registry.register(
            "cellos_denials",
            "Requests denied: admission, authentication, refused cell operations",
            denials.clone(),
        );
        for state in STATES {
            cells
                .get_or_create(&StateLabels {
                    state: state.into(),
                })
                .set(0);
        }
        Self {
            registry,
            cells,
            denials,
            create_seconds: create,
            exec_seconds: exec,
            destroy_seconds: destroy,
        }
    }

    /// Count one denial of `kind` (a problem slug such as `admission-denied`).
    pub fn deny(&self, kind: &str) {
        self.denials
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// The text exposition, with `cellos_cells` set from `counts` first.
    pub fn render(
        &self,
        counts: &std::collections::BTreeMap<CellState, u64>,
    ) -> Result<String, std::fmt::Error> {
        for state in STATES {
            let n = counts.get(&state).copied().unwrap_or(0);
            self.cells
                .get_or_create(&StateLabels {
                    state: state.into(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

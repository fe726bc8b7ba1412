//! One cell's telemetry, assembled: the receiver, the host probes, the declared-vs-authorised
//! check and the observed-vs-declared comparison, behind one non-blocking `poll`.
//!
//! This is what a synchronous supervisor drives: `start` before the workload (binds the socket
//! and subscribes the probe), `workload_started`, `poll` periodically while it runs, and
//! `finish` at teardown. Every result is a [`TelemetryEvent`] that maps onto the event
//! catalogue through [`TelemetryEvent::to_event`].

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cellos_core::authority::AuthorityKind;
use cellos_core::events::{CloudEvent, EventFactory, TelemetryReportData, ViolationData};
use cellos_core::spec::ExecutionCellSpec;
use time::OffsetDateTime;

use crate::declared::DeclaredChecker;
use crate::discrepancy::{DiscrepancyDetector, DEFAULT_GRACE, DEFAULT_MIN_LIFETIME};
use crate::hostprobe::{
    CellCgroupFilter, CgroupSample, CgroupSampler, Observation, ProbeCounters, ProcessProbe,
};
use crate::receiver::{
    AgentSilenced, ReceiverConfig, ReceiverCounters, ReceiverError, StampedDeclaration,
    TelemetryItem, TelemetryReceiver,
};

/// Everything needed to start one cell's telemetry.
#[derive(Debug, Clone)]
pub struct CellTelemetryConfig {
    pub receiver: ReceiverConfig,
    /// The admitted spec: declarations are checked against its authority.
    pub spec: ExecutionCellSpec,
    /// The cell's cgroup directories (every hierarchy). Empty: no host probes.
    pub cgroup_dirs: Vec<PathBuf>,
    /// Time a guest has to declare an observed exec.
    pub declare_grace: Duration,
    /// Images shorter-lived than this need no declaration (the agent polls `/proc`).
    pub min_declared_lifetime: Duration,
}

impl CellTelemetryConfig {
    pub fn new(
        receiver: ReceiverConfig,
        spec: ExecutionCellSpec,
        cgroup_dirs: Vec<PathBuf>,
    ) -> Self {
        CellTelemetryConfig {
            receiver,
            spec,
            cgroup_dirs,
            declare_grace: DEFAULT_GRACE,
            min_declared_lifetime: DEFAULT_MIN_LIFETIME,
        }
    }
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Receiver(#[from] ReceiverError),
    #[error("host process probe: {0} (it needs root: CAP_NET_ADMIN for the proc connector)")]
    Probe(std::io::Error),
}

/// One result of a cell's telemetry.
#[derive(Debug, Clone, PartialEq)]
pub enum TelemetryEvent {
    /// A guest declaration (authority `Declared`).
    Declared(StampedDeclaration),
    AgentSilenced(AgentSilenced),
    /// A declaration outside what the spec authorised, or an observed exec never declared.
    Violation {
        data: ViolationData,
        detected_at: OffsetDateTime,
    },
    /// A host observation of the cell's processes (authority `Observed`).
    Observed(Observation),
}

impl TelemetryEvent {
    /// The catalogue event for this result, about `cell_id`.
    pub fn to_event(&self, factory: &EventFactory, cell_id: &str) -> CloudEvent {
        match self {
            TelemetryEvent::Declared(d) => d.to_event(factory),
            TelemetryEvent::AgentSilenced(s) => s.to_event(factory),
            TelemetryEvent::Violation { data, detected_at } => {
                factory.violation_detected(*detected_at, cell_id, data)
            }
            TelemetryEvent::Observed(o @ Observation::Exec(e)) => {
                factory.process_spawned(e.observed_at, cell_id, &o.event_data())
            }
            TelemetryEvent::Observed(o @ Observation::Exit(e)) => {
                factory.process_exited(e.observed_at, cell_id, &o.event_data())
            }
        }
    }
}

/// Final counters of a cell's telemetry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryReport {
    pub receiver: ReceiverCounters,
    pub probe: Option<ProbeCounters>,
    /// Most recent reasons frames were rejected.
    pub rejections: Vec<String>,
    pub last_cgroup_sample: Option<CgroupSample>,
}

impl TelemetryReport {
    /// The `telemetry.v1.reported` payload.
    pub fn event_data(&self, run_id: &str) -> TelemetryReportData {
        TelemetryReportData {
            run_id: run_id.to_owned(),
            receiver: self.receiver,
            probe: self.probe,
            rejections: self.rejections.clone(),
            last_cgroup_sample: self.last_cgroup_sample,
            authority: AuthorityKind::Observed,
        }
    }
}

/// A cell's running telemetry.
#[derive(Debug)]
pub struct CellTelemetry {
    receiver: TelemetryReceiver,
    probe: Option<ProcessProbe>,
    sampler: Option<CgroupSampler>,
    checker: DeclaredChecker,
    detector: DiscrepancyDetector,
    grace: Duration,
}

impl CellTelemetry {
    /// Bind the cell's socket and subscribe the host probe. Call before the workload starts.
    pub fn start(config: CellTelemetryConfig) -> Result<Self, SessionError> {
        let (probe, sampler) = if config.cgroup_dirs.is_empty() {
            (None, None)
        } else {
            let filter =
                CellCgroupFilter::from_dirs(&config.cgroup_dirs).map_err(SessionError::Probe)?;
            (
                Some(ProcessProbe::start(filter).map_err(SessionError::Probe)?),
                Some(CgroupSampler::new(&config.cgroup_dirs)),
            )
        };
        let receiver = TelemetryReceiver::bind(config.receiver)?;
        Ok(CellTelemetry {
            receiver,
            probe,
            sampler,
            checker: DeclaredChecker::new(&config.spec),
            detector: DiscrepancyDetector::new(config.declare_grace, config.min_declared_lifetime),
            grace: config.declare_grace,
        })
    }

    pub fn socket_path(&self) -> &Path {
        self.receiver.socket_path()
    }

    pub fn workload_started(&self) {
        self.receiver.workload_started();
    }

    pub fn workload_exited(&self) {
        self.receiver.workload_exited();
    }

    pub fn counters(&self) -> ReceiverCounters {
        self.receiver.counters()
    }

    /// One reading of the cell's cgroup counters, when host probes are on.
    pub fn sample_cgroup(&self) -> Option<CgroupSample> {
        self.sampler.as_ref().map(CgroupSampler::sample)
    }

    /// Everything that happened since the last call. Never blocks.
    pub fn poll(&mut self) -> Vec<TelemetryEvent> {
        let observations = self
            .probe
            .as_ref()
            .map(ProcessProbe::drain)
            .unwrap_or_default();
        let items = self.receiver.drain();
        process(
            &self.checker,
            &mut self.detector,
            observations,
            items,
            Instant::now(),
        )
    }

    /// Stop everything, flush what is still queued, and settle every pending comparison: at
    /// teardown the guest has had the whole run to declare.
    pub fn finish(mut self) -> (Vec<TelemetryEvent>, TelemetryReport) {
        let (observations, probe) = match self.probe.take() {
            Some(probe) => {
                let counters = probe.counters();
                (probe.stop(), Some(counters))
            }
            None => (Vec::new(), None),
        };
        let rejections = self.receiver.recent_rejections();
        let last_cgroup_sample = self.sample_cgroup();
        let CellTelemetry {
            receiver,
            checker,
            mut detector,
            grace,
            ..
        } = self;
        let (receiver_counters, items) = receiver.shutdown();
        let events = process(
            &checker,
            &mut detector,
            observations,
            items,
            Instant::now() + grace,
        );
        (
            events,
            TelemetryReport {
                receiver: receiver_counters,
                probe,
                rejections,
                last_cgroup_sample,
            },
        )
    }
}

fn process(
    checker: &DeclaredChecker,
    detector: &mut DiscrepancyDetector,
    observations: Vec<Observation>,
    items: Vec<TelemetryItem>,
    now: Instant,
) -> Vec<TelemetryEvent> {
    let mut events = Vec::new();
    for observation in observations {
        match &observation {
            Observation::Exec(exec) => detector.observed_exec(exec.clone()),
            Observation::Exit(exit) => detector.observed_exit(exit),
        }
        events.push(TelemetryEvent::Observed(observation));
    }
    let arrived = Instant::now();
    for item in items {
        match item {
            TelemetryItem::Declaration(d) => {
                detector.declared(&d.frame, arrived);
                let violation = checker.check(&d.frame);
                let detected_at = d.host_received_at;
                events.push(TelemetryEvent::Declared(d));
                if let Some(data) = violation {
                    events.push(TelemetryEvent::Violation { data, detected_at });
                }
            }
            TelemetryItem::AgentSilenced(s) => events.push(TelemetryEvent::AgentSilenced(s)),
        }
    }
    let detected_at = OffsetDateTime::now_utc();
    events.extend(
        detector
            .poll(now)
            .into_iter()
            .map(|data| TelemetryEvent::Violation { data, detected_at }),
    );
    events
}

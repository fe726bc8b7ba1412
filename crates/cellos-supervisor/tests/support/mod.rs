//! Test doubles of the ports the supervisor drives: a scripted backend and cell, secret brokers,
//! an export router and an in-memory event sink. All of them write to one [`Journal`], so a
//! test sees the order in which the supervisor called the ports and made events durable.

#![allow(dead_code)] // Each test binary uses its own part of the doubles.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cellos_core::events::{CloudEvent, EventFactory, EventKind};
use cellos_core::ports::{
    Cell, CellBackend, CellRequest, CellSummary, EventSink, ExportReceipt, ExportSink,
    IsolationReport, PortError, PortErrorKind, SecretBroker, SecretValue, TeardownReport,
    UnverifiedResidue, WorkloadExit, WorkloadOutcome,
};
use cellos_core::spec::{
    parse_execution_cell, parse_policy_pack, Capabilities, ExecutionCellDocument, ExportTarget,
    ExportTargetKind,
};
use cellos_supervisor::{ExportRouter, RunReport, RunRequest, Supervisor, SupervisorError};

/// One thing the supervisor did, as the doubles saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// An event became durable (the sink returned from its append).
    Durable(EventKind),
    Resolve(String),
    Create,
    /// The caller's `on_created` hook ran.
    Created,
    Start,
    Wait,
    OpenArtifact(String),
    Push(String),
    Destroy,
    Revoke(&'static str),
}

/// Every step of one run, in order, shared by all doubles.
#[derive(Default)]
pub struct Journal(Mutex<Vec<Step>>);

impl Journal {
    pub fn push(&self, step: Step) {
        self.0.lock().unwrap().push(step);
    }

    pub fn steps(&self) -> Vec<Step> {
        self.0.lock().unwrap().clone()
    }

    /// Position of the first `step`; panics with the journal when it never happened.
    pub fn position(&self, step: &Step) -> usize {
        let steps = self.steps();
        steps
            .iter()
            .position(|s| s == step)
            .unwrap_or_else(|| panic!("{step:?} never happened: {steps:?}"))
    }

    pub fn contains(&self, step: &Step) -> bool {
        self.steps().contains(step)
    }
}

fn refused(what: &str) -> PortError {
    PortError::new(PortErrorKind::Io, format!("scripted failure: {what}"))
}

/// How the workload ends in [`FakeCell::wait`].
#[derive(Debug, Clone, Default)]
pub enum Workload {
    #[default]
    ExitsZero,
    Exits(i32),
    /// Runs until the deadline the supervisor sets; `wait` reports `TimedOut` at once and
    /// keeps the deadline for the test.
    Hangs,
    /// `wait` itself fails.
    WaitFails,
}

/// What the fake backend and its cell do.
#[derive(Debug, Clone, Default)]
pub struct Script {
    pub create_fails: bool,
    pub start_fails: bool,
    pub workload: Workload,
    /// Artifact paths that do not exist in the cell.
    pub missing_artifacts: Vec<String>,
    pub destroy_fails: bool,
    /// What the cell's residue check reports it could not check.
    pub unverified: Vec<UnverifiedResidue>,
}

/// When the workload started and which deadline the supervisor gave `wait`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timing {
    pub exec: Option<Instant>,
    pub deadline: Option<Instant>,
}

pub struct FakeBackend {
    journal: Arc<Journal>,
    script: Script,
    pub timing: Arc<Mutex<Timing>>,
}

impl FakeBackend {
    pub fn new(journal: Arc<Journal>, script: Script) -> Self {
        Self {
            journal,
            script,
            timing: Arc::default(),
        }
    }
}

impl CellBackend for FakeBackend {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn create(&self, request: CellRequest<'_>) -> Result<Box<dyn Cell>, PortError> {
        self.journal.push(Step::Create);
        if self.script.create_fails {
            return Err(refused("create"));
        }
        Ok(Box::new(FakeCell {
            id: request.spec.id.clone(),
            journal: self.journal.clone(),
            script: self.script.clone(),
            timing: self.timing.clone(),
            isolation: IsolationReport {
                backend: "fake".into(),
                ..IsolationReport::default()
            },
            destroyed: false,
        }))
    }

    fn reclaim(&self, cell_id: &str) -> Result<TeardownReport, PortError> {
        Ok(TeardownReport {
            cell_id: cell_id.into(),
            ..TeardownReport::default()
        })
    }

    fn orphans(&self) -> Result<Vec<String>, PortError> {
        Ok(Vec::new())
    }

    fn list(&self) -> Result<Vec<CellSummary>, PortError> {
        Ok(Vec::new())
    }

    fn signal(&self, _cell_id: &str, _signal: i32) -> Result<(), PortError> {
        Ok(())
    }

    fn pause(&self, _cell_id: &str) -> Result<String, PortError> {
        Ok("fake freezer".into())
    }

    fn resume(&self, _cell_id: &str) -> Result<String, PortError> {
        Ok("fake freezer".into())
    }
}

pub struct FakeCell {
    id: String,
    journal: Arc<Journal>,
    script: Script,
    timing: Arc<Mutex<Timing>>,
    isolation: IsolationReport,
    destroyed: bool,
}

impl Cell for FakeCell {
    fn id(&self) -> &str {
        &self.id
    }

    fn isolation(&self) -> &IsolationReport {
        &self.isolation
    }

    fn start(&mut self) -> Result<Instant, PortError> {
        self.journal.push(Step::Start);
        if self.script.start_fails {
            return Err(refused("start"));
        }
        let exec = Instant::now();
        self.timing.lock().unwrap().exec = Some(exec);
        Ok(exec)
    }

    fn wait(&mut self, deadline: Option<Instant>) -> Result<WorkloadOutcome, PortError> {
        self.journal.push(Step::Wait);
        self.timing.lock().unwrap().deadline = deadline;
        let exit = match self.script.workload {
            Workload::ExitsZero => WorkloadExit::Exited { code: 0 },
            Workload::Exits(code) => WorkloadExit::Exited { code },
            Workload::Hangs => {
                assert!(deadline.is_some(), "a hanging workload needs a deadline");
                WorkloadExit::TimedOut {
                    limit: String::new(),
                }
            }
            Workload::WaitFails => return Err(refused("wait")),
        };
        Ok(WorkloadOutcome {
            exit,
            duration: Duration::from_millis(5),
            limit_hits: Vec::new(),
        })
    }

    fn open_artifact(&self, path: &str) -> Result<Box<dyn Read + Send>, PortError> {
        self.journal.push(Step::OpenArtifact(path.into()));
        if self.script.missing_artifacts.iter().any(|p| p == path) {
            return Err(PortError::new(
                PortErrorKind::NotFound,
                format!("{path} does not exist in the cell"),
            ));
        }
        Ok(Box::new(std::io::Cursor::new(format!("content of {path}"))))
    }

    fn destroy(&mut self) -> Result<TeardownReport, PortError> {
        self.journal.push(Step::Destroy);
        if self.script.destroy_fails {
            return Err(refused("destroy"));
        }
        let destroyed = !self.destroyed;
        self.destroyed = true;
        Ok(TeardownReport {
            cell_id: self.id.clone(),
            destroyed,
            unverified: self.script.unverified.clone(),
            ..TeardownReport::default()
        })
    }
}

/// A broker holding fixed secrets.
pub struct FakeBroker {
    name: &'static str,
    journal: Arc<Journal>,
    secrets: HashMap<String, Vec<u8>>,
    /// `resolve` of these keys fails with an I/O error (not "not found").
    pub broken_keys: Vec<String>,
    pub revoke_fails: bool,
}

impl FakeBroker {
    pub fn new(name: &'static str, journal: Arc<Journal>, keys: &[&str]) -> Self {
        Self {
            name,
            journal,
            secrets: keys
                .iter()
                .map(|k| (k.to_string(), format!("value of {k}").into_bytes()))
                .collect(),
            broken_keys: Vec::new(),
            revoke_fails: false,
        }
    }
}

impl SecretBroker for FakeBroker {
    fn name(&self) -> &'static str {
        self.name
    }

    fn resolve(&self, key: &str, _cell_id: &str) -> Result<SecretValue, PortError> {
        self.journal.push(Step::Resolve(key.into()));
        if self.broken_keys.iter().any(|k| k == key) {
            return Err(refused("resolve"));
        }
        self.secrets
            .get(key)
            .map(|v| SecretValue::new(v.clone()))
            .ok_or_else(|| PortError::new(PortErrorKind::NotFound, format!("no {key}")))
    }

    fn revoke_for_cell(&self, _cell_id: &str) -> Result<(), PortError> {
        self.journal.push(Step::Revoke(self.name));
        if self.revoke_fails {
            return Err(refused("revoke"));
        }
        Ok(())
    }
}

/// An in-memory export destination.
pub struct FakeExports {
    journal: Arc<Journal>,
    /// Artifact names whose push fails.
    pub failing: Vec<String>,
    pub pushed: Mutex<Vec<(String, Vec<u8>)>>,
}

impl FakeExports {
    pub fn new(journal: Arc<Journal>) -> Self {
        Self {
            journal,
            failing: Vec::new(),
            pushed: Mutex::default(),
        }
    }
}

/// Routes every artifact, whatever its target, to the one [`FakeExports`].
struct Router(Arc<FakeExports>);

impl ExportRouter for Router {
    fn sink_for(&self, _target: Option<&ExportTarget>) -> Result<Arc<dyn ExportSink>, PortError> {
        Ok(self.0.clone())
    }
}

impl ExportSink for FakeExports {
    fn target_kind(&self) -> ExportTargetKind {
        ExportTargetKind::LocalPath
    }

    fn destination_hint(&self, cell_id: &str, name: &str) -> String {
        format!("memory://{cell_id}/{name}")
    }

    fn push(
        &self,
        cell_id: &str,
        name: &str,
        content: &mut dyn Read,
    ) -> Result<ExportReceipt, PortError> {
        self.journal.push(Step::Push(name.into()));
        if self.failing.iter().any(|n| n == name) {
            return Err(refused("push"));
        }
        let mut bytes = Vec::new();
        content
            .read_to_end(&mut bytes)
            .map_err(|e| PortError::new(PortErrorKind::Io, e.to_string()))?;
        let size_bytes = bytes.len() as u64;
        self.pushed.lock().unwrap().push((name.into(), bytes));
        Ok(ExportReceipt {
            name: name.into(),
            target_kind: ExportTargetKind::LocalPath,
            target_name: None,
            destination: self.destination_hint(cell_id, name),
            sha256: "0".repeat(64),
            size_bytes,
            attempts: 1,
        })
    }
}

/// Keeps appended events in memory; each append is journaled as the events' durability.
pub struct MemorySink {
    journal: Arc<Journal>,
    pub events: Mutex<Vec<CloudEvent>>,
    /// An append that contains an event of this kind fails, and appends nothing.
    pub fail_on: Option<EventKind>,
}

impl MemorySink {
    pub fn new(journal: Arc<Journal>) -> Self {
        Self {
            journal,
            events: Mutex::default(),
            fail_on: None,
        }
    }

    pub fn kinds(&self) -> Vec<EventKind> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.kind().expect("catalogued event"))
            .collect()
    }

    /// The `data` of the only event of `kind`.
    pub fn data(&self, kind: EventKind) -> serde_json::Value {
        let events = self.events.lock().unwrap();
        let found: Vec<&CloudEvent> = events.iter().filter(|e| e.kind() == Some(kind)).collect();
        assert_eq!(found.len(), 1, "expected one {kind:?} event");
        found[0].data.clone()
    }
}

impl EventSink for MemorySink {
    fn emit(&self, event: CloudEvent) -> Result<CloudEvent, PortError> {
        self.emit_batch(vec![event]).map(|mut v| v.remove(0))
    }

    fn emit_batch(&self, events: Vec<CloudEvent>) -> Result<Vec<CloudEvent>, PortError> {
        if let Some(kind) = self.fail_on {
            if events.iter().any(|e| e.kind() == Some(kind)) {
                return Err(PortError::new(PortErrorKind::Io, "scripted: disk full"));
            }
        }
        let mut stored = self.events.lock().unwrap();
        for event in &events {
            stored.push(event.clone());
            self.journal
                .push(Step::Durable(event.kind().expect("catalogued event")));
        }
        Ok(events)
    }
}

/// One supervisor over the doubles, and the doubles for inspection.
pub struct Harness {
    pub journal: Arc<Journal>,
    pub backend: Arc<FakeBackend>,
    pub sink: Arc<MemorySink>,
    pub brokers: Vec<Arc<FakeBroker>>,
    pub exports: Arc<FakeExports>,
}

impl Harness {
    /// A harness whose brokers are built by `brokers` over the shared journal.
    pub fn new(
        script: Script,
        brokers: impl FnOnce(&Arc<Journal>) -> Vec<FakeBroker>,
        exports: impl FnOnce(&mut FakeExports),
        sink: impl FnOnce(&mut MemorySink),
    ) -> Self {
        let journal = Arc::new(Journal::default());
        let mut fake_exports = FakeExports::new(journal.clone());
        exports(&mut fake_exports);
        let mut memory = MemorySink::new(journal.clone());
        sink(&mut memory);
        Self {
            backend: Arc::new(FakeBackend::new(journal.clone(), script)),
            sink: Arc::new(memory),
            brokers: brokers(&journal).into_iter().map(Arc::new).collect(),
            exports: Arc::new(fake_exports),
            journal,
        }
    }

    /// A harness with the script and one broker `file` holding `API_TOKEN`.
    pub fn scripted(script: Script) -> Self {
        Self::new(
            script,
            |j| vec![FakeBroker::new("file", j.clone(), &["API_TOKEN"])],
            |_| {},
            |_| {},
        )
    }

    /// Run `spec` (YAML) without policy packs.
    pub fn run(&self, spec: &str) -> Result<RunReport, SupervisorError> {
        self.run_under(spec, &[])
    }

    /// Run `spec` (YAML) under the policy packs `packs` (YAML each).
    pub fn run_under(&self, spec: &str, packs: &[&str]) -> Result<RunReport, SupervisorError> {
        let document = parse_execution_cell(spec).expect("test spec parses");
        self.run_document(&document, packs)
    }

    /// Run a parsed `document` under `packs`; the `on_created` hook journals [`Step::Created`].
    pub fn run_document(
        &self,
        document: &ExecutionCellDocument,
        packs: &[&str],
    ) -> Result<RunReport, SupervisorError> {
        self.run_as_build(document, packs, None)
    }

    /// Run `spec` (YAML) on a supervisor that serves only `capabilities`.
    pub fn run_with_capabilities(
        &self,
        spec: &str,
        capabilities: Capabilities,
    ) -> Result<RunReport, SupervisorError> {
        let document = parse_execution_cell(spec).expect("test spec parses");
        self.run_as_build(&document, &[], Some(capabilities))
    }

    /// Run `document` under `packs` on a supervisor serving `capabilities` (all when `None`).
    fn run_as_build(
        &self,
        document: &ExecutionCellDocument,
        packs: &[&str],
        capabilities: Option<Capabilities>,
    ) -> Result<RunReport, SupervisorError> {
        let policies: Vec<_> = packs
            .iter()
            .map(|p| parse_policy_pack(p).expect("test pack parses"))
            .collect();
        let brokers = self
            .brokers
            .iter()
            .map(|b| b.clone() as Arc<dyn SecretBroker>)
            .collect();
        let supervisor = Supervisor::new(
            self.backend.clone(),
            self.sink.clone(),
            EventFactory::new("host", "test", Arc::new(uuid)),
            brokers,
            Arc::new(Router(self.exports.clone())),
        );
        let supervisor = match capabilities {
            Some(capabilities) => supervisor.with_capabilities(capabilities),
            None => supervisor,
        };
        supervisor.run(RunRequest {
            document,
            policies: &policies,
            run_id: "run-1".into(),
            stdout: Box::new(std::io::sink()),
            stderr: Box::new(std::io::sink()),
            on_created: Some(Box::new(|| self.journal.push(Step::Created))),
        })
    }
}

/// Distinct event ids, as the real generator makes them.
fn uuid() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "00000000-0000-4000-8000-{:012}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A spec running `/bin/true`, with `run_extra` lines in `spec.run` and `spec_extra` lines
/// in `spec` (each indented as its parent's keys are).
pub fn spec_with(run_extra: &str, spec_extra: &str) -> String {
    format!(
        "apiVersion: cellos.io/v1
kind: ExecutionCell
spec:
  id: fake-cell
  run:
    argv: [/bin/true]
{run_extra}
{spec_extra}"
    )
}

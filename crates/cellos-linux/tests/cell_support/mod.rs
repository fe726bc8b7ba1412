//! Shared helpers for the cell integration tests: a backend on a private state directory and a
//! one-call "run this spec, give me its output" helper.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use cellos_core::events::{CloudEvent, EventFactory};
use cellos_core::ports::{
    Cell, CellBackend, CellRequest, DeliveredSecret, RuntimeEvidence, SecretValue, TeardownReport,
    WorkloadOutcome,
};
use cellos_core::spec::{ExecutionCellSpec, SecretDeliveryMode};
use cellos_linux::backend::{LinuxBackend, LinuxBackendConfig};

/// A `Write` whose bytes the test can read afterwards.
#[derive(Clone, Default)]
pub struct SharedBuf(pub Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SharedBuf {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Collects what a cell observes at run time, for tests to inspect.
#[derive(Clone, Default)]
pub struct Observed(pub Arc<Mutex<Vec<CloudEvent>>>);

impl RuntimeEvidence for Observed {
    fn observe(&self, event: CloudEvent) {
        self.0.lock().unwrap().push(event);
    }
}

/// The event factory cells of these tests build their runtime events with.
pub fn test_factory() -> EventFactory {
    EventFactory::new(
        "test-host",
        "linux-backend",
        Arc::new(|| "test-id".to_owned()),
    )
}

pub struct Fixture {
    pub state: tempfile::TempDir,
    pub backend: LinuxBackend,
}

pub fn init_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cellos-cell-init"))
}

pub fn fixture() -> Fixture {
    let state = tempfile::tempdir().expect("state dir");
    let backend = LinuxBackend::new(LinuxBackendConfig::new(state.path(), init_exe()))
        .expect("backend (tests run as root)");
    Fixture { state, backend }
}

/// A cell id unique within this test process.
pub fn unique_id(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A spec from JSON with `id` and `run.argv` filled in.
pub fn spec(id: &str, argv: &[&str], extra: serde_json::Value) -> ExecutionCellSpec {
    let mut value = serde_json::json!({ "id": id, "run": { "argv": argv } });
    merge(&mut value, extra);
    serde_json::from_value(value).expect("valid spec")
}

fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    match (base, extra) {
        (serde_json::Value::Object(b), serde_json::Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

/// A `/bin/sh -c script` spec.
pub fn shell(id: &str, script: &str, extra: serde_json::Value) -> ExecutionCellSpec {
    spec(id, &["/bin/sh", "-c", script], extra)
}

pub struct Run {
    pub outcome: WorkloadOutcome,
    pub stdout: String,
    pub stderr: String,
    pub teardown: TeardownReport,
    pub isolation: cellos_core::ports::IsolationReport,
}

/// Create, start, wait, destroy.
pub fn run(backend: &LinuxBackend, spec: &ExecutionCellSpec) -> Run {
    run_with(backend, spec, Vec::new(), SecretDeliveryMode::File, None)
}

pub fn run_with(
    backend: &LinuxBackend,
    spec: &ExecutionCellSpec,
    secrets: Vec<(&str, &[u8])>,
    delivery: SecretDeliveryMode,
    deadline: Option<std::time::Instant>,
) -> Run {
    let (stdout, stderr) = (SharedBuf::default(), SharedBuf::default());
    let mut cell = create(backend, spec, secrets, delivery, &stdout, &stderr);
    let isolation = cell.isolation().clone();
    cell.start().expect("start");
    let outcome = cell.wait(deadline).expect("wait");
    let teardown = cell.destroy().expect("destroy");
    Run {
        outcome,
        stdout: stdout.text(),
        stderr: stderr.text(),
        teardown,
        isolation,
    }
}

pub fn create(
    backend: &LinuxBackend,
    spec: &ExecutionCellSpec,
    secrets: Vec<(&str, &[u8])>,
    delivery: SecretDeliveryMode,
    stdout: &SharedBuf,
    stderr: &SharedBuf,
) -> Box<dyn Cell> {
    backend
        .create(CellRequest {
            secrets: secrets
                .into_iter()
                .map(|(k, v)| DeliveredSecret {
                    key: k.into(),
                    value: SecretValue::new(v.to_vec()),
                })
                .collect(),
            secret_delivery: delivery,
            ..request(
                spec,
                Box::new(stdout.clone()),
                Box::new(stderr.clone()),
                Observed::default(),
            )
        })
        .unwrap_or_else(|e| panic!("create {}: {e}", spec.id))
}

/// A request for `spec` without secrets; runtime events land in `evidence`.
pub fn request<'a>(
    spec: &'a ExecutionCellSpec,
    stdout: Box<dyn Write + Send>,
    stderr: Box<dyn Write + Send>,
    evidence: Observed,
) -> CellRequest<'a> {
    CellRequest {
        spec,
        spec_hash: "0",
        run_id: "run-test",
        secrets: Vec::new(),
        secret_delivery: SecretDeliveryMode::File,
        stdout,
        stderr,
        factory: test_factory(),
        evidence: Arc::new(evidence),
    }
}

/// [`request`] with output and runtime events discarded.
pub fn quiet_request(spec: &ExecutionCellSpec) -> CellRequest<'_> {
    request(
        spec,
        Box::new(std::io::sink()),
        Box::new(std::io::sink()),
        Observed::default(),
    )
}

/// Files left in `<state>/run`.
pub fn run_dir_entries(state: &Path) -> Vec<String> {
    std::fs::read_dir(state.join("run"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

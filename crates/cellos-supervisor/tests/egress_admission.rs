//! A spec asking for more egress than its policy pack allows, or for an export kind the build
//! cannot serve, is refused before the backend is asked to create anything (no network scope,
//! no address lease, no veth ever exists).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use cellos_core::events::{CloudEvent, EventFactory, EventKind};
use cellos_core::ports::{
    Cell, CellBackend, CellRequest, CellSummary, EventSink, ExportSink, PortError, PortErrorKind,
    TeardownReport,
};
use cellos_core::spec::{
    parse_execution_cell, parse_policy_pack, Capabilities, ExportTarget, ExportTargetKind,
};
use cellos_supervisor::{ExportRouter, RunRequest, Supervisor, SupervisorError};

/// Counts `create` calls and creates nothing.
#[derive(Default)]
struct CountingBackend {
    creates: AtomicU32,
}

impl CellBackend for CountingBackend {
    fn name(&self) -> &'static str {
        "counting"
    }
    fn create(&self, _request: CellRequest<'_>) -> Result<Box<dyn Cell>, PortError> {
        self.creates.fetch_add(1, Ordering::SeqCst);
        Err(PortError::new(
            PortErrorKind::Refused,
            "test backend creates nothing",
        ))
    }
    fn reclaim(&self, cell_id: &str) -> Result<TeardownReport, PortError> {
        Ok(TeardownReport {
            cell_id: cell_id.into(),
            ..Default::default()
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
}

#[derive(Default)]
struct MemorySink(Mutex<Vec<CloudEvent>>);

impl EventSink for MemorySink {
    fn emit(&self, event: CloudEvent) -> Result<CloudEvent, PortError> {
        self.0.lock().unwrap().push(event.clone());
        Ok(event)
    }
}

struct NoExports;

impl ExportRouter for NoExports {
    fn sink_for(&self, _target: Option<&ExportTarget>) -> Result<Arc<dyn ExportSink>, PortError> {
        Err(PortError::new(
            PortErrorKind::Refused,
            "no exports in this test",
        ))
    }
}

const PACK: &str = "apiVersion: cellos.io/v1
kind: PolicyPack
metadata: { name: egress-pack }
spec:
  id: egress-pack
  version: '1.0.0'
  rules:
    allowedEgressHosts: [api.allowed.test]
";

fn spec(host: &str) -> String {
    format!(
        "apiVersion: cellos.io/v1
kind: ExecutionCell
spec:
  id: admission-egress
  run: {{ argv: [/bin/true] }}
  authority:
    egressRules:
      - {{ host: {host}, port: 443 }}
    dnsEgressJustification: test
"
    )
}

#[test]
fn egress_beyond_the_pack_is_denied_before_the_backend_creates_anything() {
    let backend = Arc::new(CountingBackend::default());
    let sink = Arc::new(MemorySink::default());
    let supervisor = Supervisor::new(
        backend.clone(),
        sink.clone(),
        EventFactory::new("h", "test", Arc::new(|| "id".to_owned())),
        Vec::new(),
        Arc::new(NoExports),
    );
    let packs = vec![parse_policy_pack(PACK).unwrap()];
    let document = parse_execution_cell(&spec("evil.test")).unwrap();
    let result = supervisor.run(RunRequest {
        document: &document,
        policies: &packs,
        run_id: "r1".into(),
        stdout: Box::new(std::io::sink()),
        stderr: Box::new(std::io::sink()),
        on_created: None,
    });
    let Err(SupervisorError::Denied(decision)) = result else {
        panic!("expected an admission denial, got {result:?}");
    };
    assert!(decision
        .violations
        .iter()
        .any(|v| v.rule == "allowedEgressHosts" && v.path == "spec.authority.egressRules[0].host"));
    assert_eq!(backend.creates.load(Ordering::SeqCst), 0);
    let kinds: Vec<_> = sink.0.lock().unwrap().iter().map(|e| e.kind()).collect();
    assert_eq!(kinds, [Some(EventKind::AdmissionDecided)]);

    // The same spec within the pack reaches the backend.
    let allowed = parse_execution_cell(&spec("api.allowed.test")).unwrap();
    let result = supervisor.run(RunRequest {
        document: &allowed,
        policies: &packs,
        run_id: "r2".into(),
        stdout: Box::new(std::io::sink()),
        stderr: Box::new(std::io::sink()),
        on_created: None,
    });
    assert!(matches!(result, Err(SupervisorError::Backend(_))));
    assert_eq!(backend.creates.load(Ordering::SeqCst), 1);
}

const S3_EXPORT: &str = "apiVersion: cellos.io/v1
kind: ExecutionCell
spec:
  id: admission-s3
  run: { argv: [/bin/true] }
  export:
    targets:
      - { name: bucket, kind: s3, bucket: cellos-artifacts }
";

#[test]
fn an_export_kind_the_build_cannot_serve_is_refused_before_anything_is_created() {
    let backend = Arc::new(CountingBackend::default());
    let sink = Arc::new(MemorySink::default());
    let local_only = Capabilities {
        export_kinds: [ExportTargetKind::LocalPath].into_iter().collect(),
        telemetry_agent: false,
    };
    let supervisor = Supervisor::new(
        backend.clone(),
        sink.clone(),
        EventFactory::new("h", "test", Arc::new(|| "id".to_owned())),
        Vec::new(),
        Arc::new(NoExports),
    )
    .with_capabilities(local_only);
    let document = parse_execution_cell(S3_EXPORT).unwrap();
    let result = supervisor.run(RunRequest {
        document: &document,
        policies: &[],
        run_id: "r1".into(),
        stdout: Box::new(std::io::sink()),
        stderr: Box::new(std::io::sink()),
        on_created: None,
    });
    let Err(SupervisorError::Unsupported(problems)) = result else {
        panic!("expected a capability refusal, got {result:?}");
    };
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, "spec.export.targets[0].kind");
    assert!(
        problems[0]
            .message
            .starts_with("this build cannot push to s3 targets (it serves: localPath)"),
        "{}",
        problems[0].message
    );
    assert_eq!(backend.creates.load(Ordering::SeqCst), 0);
    assert!(
        sink.0.lock().unwrap().is_empty(),
        "nothing is recorded either"
    );
}

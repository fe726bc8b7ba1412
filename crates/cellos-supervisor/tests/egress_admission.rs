//! A spec asking for more egress than its policy pack allows, or for an export kind the build
//! cannot serve, is refused before the backend is asked to create anything (no network scope,
//! no address lease, no veth ever exists).

mod support;

use cellos_core::events::EventKind;
use cellos_core::spec::{Capabilities, ExportTargetKind};
use cellos_supervisor::SupervisorError;
use support::{Harness, Script, Step};

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
    let denied = Harness::scripted(Script::default());
    let result = denied.run_under(&spec("evil.test"), &[PACK]);
    let Err(SupervisorError::Denied(decision)) = result else {
        panic!("expected an admission denial, got {result:?}");
    };
    assert!(decision
        .violations
        .iter()
        .any(|v| v.rule == "allowedEgressHosts" && v.path == "spec.authority.egressRules[0].host"));
    assert!(!denied.journal.contains(&Step::Create));
    assert_eq!(denied.sink.kinds(), [EventKind::AdmissionDecided]);

    // The same spec within the pack reaches the backend.
    let allowed = Harness::scripted(Script::default());
    allowed
        .run_under(&spec("api.allowed.test"), &[PACK])
        .unwrap();
    assert!(allowed.journal.contains(&Step::Create));
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
    let harness = Harness::scripted(Script::default());
    let local_only = Capabilities {
        export_kinds: [ExportTargetKind::LocalPath].into_iter().collect(),
        telemetry_agent: false,
    };
    let result = harness.run_with_capabilities(S3_EXPORT, local_only);
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
    assert!(!harness.journal.contains(&Step::Create));
    assert!(
        harness.sink.kinds().is_empty(),
        "nothing is recorded either"
    );
}

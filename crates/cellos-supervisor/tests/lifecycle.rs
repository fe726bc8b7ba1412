//! The lifecycle's ordering and every failure branch, over test doubles of the ports (no root,
//! no kernel): admission → secrets → create → started → run → completed → export → destroy →
//! revoke → destroyed + compliance summary, and what happens when any step fails.

mod support;

use std::time::Duration;

use cellos_core::events::EventKind::{self, *};
use cellos_core::ports::{PortErrorKind, UnverifiedResidue, WorkloadExit};
use cellos_supervisor::SupervisorError;
use serde_json::json;
use support::{spec_with, FakeBroker, Harness, Script, Step, Workload};

const SECRET: &str = "  authority:\n    secretRefs: [API_TOKEN]";

fn with_export(artifacts: &[&str]) -> String {
    let mut yaml = format!("{SECRET}\n  export:\n    artifacts:");
    for name in artifacts {
        yaml.push_str(&format!("\n      - {{ name: {name}, path: /work/{name} }}"));
    }
    yaml
}

fn durable(kinds: &[EventKind]) -> Vec<Step> {
    kinds.iter().map(|k| Step::Durable(*k)).collect()
}

/// The events that end every cell that got past admission, durable in one barrier.
fn the_end(secrets_revoked: bool) -> Vec<Step> {
    let mut end = Vec::new();
    if secrets_revoked {
        end.push(Step::Durable(SecretsRevoked));
    }
    end.extend(durable(&[LifecycleDestroyed, ComplianceSummary]));
    end
}

fn concat(parts: Vec<Vec<Step>>) -> Vec<Step> {
    parts.into_iter().flatten().collect()
}

#[test]
fn a_run_goes_through_every_step_in_order_each_event_durable_at_its_barrier() {
    let h = Harness::scripted(Script::default());
    let report = h.run(&spec_with("", &with_export(&["a", "b"]))).unwrap();

    let expected = concat(vec![
        vec![
            Step::Resolve("API_TOKEN".into()),
            Step::Create,
            Step::Created,
        ],
        // Admission, secrets, isolation and start are durable before the workload runs.
        durable(&[
            AdmissionDecided,
            SecretsMaterialized,
            IsolationEnforced,
            LifecycleStarted,
        ]),
        vec![Step::Start, Step::Wait],
        // The outcome is durable before anything leaves the cell.
        durable(&[CommandCompleted]),
        // Each receipt is durable before the next artifact is read.
        vec![Step::OpenArtifact("/work/a".into()), Step::Push("a".into())],
        durable(&[ExportCompleted]),
        vec![Step::OpenArtifact("/work/b".into()), Step::Push("b".into())],
        durable(&[ExportCompleted]),
        // Destroy, then revoke, then the last word.
        vec![Step::Destroy, Step::Revoke("file")],
        the_end(true),
    ]);
    assert_eq!(h.journal.steps(), expected);

    assert_eq!(report.exit_code(), 0);
    assert_eq!(report.exports.len(), 2);
    assert!(report.teardown.residue_free());
    let summary = h.sink.data(ComplianceSummary);
    assert_eq!(summary["outcome"], "succeeded");
    assert_eq!(summary["residueFree"], true);
    assert_eq!(summary["eventCount"], 10);
    let destroyed = h.sink.data(LifecycleDestroyed);
    assert_eq!(destroyed["terminalState"], "clean");
    assert_eq!(h.sink.data(SecretsRevoked)["keys"], json!(["API_TOKEN"]));
}

#[test]
fn without_exports_the_outcome_is_durable_with_the_last_word_after_destroy_and_revoke() {
    let h = Harness::scripted(Script::default());
    h.run(&spec_with("", SECRET)).unwrap();
    let steps = h.journal.steps();
    let tail = concat(vec![
        vec![Step::Start, Step::Wait, Step::Destroy, Step::Revoke("file")],
        durable(&[CommandCompleted]),
        the_end(true),
    ]);
    assert_eq!(steps[steps.len() - tail.len()..], tail[..], "{steps:?}");
}

#[test]
fn admission_denied_creates_nothing_resolves_nothing_and_its_decision_is_durable() {
    let pack = "apiVersion: cellos.io/v1
kind: PolicyPack
metadata: { name: short }
spec:
  id: short
  version: '1.0.0'
  rules: { maxTimeoutMs: 1000 }
";
    let h = Harness::scripted(Script::default());
    let result = h.run_under(&spec_with("    timeoutMs: 5000", SECRET), &[pack]);
    let Err(SupervisorError::Denied(decision)) = result else {
        panic!("expected a denial, got {result:?}");
    };
    assert!(decision.violations.iter().any(|v| v.rule == "maxTimeoutMs"));
    assert_eq!(h.journal.steps(), durable(&[AdmissionDecided]));
    assert_eq!(h.sink.data(AdmissionDecided)["decision"]["verdict"], "deny");
}

#[test]
fn a_secret_that_cannot_be_resolved_stops_the_cell_before_create_and_every_broker_revokes() {
    let h = Harness::new(
        Script::default(),
        |j| {
            let mut broken = FakeBroker::new("vault", j.clone(), &[]);
            broken.broken_keys = vec!["API_TOKEN".into()];
            vec![broken, FakeBroker::new("file", j.clone(), &["API_TOKEN"])]
        },
        |_| {},
        |_| {},
    );
    let result = h.run(&spec_with("", SECRET));
    let Err(SupervisorError::Secret { key, source }) = result else {
        panic!("expected a secret failure, got {result:?}");
    };
    assert_eq!(
        (key.as_str(), source.kind),
        ("API_TOKEN", PortErrorKind::Io)
    );
    let expected = concat(vec![
        // A broker error (not "not found") is not papered over by asking the next broker.
        vec![
            Step::Resolve("API_TOKEN".into()),
            Step::Revoke("vault"),
            Step::Revoke("file"),
        ],
        durable(&[AdmissionDecided]),
        the_end(false),
    ]);
    assert_eq!(h.journal.steps(), expected);
    let destroyed = h.sink.data(LifecycleDestroyed);
    assert_eq!(destroyed["outcome"], "failed");
    assert!(destroyed["reason"]
        .as_str()
        .unwrap()
        .contains("secret API_TOKEN"));
    assert_eq!(h.sink.data(ComplianceSummary)["outcome"], "failed");
}

#[test]
fn a_secret_no_broker_has_names_the_brokers_asked() {
    let h = Harness::new(
        Script::default(),
        |j| vec![FakeBroker::new("file", j.clone(), &[])],
        |_| {},
        |_| {},
    );
    let result = h.run(&spec_with("", SECRET));
    let Err(SupervisorError::Secret { source, .. }) = result else {
        panic!("expected a secret failure, got {result:?}");
    };
    assert_eq!(source.kind, PortErrorKind::NotFound);
    assert!(source.message.contains("asked: file"), "{source}");
    assert!(!h.journal.contains(&Step::Create));
    assert!(h.journal.contains(&Step::Revoke("file")));
}

#[test]
fn create_failed_revokes_and_records_the_secrets_it_had_materialized() {
    let h = Harness::scripted(Script {
        create_fails: true,
        ..Script::default()
    });
    let result = h.run(&spec_with("", SECRET));
    assert!(
        matches!(result, Err(SupervisorError::Backend(_))),
        "{result:?}"
    );
    let expected = concat(vec![
        vec![
            Step::Resolve("API_TOKEN".into()),
            Step::Create,
            Step::Revoke("file"),
        ],
        durable(&[AdmissionDecided, SecretsMaterialized]),
        the_end(true),
    ]);
    assert_eq!(h.journal.steps(), expected);
    assert!(h.sink.data(LifecycleDestroyed)["reason"]
        .as_str()
        .unwrap()
        .contains("scripted failure: create"));
}

#[test]
fn start_failed_still_destroys_and_revokes_and_says_why() {
    let h = Harness::scripted(Script {
        start_fails: true,
        ..Script::default()
    });
    let result = h.run(&spec_with("", SECRET));
    assert!(
        matches!(result, Err(SupervisorError::Backend(_))),
        "{result:?}"
    );
    let steps = h.journal.steps();
    let tail = concat(vec![
        durable(&[LifecycleStarted]),
        vec![Step::Start, Step::Destroy, Step::Revoke("file")],
        the_end(true),
    ]);
    assert_eq!(steps[steps.len() - tail.len()..], tail[..], "{steps:?}");
    assert!(!h.sink.kinds().contains(&CommandCompleted));
    let destroyed = h.sink.data(LifecycleDestroyed);
    assert_eq!(destroyed["outcome"], "failed");
    assert!(destroyed["reason"]
        .as_str()
        .unwrap()
        .contains("scripted failure: start"));
}

#[test]
fn wait_failed_still_destroys_and_revokes() {
    let h = Harness::scripted(Script {
        workload: Workload::WaitFails,
        ..Script::default()
    });
    let result = h.run(&spec_with("", SECRET));
    assert!(
        matches!(result, Err(SupervisorError::Backend(_))),
        "{result:?}"
    );
    assert!(h.journal.position(&Step::Wait) < h.journal.position(&Step::Destroy));
    assert!(h.journal.position(&Step::Destroy) < h.journal.position(&Step::Revoke("file")));
    assert_eq!(h.sink.data(ComplianceSummary)["outcome"], "failed");
}

#[test]
fn timeout_counts_from_exec_and_is_recorded_as_the_limit_that_ran_out() {
    let h = Harness::scripted(Script {
        workload: Workload::Hangs,
        ..Script::default()
    });
    let report = h
        .run(&spec_with(
            "    timeoutMs: 50",
            "  lifetime: { ttlSeconds: 3600 }",
        ))
        .unwrap();
    let timing = *h.backend.timing.lock().unwrap();
    assert_eq!(
        timing.deadline,
        Some(timing.exec.unwrap() + Duration::from_millis(50))
    );
    assert_eq!(
        report.outcome.exit,
        WorkloadExit::TimedOut {
            limit: "timeoutMs".into()
        }
    );
    assert_eq!(report.exit_code(), 124);
    assert_eq!(h.sink.data(LimitHit)["limit"], "timeoutMs");
    let completed = h.sink.data(CommandCompleted);
    assert_eq!(
        (&completed["timedOut"], &completed["timeoutLimit"]),
        (&json!(true), &json!("timeoutMs"))
    );
    assert!(h.journal.contains(&Step::Destroy) && h.journal.contains(&Step::Revoke("file")));
    assert_eq!(h.sink.data(ComplianceSummary)["outcome"], "failed");
}

#[test]
fn ttl_counts_from_admission_and_wins_over_an_equal_timeout_that_counts_from_exec() {
    let h = Harness::scripted(Script {
        workload: Workload::Hangs,
        ..Script::default()
    });
    let report = h
        .run(&spec_with(
            "    timeoutMs: 1000",
            "  lifetime: { ttlSeconds: 1 }",
        ))
        .unwrap();
    let timing = *h.backend.timing.lock().unwrap();
    let (exec, deadline) = (timing.exec.unwrap(), timing.deadline.unwrap());
    // The TTL started before the cell was created, so it ends before exec + 1 s.
    assert!(deadline < exec + Duration::from_secs(1));
    assert!(deadline + Duration::from_secs(1) > exec);
    assert_eq!(
        report.outcome.exit,
        WorkloadExit::TimedOut {
            limit: "ttlSeconds".into()
        }
    );
    assert_eq!(h.sink.data(LimitHit)["limit"], "ttlSeconds");
    assert!(h.journal.contains(&Step::Destroy) && h.journal.contains(&Step::Revoke("file")));
}

#[test]
fn a_ttl_alone_is_the_deadline() {
    let h = Harness::scripted(Script {
        workload: Workload::Hangs,
        ..Script::default()
    });
    let report = h
        .run(&spec_with("", "  lifetime: { ttlSeconds: 5 }"))
        .unwrap();
    let timing = *h.backend.timing.lock().unwrap();
    let (exec, deadline) = (timing.exec.unwrap(), timing.deadline.unwrap());
    assert!(
        deadline <= exec + Duration::from_secs(5)
            && deadline + Duration::from_secs(1) > exec + Duration::from_secs(5)
    );
    assert_eq!(
        report.outcome.exit,
        WorkloadExit::TimedOut {
            limit: "ttlSeconds".into()
        }
    );
}

#[test]
fn without_timeout_or_ttl_the_workload_has_no_deadline() {
    let h = Harness::scripted(Script::default());
    h.run(&spec_with("", "")).unwrap();
    assert_eq!(h.backend.timing.lock().unwrap().deadline, None);
}

#[test]
fn an_export_that_fails_is_durable_as_failed_the_rest_still_export_and_the_cell_fails() {
    let h = Harness::new(
        Script {
            missing_artifacts: vec!["/work/c".into()],
            ..Script::default()
        },
        |j| vec![FakeBroker::new("file", j.clone(), &["API_TOKEN"])],
        |exports| exports.failing = vec!["a".into()],
        |_| {},
    );
    let report = h
        .run(&spec_with("", &with_export(&["a", "b", "c"])))
        .unwrap();
    assert_eq!(report.exit_code(), 0);
    assert_eq!(
        report.export_failures.len(),
        2,
        "{:?}",
        report.export_failures
    );
    assert_eq!(report.exports.len(), 1);
    let steps = h.journal.steps();
    let exports = concat(vec![
        vec![Step::OpenArtifact("/work/a".into()), Step::Push("a".into())],
        durable(&[ExportFailed]),
        vec![Step::OpenArtifact("/work/b".into()), Step::Push("b".into())],
        durable(&[ExportCompleted]),
        vec![Step::OpenArtifact("/work/c".into())],
        durable(&[ExportFailed]),
        vec![Step::Destroy, Step::Revoke("file")],
    ]);
    let at = h.journal.position(&Step::OpenArtifact("/work/a".into()));
    assert_eq!(steps[at..at + exports.len()], exports[..], "{steps:?}");
    let failed: Vec<_> = h
        .sink
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.kind() == Some(ExportFailed))
        .map(|e| e.data["destination"].clone())
        .collect();
    assert_eq!(
        failed,
        [json!("memory://fake-cell/a"), json!("memory://fake-cell/c")]
    );
    assert_eq!(h.sink.data(ComplianceSummary)["outcome"], "failed");
}

#[test]
fn destroy_failed_still_revokes_and_the_cell_is_unverified_not_clean() {
    let h = Harness::scripted(Script {
        destroy_fails: true,
        ..Script::default()
    });
    let report = h.run(&spec_with("", SECRET)).unwrap();
    assert!(h.journal.position(&Step::Destroy) < h.journal.position(&Step::Revoke("file")));
    assert_eq!(report.exit_code(), 0);
    assert!(!report.teardown.residue_free());
    assert_eq!(report.teardown.unverified[0].class, "all");
    let destroyed = h.sink.data(LifecycleDestroyed);
    assert_eq!(destroyed["terminalState"], "unverified");
    assert_eq!(destroyed["outcome"], "failed");
    assert!(destroyed["unverified"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("scripted failure: destroy"));
    let summary = h.sink.data(ComplianceSummary);
    assert_eq!(summary["residueFree"], false);
    assert_eq!(summary["outcome"], "failed");
    assert_eq!(h.sink.data(SecretsRevoked)["keys"], json!(["API_TOKEN"]));
}

#[test]
fn revoke_failed_is_residue_no_revoked_event_claims_it_and_other_brokers_still_revoke() {
    let h = Harness::new(
        Script::default(),
        |j| {
            let mut stuck = FakeBroker::new("vault", j.clone(), &["API_TOKEN"]);
            stuck.revoke_fails = true;
            vec![stuck, FakeBroker::new("file", j.clone(), &["OTHER"])]
        },
        |_| {},
        |_| {},
    );
    let report = h
        .run(&spec_with(
            "",
            "  authority:\n    secretRefs: [API_TOKEN, OTHER]",
        ))
        .unwrap();
    assert!(h.journal.contains(&Step::Revoke("vault")));
    assert!(h.journal.contains(&Step::Revoke("file")));
    assert_eq!(report.teardown.residue.len(), 1);
    assert_eq!(report.teardown.residue[0].class, "secret");
    assert!(report.teardown.residue[0].detail.contains("vault"));
    // Only the broker that did revoke says so.
    let revoked: Vec<_> = h
        .sink
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.kind() == Some(SecretsRevoked))
        .map(|e| (e.data["broker"].clone(), e.data["keys"].clone()))
        .collect();
    assert_eq!(revoked, [(json!("file"), json!(["OTHER"]))]);
    let destroyed = h.sink.data(LifecycleDestroyed);
    assert_eq!(destroyed["terminalState"], "residue");
    assert_eq!(destroyed["outcome"], "failed");
    assert_eq!(h.sink.data(ComplianceSummary)["residueFree"], false);
}

#[test]
fn revoke_failed_after_create_failed_is_residue_too() {
    let h = Harness::new(
        Script {
            create_fails: true,
            ..Script::default()
        },
        |j| {
            let mut stuck = FakeBroker::new("file", j.clone(), &["API_TOKEN"]);
            stuck.revoke_fails = true;
            vec![stuck]
        },
        |_| {},
        |_| {},
    );
    assert!(h.run(&spec_with("", SECRET)).is_err());
    assert!(!h.sink.kinds().contains(&SecretsRevoked));
    assert_eq!(
        h.sink.data(LifecycleDestroyed)["residue"][0]["class"],
        "secret"
    );
    assert_eq!(h.sink.data(ComplianceSummary)["residueFree"], false);
}

#[test]
fn a_residue_class_the_backend_could_not_check_makes_the_cell_not_clean() {
    let h = Harness::scripted(Script {
        unverified: vec![UnverifiedResidue {
            class: "nftTable".into(),
            reason: "cannot run nft".into(),
        }],
        ..Script::default()
    });
    let report = h.run(&spec_with("", SECRET)).unwrap();
    assert_eq!(report.exit_code(), 0);
    assert!(report
        .reason()
        .contains("UNVERIFIED nftTable: cannot run nft"));
    let destroyed = h.sink.data(LifecycleDestroyed);
    assert_eq!(destroyed["terminalState"], "unverified");
    assert_eq!(destroyed["unverified"][0]["class"], "nftTable");
    let summary = h.sink.data(ComplianceSummary);
    assert_eq!(summary["residueFree"], false);
    assert_eq!(summary["outcome"], "failed");
}

#[test]
fn an_event_log_that_fails_before_start_keeps_the_workload_from_running_and_still_tears_down() {
    let h = Harness::new(
        Script::default(),
        |j| vec![FakeBroker::new("file", j.clone(), &["API_TOKEN"])],
        |_| {},
        |sink| sink.fail_on = Some(LifecycleStarted),
    );
    let result = h.run(&spec_with("", SECRET));
    assert!(
        matches!(result, Err(SupervisorError::Events(_))),
        "{result:?}"
    );
    assert!(!h.journal.contains(&Step::Start));
    assert!(h.journal.position(&Step::Destroy) < h.journal.position(&Step::Revoke("file")));
}

#[test]
fn a_workload_that_fails_fails_the_cell_with_its_own_status() {
    let h = Harness::scripted(Script {
        workload: Workload::Exits(3),
        ..Script::default()
    });
    let report = h.run(&spec_with("", SECRET)).unwrap();
    assert_eq!(report.exit_code(), 3);
    assert_eq!(h.sink.data(CommandCompleted)["exitCode"], 3);
    assert_eq!(h.sink.data(ComplianceSummary)["outcome"], "failed");
    assert_eq!(h.sink.data(ComplianceSummary)["residueFree"], true);
}

#[test]
fn an_invalid_spec_touches_no_port_and_records_nothing() {
    let h = Harness::scripted(Script::default());
    let mut document = cellos_core::spec::parse_execution_cell(&spec_with("", SECRET)).unwrap();
    document
        .spec
        .run
        .as_mut()
        .expect("the test spec has run")
        .argv
        .clear();
    let result = h.run_document(&document, &[]);
    let Err(SupervisorError::Invalid(problems)) = result else {
        panic!("expected an invalid spec, got {result:?}");
    };
    assert!(
        problems.iter().any(|p| p.path == "spec.run.argv"),
        "{problems:?}"
    );
    assert_eq!(h.journal.steps(), []);
}

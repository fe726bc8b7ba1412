//! Every event family, sealed and serialized as one log line, is a valid CloudEvents 1.0
//! structured-mode event for an independent SDK, with type, source, subject, time and the
//! integrity extensions intact.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cellos_core::authority::AuthorityKind;
use cellos_core::events::*;
use cellos_core::integrity::{ChainHead, Sealer, Signer};
use cellos_core::policy::{AdmissionDecision, PolicyViolation, Verdict};
use cellos_core::ports::{
    ExportReceipt, IsolationReport, LimitEnforcement, LimitHit, Residue, TeardownReport,
    WorkloadExit, WorkloadOutcome,
};
use cellos_core::spec::{ExportTargetKind, SecretDeliveryMode};
use cloudevents::event::ExtensionValue;
use cloudevents::AttributesReader;
use ed25519_dalek::SigningKey;
use time::format_description::well_known::Rfc3339;
use time::macros::datetime;
use time::OffsetDateTime;

const CELL: &str = "cell-7";

fn isolation() -> IsolationReport {
    IsolationReport {
        backend: "linux".to_owned(),
        namespaces: vec!["user".to_owned(), "pid".to_owned(), "net".to_owned()],
        uid_map: "0 100000 65536".to_owned(),
        rootfs: "host".to_owned(),
        seccomp_profile: "default".to_owned(),
        landlock_abi: Some(3),
        no_new_privs: true,
        cgroup_version: "v2".to_owned(),
        limits: vec![LimitEnforcement {
            limit: "memoryMaxBytes".to_owned(),
            value: 64 << 20,
            mechanism: "cgroup v2 memory.max".to_owned(),
        }],
        network: "none".to_owned(),
        ..IsolationReport::default()
    }
}

/// One event of every family in the catalogue, as the lifecycle would emit them.
use cellos_core::events::{ExecCompletedData, ExecStartedData, FileRemovedData, FileTransferData};
use cellos_core::session::ExecExit;

fn one_of_each(factory: &EventFactory, t: OffsetDateTime) -> Vec<CloudEvent> {
    let decision = AdmissionDecision {
        verdict: Verdict::AuditOnly,
        packs: vec!["baseline@1".to_owned()],
        violations: vec![PolicyViolation {
            pack_id: "baseline".to_owned(),
            rule: "maxTtlSeconds".to_owned(),
            path: "spec.lifetime.ttlSeconds".to_owned(),
            message: "ttl above 600".to_owned(),
        }],
    };
    let outcome = WorkloadOutcome {
        exit: WorkloadExit::Exited { code: 3 },
        duration: Duration::from_millis(1234),
        limit_hits: vec![],
    };
    let teardown = TeardownReport {
        cell_id: CELL.to_owned(),
        destroyed: true,
        forced: true,
        removed: vec![],
        residue: vec![],
        unverified: vec![],
    };
    let secrets = SecretsData {
        keys: vec!["API_TOKEN".to_owned()],
        broker: "file".to_owned(),
        delivery: SecretDeliveryMode::File,
    };
    let dns = DnsQueryData {
        name: "example.com".to_owned(),
        query_type: "A".to_owned(),
        answer_count: 1,
        reason: None,
    };
    vec![
        factory.admission_decided(t, CELL, "abc123", &decision),
        factory.lifecycle_started(t, CELL, "abc123", "run-1", &isolation()),
        factory.isolation_enforced(t, CELL, &isolation()),
        factory.network_enforced(
            t,
            CELL,
            &NetworkEnforcedData {
                ruleset_sha256: "f".repeat(64),
                mechanism: "nftables inet table in cell netns".to_owned(),
                allowed_hosts: vec!["example.com".to_owned()],
            },
        ),
        factory.network_summary(
            t,
            CELL,
            &NetworkSummaryData {
                flows_allowed: 3,
                flows_denied: 2,
                dns_refused: 1,
                mechanism: "named nftables counters".to_owned(),
                ..NetworkSummaryData::default()
            },
        ),
        factory.secrets_materialized(t, CELL, &secrets),
        factory.dns_query_permitted(t, CELL, &dns),
        factory.dns_query_refused(
            t,
            CELL,
            &DnsQueryData {
                name: "secret.evil.example".to_owned(),
                answer_count: 0,
                reason: Some("not in hostnameAllowlist".to_owned()),
                ..dns.clone()
            },
        ),
        factory.flow_decided(
            t,
            CELL,
            &FlowDecisionData {
                dst: "10.0.0.1".to_owned(),
                port: 443,
                protocol: "tcp".to_owned(),
                decision: FlowVerdict::Deny,
                reason: "private range".to_owned(),
                authority: AuthorityKind::Observed,
            },
        ),
        factory.telemetry_declared(
            t,
            CELL,
            &TelemetryDeclaredData {
                run_id: "run-1".to_owned(),
                spec_hash: "abc123".to_owned(),
                host_received_at: "2025-01-02T03:04:05Z".to_owned(),
                probe_source: "exec".to_owned(),
                guest_pid: Some(12),
                guest_comm: Some("sh".to_owned()),
                guest_monotonic_ns: Some(99),
                authority: AuthorityKind::Proven,
                declaration: serde_json::json!({ "host": "example.com" }),
            },
        ),
        factory.agent_silenced(
            t,
            CELL,
            &AgentSilencedData {
                run_id: "run-1".to_owned(),
                window_ms: 10_000,
                last_seen: None,
            },
        ),
        factory.process_spawned(
            t,
            CELL,
            &ProcessObservedData {
                pid: 4242,
                ns_pid: Some(7),
                argv0: "/bin/sleep".to_owned(),
                exit_code: None,
                signal: None,
                mechanism: "netlink proc connector, cgroup-filtered".to_owned(),
                authority: AuthorityKind::Declared,
            },
        ),
        factory.process_exited(
            t,
            CELL,
            &ProcessObservedData {
                pid: 4242,
                ns_pid: Some(7),
                argv0: "/bin/sleep".to_owned(),
                exit_code: Some(0),
                signal: None,
                mechanism: "netlink proc connector, cgroup-filtered".to_owned(),
                authority: AuthorityKind::Observed,
            },
        ),
        factory.cgroup_sampled(
            t,
            CELL,
            "run-1",
            &CgroupSample {
                memory_bytes: Some(1 << 20),
                pids: Some(3),
                ..CgroupSample::default()
            },
        ),
        factory.telemetry_reported(
            t,
            CELL,
            &TelemetryReportData {
                run_id: "run-1".to_owned(),
                receiver: ReceiverCounters {
                    frames: 10,
                    delivered: 7,
                    malformed: 3,
                    ..ReceiverCounters::default()
                },
                probe: Some(ProbeCounters {
                    execs: 2,
                    exits: 2,
                    ..ProbeCounters::default()
                }),
                rejections: vec!["frame of 2000000 bytes exceeds the cap".to_owned()],
                last_cgroup_sample: None,
                authority: AuthorityKind::Declared,
            },
        ),
        factory.limit_hit(
            t,
            CELL,
            &LimitHit {
                limit: "memoryMaxBytes".to_owned(),
                mechanism: "cgroup v2 memory.events oom_kill=1".to_owned(),
                count: 1,
            },
        ),
        factory.command_completed(t, CELL, &["sh".to_owned(), "-c".to_owned()], &outcome),
        factory.export_completed(
            t,
            CELL,
            &ExportReceipt {
                name: "out.txt".to_owned(),
                target_kind: ExportTargetKind::LocalPath,
                target_name: Some("local".to_owned()),
                destination: "/tmp/exports/cell-7/out.txt".to_owned(),
                sha256: "e".repeat(64),
                size_bytes: 5,
                attempts: 1,
            },
        ),
        factory.export_failed(
            t,
            CELL,
            &ExportFailedData {
                artifact: "missing.txt".to_owned(),
                target_kind: ExportTargetKind::Http,
                target_name: None,
                destination: "http://127.0.0.1:9/x".to_owned(),
                reason: "connection refused".to_owned(),
            },
        ),
        factory.violation_detected(
            t,
            CELL,
            &ViolationData {
                kind: ViolationKind::Discrepancy,
                rule: "declaredSubsetOfSpec".to_owned(),
                detail: "guest declared evil.example".to_owned(),
                authority: AuthorityKind::Declared,
            },
        ),
        factory.secrets_revoked(t, CELL, &secrets),
        factory.lifecycle_frozen(t, "cell-7", true, "cgroup v2 cgroup.freeze"),
        factory.lifecycle_frozen(t, "cell-7", false, "cgroup v2 cgroup.freeze"),
        factory.lifecycle_destroyed(t, "run-1", Outcome::Failed, &teardown, None),
        factory.compliance_summary(
            t,
            CELL,
            &ComplianceSummaryData {
                run_id: "run-1".to_owned(),
                outcome: Outcome::Failed,
                counts: ComplianceCounts::default(),
                residue_free: true,
                event_count: 17,
            },
        ),
        factory.gc_reclaimed(
            t,
            &[Residue {
                class: "cgroup".to_owned(),
                detail: "/sys/fs/cgroup/cellos/cell-7".to_owned(),
            }],
            &teardown,
        ),
        factory.build(
            EventKind::ExecStarted,
            t,
            "cell-7",
            &ExecStartedData {
                exec_id: "e1".to_owned(),
                argv: vec!["sh".to_owned(), "-c".to_owned(), "true".to_owned()],
                tty: false,
                timeout_ms: Some(500),
                caller: "uid:0".to_owned(),
            },
        ),
        factory.build(
            EventKind::ExecCompleted,
            t,
            "cell-7",
            &ExecCompletedData {
                exec_id: "e1".to_owned(),
                argv: vec!["sh".to_owned()],
                status: 124,
                exit: ExecExit::Signaled { signal: 9 },
                timed_out: true,
                killed: false,
                killed_by: None,
                duration_ms: 500,
                stdout_bytes: 3,
                stderr_bytes: 0,
                caller: "uid:0".to_owned(),
            },
        ),
        factory.build(
            EventKind::FileWritten,
            t,
            "cell-7",
            &FileTransferData {
                path: "/work/a".to_owned(),
                size: 1,
                sha256: "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"
                    .to_owned(),
                caller: "token:api".to_owned(),
            },
        ),
        factory.build(
            EventKind::FileRead,
            t,
            "cell-7",
            &FileTransferData {
                path: "/work/a".to_owned(),
                size: 1,
                sha256: "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"
                    .to_owned(),
                caller: "token:api".to_owned(),
            },
        ),
        factory.build(
            EventKind::FileRemoved,
            t,
            "cell-7",
            &FileRemovedData {
                path: "/work/a".to_owned(),
                recursive: false,
                caller: "token:api".to_owned(),
            },
        ),
    ]
}

fn factory() -> EventFactory {
    let counter = Arc::new(AtomicU64::new(0));
    EventFactory::new(
        "host-a",
        "supervisor",
        Arc::new(move || {
            format!(
                "00000000-0000-4000-8000-{:012}",
                counter.fetch_add(1, Ordering::Relaxed)
            )
        }),
    )
}

#[test]
fn the_fixture_covers_every_family() {
    let t = datetime!(2025-01-02 03:04:05.123 UTC);
    let kinds: BTreeSet<EventKind> = one_of_each(&factory(), t)
        .iter()
        .map(|e| e.kind().unwrap())
        .collect();
    assert_eq!(kinds, EventKind::ALL.into_iter().collect());
}

#[test]
fn every_family_parses_with_the_cloudevents_sdk() {
    let t = datetime!(2025-01-02 03:04:05.123456 UTC);
    let mut sealer = Sealer::new(
        Signer::ed25519(SigningKey::from_bytes(&[1; 32])),
        ChainHead::genesis(),
    );
    for (index, event) in one_of_each(&factory(), t).into_iter().enumerate() {
        let sealed = sealer.seal(event).unwrap();
        let parsed: cloudevents::Event = serde_json::from_str(&sealed.line)
            .unwrap_or_else(|e| panic!("{} is not a CloudEvent: {e}", sealed.event.ty));
        let ours = &sealed.event;
        assert_eq!(parsed.ty(), ours.ty);
        assert!(parsed.ty().starts_with(TYPE_PREFIX));
        assert_eq!(parsed.source().to_string(), "//cellos/host-a/supervisor");
        assert_eq!(parsed.subject(), Some("urn:cellos:cell:cell-7"));
        assert_eq!(parsed.id(), ours.id);
        assert_eq!(parsed.datacontenttype(), Some(DATA_CONTENT_TYPE));
        let sdk_time = parsed.time().unwrap().timestamp_nanos_opt().unwrap();
        let our_time = OffsetDateTime::parse(&ours.time, &Rfc3339).unwrap();
        assert_eq!(i128::from(sdk_time), our_time.unix_timestamp_nanos());
        assert_eq!(our_time, t);
        assert_eq!(
            parsed.extension("cellosseq"),
            Some(&ExtensionValue::Integer(index as i64 + 1))
        );
        for (name, value) in [
            ("cellosprev", &ours.cellosprev),
            ("celloskid", &ours.celloskid),
            ("cellossig", &ours.cellossig),
        ] {
            assert_eq!(
                parsed.extension(name),
                Some(&ExtensionValue::String(value.clone().unwrap())),
                "{name} of {}",
                ours.ty
            );
        }
        // And our own reader gets back exactly what was sealed.
        let back: CloudEvent = serde_json::from_str(&sealed.line).unwrap();
        assert_eq!(&back, ours);
    }
}

#[test]
fn guest_declarations_are_always_declared_authority() {
    let t = datetime!(2025-01-02 03:04:05 UTC);
    let declared = one_of_each(&factory(), t)
        .into_iter()
        .find(|e| e.kind() == Some(EventKind::TelemetryDeclared))
        .unwrap();
    assert_eq!(declared.data["authority"], "declared");
}

#[test]
fn host_observations_are_always_observed_authority() {
    let t = datetime!(2025-01-02 03:04:05 UTC);
    let observed: Vec<CloudEvent> = one_of_each(&factory(), t)
        .into_iter()
        .filter(|e| {
            matches!(
                e.kind(),
                Some(
                    EventKind::ProcessSpawned
                        | EventKind::ProcessExited
                        | EventKind::CgroupSampled
                        | EventKind::TelemetryReported
                )
            )
        })
        .collect();
    assert_eq!(observed.len(), 4);
    for event in observed {
        assert_eq!(event.data["authority"], "observed", "{}", event.ty);
    }
}

#[test]
fn subject_urn_round_trips() {
    assert_eq!(cell_subject_urn("abc"), "urn:cellos:cell:abc");
    assert_eq!(cell_id_from_subject("urn:cellos:cell:abc"), Some("abc"));
    assert_eq!(cell_id_from_subject("urn:cellos:cell:"), None);
    assert_eq!(cell_id_from_subject("urn:other:abc"), None);
}

#[test]
fn an_isolation_report_from_before_the_landlock_fields_reads_as_landlock_required_and_enforced() {
    let mut old = serde_json::to_value(isolation()).expect("serializes");
    let fields = old.as_object_mut().expect("an object");
    for field in ["landlockEnforced", "landlockMinAbi", "landlockUnenforced"] {
        assert!(fields.remove(field).is_some(), "{field} is written");
    }
    let read: IsolationReport = serde_json::from_value(old).expect("old report reads");
    assert!(read.landlock_enforced);
    assert_eq!(read.landlock_min_abi, 1);
    assert!(read.landlock_unenforced.is_empty());
    assert_eq!(read.landlock_abi, Some(3));
}

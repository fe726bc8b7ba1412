//! Projection folds a cell's events into its state, and replaying (duplicates, a log read
//! twice) gives the same state.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cellos_core::events::*;
use cellos_core::policy::{AdmissionDecision, Verdict};
use cellos_core::ports::{
    ExportReceipt, IsolationReport, LimitEnforcement, LimitHit, Residue, TeardownReport,
    UnverifiedResidue, WorkloadExit, WorkloadOutcome,
};
use cellos_core::projection::{project, Phase, Projector};
use cellos_core::spec::ExportTargetKind;
use time::macros::datetime;
use time::Duration as TimeDelta;

fn factory() -> EventFactory {
    let counter = Arc::new(AtomicU64::new(0));
    EventFactory::new(
        "host-a",
        "supervisor",
        Arc::new(move || format!("id-{}", counter.fetch_add(1, Ordering::Relaxed))),
    )
}

fn run_of(factory: &EventFactory, cell: &str, verdict: Verdict) -> Vec<CloudEvent> {
    let t0 = datetime!(2025-01-02 03:04:05 UTC);
    let decision = AdmissionDecision {
        verdict,
        packs: vec!["baseline@1".to_owned()],
        violations: vec![],
    };
    let mut events = vec![factory.admission_decided(t0, cell, "spec-hash", &decision)];
    if verdict == Verdict::Deny {
        return events;
    }
    let isolation = IsolationReport {
        backend: "linux".to_owned(),
        limits: vec![LimitEnforcement {
            limit: "pidsMax".to_owned(),
            value: 64,
            mechanism: "cgroup v2 pids.max".to_owned(),
        }],
        ..IsolationReport::default()
    };
    let t = |s: i64| t0 + TimeDelta::seconds(s);
    events.extend([
        factory.lifecycle_started(t(1), cell, "spec-hash", "run-1", &isolation),
        factory.isolation_enforced(t(1), cell, &isolation),
        factory.limit_hit(
            t(2),
            cell,
            &LimitHit {
                limit: "pidsMax".to_owned(),
                mechanism: "cgroup v2 pids.events max=3".to_owned(),
                count: 3,
            },
        ),
        factory.command_completed(
            t(3),
            cell,
            &["make".to_owned()],
            &WorkloadOutcome {
                exit: WorkloadExit::Signaled { signal: 9 },
                duration: Duration::from_millis(2000),
                limit_hits: vec![],
            },
        ),
        factory.export_completed(
            t(4),
            cell,
            &ExportReceipt {
                name: "out".to_owned(),
                target_kind: ExportTargetKind::LocalPath,
                target_name: None,
                destination: "/x/out".to_owned(),
                sha256: "a".repeat(64),
                size_bytes: 1,
                attempts: 1,
            },
        ),
        factory.lifecycle_destroyed(
            t(5),
            "run-1",
            Outcome::Failed,
            &TeardownReport {
                cell_id: cell.to_owned(),
                destroyed: true,
                forced: false,
                removed: vec![],
                residue: vec![],
                unverified: vec![],
            },
            None,
        ),
    ]);
    events
}

#[test]
fn a_run_projects_to_its_final_state() {
    let factory = factory();
    let mut events = run_of(&factory, "a", Verdict::Admit);
    events.extend(run_of(&factory, "b", Verdict::Deny));
    let cells = project(&events);
    assert_eq!(cells.len(), 2);

    let a = &cells["a"];
    assert_eq!(a.phase, Phase::Destroyed);
    assert_eq!(a.run_id.as_deref(), Some("run-1"));
    assert_eq!(a.signal, Some(9));
    assert_eq!(a.exit_code, None);
    assert_eq!(a.duration_ms, Some(2000));
    assert_eq!(a.limits[0].mechanism, "cgroup v2 pids.max");
    assert_eq!(a.limit_hits.len(), 1);
    assert_eq!(a.exports[0].name, "out");
    assert_eq!(a.outcome, Some(Outcome::Failed));
    assert_eq!(a.terminal_state, Some(TerminalState::Clean));
    assert_eq!(a.timings.created.as_deref(), Some("2025-01-02T03:04:05Z"));
    assert_eq!(a.timings.started.as_deref(), Some("2025-01-02T03:04:06Z"));
    assert_eq!(a.timings.completed.as_deref(), Some("2025-01-02T03:04:08Z"));
    assert_eq!(a.timings.destroyed.as_deref(), Some("2025-01-02T03:04:10Z"));
    assert_eq!(a.events, 7);
    assert_eq!(a.counts.limit_hits, 1);
    assert_eq!(a.undecodable_events, 0);

    let b = &cells["b"];
    assert_eq!(b.phase, Phase::Denied);
    assert_eq!(b.verdict, Some(Verdict::Deny));
    assert_eq!(b.counts.admission_denials, 1);
}

#[test]
fn replaying_the_log_gives_the_same_state() {
    let factory = factory();
    let events = run_of(&factory, "a", Verdict::Admit);
    let once = project(&events);
    let twice = project(events.iter().chain(events.iter()));
    assert_eq!(once, twice);

    // Redelivery of old events to a live projector changes nothing either.
    let mut projector = Projector::new();
    for event in &events {
        assert!(projector.apply(event));
    }
    for event in events.iter().rev() {
        assert!(!projector.apply(event));
    }
    assert_eq!(projector.cells(), &once);
}

#[test]
fn state_serializes_and_reads_back() {
    let cells = project(&run_of(&factory(), "a", Verdict::Admit));
    let json = serde_json::to_string(&cells).unwrap();
    let back: std::collections::BTreeMap<String, cellos_core::projection::CellState> =
        serde_json::from_str(&json).unwrap();
    assert_eq!(back, cells);
}

#[test]
fn malformed_data_is_counted_not_fatal() {
    let factory = factory();
    let mut events = run_of(&factory, "a", Verdict::Admit);
    events[4].data = serde_json::json!({ "argv": "not a list" });
    let cells = project(&events);
    assert_eq!(cells["a"].undecodable_events, 1);
    assert_eq!(cells["a"].phase, Phase::Destroyed);
}

#[test]
fn telemetry_events_project_per_cell() {
    let factory = factory();
    let t = datetime!(2025-01-02 03:04:05 UTC);
    let process = |argv0: &str, exit_code: Option<i32>| ProcessObservedData {
        pid: 100,
        ns_pid: Some(3),
        argv0: argv0.to_owned(),
        exit_code,
        signal: None,
        mechanism: "netlink proc connector, cgroup-filtered".to_owned(),
        authority: cellos_core::authority::AuthorityKind::Observed,
    };
    let sample = CgroupSample {
        pids: Some(2),
        ..CgroupSample::default()
    };
    let events = vec![
        factory.process_spawned(t, "a", &process("/bin/sh", None)),
        factory.process_spawned(t, "a", &process("sleep", None)),
        factory.process_exited(t, "a", &process("sleep", Some(0))),
        factory.process_spawned(t, "b", &process("other", None)),
        factory.cgroup_sampled(t, "a", "run-1", &sample),
        factory.telemetry_reported(
            t,
            "a",
            &TelemetryReportData {
                run_id: "run-1".to_owned(),
                receiver: ReceiverCounters {
                    frames: 5,
                    malformed: 2,
                    ..ReceiverCounters::default()
                },
                probe: None,
                rejections: vec![],
                last_cgroup_sample: Some(sample),
                authority: cellos_core::authority::AuthorityKind::Observed,
            },
        ),
    ];
    let cells = project(&events);
    let a = &cells["a"];
    assert_eq!(a.telemetry.spawned, ["/bin/sh", "sleep"]);
    assert_eq!(a.counts.processes_spawned, 2);
    assert_eq!(a.counts.processes_exited, 1);
    assert_eq!(a.telemetry.last_cgroup_sample, Some(sample));
    assert_eq!(a.telemetry.report.as_ref().unwrap().receiver.malformed, 2);
    assert_eq!(a.undecodable_events, 0);
    assert_eq!(cells["b"].telemetry.spawned, ["other"]);
    assert_eq!(cells["b"].counts.processes_spawned, 1);
}

/// The teardown of cell `c` as `lifecycle.v1.destroyed`, projected.
fn destroyed_as(teardown: TeardownReport) -> cellos_core::projection::CellState {
    let event = factory().lifecycle_destroyed(
        datetime!(2025-01-02 03:04:05 UTC),
        "run-1",
        Outcome::Failed,
        &teardown,
        None,
    );
    project([&event]).remove("c").unwrap()
}

#[test]
fn a_teardown_whose_check_could_not_run_projects_as_unverified_not_clean() {
    let unverified = vec![UnverifiedResidue {
        class: "nftTable".to_owned(),
        reason: "cannot run nft".to_owned(),
    }];
    let cell = destroyed_as(TeardownReport {
        cell_id: "c".to_owned(),
        destroyed: true,
        unverified: unverified.clone(),
        ..TeardownReport::default()
    });
    assert_eq!(cell.terminal_state, Some(TerminalState::Unverified));
    assert_eq!(cell.unverified, unverified);
}

#[test]
fn found_residue_outranks_unverified_and_forced() {
    let cell = destroyed_as(TeardownReport {
        cell_id: "c".to_owned(),
        destroyed: true,
        forced: true,
        residue: vec![Residue {
            class: "cgroup".to_owned(),
            detail: "left".to_owned(),
        }],
        unverified: vec![UnverifiedResidue {
            class: "mount".to_owned(),
            reason: "unreadable".to_owned(),
        }],
        ..TeardownReport::default()
    });
    assert_eq!(cell.terminal_state, Some(TerminalState::Residue));
    let forced = destroyed_as(TeardownReport {
        cell_id: "c".to_owned(),
        destroyed: true,
        forced: true,
        ..TeardownReport::default()
    });
    assert_eq!(forced.terminal_state, Some(TerminalState::Forced));
}

#[test]
fn a_reclaim_whose_check_could_not_run_projects_its_unverified_classes() {
    let teardown = TeardownReport {
        cell_id: "c".to_owned(),
        destroyed: true,
        unverified: vec![UnverifiedResidue {
            class: "process".to_owned(),
            reason: "procfs unreadable".to_owned(),
        }],
        ..TeardownReport::default()
    };
    let event = factory().gc_reclaimed(datetime!(2025-01-02 03:04:05 UTC), &[], &teardown);
    let cell = project([&event]).remove("c").unwrap();
    assert_eq!(cell.phase, Phase::Destroyed);
    assert_eq!(cell.unverified, teardown.unverified);
}

#[test]
fn a_paused_cell_projects_as_paused_until_resumed() {
    let f = factory();
    let t = datetime!(2025-01-02 03:04:06 UTC);
    let mut events = run_of(&f, "cell-p", Verdict::Admit);
    events.truncate(2);
    events.push(f.lifecycle_frozen(t, "cell-p", true, "cgroup v1 freezer.state"));
    let cell = &project(&events)["cell-p"];
    assert!(cell.paused, "{cell:?}");
    assert_eq!(cell.freezer.as_deref(), Some("cgroup v1 freezer.state"));
    assert_eq!(cell.phase, Phase::Running);

    events.push(f.lifecycle_frozen(t, "cell-p", false, "cgroup v1 freezer.state"));
    assert!(!project(&events)["cell-p"].paused);
}

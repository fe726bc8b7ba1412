//! The real agent binary against a real receiver: keep-alives, kill → one silence, the declare
//! CLI, and a cell (cgroup + pid namespace) whose children are both observed and declared.

/// Shared with the host crate's receiver tests (one copy of the helpers).
#[path = "../../cellos-telemetry/tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cellos_core::events::ViolationKind;
use cellos_core::spec::ExecutionCellSpec;
use cellos_telemetry::hostprobe::Observation;
use cellos_telemetry::receiver::{TelemetryItem, TelemetryReceiver};
use cellos_telemetry::session::{
    CellTelemetry, CellTelemetryConfig, TelemetryEvent, TelemetryReport,
};
use cellos_telemetry::wire::ProbeSource;
use common::*;

const AGENT: &str = env!("CARGO_BIN_EXE_cellos-telemetry-agent");

fn spec() -> ExecutionCellSpec {
    serde_json::from_value(serde_json::json!({
        "id": "cell-agent",
        "run": { "argv": ["true"] },
        "authority": { "egressRules": [{ "host": "api.example.com", "port": 443 }] },
        "telemetry": { "enabled": true }
    }))
    .unwrap()
}

#[test]
fn killing_the_agent_yields_exactly_one_agent_silenced_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "cell-kill");
    cfg.keepalive_window = Duration::from_millis(300);
    let rx = TelemetryReceiver::bind(cfg).unwrap();
    rx.workload_started();
    let mut agent = Command::new(AGENT)
        .env("CELLOS_TELEMETRY_SOCK", rx.socket_path())
        .env("CELLOS_TELEMETRY_KEEPALIVE_MS", "50")
        .env("CELLOS_TELEMETRY_POLL_MS", "50")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_counters(&rx, "keep-alives from the agent", |c| c.keepalives >= 3);
    agent.kill().unwrap();
    agent.wait().unwrap();

    // Watch for twenty windows after the kill.
    let mut silences = Vec::new();
    let until = Instant::now() + Duration::from_secs(6);
    while let Some(item) = rx.next_timeout(until.saturating_duration_since(Instant::now())) {
        if let TelemetryItem::AgentSilenced(s) = item {
            silences.push(s);
        }
    }
    assert_eq!(silences.len(), 1, "{silences:?}");
    assert_eq!(silences[0].stamp.cell_id, "cell-kill");
    assert!(silences[0].last_frame_at.is_some());
}

#[test]
fn a_declared_unauthorised_egress_host_yields_a_violation_and_an_authorised_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut telemetry = CellTelemetry::start(CellTelemetryConfig::new(
        config(dir.path(), "cell-egress"),
        spec(),
        Vec::new(),
    ))
    .unwrap();
    for destination in [
        "api.example.com:443",
        "evil.example.net:443",
        "evil.example.net",
    ] {
        let status = Command::new(AGENT)
            .args(["declare", "net.intent", destination])
            .env("CELLOS_TELEMETRY_SOCK", telemetry.socket_path())
            .status()
            .unwrap();
        assert!(status.success());
    }
    wait_counters_session(&telemetry, 3);
    let events = telemetry.poll();
    let declared: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            TelemetryEvent::Declared(d) => Some(d.frame.detail["destination"].clone()),
            _ => None,
        })
        .collect();
    assert_eq!(declared.len(), 3);
    let violations: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            TelemetryEvent::Violation { data, .. } => Some(data.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(violations.len(), 2, "{violations:?}");
    assert!(violations
        .iter()
        .all(|v| v.kind == ViolationKind::Violation));
    assert!(violations[0].detail.contains("evil.example.net:443"));
    assert!(violations[1].detail.contains("\"evil.example.net\""));
    let event = events
        .iter()
        .find(|e| matches!(e, TelemetryEvent::Violation { .. }))
        .unwrap()
        .to_event(&factory(), "cell-egress");
    assert_eq!(event.ty, "dev.cellos.events.cell.violation.v1.detected");
    // The declaring process is the caller of the CLI: this test process.
    let first = events
        .iter()
        .find_map(|e| match e {
            TelemetryEvent::Declared(d) => Some(d),
            _ => None,
        })
        .unwrap();
    assert_eq!(first.frame.guest_pid, std::process::id());
}

fn wait_counters_session(t: &CellTelemetry, delivered: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while t.counters().delivered < delivered {
        assert!(Instant::now() < deadline, "{:?}", t.counters());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A pids cgroup for one test, removed on drop.
struct TestCgroup(PathBuf);

impl TestCgroup {
    fn create(tag: &str) -> Self {
        let dir = PathBuf::from(format!(
            "/sys/fs/cgroup/pids/cellos-test-{tag}-{}",
            std::process::id()
        ));
        std::fs::create_dir(&dir).expect("creating a v1 pids cgroup (tests run as root)");
        TestCgroup(dir)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for _ in 0..200 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            if let Ok(procs) = std::fs::read_to_string(self.0.join("cgroup.procs")) {
                for pid in procs.lines().filter_map(|l| l.parse::<i32>().ok()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Run `inner` as pid 1 of a new pid namespace (with its own /proc) inside `cg`, the way a
/// cell runs, with the telemetry socket in its environment.
fn run_cell(cg: &TestCgroup, socket: &std::path::Path, inner: &str) {
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec unshare --pid --fork --mount-proc sh -c '{inner}'",
        cg.0.display()
    );
    let status = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .env("CELLOS_TELEMETRY_SOCK", socket)
        .env("CELLOS_TELEMETRY_POLL_MS", "50")
        .env("AGENT", AGENT)
        .status()
        .unwrap();
    assert!(status.success());
}

fn observed_execs(events: &[TelemetryEvent]) -> Vec<(Option<u32>, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            TelemetryEvent::Observed(Observation::Exec(x)) => Some((x.ns_pid, x.argv0.clone())),
            _ => None,
        })
        .collect()
}

fn discrepancies(events: &[TelemetryEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            TelemetryEvent::Violation { data, .. } if data.kind == ViolationKind::Discrepancy => {
                Some(data.detail.clone())
            }
            _ => None,
        })
        .collect()
}

/// Run `script` as cell `cell-<name>` under host telemetry that expects a process living
/// 300 ms or more to be declared; the events and report once it is over.
fn observe_cell(name: &str, script: &str) -> (Vec<TelemetryEvent>, TelemetryReport) {
    let cg = TestCgroup::create(name);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = CellTelemetryConfig::new(
        config(dir.path(), &format!("cell-{name}")),
        spec(),
        vec![cg.0.clone()],
    );
    cfg.min_declared_lifetime = Duration::from_millis(300);
    let telemetry = CellTelemetry::start(cfg).unwrap();
    telemetry.workload_started();
    run_cell(&cg, telemetry.socket_path(), script);
    telemetry.workload_exited();
    telemetry.finish()
}

#[test]
fn a_cells_children_are_observed_by_the_host_with_argv0_and_declared_by_the_agent() {
    // pid 1 starts the agent, then two children that live well past the agent's poll interval.
    let (events, report) = observe_cell(
        "spawn",
        "\"$AGENT\" & A=$!; sleep 0.5; sleep 1.1 & S=$!; sleep 1.2; wait $S; kill $A; true",
    );

    let observed = observed_execs(&events);
    let sleeps: Vec<_> = observed.iter().filter(|(_, a)| a == "sleep").collect();
    assert!(sleeps.len() >= 3, "observed: {observed:?}");
    let declared: Vec<(u32, String)> = events
        .iter()
        .filter_map(|e| match e {
            TelemetryEvent::Declared(d) if d.frame.probe_source == ProbeSource::ProcessSpawned => {
                Some((d.frame.guest_pid, d.frame.detail["argv0"].clone()))
            }
            _ => None,
        })
        .collect();
    // The two long-lived children (1.1 s and 1.2 s) were declared with the pid and argv0 the
    // host observed for them.
    let matched = sleeps
        .iter()
        .filter(|(ns, argv0)| declared.contains(&(ns.unwrap_or(0), argv0.clone())))
        .count();
    assert!(matched >= 2, "observed {observed:?}, declared {declared:?}");
    // Inside the namespace nothing long-lived went undeclared; the only undeclared image is
    // `unshare`, which runs outside the cell's pid namespace, where the agent cannot see.
    let undeclared = discrepancies(&events);
    assert!(
        undeclared.iter().all(|d| d.contains("\"unshare\"")),
        "{undeclared:?}"
    );
    assert_eq!(report.receiver.malformed, 0);
    assert!(report.probe.unwrap().execs >= 4);
}

#[test]
fn a_process_the_guest_hides_is_a_discrepancy() {
    // No agent: the workload declares one thing and hides the process it spawns.
    let (events, _) = observe_cell(
        "hide",
        "\"$AGENT\" declare custom.phase build; exec sleep 0.6",
    );
    let undeclared = discrepancies(&events);
    assert!(
        undeclared.iter().any(|d| d.contains("\"sleep\"")),
        "{undeclared:?} from {events:?}"
    );
}

//! The host process probe against real processes in a real cgroup.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use cellos_telemetry::hostprobe::{CellCgroupFilter, CgroupSampler, Observation, ProcessProbe};

/// A pids cgroup created for one test and removed when dropped.
struct TestCgroup {
    dir: PathBuf,
}

impl TestCgroup {
    fn create() -> Self {
        let root = [
            "/sys/fs/cgroup/pids",
            "/sys/fs/cgroup/unified",
            "/sys/fs/cgroup",
        ]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.procs").exists())
        .expect("no writable cgroup hierarchy: these tests need root and a cgroup mount");
        let name = format!(
            "cellos-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        let dir = root.join(name);
        std::fs::create_dir(&dir).unwrap();
        TestCgroup { dir }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Processes left by a failed test would keep the directory busy; kill them first.
        if let Ok(procs) = std::fs::read_to_string(self.dir.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|l| l.parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Observations until `done` holds for the collected list (bounded wait).
fn collect_until(probe: &ProcessProbe, done: impl Fn(&[Observation]) -> bool) -> Vec<Observation> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done(&seen) {
        assert!(
            Instant::now() < deadline,
            "timed out; saw {seen:?}, counters {:?}",
            probe.counters()
        );
        if let Some(o) = probe.next_timeout(Duration::from_millis(100)) {
            seen.push(o);
        }
    }
    seen
}

#[test]
fn the_probe_sees_a_child_exec_in_the_cells_cgroup_with_argv0_and_ignores_others() {
    let cg = TestCgroup::create();
    let filter = CellCgroupFilter::from_dirs(std::slice::from_ref(&cg.dir)).unwrap();
    let probe = ProcessProbe::start(filter).unwrap();

    // The shell moves itself into the cell's cgroup, then runs a child; only what happens after
    // the move belongs to the cell.
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec sh -c 'sleep 0.2; true'",
        cg.dir.display()
    );
    let mut cell = Command::new("sh").arg("-c").arg(&script).spawn().unwrap();
    // A process outside the cell at the same time.
    let mut outsider = Command::new("sleep").arg("0.3").spawn().unwrap();
    let outsider_pid = outsider.id();

    let seen = collect_until(&probe, |seen| {
        seen.iter()
            .any(|o| matches!(o, Observation::Exit(e) if e.argv0 == "sleep"))
    });
    cell.wait().unwrap();
    outsider.wait().unwrap();

    let execs: Vec<_> = seen
        .iter()
        .filter_map(|o| match o {
            Observation::Exec(e) => Some(e),
            Observation::Exit(_) => None,
        })
        .collect();
    let sleep = execs
        .iter()
        .find(|e| e.argv0 == "sleep")
        .unwrap_or_else(|| panic!("no exec of sleep observed: {seen:?}"));
    assert_eq!(sleep.comm, "sleep");
    assert!(sleep.ns_pid.is_some());
    assert!(execs.iter().any(|e| e.argv0 == "sh" && e.pid == cell.id()));
    assert!(
        seen.iter().all(|o| match o {
            Observation::Exec(e) => e.pid != outsider_pid,
            Observation::Exit(e) => e.pid != outsider_pid,
        }),
        "a process outside the cgroup was reported: {seen:?}"
    );
    let exit = seen
        .iter()
        .find_map(|o| match o {
            Observation::Exit(e) if e.pid == sleep.pid => Some(e),
            _ => None,
        })
        .unwrap();
    assert_eq!(exit.exit_code, Some(0));
    assert_eq!(exit.signal, None);
    let data = seen[0].event_data();
    assert_eq!(
        serde_json::to_value(&data).unwrap()["authority"],
        "observed"
    );
}

#[test]
fn the_sampler_reads_the_cells_pids_counter() {
    let cg = TestCgroup::create();
    let sampler = CgroupSampler::new(std::slice::from_ref(&cg.dir));
    assert_eq!(sampler.sample().pids, Some(0));
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec sleep 30",
        cg.dir.display()
    );
    let mut child = Command::new("sh").arg("-c").arg(&script).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while sampler.sample().pids != Some(1) {
        assert!(Instant::now() < deadline, "{:?}", sampler.sample());
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

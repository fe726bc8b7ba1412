//! A run record whose init pid now names another process is never signalled: `cellos kill`
//! ([`CellBackend::signal`]) and `cellos gc` ([`reclaim`]) open a pidfd for the recorded pid
//! and compare its start time before anything is sent, and send only through that pidfd.

mod cell_support;

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use cell_support::*;
use cellos_core::ports::{CellBackend, PortErrorKind};
use cellos_linux::backend::reclaim;
use cellos_linux::record::{self, process_start_time, RunRecord};
use cellos_linux::residue::HostSources;

/// A process standing in for whoever got the recorded init's pid after it: it holds the pid
/// now, but started after the recorded init did.
fn pid_holder() -> Child {
    Command::new("sleep").arg("30").spawn().unwrap()
}

fn record(id: &str, pid: i32, start: u64) -> RunRecord {
    RunRecord {
        cell_id: id.to_owned(),
        run_id: "run".into(),
        created_unix: 0,
        supervisor_pid: std::process::id() as i32,
        supervisor_start: process_start_time(std::process::id() as i32).unwrap(),
        init_pid: Some(pid),
        init_start: Some(start),
        cgroup_paths: Vec::new(),
        network: None,
    }
}

/// Whether `child` is still running after giving a signal time to land.
fn survives(child: &mut Child) -> bool {
    std::thread::sleep(Duration::from_millis(100));
    child.try_wait().unwrap().is_none()
}

fn exit_signal(child: &mut Child) -> Option<i32> {
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        if let Some(status) = child.try_wait().unwrap() {
            return status.signal();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

#[test]
fn kill_of_a_cell_whose_recorded_init_pid_was_reused_signals_nobody() {
    let fx = fixture();
    let id = unique_id("stale-kill");
    let mut holder = pid_holder();
    let pid = holder.id() as i32;
    let start = process_start_time(pid).unwrap();
    record::create(fx.state.path(), &record(&id, pid, start - 1)).unwrap();
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        let err = fx.backend.signal(&id, signal).unwrap_err();
        assert_eq!(err.kind, PortErrorKind::NotFound, "{err}");
    }
    assert!(survives(&mut holder), "a reused pid was signalled");

    // The same record naming the process as it is does reach it.
    record::update(fx.state.path(), &record(&id, pid, start)).unwrap();
    fx.backend.signal(&id, libc::SIGTERM).unwrap();
    assert_eq!(exit_signal(&mut holder), Some(libc::SIGTERM));
    record::remove(fx.state.path(), &id).unwrap();
}

#[test]
fn gc_of_a_cell_whose_recorded_init_pid_was_reused_kills_nobody() {
    let fx = fixture();
    let id = unique_id("stale-gc");
    let mut holder = pid_holder();
    let pid = holder.id() as i32;
    let start = process_start_time(pid).unwrap();
    record::create(fx.state.path(), &record(&id, pid, start + 1)).unwrap();
    let report = reclaim(fx.state.path(), &id, &HostSources::host()).unwrap();
    assert!(
        !report.removed.iter().any(|r| r.class == "process"),
        "{report:?}"
    );
    assert!(survives(&mut holder), "a reused pid was killed");
    assert!(record::read(fx.state.path(), &id).unwrap().is_none());

    // With the start time it really has, the same pid is the cell's init and is killed.
    record::create(fx.state.path(), &record(&id, pid, start)).unwrap();
    let report = reclaim(fx.state.path(), &id, &HostSources::host()).unwrap();
    assert!(
        report.removed.iter().any(|r| r.class == "process"),
        "{report:?}"
    );
    assert_eq!(exit_signal(&mut holder), Some(libc::SIGKILL));
}

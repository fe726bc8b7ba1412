//! After destroy (or reclaim after a crash) nothing of a cell is left on the host.

mod cell_support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use cell_support::*;
use cellos_core::ports::{CellBackend, WorkloadExit};
use cellos_linux::backend::{LinuxBackend, LinuxBackendConfig};
use cellos_linux::cgroup::CellCgroup;
use serde_json::json;

/// Mount points of the host namespace, ignoring network-namespace pins other tools make.
fn host_mounts() -> BTreeSet<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let point = f.get(4)?.to_string();
            (!point.contains("/netns/")).then_some(point)
        })
        .collect()
}

/// Processes whose parent is this test process and that run the cell init.
fn our_inits() -> Vec<i32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some(close) = stat.rfind(')') else {
                return false;
            };
            let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
            stat.contains("(cellos-cell-ini") && fields.get(1) == Some(&me.as_str())
        })
        .collect()
}

fn leftover_cgroups(prefix: &str) -> Vec<String> {
    CellCgroup::list_leftovers()
        .into_iter()
        .filter(|id| id.starts_with(prefix))
        .collect()
}

#[test]
fn sequential_and_concurrent_cells_leave_nothing() {
    let fx = fixture();
    let prefix = format!("seq-{}-", std::process::id());
    let mounts_before = host_mounts();
    for i in 0..200 {
        let r = run(
            &fx.backend,
            &spec(&format!("{prefix}{i}"), &["/bin/true"], json!({})),
        );
        assert_eq!(r.outcome.exit, WorkloadExit::Exited { code: 0 });
        assert!(r.teardown.residue_free(), "{:?}", r.teardown);
    }
    std::thread::scope(|s| {
        for i in 0..20 {
            let backend = &fx.backend;
            let id = format!("{prefix}c{i}");
            s.spawn(move || {
                let r = run(backend, &shell(&id, "echo $$; sleep 0.05", json!({})));
                assert_eq!(
                    r.outcome.exit,
                    WorkloadExit::Exited { code: 0 },
                    "{}",
                    r.stderr
                );
                assert_eq!(r.stdout, "2\n");
                assert!(r.teardown.residue_free(), "{:?}", r.teardown);
            });
        }
    });
    assert_eq!(leftover_cgroups(&prefix), Vec::<String>::new());
    assert_eq!(our_inits(), Vec::<i32>::new());
    assert_eq!(run_dir_entries(fx.state.path()), Vec::<String>::new());
    assert_eq!(host_mounts(), mounts_before);
}

#[test]
fn destroy_of_a_running_cell_kills_everything() {
    let fx = fixture();
    let id = unique_id("running");
    let (out, err) = (SharedBuf::default(), SharedBuf::default());
    let mut cell = create(
        &fx.backend,
        &shell(&id, "sleep 1000 & sleep 1000", json!({})),
        Vec::new(),
        Default::default(),
        &out,
        &err,
    );
    cell.start().unwrap();
    let record = cellos_linux::record::read(fx.state.path(), &id)
        .unwrap()
        .unwrap();
    let init = record.init_pid.unwrap();
    assert!(CellCgroup::exists(&id));
    let report = cell.destroy().unwrap();
    assert!(report.destroyed && report.forced);
    assert!(report.residue_free(), "{report:?}");
    assert!(!CellCgroup::exists(&id));
    assert!(cellos_linux::record::read(fx.state.path(), &id)
        .unwrap()
        .is_none());
    assert_eq!(cellos_linux::record::process_start_time(init), None);
}

/// Child mode of [`reclaim_after_the_creating_process_is_killed`]: create a cell, report, hang.
#[test]
#[ignore = "the child process of reclaim_after_the_creating_process_is_killed, which runs it"]
fn child_mode_create_cell_then_hang() {
    let (Ok(state), Ok(id)) = (
        std::env::var("CELLOS_TEST_CHILD_STATE"),
        std::env::var("CELLOS_TEST_CHILD_ID"),
    ) else {
        panic!("run only by reclaim_after_the_creating_process_is_killed (it sets CELLOS_TEST_CHILD_STATE and CELLOS_TEST_CHILD_ID)");
    };
    let backend = LinuxBackend::new(LinuxBackendConfig::new(&state, init_exe())).unwrap();
    let (out, err) = (SharedBuf::default(), SharedBuf::default());
    let mut cell = create(
        &backend,
        &shell(&id, "sleep 1000", json!({})),
        Vec::new(),
        Default::default(),
        &out,
        &err,
    );
    cell.start().unwrap();
    println!("READY");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}

#[test]
fn reclaim_after_the_creating_process_is_killed() {
    let fx = fixture();
    let id = unique_id("crash");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "--ignored",
            "child_mode_create_cell_then_hang",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CELLOS_TEST_CHILD_STATE", fx.state.path())
        .env("CELLOS_TEST_CHILD_ID", &id)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("READY"));
    assert!(ready, "child never created its cell");
    let record = cellos_linux::record::read(fx.state.path(), &id)
        .unwrap()
        .unwrap();
    assert!(record.init_alive());
    child.kill().unwrap();
    child.wait().unwrap();

    assert!(fx.backend.orphans().unwrap().contains(&id));
    let report = fx.backend.reclaim(&id).unwrap();
    assert!(report.destroyed);
    assert!(report.residue_free(), "{report:?}");
    assert!(!CellCgroup::exists(&id));
    assert!(!Path::new(&cellos_linux::record::record_path(fx.state.path(), &id)).exists());
    let init = record.init_pid.unwrap();
    assert_ne!(
        cellos_linux::record::process_start_time(init),
        record.init_start
    );
    assert!(!fx.backend.orphans().unwrap().contains(&id));
    // Idempotent.
    let again = fx.backend.reclaim(&id).unwrap();
    assert!(!again.destroyed && again.residue_free(), "{again:?}");
}

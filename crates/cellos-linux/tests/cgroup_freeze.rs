//! Real freezer tests (run as root): a counting process stops while its cell is paused and
//! counts again after resume, on the v2 `cgroup.freeze` path and the v1 freezer path, and
//! destroying a paused cell leaves no cgroup behind (the lazily made freezer cgroup included).

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cellos_linux::cgroup::freeze::{self, FreezeMechanism, FreezerChoice};
use cellos_linux::cgroup::{CellCgroup, CgroupLimits};

fn cell_id(name: &str) -> String {
    format!("test-{}-freeze-{name}", std::process::id())
}

/// A cell whose process (and the `sleep` children it forks) increments a counter in `file`.
fn counting_cell(id: &str, file: &Path) -> (CellCgroup, Child) {
    let limits = CgroupLimits {
        pids_max: Some(64),
        ..CgroupLimits::default()
    };
    let cg = CellCgroup::create(id, &limits).expect("create cgroup");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "read go; i=0; while :; do i=$((i+1)); echo $i > {}; sleep 0.05; done",
            file.display()
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sh");
    let pid = i32::try_from(child.id()).expect("pid fits i32");
    cg.add_process(pid).expect("move into cell cgroups");
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(b"go\n")
        .expect("release child");
    (cg, child)
}

fn counter(file: &Path) -> u64 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Wait until the counter has moved, so it is known to be running.
fn assert_moves(file: &Path) {
    let before = counter(file);
    std::thread::sleep(Duration::from_millis(500));
    let after = counter(file);
    assert!(after > before, "counter did not move: {before} -> {after}");
}

fn assert_stopped(file: &Path) {
    let before = counter(file);
    std::thread::sleep(Duration::from_millis(500));
    let after = counter(file);
    assert_eq!(before, after, "counter moved while paused");
}

fn pause_resume_destroy(name: &str, choice: FreezerChoice, expect: FreezeMechanism) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("counter");
    let id = cell_id(name);
    let (mut cg, mut child) = counting_cell(&id, &file);
    assert_moves(&file);

    assert_eq!(freeze::freeze(&id, choice).expect("pause"), expect);
    assert_stopped(&file);
    let freezer = freeze::v1_freezer_dir(&id).expect("freezer dir");
    let freezer_made = freezer.as_ref().is_some_and(|d| d.is_dir());
    assert_eq!(freezer_made, expect == FreezeMechanism::V1);

    assert_eq!(freeze::thaw(&id).expect("resume"), expect);
    assert_moves(&file);

    // Destroy while paused: the cell still ends and leaves nothing.
    freeze::freeze(&id, choice).expect("pause again");
    cg.kill_all().expect("kill a paused cell");
    cg.remove().expect("remove");
    let _ = child.wait();
    let left = CellCgroup::leftover_dirs(&id, Path::new("/proc/self/mountinfo")).expect("check");
    assert!(left.is_empty(), "residue after destroy: {left:?}");
}

#[test]
fn v2_freeze_stops_and_resumes_the_cell() {
    pause_resume_destroy("v2", FreezerChoice::Auto, FreezeMechanism::V2);
}

#[test]
fn v1_freezer_stops_and_resumes_the_cell() {
    pause_resume_destroy("v1", FreezerChoice::V1, FreezeMechanism::V1);
}

#[test]
fn reclaim_removes_a_left_freezer_cgroup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("counter");
    let id = cell_id("reclaim");
    let (cg, mut child) = counting_cell(&id, &file);
    freeze::freeze(&id, FreezerChoice::V1).expect("pause");
    let freezer = freeze::v1_freezer_dir(&id)
        .expect("freezer dir")
        .expect("freezer hierarchy");
    let left = CellCgroup::leftover_dirs(&id, Path::new("/proc/self/mountinfo")).expect("check");
    assert!(
        left.contains(&freezer),
        "{left:?} lacks {}",
        freezer.display()
    );
    // A supervisor that died leaves the cgroups: forget them and reclaim by id.
    std::mem::forget(cg);
    let removed = CellCgroup::reclaim(&id).expect("reclaim");
    assert!(removed.contains(&freezer));
    let _ = child.wait();
    let left = CellCgroup::leftover_dirs(&id, Path::new("/proc/self/mountinfo")).expect("check");
    assert!(left.is_empty(), "residue after reclaim: {left:?}");
}

#[test]
fn unknown_cell_is_not_found() {
    let err = freeze::freeze(&cell_id("absent"), FreezerChoice::Auto).unwrap_err();
    assert!(
        matches!(err, cellos_linux::error::LinuxError::NotFound { .. }),
        "{err}"
    );
}

//! Real cgroup tests (run as root): limits land in the kernel files, processes are tracked,
//! killed and cleaned up, and limit hits are reported with their mechanism.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use cellos_linux::cgroup::{CellCgroup, CgroupLimits, CgroupVersion, Controller, Layout};

fn cell_id(name: &str) -> String {
    format!("test-{}-{name}", std::process::id())
}

/// Start `sh -c script` held at a `read` until [`release`], so it can be moved into the cgroup
/// before it forks anything.
fn spawn_held(script: &str) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(format!("read go; {script}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sh")
}

fn release(child: &mut Child) {
    let mut stdin = child.stdin.take().expect("stdin piped");
    stdin.write_all(b"go\n").expect("release child");
}

fn pid(child: &Child) -> i32 {
    i32::try_from(child.id()).expect("pid fits i32")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_owned()
}

/// The leaf of `controller` and the version serving it, as the host layout says.
fn leaf_of(cg: &CellCgroup, controller: Controller) -> (CgroupVersion, &Path) {
    let (version, root) = Layout::host()
        .locate(controller)
        .unwrap_or_else(|| panic!("controller {} not available", controller.name()));
    let leaf = cg
        .paths()
        .iter()
        .find(|p| p.starts_with(root))
        .expect("leaf under the controller's hierarchy");
    (version, leaf.as_path())
}

#[test]
fn limits_are_written_to_the_controller_files() {
    let id = cell_id("limits");
    let limits = CgroupLimits {
        memory_max_bytes: Some(64 * 1024 * 1024),
        pids_max: Some(17),
        cpu_millis: Some(250),
    };
    let mut cg = CellCgroup::create(&id, &limits).expect("create");
    assert!(CellCgroup::exists(&id));

    let (mv, mem) = leaf_of(&cg, Controller::Memory);
    match mv {
        CgroupVersion::V2 => assert_eq!(read(&mem.join("memory.max")), "67108864"),
        CgroupVersion::V1 => {
            assert_eq!(read(&mem.join("memory.limit_in_bytes")), "67108864");
            if mem.join("memory.memsw.limit_in_bytes").exists() {
                assert_eq!(read(&mem.join("memory.memsw.limit_in_bytes")), "67108864");
            }
        }
    }
    let (_, pids) = leaf_of(&cg, Controller::Pids);
    assert_eq!(read(&pids.join("pids.max")), "17");
    let (cv, cpu) = leaf_of(&cg, Controller::Cpu);
    match cv {
        CgroupVersion::V2 => assert_eq!(read(&cpu.join("cpu.max")), "25000 100000"),
        CgroupVersion::V1 => {
            assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "25000");
            assert_eq!(read(&cpu.join("cpu.cfs_period_us")), "100000");
        }
    }

    let enforcement = cg.enforcement();
    let names: Vec<&str> = enforcement.iter().map(|e| e.limit.as_str()).collect();
    assert_eq!(names, ["memoryMaxBytes", "pidsMax", "cpuMillis"]);
    let memory = &enforcement[0];
    assert_eq!(memory.value, 64 * 1024 * 1024);
    assert!(
        memory.mechanism.starts_with(&format!("cgroup {mv} ")),
        "{memory:?}"
    );
    if mv == CgroupVersion::V1 && mem.join("memory.memsw.limit_in_bytes").exists() {
        assert_eq!(
            memory.mechanism,
            "cgroup v1 memory.limit_in_bytes+memory.memsw.limit_in_bytes"
        );
    }
    assert!(cg.version_summary().contains(mv.as_str()));

    let paths = cg.paths().to_vec();
    cg.remove().expect("remove");
    cg.remove().expect("remove is idempotent");
    assert!(paths.iter().all(|p| !p.exists()), "{paths:?}");
    assert!(!CellCgroup::exists(&id));
}

#[test]
fn kill_all_kills_every_process_of_the_cell() {
    let id = cell_id("kill");
    let mut cg = CellCgroup::create(&id, &CgroupLimits::default()).expect("create");
    let mut child = spawn_held("sleep 1000 & sleep 1000 & wait");
    cg.add_process(pid(&child)).expect("add_process");
    release(&mut child);
    // The two sleeps are forked after the move, so they are in the cell too.
    while cg.procs().expect("procs").len() < 3 {
        std::thread::yield_now();
    }
    assert!(cg.procs().expect("procs").contains(&pid(&child)));

    cg.kill_all().expect("kill_all");
    let status = child.wait().expect("wait");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(cg.procs().expect("procs").is_empty());
    cg.remove().expect("remove");
    assert!(!CellCgroup::exists(&id));
}

#[test]
fn processes_in_nested_cgroups_are_killed_and_every_level_removed() {
    let id = cell_id("nested");
    let mut cg = CellCgroup::create(&id, &CgroupLimits::default()).expect("create");
    // A child cgroup two levels down in every leaf, with a process held in the deepest one of
    // the first leaf: teardown must find both by walking down.
    let nested: Vec<_> = cg.paths().iter().map(|p| p.join("a/b")).collect();
    for dir in &nested {
        std::fs::create_dir_all(dir).expect("nested cgroup");
    }
    let mut child = spawn_held("sleep 1000");
    std::fs::write(nested[0].join("cgroup.procs"), pid(&child).to_string()).expect("move");
    release(&mut child);
    assert!(cg.procs().expect("procs").contains(&pid(&child)));

    cg.kill_all().expect("kill_all");
    assert_eq!(child.wait().expect("wait").signal(), Some(libc::SIGKILL));
    let paths = cg.paths().to_vec();
    cg.remove().expect("remove");
    assert!(paths.iter().all(|p| !p.exists()), "{paths:?}");
    assert!(!CellCgroup::exists(&id));
}

#[test]
fn memory_bomb_is_oom_killed_and_reported() {
    let id = cell_id("oom");
    let limits = CgroupLimits {
        memory_max_bytes: Some(32 * 1024 * 1024),
        ..CgroupLimits::default()
    };
    let mut cg = CellCgroup::create(&id, &limits).expect("create");
    // tail buffers a line it never sees the end of: memory grows until the limit.
    let mut child = spawn_held("head -c 500M /dev/zero | tail");
    cg.add_process(pid(&child)).expect("add_process");
    release(&mut child);
    let status = child.wait().expect("wait");
    assert!(!status.success(), "memory bomb survived: {status:?}");

    let hits = cg.limit_hits();
    let hit = hits
        .iter()
        .find(|h| h.limit == "memoryMaxBytes")
        .unwrap_or_else(|| panic!("no memory hit in {hits:?}"));
    assert!(hit.count >= 1);
    let (version, _) = leaf_of(&cg, Controller::Memory);
    let file = match version {
        CgroupVersion::V2 => "memory.events",
        CgroupVersion::V1 => "memory.oom_control",
    };
    assert_eq!(
        hit.mechanism,
        format!("cgroup {version} {file} oom_kill={}", hit.count)
    );
    cg.kill_all().expect("kill_all");
    cg.remove().expect("remove");
    // Counters read at removal are still reported.
    assert_eq!(cg.limit_hits(), hits);
}

#[test]
fn pids_limit_refuses_forks_and_is_reported() {
    let id = cell_id("pids");
    let limits = CgroupLimits {
        pids_max: Some(5),
        ..CgroupLimits::default()
    };
    let mut cg = CellCgroup::create(&id, &limits).expect("create");
    let mut child = spawn_held("for i in 1 2 3 4 5 6 7 8 9 10; do sleep 1000 & done; echo forked");
    cg.add_process(pid(&child)).expect("add_process");
    release(&mut child);
    child.wait().expect("wait");
    // At most 5 tasks ever lived in the cell, so most sleeps were refused.
    assert!(cg.procs().expect("procs").len() <= 5);

    let hits = cg.limit_hits();
    let hit = hits
        .iter()
        .find(|h| h.limit == "pidsMax")
        .unwrap_or_else(|| panic!("no pids hit in {hits:?}"));
    assert!(hit.count >= 1);
    let (version, _) = leaf_of(&cg, Controller::Pids);
    assert_eq!(
        hit.mechanism,
        format!("cgroup {version} pids.events max={}", hit.count)
    );
    cg.kill_all().expect("kill_all");
    cg.remove().expect("remove");
    assert!(!CellCgroup::exists(&id));
}

#[test]
fn reclaim_kills_and_removes_what_a_crashed_supervisor_left() {
    let id = cell_id("reclaim");
    let cg = CellCgroup::create(&id, &CgroupLimits::default()).expect("create");
    let paths = cg.paths().to_vec();
    let mut child = spawn_held("sleep 1000");
    cg.add_process(pid(&child)).expect("add_process");
    release(&mut child);
    // Simulate a supervisor that died without tearing down.
    std::mem::forget(cg);

    assert!(CellCgroup::exists(&id));
    assert!(CellCgroup::list_leftovers().contains(&id));
    let mut removed = CellCgroup::reclaim(&id).expect("reclaim");
    removed.sort();
    let mut expected = paths.clone();
    expected.sort();
    assert_eq!(removed, expected);
    assert_eq!(child.wait().expect("wait").signal(), Some(libc::SIGKILL));
    assert!(!CellCgroup::exists(&id));
    assert!(!CellCgroup::list_leftovers().contains(&id));
    assert!(CellCgroup::reclaim(&id).expect("reclaim again").is_empty());
}

#[test]
fn dropping_an_unremoved_cgroup_leaves_no_residue() {
    let id = cell_id("drop");
    let cg = CellCgroup::create(&id, &CgroupLimits::default()).expect("create");
    let mut child = spawn_held("sleep 1000");
    cg.add_process(pid(&child)).expect("add_process");
    release(&mut child);
    drop(cg);
    assert_eq!(child.wait().expect("wait").signal(), Some(libc::SIGKILL));
    assert!(!CellCgroup::exists(&id));
}

#[test]
fn failed_create_leaves_no_residue_and_spares_existing_cells() {
    // pids.max above the kernel's PID_MAX_LIMIT is rejected half-way through create.
    let id = cell_id("halfway");
    let limits = CgroupLimits {
        pids_max: Some(u64::MAX),
        ..CgroupLimits::default()
    };
    assert!(CellCgroup::create(&id, &limits).is_err());
    assert!(!CellCgroup::exists(&id));

    // A second create of a live cell id is refused and must not remove the first one.
    let id = cell_id("twice");
    let mut first = CellCgroup::create(&id, &CgroupLimits::default()).expect("create");
    let err = CellCgroup::create(&id, &CgroupLimits::default()).expect_err("duplicate");
    assert!(err.to_string().contains("already exists"), "{err}");
    assert!(first.paths().iter().all(|p| p.is_dir()));
    first.remove().expect("remove");
}

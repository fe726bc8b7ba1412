//! End-to-end basics: output capture, exit status propagation, spawn failures.

mod cell_support;

use cell_support::*;
use cellos_core::ports::WorkloadExit;
use serde_json::json;

#[test]
fn echo_output_is_captured_and_exit_zero_reported() {
    let fx = fixture();
    let r = run(
        &fx.backend,
        &spec(
            &unique_id("echo"),
            &["/bin/echo", "hello", "cell"],
            json!({}),
        ),
    );
    assert_eq!(
        r.outcome.exit,
        WorkloadExit::Exited { code: 0 },
        "stderr: {}",
        r.stderr
    );
    assert_eq!(r.stdout, "hello cell\n");
    assert!(r.teardown.residue.is_empty(), "{:?}", r.teardown.residue);
}

#[test]
fn exit_code_propagates() {
    let fx = fixture();
    let r = run(&fx.backend, &shell(&unique_id("exit"), "exit 7", json!({})));
    assert_eq!(r.outcome.exit, WorkloadExit::Exited { code: 7 });
}

#[test]
fn death_by_signal_propagates() {
    let fx = fixture();
    let r = run(
        &fx.backend,
        &shell(&unique_id("sig"), "kill -9 $$", json!({})),
    );
    assert_eq!(r.outcome.exit, WorkloadExit::Signaled { signal: 9 });
}

#[test]
fn timeout_kills_a_sleeping_workload_and_its_children() {
    let fx = fixture();
    let r = run(
        &fx.backend,
        &shell(
            &unique_id("timeout"),
            "sleep 30 & sleep 30",
            json!({"run": {"timeoutMs": 300}}),
        ),
    );
    assert_eq!(
        r.outcome.exit,
        WorkloadExit::TimedOut {
            limit: "timeoutMs".into()
        }
    );
    assert!(r.teardown.residue.is_empty(), "{:?}", r.teardown.residue);
}

#[test]
fn supervisor_deadline_is_honoured_as_ttl() {
    let fx = fixture();
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(300);
    let r = run_with(
        &fx.backend,
        &shell(&unique_id("ttl"), "sleep 30", json!({})),
        Vec::new(),
        cellos_core::spec::SecretDeliveryMode::File,
        Some(deadline),
    );
    assert_eq!(
        r.outcome.exit,
        WorkloadExit::TimedOut {
            limit: "ttlSeconds".into()
        }
    );
}

#[test]
fn missing_program_is_a_spawn_failure() {
    let fx = fixture();
    let r = run(
        &fx.backend,
        &spec(&unique_id("nope"), &["no-such-program"], json!({})),
    );
    match r.outcome.exit {
        WorkloadExit::SpawnFailed { reason } => {
            assert!(reason.contains("no-such-program"), "{reason}")
        }
        other => panic!("expected SpawnFailed, got {other:?}"),
    }
}

#[test]
fn program_is_found_through_path_and_env_is_passed() {
    let fx = fixture();
    let r = run(
        &fx.backend,
        &spec(
            &unique_id("env"),
            &["sh", "-c", "echo $GREETING $HOME"],
            json!({"run": {"env": {"GREETING": "hi"}}}),
        ),
    );
    assert_eq!(r.stdout, "hi /\n", "{}", r.stderr);
}

#[test]
fn artifacts_are_readable_after_exit_and_escapes_are_refused() {
    use std::io::Read;
    let fx = fixture();
    let (out, err) = (SharedBuf::default(), SharedBuf::default());
    let spec = shell(
        &unique_id("art"),
        "echo result > /work/out.txt && ln -s /etc/passwd /work/link && mkdir /work/dir",
        json!({
            "filesystem": {"workspace": {"target": "/work"}},
            "export": {"artifacts": [{"name": "out", "path": "/work/out.txt"}]}
        }),
    );
    let mut cell = create(
        &fx.backend,
        &spec,
        Vec::new(),
        Default::default(),
        &out,
        &err,
    );
    cell.start().unwrap();
    assert_eq!(
        cell.wait(None).unwrap().exit,
        WorkloadExit::Exited { code: 0 },
        "{}",
        err.text()
    );
    let mut content = String::new();
    cell.open_artifact("/work/out.txt")
        .unwrap()
        .read_to_string(&mut content)
        .unwrap();
    assert_eq!(content, "result\n");
    for bad in [
        "/work/link",
        "/work/../../../etc/shadow",
        "/work/dir",
        "/work/missing",
    ] {
        assert!(cell.open_artifact(bad).is_err(), "{bad} should be refused");
    }
    let report = cell.destroy().unwrap();
    assert!(report.residue.is_empty(), "{:?}", report.residue);
    assert!(cell.open_artifact("/work/out.txt").is_err());
    // Idempotent.
    let again = cell.destroy().unwrap();
    assert!(!again.destroyed && again.residue.is_empty());
}

#[test]
fn isolation_report_states_what_was_applied() {
    let fx = fixture();
    let r = run(
        &fx.backend,
        &spec(
            &unique_id("rep"),
            &["/bin/true"],
            json!({"run": {"timeoutMs": 5000}}),
        ),
    );
    let iso = r.isolation;
    assert_eq!(iso.backend, "linux");
    for ns in ["user", "pid", "mnt", "net", "ipc", "uts", "cgroup"] {
        assert!(iso.namespaces.iter().any(|n| n == ns), "{ns}");
    }
    assert_eq!(
        iso.uid_map,
        format!("0 {} 65536", cellos_linux::backend::DEFAULT_UID_BASE)
    );
    assert_eq!((iso.workload_uid, iso.workload_gid), (1000, 1000));
    assert_eq!(iso.rootfs, "host");
    let profile = cellos_linux::seccomp::default_profile().unwrap();
    assert_eq!(iso.seccomp_profile, profile.name);
    assert_eq!(iso.seccomp_profile_sha256, profile.sha256);
    assert!(iso.landlock_abi.is_some());
    assert!(iso.capabilities.is_empty());
    assert!(iso.no_new_privs);
    assert_eq!(iso.network, "loopback-only");
    assert!(iso
        .limits
        .iter()
        .any(|l| l.limit == "timeoutMs" && l.value == 5000));
}

#[test]
fn symlinked_mount_sources_are_refused_at_create() {
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    let real = std::fs::canonicalize(dir.path()).unwrap();
    std::os::unix::fs::symlink(&real, real.join("loop")).unwrap();
    let spec = shell(
        &unique_id("symsrc"),
        "true",
        json!({"filesystem": {"mounts": [{"source": real.join("loop").to_str().unwrap(), "target": "/d"}]}}),
    );
    let err = cellos_core::ports::CellBackend::create(&fx.backend, quiet_request(&spec))
        .err()
        .expect("refused");
    assert_eq!(
        err.kind,
        cellos_core::ports::PortErrorKind::Refused,
        "{err}"
    );
    assert!(run_dir_entries(fx.state.path()).is_empty());
}

#[test]
fn signal_reaches_the_workload_and_list_shows_the_cell() {
    use cellos_core::ports::CellBackend;
    let fx = fixture();
    let id = unique_id("kill");
    let (out, err) = (SharedBuf::default(), SharedBuf::default());
    let spec = shell(
        &id,
        "trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 0.01; done",
        json!({}),
    );
    let mut cell = create(
        &fx.backend,
        &spec,
        Vec::new(),
        Default::default(),
        &out,
        &err,
    );
    cell.start().unwrap();
    while !out.text().contains("ready") {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let listed = fx.backend.list().unwrap();
    let me = listed.iter().find(|c| c.cell_id == id).expect("listed");
    assert!(me.supervised && me.init_pid.is_some());
    assert!(fx.backend.orphans().unwrap().is_empty());
    assert!(fx.backend.signal(&id, libc::SIGSTOP).is_err());
    fx.backend.signal(&id, libc::SIGTERM).unwrap();
    assert_eq!(
        cell.wait(None).unwrap().exit,
        WorkloadExit::Exited { code: 3 }
    );
    assert_eq!(out.text(), "ready\ngot-term\n");
    cell.destroy().unwrap();
    assert!(fx.backend.list().unwrap().is_empty());
}

#[test]
fn ordinary_programs_work_inside_the_confinement() {
    let fx = fixture();
    let script = "echo out > /dev/stdout; echo err > /dev/stderr; t=$(mktemp) && echo tmp > $t && cat $t; \
                  echo shm > /dev/shm/x && cat /dev/shm/x; head -c 4 /dev/urandom | wc -c; \
                  python3 -c 'import os, tempfile; fd, p = tempfile.mkstemp(); os.write(fd, b\"py\"); print(open(p).read())'";
    let r = run(
        &fx.backend,
        &shell(&unique_id("ordinary"), script, json!({})),
    );
    assert_eq!(
        r.outcome.exit,
        WorkloadExit::Exited { code: 0 },
        "{}",
        r.stderr
    );
    assert_eq!(r.stdout, "out\ntmp\nshm\n4\npy\n");
    assert_eq!(r.stderr, "err\n");
}

#[test]
fn state_dir_reached_through_a_symlink_works() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("real")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("link")).unwrap();
    let backend = cellos_linux::backend::LinuxBackend::new(
        cellos_linux::backend::LinuxBackendConfig::new(dir.path().join("link"), init_exe()),
    )
    .unwrap();
    let r = run(
        &backend,
        &spec(&unique_id("symstate"), &["/bin/echo", "ok"], json!({})),
    );
    assert_eq!(r.stdout, "ok\n", "{}", r.stderr);
}

#[test]
fn init_in_the_clone_of_a_multi_threaded_supervisor_is_refused_and_nothing_is_left() {
    use cellos_core::ports::CellBackend;
    use cellos_linux::backend::{InitMode, LinuxBackend, LinuxBackendConfig};
    // The test harness runs this test on a thread of its own.
    let state = tempfile::tempdir().unwrap();
    let mut config = LinuxBackendConfig::new(state.path(), init_exe());
    config.init_mode = InitMode::InClone;
    let backend = LinuxBackend::new(config).unwrap();
    let id = unique_id("inclone");
    let spec = shell(&id, "true", json!({}));
    let err = backend.create(quiet_request(&spec)).err().expect("refused");
    assert_eq!(
        err.kind,
        cellos_core::ports::PortErrorKind::Refused,
        "{err}"
    );
    assert!(
        err.message
            .contains("use InitMode::Exec in a multi-threaded supervisor"),
        "{err}"
    );
    assert!(run_dir_entries(state.path()).is_empty());
    let cgroups = cellos_linux::cgroup::CellCgroup::leftover_dirs(
        &id,
        std::path::Path::new("/proc/self/mountinfo"),
    )
    .unwrap();
    assert!(cgroups.is_empty(), "{cgroups:?}");
}

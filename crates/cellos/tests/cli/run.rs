//! `cellos run` and friends on real cells: exit statuses, secrets, export, logs, crash recovery
//! and residue.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::{
    events, events_of, processes_of, residue_of, sh, short_type, stderr, stdout, unique_id, Home,
};

/// Lines in which `cellos` itself says why it exited.
fn reason_lines(stderr: &str) -> usize {
    stderr.lines().filter(|l| l.starts_with("cellos:")).count()
}

#[test]
fn hello_runs_streams_output_and_leaves_a_verifiable_log() {
    let home = Home::new();
    let id = unique_id("hello");
    let spec = home.spec(&id, &sh("echo hello from $(hostname)"));
    let out = home.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), format!("hello from {id}"));
    assert!(
        stderr(&out).contains("exited with status 0"),
        "{}",
        stderr(&out)
    );

    let all = events(&home);
    let types: Vec<String> = events_of(&all, &id).iter().map(|e| short_type(e)).collect();
    let order = [
        "admission.v1.decided",
        "isolation.v1.enforced",
        "lifecycle.v1.started",
        "command.v1.completed",
        "lifecycle.v1.destroyed",
        "compliance.v1.summary",
    ];
    let positions: Vec<usize> = order
        .iter()
        .map(|t| {
            types
                .iter()
                .position(|x| x == t)
                .unwrap_or_else(|| panic!("no {t} in {types:?}"))
        })
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{types:?}");
    let destroyed = all
        .iter()
        .find(|e| short_type(e) == "lifecycle.v1.destroyed")
        .unwrap();
    assert_eq!(destroyed["data"]["residue"], serde_json::json!([]));

    let verify = home.run(&["verify"]);
    assert!(verify.status.success(), "{}", stderr(&verify));
    let logs = home.run(&["logs", &id]);
    assert_eq!(stdout(&logs).trim(), format!("hello from {id}"));
    assert!(residue_of(&home, &id).is_empty());
}

#[test]
fn exit_statuses_follow_the_workload() {
    let home = Home::new();
    let cases = [
        ("exit 7", 7),
        ("kill -KILL $$", 128 + 9),
        ("exec /nonexistent", 127),
    ];
    for (script, expected) in cases {
        let id = unique_id("exit");
        let spec = home.spec(&id, &sh(script));
        let out = home.run(&["run", "--quiet", spec.to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(expected),
            "{script}: {}",
            stderr(&out)
        );
        assert_eq!(reason_lines(&stderr(&out)), 1);
    }
}

#[test]
fn timeout_kills_the_workload_with_124_and_is_reported() {
    let home = Home::new();
    let id = unique_id("timeout");
    let spec = home.spec(&id, &format!("{}    timeoutMs: 300\n", sh("sleep 30")));
    let started = Instant::now();
    let out = home.run(&["run", "--quiet", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(124), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(20));
    let all = events(&home);
    let hit = events_of(&all, &id)
        .into_iter()
        .find(|e| short_type(e) == "limit.v1.hit")
        .expect("limit hit event");
    assert_eq!(hit["data"]["limit"], "timeoutMs");
    assert!(hit["data"]["mechanism"]
        .as_str()
        .unwrap()
        .contains("SIGKILL"));
    assert!(residue_of(&home, &id).is_empty());
}

#[test]
fn cellos_errors_exit_125_with_one_line() {
    let home = Home::new();
    let invalid = home.spec("bad-spec", "  run:\n    argv: []\n");
    let out = home.run(&["run", invalid.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("spec.run.argv"), "{}", stderr(&out));
    assert_eq!(reason_lines(&stderr(&out)), 1, "{}", stderr(&out));

    let id = unique_id("denied");
    let spec = home.spec(
        &id,
        &format!("{}  lifetime:\n    ttlSeconds: 5000\n", sh("true")),
    );
    let pack = home.path().join("pack.yaml");
    std::fs::write(
        &pack,
        "apiVersion: cellos.io/v1\nkind: PolicyPack\nspec:\n  id: p\n  version: \"1\"\n  rules:\n    maxTtlSeconds: 60\n",
    )
    .unwrap();
    let out = home.run(&[
        "run",
        spec.to_str().unwrap(),
        "--policy",
        pack.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("admission denied"),
        "{}",
        stderr(&out)
    );
    assert_eq!(reason_lines(&stderr(&out)), 1, "{}", stderr(&out));
    let all = events(&home);
    let decided = events_of(&all, &id);
    assert_eq!(decided.len(), 1, "a denied cell records only its admission");
    assert_eq!(decided[0]["data"]["decision"]["verdict"], "deny");
    assert!(residue_of(&home, &id).is_empty());
}

#[test]
fn file_secrets_are_delivered_as_files_and_never_in_the_environment() {
    let home = Home::new();
    let secrets = home.path().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("API_TOKEN"), "s3cr3t-value-123").unwrap();
    let id = unique_id("secret");
    let script = "stat -c '%a %u' /run/secrets/API_TOKEN; cat /run/secrets/API_TOKEN; echo; \
                  p=s3cr; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c \"${p}3t\" || true";
    let spec = home.spec(
        &id,
        &format!("{}  authority:\n    secretRefs: [API_TOKEN]\n", sh(script)),
    );
    let out = home.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(lines[0], "400 1000", "mode 0400, owned by the workload uid");
    assert_eq!(lines[1], "s3cr3t-value-123");
    assert_eq!(lines[2], "0", "secret found in a process environment");

    let log = std::fs::read_to_string(home.path().join("events.jsonl")).unwrap();
    assert!(
        !log.contains("s3cr3t"),
        "a secret value reached the event log"
    );
    let all = events(&home);
    let types: Vec<String> = events_of(&all, &id).iter().map(|e| short_type(e)).collect();
    assert!(
        types.contains(&"secrets.v1.materialized".to_string()),
        "{types:?}"
    );
    assert!(
        types.contains(&"secrets.v1.revoked".to_string()),
        "{types:?}"
    );
}

#[test]
fn a_secret_command_fetches_per_cell_values_and_revokes_after_teardown() {
    use std::os::unix::fs::PermissionsExt;
    let home = Home::new();
    let helper = home.path().join("vault-helper");
    let revoked = home.path().join("revoked");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\ncase \"$1\" in\n  get) [ \"$2\" = API_TOKEN ] || exit 2; echo \"leased-$CELLOS_CELL_ID\" ;;\n  revoke) echo \"$CELLOS_CELL_ID\" >> {} ;;\nesac\n",
            revoked.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o700)).unwrap();
    let id = unique_id("vault");
    let spec = home.spec(
        &id,
        &format!(
            "{}  authority:\n    secretRefs: [API_TOKEN]\n",
            sh("cat /run/secrets/API_TOKEN")
        ),
    );
    let out = home
        .cellos()
        .env("CELLOS_SECRET_COMMAND", &helper)
        .args(["run", spec.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("leased-{id}"));
    assert_eq!(
        std::fs::read_to_string(&revoked).unwrap(),
        format!("{id}\n"),
        "revoked once, for this cell"
    );
    let all = events(&home);
    let materialized = events_of(&all, &id)
        .into_iter()
        .find(|e| short_type(e) == "secrets.v1.materialized")
        .expect("secrets.v1.materialized");
    assert_eq!(materialized["data"]["broker"], "command");
}

#[test]
fn an_undeclared_or_missing_secret_is_never_delivered() {
    let home = Home::new();
    let id = unique_id("nosecret");
    let spec = home.spec(
        &id,
        &format!(
            "{}  authority:\n    secretRefs: [MISSING_KEY]\n",
            sh("true")
        ),
    );
    let out = home.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("MISSING_KEY"), "{}", stderr(&out));

    // Declared nothing: even with a broker holding a value, /run/secrets stays empty.
    let secrets = home.path().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("OTHER"), "x").unwrap();
    let id = unique_id("undeclared");
    let spec = home.spec(&id, &sh("ls -A /run/secrets 2>/dev/null | wc -l"));
    let out = home.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "0");
}

#[test]
fn artifacts_are_exported_with_a_receipt_and_missing_ones_fail_cleanly() {
    let home = Home::new();
    let id = unique_id("export");
    let body = format!(
        "{}  filesystem:\n    workspace:\n      target: /work\n      sizeBytes: 16Mi\n  export:\n    artifacts:\n      - name: report\n        path: /work/report.txt\n      - name: absent\n        path: /work/nothing-here\n",
        sh("echo exported-content > /work/report.txt")
    );
    let spec = home.spec(&id, &body);
    let out = home.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("export failed: absent"),
        "{}",
        stderr(&out)
    );
    let exported = home.path().join("exports").join(&id).join("report");
    assert_eq!(
        std::fs::read_to_string(&exported).unwrap(),
        "exported-content\n"
    );

    let all = events(&home);
    let cell = events_of(&all, &id);
    let done = cell
        .iter()
        .find(|e| short_type(e) == "export.v1.completed")
        .expect("receipt");
    let digest = {
        use std::fmt::Write;
        let out = std::process::Command::new("sha256sum")
            .arg(&exported)
            .output()
            .unwrap();
        let mut s = String::new();
        write!(
            s,
            "{}",
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .next()
                .unwrap()
        )
        .unwrap();
        s
    };
    assert_eq!(done["data"]["sha256"], digest.as_str());
    assert_eq!(done["data"]["sizeBytes"], 17);
    let failed = cell
        .iter()
        .find(|e| short_type(e) == "export.v1.failed")
        .expect("failure event");
    assert_eq!(failed["data"]["artifact"], "absent");
}

#[test]
fn kill_9_of_the_supervisor_then_gc_leaves_nothing() {
    let home = Home::new();
    let id = unique_id("crash");
    let spec = home.spec(&id, &sh("sleep 60"));
    let mut supervisor = home.start_run(&spec);
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_of(&id).len() < 2 {
        assert!(Instant::now() < deadline, "cell never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    supervisor.kill().unwrap(); // SIGKILL
    supervisor.wait().unwrap();
    assert!(
        !residue_of(&home, &id).is_empty(),
        "a killed supervisor leaves its record and cgroups"
    );

    let out = home.run(&["gc"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("reclaimed {id}")),
        "{}",
        stdout(&out)
    );
    assert!(
        residue_of(&home, &id).is_empty(),
        "{:?}",
        residue_of(&home, &id)
    );
    // Killed processes may take a moment to be reaped; none may survive.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_of(&id).is_empty() {
        let stats: Vec<String> = processes_of(&id)
            .iter()
            .map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default())
            .collect();
        assert!(Instant::now() < deadline, "{stats:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let all = events(&home);
    assert!(events_of(&all, &id)
        .iter()
        .any(|e| short_type(e) == "gc.v1.reclaimed"));
    assert!(home.run(&["verify"]).status.success());
}

#[test]
fn a_run_after_a_killed_supervisor_reclaims_its_cell_and_execs_its_own_init() {
    let home = Home::new();
    // Creates the signing key, so that the crashed run below is not the first one.
    let first = home.spec(&unique_id("before-crash"), &sh("true"));
    assert!(home.run(&["run", first.to_str().unwrap()]).status.success());
    let id = unique_id("crashed");
    let mut supervisor = home.start_run(&home.spec(&id, &sh("sleep 60")));
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_of(&id).len() < 2 {
        assert!(Instant::now() < deadline, "cell never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    supervisor.kill().unwrap(); // SIGKILL
    supervisor.wait().unwrap();

    // The reclaim is signed before the create, so this process holds the key by then: its
    // cell's init is exec'd (its command line keeps the init argument), not refused.
    let next = home.spec(
        &unique_id("after-crash"),
        &sh("tr '\\0' ' ' < /proc/1/cmdline"),
    );
    let out = home.run(&["run", next.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("reclaimed leftovers of cell {id}")),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).contains("__cell-init"), "{}", stdout(&out));
    assert!(
        residue_of(&home, &id).is_empty(),
        "{:?}",
        residue_of(&home, &id)
    );
}

#[test]
fn many_sequential_and_concurrent_cells_leave_nothing() {
    let home = Home::new();
    let mut ids = Vec::new();
    for _ in 0..200 {
        let id = unique_id("seq");
        let spec = home.spec(&id, &sh("true"));
        let out = home.run(&["run", "--quiet", spec.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        ids.push(id);
    }
    let specs: Vec<(String, std::path::PathBuf)> = (0..20)
        .map(|_| {
            let id = unique_id("par");
            let spec = home.spec(&id, &sh("echo $$; sleep 0.2"));
            (id, spec)
        })
        .collect();
    let children: Vec<_> = specs
        .iter()
        .map(|(_, spec)| {
            home.cellos()
                .args(["run", "--quiet", spec.to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    ids.extend(specs.into_iter().map(|(id, _)| id));
    for id in &ids {
        assert!(
            residue_of(&home, id).is_empty(),
            "{id}: {:?}",
            residue_of(&home, id)
        );
        assert!(processes_of(id).is_empty(), "{id}");
    }
    let run_dir = home.path().join("run");
    let left: Vec<_> = std::fs::read_dir(&run_dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "files left in {}: {left:?}",
        run_dir.display()
    );
    let verify = home.run(&["verify"]);
    assert!(verify.status.success(), "{}", stderr(&verify));
}

//! A cell may run what it builds in its workspace and `/tmp` (as in Docker and bubblewrap),
//! unless its spec asks for write-xor-execute with `filesystem.noExecWritable`; the isolation
//! report records which applied. Each test compiles or copies a program inside the cell and
//! runs it there.

mod cell_support;

use cell_support::*;
use cellos_core::ports::WorkloadExit;
use serde_json::json;

fn workspace(extra: serde_json::Value) -> serde_json::Value {
    let mut fs = json!({"workspace": {"target": "/work", "sizeBytes": "64Mi"}});
    for (k, v) in extra.as_object().into_iter().flatten() {
        fs[k] = v.clone();
    }
    json!({ "filesystem": fs })
}

#[test]
fn by_default_a_program_built_in_the_workspace_or_tmp_runs() {
    let fx = fixture();
    let script = r#"
cd /work
printf '#include <stdio.h>\nint main(void) { puts("built and ran"); return 0; }\n' > t.c
cc -o t t.c && ./t
cc -o /tmp/t t.c && /tmp/t
"#;
    let r = run(
        &fx.backend,
        &shell(&unique_id("wx-default"), script, workspace(json!({}))),
    );
    assert_eq!(
        r.outcome.exit,
        WorkloadExit::Exited { code: 0 },
        "stdout: {}\nstderr: {}",
        r.stdout,
        r.stderr
    );
    assert_eq!(r.stdout, "built and ran\nbuilt and ran\n");
    assert!(r.isolation.writable_exec, "{:?}", r.isolation);
}

#[test]
fn no_exec_writable_refuses_exec_in_the_workspace_and_tmp_with_eacces() {
    let fx = fixture();
    // The same binary runs from /usr, so only where it lies decides.
    let script = r#"
cp /bin/true /work/t && cp /bin/true /tmp/t
python3 - <<'PY'
import subprocess
for path in ("/usr/bin/true", "/work/t", "/tmp/t"):
    try:
        print(path, subprocess.run([path]).returncode)
    except OSError as e:
        print(path, "errno", e.errno)
PY
"#;
    let r = run(
        &fx.backend,
        &shell(
            &unique_id("wx-deny"),
            script,
            workspace(json!({"noExecWritable": true})),
        ),
    );
    assert_eq!(
        r.outcome.exit,
        WorkloadExit::Exited { code: 0 },
        "stdout: {}\nstderr: {}",
        r.stdout,
        r.stderr
    );
    let eacces = libc::EACCES;
    assert_eq!(
        r.stdout,
        format!("/usr/bin/true 0\n/work/t errno {eacces}\n/tmp/t errno {eacces}\n")
    );
    assert!(!r.isolation.writable_exec, "{:?}", r.isolation);
}

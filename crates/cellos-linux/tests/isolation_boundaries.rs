//! Each test runs a script INSIDE a cell and asserts, from its output, that a boundary holds.

mod cell_support;

use cell_support::*;
use cellos_core::ports::WorkloadExit;
use cellos_core::spec::SecretDeliveryMode;
use serde_json::json;

/// Run `script` in a fresh cell; panic with its stderr unless it exited 0.
fn inside(script: &str, extra: serde_json::Value) -> String {
    let fx = fixture();
    let r = run(&fx.backend, &shell(&unique_id("iso"), script, extra));
    assert_eq!(
        r.outcome.exit,
        WorkloadExit::Exited { code: 0 },
        "script failed\nstdout: {}\nstderr: {}",
        r.stdout,
        r.stderr
    );
    assert!(r.teardown.residue.is_empty(), "{:?}", r.teardown.residue);
    r.stdout
}

#[test]
fn host_processes_are_invisible() {
    let out = inside(
        "ls /proc | grep -E '^[0-9]+$' | sort -n | tr '\\n' ' '; echo; cat /proc/1/comm",
        json!({}),
    );
    let mut lines = out.lines();
    let pids: Vec<u32> = lines
        .next()
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    // init (1), the shell, and the ls/grep/sort/tr pipeline: nothing from the host.
    assert_eq!(pids[0], 1, "{pids:?}");
    assert!(pids.len() <= 8, "too many processes visible: {pids:?}");
    assert!(
        pids.iter().all(|p| *p < 100),
        "host-looking pids visible: {pids:?}"
    );
    assert!(!pids.contains(&std::process::id()) || std::process::id() < 100);
    assert_eq!(lines.next().unwrap(), "cellos-cell-ini");
}

#[test]
fn undeclared_host_paths_are_absent() {
    let secret_dir = tempfile::tempdir_in("/var/tmp").unwrap();
    std::fs::write(secret_dir.path().join("host-only"), b"x").unwrap();
    let script = format!(
        "for p in /root /home /var /srv /opt {d} {d}/host-only; do \
           if [ -e \"$p\" ]; then echo \"present $p\"; fi; done; echo checked",
        d = secret_dir.path().display()
    );
    assert_eq!(inside(&script, json!({})), "checked\n");
}

#[test]
fn secret_bearing_etc_entries_are_absent_but_etc_works() {
    let script = "for p in /etc/shadow /etc/gshadow /etc/shadow- /etc/gshadow- /etc/sudoers \
                  /etc/sudoers.d /etc/ssl/private; do \
                    if stat \"$p\" >/dev/null 2>&1; then echo \"present $p\"; fi; done; \
                  ls /etc/ssh 2>/dev/null | grep key; \
                  grep -c '^root:' /etc/passwd; cat /etc/hostname";
    let id = unique_id("etc");
    let fx = fixture();
    let r = run(&fx.backend, &shell(&id, script, json!({})));
    assert_eq!(
        r.outcome.exit,
        WorkloadExit::Exited { code: 0 },
        "{}",
        r.stderr
    );
    assert_eq!(r.stdout, format!("1\n{id}\n"));
}

#[test]
fn read_only_mounts_and_system_dirs_cannot_be_written() {
    let data = tempfile::tempdir().unwrap();
    let data = std::fs::canonicalize(data.path()).unwrap();
    std::fs::write(data.join("input"), b"original").unwrap();
    let script = "for p in /data/input /data/new /usr/x /etc/x /x /run/cellos/x; do \
                    if ( echo hacked > \"$p\" ) 2>/dev/null; then echo \"wrote $p\"; fi; done; \
                  cat /data/input; echo";
    let out = inside(
        script,
        json!({"filesystem": {"mounts": [{"source": data.to_str().unwrap(), "target": "/data"}]}}),
    );
    assert_eq!(out, "original\n");
    assert_eq!(std::fs::read(data.join("input")).unwrap(), b"original");
    assert!(!data.join("new").exists());
}

#[test]
fn workspace_and_tmp_are_writable_by_the_workload() {
    let out = inside(
        "echo hi > /work/f && cat /work/f && stat -c '%u %a' /work && echo t > /tmp/t && \
         cat /tmp/t && pwd",
        json!({"filesystem": {"workspace": {"target": "/work", "sizeBytes": "1Mi"}}}),
    );
    assert_eq!(out, "hi\n1000 755\nt\n/work\n");
}

#[test]
fn mount_unshare_bpf_and_ptrace_are_denied() {
    let script = r#"
if mount -t tmpfs none /tmp 2>/dev/null; then echo "mount ok"; fi
if unshare -r true 2>/dev/null; then echo "unshare ok"; fi
python3 - <<'PY'
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def check(name, rc):
    if rc != -1:
        print(name, "succeeded")
check("unshare(NEWUSER)", libc.unshare(0x10000000))
check("unshare(NEWNS)", libc.unshare(0x00020000))
check("bpf", libc.syscall(321, 0, 0, 0))
check("socket(AF_VSOCK)", libc.socket(40, 1, 0))
check("ptrace(ATTACH, 1)", libc.ptrace(16, 1, 0, 0))
pid = os.fork()
if pid == 0:
    import time; time.sleep(5); os._exit(0)
check("ptrace(ATTACH, child)", libc.ptrace(16, pid, 0, 0))
os.kill(pid, 9)
print("done")
PY
"#;
    assert_eq!(inside(script, json!({})), "done\n");
}

/// The profile is an allow-list: `kcmp` (which works unfiltered, as the host half shows) is
/// named nowhere and fails with EPERM; a number above the reviewed table (a real call of newer
/// kernels, `getxattrat`, and one no kernel has) fails with ENOSYS, so libc would fall back.
#[test]
fn calls_the_allow_list_does_not_name_are_refused() {
    let probe = format!(
        r#"
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def errno(nr, *args):
    ctypes.set_errno(0)
    return 0 if libc.syscall(nr, *args) == 0 else ctypes.get_errno()
pid = os.getpid()
print(errno({kcmp}, pid, pid, 0, 1, 1), errno(464, -1, b"x", 0, b"user.x", 0, 0), errno(1000))
"#,
        kcmp = libc::SYS_kcmp
    );
    let host = std::process::Command::new("/usr/bin/python3")
        .args(["-c", &probe])
        .output()
        .expect("run the probe on the host");
    let host = String::from_utf8_lossy(&host.stdout);
    assert!(host.starts_with("0 "), "kcmp unusable on this host: {host}");
    let cell = inside(&format!("python3 -c '{probe}'"), json!({}));
    assert_eq!(
        cell,
        format!("{} {} {}\n", libc::EPERM, libc::ENOSYS, libc::ENOSYS)
    );
}

#[test]
fn network_is_loopback_only() {
    let script = r#"
ip -o route show | wc -l
ip -o link show | awk -F': ' '{print $2}' | tr '\n' ' '; echo
python3 - <<'PY'
import socket, errno
s = socket.socket()
try:
    s.connect(("10.0.0.1", 80))
    print("connected")
except OSError as e:
    print(errno.errorcode[e.errno])
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
c = socket.create_connection(srv.getsockname()); print("loopback ok")
PY
"#;
    assert_eq!(
        inside(script, json!({})),
        "0\nlo \nENETUNREACH\nloopback ok\n"
    );
}

#[test]
fn hostname_is_the_cell_id() {
    let fx = fixture();
    let id = unique_id("host");
    let r = run(
        &fx.backend,
        &shell(&id, "hostname; cat /proc/sys/kernel/hostname", json!({})),
    );
    assert_eq!(r.stdout, format!("{id}\n{id}\n"), "{}", r.stderr);
}

#[test]
fn workload_is_unprivileged_and_confined() {
    let out = inside(
        "id -u; id -g; grep -E '^(CapEff|CapPrm|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status | tr -s '\\t' ' '",
        json!({}),
    );
    assert_eq!(
        out,
        "1000\n1000\nCapPrm: 0000000000000000\nCapEff: 0000000000000000\n\
         CapBnd: 0000000000000000\nCapAmb: 0000000000000000\nNoNewPrivs: 1\nSeccomp: 2\n"
    );
}

#[test]
fn file_secrets_are_private_files_and_not_in_any_environment() {
    let fx = fixture();
    let id = unique_id("sec");
    let script =
        "stat -c '%a %u' /run/secrets /run/secrets/API_TOKEN; cat /run/secrets/API_TOKEN; echo; \
                  cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c s3cr3t-value; \
                  env | grep -c API_TOKEN; true";
    let r = run_with(
        &fx.backend,
        &shell(&id, script, json!({})),
        vec![("API_TOKEN", b"s3cr3t-value")],
        SecretDeliveryMode::File,
        None,
    );
    assert_eq!(
        r.outcome.exit,
        WorkloadExit::Exited { code: 0 },
        "{}",
        r.stderr
    );
    assert_eq!(r.stdout, "500 1000\n400 1000\ns3cr3t-value\n0\n0\n");
    // Never on the host filesystem.
    assert!(!grep_dir(fx.state.path(), b"s3cr3t-value"));
}

#[test]
fn env_secrets_reach_the_environment_only_when_asked() {
    let fx = fixture();
    let r = run_with(
        &fx.backend,
        &shell(
            &unique_id("secenv"),
            "echo \"$API_TOKEN\"; ls /run/secrets 2>&1 | wc -l",
            json!({}),
        ),
        vec![("API_TOKEN", b"env-value")],
        SecretDeliveryMode::Env,
        None,
    );
    assert_eq!(r.stdout, "env-value\n1\n", "{}", r.stderr);
}

fn grep_dir(dir: &std::path::Path, needle: &[u8]) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    rd.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            grep_dir(&p, needle)
        } else {
            std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
        }
    })
}

#[test]
fn private_host_directories_and_state_dir_work() {
    use std::os::unix::fs::PermissionsExt;
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let state = private.path().join("state");
    let data = private.path().join("data");
    std::fs::create_dir(&state).unwrap();
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(data.join("f"), b"private data").unwrap();
    std::fs::set_permissions(data.join("f"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let data = std::fs::canonicalize(&data).unwrap();
    let backend = cellos_linux::backend::LinuxBackend::new(
        cellos_linux::backend::LinuxBackendConfig::new(&state, init_exe()),
    )
    .unwrap();
    let r = run(
        &backend,
        &shell(
            &unique_id("private"),
            "cat /data/f",
            json!({"filesystem": {"mounts": [{"source": data.to_str().unwrap(), "target": "/data"}]}}),
        ),
    );
    assert_eq!(
        r.outcome.exit,
        WorkloadExit::Exited { code: 0 },
        "{}",
        r.stderr
    );
    assert_eq!(r.stdout, "private data");
}

#[test]
fn memory_limit_kills_the_workload_not_init() {
    let fx = fixture();
    let r = run(
        &fx.backend,
        &shell(
            &unique_id("oom"),
            "cat /proc/self/oom_score_adj; python3 -c 'b = bytearray(512 * 1024 * 1024); print(len(b))'",
            json!({"run": {"limits": {"memoryMaxBytes": 67108864}}}),
        ),
    );
    // The shell reports python's death by SIGKILL as 128 + 9.
    assert_eq!(
        r.outcome.exit,
        WorkloadExit::Exited { code: 137 },
        "{}",
        r.stderr
    );
    assert_eq!(r.stdout, "1000\n");
    assert!(
        r.outcome
            .limit_hits
            .iter()
            .any(|h| h.limit == "memoryMaxBytes"),
        "{:?}",
        r.outcome.limit_hits
    );
    assert!(r.teardown.residue.is_empty(), "{:?}", r.teardown.residue);
}

#[test]
fn pids_limit_bounds_process_creation() {
    let fx = fixture();
    let script = r#"
import os, time
n = 0
for i in range(40):
    try:
        pid = os.fork()
    except OSError as e:
        print("refused", e.errno)
        break
    if pid == 0:
        time.sleep(5)
        os._exit(0)
    n += 1
print(n)
"#;
    let r = run(
        &fx.backend,
        &spec(
            &unique_id("pids"),
            &["python3", "-c", script],
            json!({"run": {"limits": {"pidsMax": 16}}}),
        ),
    );
    assert_eq!(
        r.outcome.exit,
        WorkloadExit::Exited { code: 0 },
        "{}",
        r.stderr
    );
    let mut lines = r.stdout.lines();
    assert_eq!(lines.next(), Some("refused 11"), "{}", r.stdout);
    let forked: u32 = lines.next().unwrap().parse().unwrap();
    // init and python itself count against the limit too.
    assert!(forked <= 14, "{forked} children with pidsMax 16");
    assert!(
        r.outcome.limit_hits.iter().any(|h| h.limit == "pidsMax"),
        "{:?}",
        r.outcome.limit_hits
    );
    assert!(r.teardown.residue.is_empty(), "{:?}", r.teardown.residue);
}

#[test]
fn host_workspace_is_bound_read_write_for_the_workload() {
    let fx = fixture();
    let ws = tempfile::tempdir().unwrap();
    let ws_path = std::fs::canonicalize(ws.path()).unwrap();
    let host_id = fx.backend.workload_host_id();
    std::os::unix::fs::chown(&ws_path, Some(host_id), Some(host_id)).unwrap();
    let out = inside(
        "echo built > /work/out && stat -c '%u' /work/out && cd /work && pwd",
        json!({"filesystem": {"workspace": {"target": "/work", "source": ws_path.to_str().unwrap()}}}),
    );
    assert_eq!(out, "1000\n/work\n");
    assert_eq!(std::fs::read(ws_path.join("out")).unwrap(), b"built\n");
    let meta = std::fs::metadata(ws_path.join("out")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), host_id);
}

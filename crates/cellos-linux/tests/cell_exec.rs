//! Execs in a running session cell (run as root): each exec runs confined exactly like the
//! workload, its output and exit come back, a kill ends its whole process tree inside the cell
//! (background children included), a terminal exec sees a real tty, and destroy leaves nothing.

mod cell_support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use cell_support::{fixture, quiet_request, unique_id};
use cellos_core::ports::{Cell, CellBackend, ExecProcess};
use cellos_core::session::{ExecExit, ExecRequest, PtySize};
use cellos_core::spec::ExecutionCellSpec;

fn session_spec(id: &str) -> ExecutionCellSpec {
    serde_json::from_value(serde_json::json!({
        "id": id,
        "filesystem": { "workspace": { "target": "/work" } },
        "limits": { "pidsMax": 256 }
    }))
    .expect("valid session spec")
}

fn request(argv: &[&str]) -> ExecRequest {
    ExecRequest {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        ..ExecRequest::default()
    }
}

/// Run to the end: (stdout, stderr, exit).
fn run(process: ExecProcess) -> (String, String, ExecExit) {
    let ExecProcess {
        stdin,
        mut stdout,
        stderr,
        control,
    } = process;
    drop(stdin);
    let err_thread = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut e) = stderr {
            let _ = e.read_to_string(&mut text);
        }
        text
    });
    let mut out = String::new();
    stdout.read_to_string(&mut out).expect("read stdout");
    let exit = control
        .wait(Some(Instant::now() + Duration::from_secs(30)))
        .expect("wait")
        .expect("exec ended");
    (out, err_thread.join().expect("stderr thread"), exit)
}

fn started_cell(
    backend: &cellos_linux::backend::LinuxBackend,
    spec: &ExecutionCellSpec,
) -> Box<dyn Cell> {
    let mut cell = backend
        .create(quiet_request(spec))
        .expect("create session cell");
    cell.start().expect("start session cell");
    cell
}

#[test]
fn execs_run_as_the_confined_workload_and_report_their_exit() {
    let fx = fixture();
    let spec = session_spec(&unique_id("exec-basic"));
    let mut cell = started_cell(&fx.backend, &spec);
    let session = cell.session().expect("a started cell offers its session");

    let (out, _, exit) = run(session.exec(&request(&["sh", "-c", "id -u; grep -E '^(NoNewPrivs|CapEff|Seccomp):' /proc/self/status; echo err >&2; exit 7"])).expect("exec"));
    assert_eq!(exit, ExecExit::Exited { code: 7 });
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1000", "exec runs as the workload uid: {out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");

    // State persists between execs of the same cell.
    let (_, _, exit) = run(session
        .exec(&request(&["sh", "-c", "echo kept > /work/f"]))
        .expect("exec"));
    assert_eq!(exit, ExecExit::Exited { code: 0 });
    let (out, _, _) = run(session.exec(&request(&["cat", "/work/f"])).expect("exec"));
    assert_eq!(out, "kept\n");

    // Landlock holds for execs: nothing outside the writable places can be written.
    let (_, err, exit) = run(session
        .exec(&request(&["sh", "-c", "echo x > /etc/cellos-exec-test"]))
        .expect("exec"));
    assert_ne!(
        exit,
        ExecExit::Exited { code: 0 },
        "an exec wrote to /etc: {err}"
    );

    let (_, _, exit) = run(session.exec(&request(&["no-such-program"])).expect("exec"));
    assert!(matches!(exit, ExecExit::SpawnFailed { .. }), "{exit:?}");

    let report = cell.destroy().expect("destroy");
    assert!(report.residue_free(), "{report:?}");
    assert!(
        session.exec(&request(&["true"])).is_err(),
        "exec after destroy must fail"
    );
}

#[test]
fn killing_an_exec_ends_its_whole_process_tree() {
    let fx = fixture();
    let spec = session_spec(&unique_id("exec-kill"));
    let mut cell = started_cell(&fx.backend, &spec);
    let session = cell.session().expect("session");

    // The exec starts a background sleeper that escapes its session and process group.
    let process = session
        .exec(&request(&[
            "sh",
            "-c",
            "setsid sleep 1000 & echo started; sleep 1000",
        ]))
        .expect("exec");
    let ExecProcess {
        mut stdout,
        control,
        ..
    } = process;
    let mut first = [0u8; 8];
    stdout.read_exact(&mut first).expect("read started");
    assert_eq!(&first, b"started\n");
    let before = count(session.as_ref(), "sleep 1000");
    assert_eq!(before, 2, "both sleepers run");
    control.kill().expect("kill");
    let exit = control
        .wait(Some(Instant::now() + Duration::from_secs(10)))
        .expect("wait")
        .expect("exit after kill");
    assert_eq!(
        exit,
        ExecExit::Signaled {
            signal: libc::SIGKILL
        }
    );
    // The escaped sleeper died with the exec's namespace.
    let deadline = Instant::now() + Duration::from_secs(5);
    while count(session.as_ref(), "sleep 1000") > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        count(session.as_ref(), "sleep 1000"),
        0,
        "a process of the killed exec survived"
    );
    assert!(cell.destroy().expect("destroy").residue_free());
}

/// Processes in the cell whose command line contains `pattern`, seen from inside the cell.
fn count(session: &dyn cellos_core::ports::CellSession, pattern: &str) -> usize {
    let script = format!(
        "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f 2>/dev/null; echo; done | grep -c '^{pattern}' || true"
    );
    let (out, _, _) = run(session
        .exec(&request(&["sh", "-c", &script]))
        .expect("exec"));
    out.trim().parse().unwrap_or(0)
}

#[test]
fn a_terminal_exec_runs_an_interactive_shell() {
    let fx = fixture();
    let spec = session_spec(&unique_id("exec-pty"));
    let mut cell = started_cell(&fx.backend, &spec);
    let session = cell.session().expect("session");
    let process = session
        .exec(&ExecRequest {
            pty: Some(PtySize {
                rows: 33,
                cols: 101,
            }),
            ..request(&["sh", "-i"])
        })
        .expect("exec with a terminal");
    assert!(process.stderr.is_none(), "a terminal carries both streams");
    let ExecProcess {
        stdin,
        mut stdout,
        control,
        ..
    } = process;
    let mut stdin = stdin.expect("a terminal takes input");
    stdin
        .write_all(b"tty; stty size; exit 3\n")
        .expect("type into the shell");
    let mut out = String::new();
    stdout.read_to_string(&mut out).expect("read the terminal");
    let exit = control
        .wait(Some(Instant::now() + Duration::from_secs(10)))
        .expect("wait")
        .expect("exit");
    assert_eq!(exit, ExecExit::Exited { code: 3 }, "{out}");
    assert!(
        out.contains("/dev/pts/"),
        "tty names the cell's terminal: {out}"
    );
    assert!(
        out.contains("33 101"),
        "the window size reached the shell: {out}"
    );
    assert!(cell.destroy().expect("destroy").residue_free());
}

#[test]
fn stdin_reaches_the_exec() {
    let fx = fixture();
    let spec = session_spec(&unique_id("exec-stdin"));
    let mut cell = started_cell(&fx.backend, &spec);
    let session = cell.session().expect("session");
    let mut process = session
        .exec(&ExecRequest {
            stdin: true,
            ..request(&["sh", "-c", "tr a-z A-Z"])
        })
        .expect("exec");
    process
        .stdin
        .take()
        .expect("stdin asked for")
        .write_all(b"hello\n")
        .expect("write stdin");
    let (out, _, exit) = run(process);
    assert_eq!(out, "HELLO\n");
    assert_eq!(exit, ExecExit::Exited { code: 0 });
    assert!(cell.destroy().expect("destroy").residue_free());
}

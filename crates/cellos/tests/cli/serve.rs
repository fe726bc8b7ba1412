//! A real `cellos serve` process, driven through the `cellos` client commands: session cells
//! created, exec'd into, copied to and from, paused, listed and destroyed over the Unix
//! socket and over TLS on loopback, and a server killed with SIGKILL whose cells the next
//! server reclaims. Containment is asserted from inside the cell, cleanup on the host.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::support::{processes_of, stderr, stdout, unique_id, Home};

/// How long a server may take to answer after it was started, or to exit after SIGTERM.
const SERVER_DEADLINE: Duration = Duration::from_secs(60);

/// A `cellos serve` of a test's home, stopped with SIGTERM (and checked) when dropped.
struct Served {
    child: Child,
    socket: PathBuf,
    /// Where its stderr goes.
    log: PathBuf,
    stopped: bool,
}

/// TCP with TLS and a bearer token, besides the Unix socket.
struct Tls {
    port: u16,
    cert: PathBuf,
    key: PathBuf,
    token_file: PathBuf,
}

impl Tls {
    /// A self-signed certificate for 127.0.0.1, a token and a free loopback port, in `home`.
    fn new(home: &Home) -> Self {
        let certified = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
        ])
        .expect("generate a certificate");
        let cert = home.path().join("cert.pem");
        let key = home.path().join("key.pem");
        std::fs::write(&cert, certified.cert.pem()).expect("write cert");
        std::fs::write(&key, certified.key_pair.serialize_pem()).expect("write key");
        let token_file = home.path().join("token");
        std::fs::write(
            &token_file,
            format!("test-token-{}-0123456789abcdef\n", unique_id("t")),
        )
        .expect("write token");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Self {
            port,
            cert,
            key,
            token_file,
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

static STARTS: AtomicU32 = AtomicU32::new(0);

/// `cellos` of `home`, with no client setting of the environment leaking in.
fn cellos(home: &Home) -> Command {
    let mut cmd = home.cellos();
    for var in ["CELLOS_SERVER", "CELLOS_TOKEN", "CELLOS_CA_CERT"] {
        cmd.env_remove(var);
    }
    cmd
}

impl Served {
    fn start(home: &Home) -> Self {
        Self::start_with(home, None, &[])
    }

    /// Start `cellos --home HOME serve [ARGS]` and wait until it answers `/healthz` on its
    /// socket.
    fn start_with(home: &Home, tls: Option<&Tls>, args: &[&str]) -> Self {
        let log = home.path().join(format!(
            "serve-{}.log",
            STARTS.fetch_add(1, Ordering::Relaxed)
        ));
        let mut cmd = cellos(home);
        cmd.arg("--home").arg(home.path()).arg("serve");
        if let Some(tls) = tls {
            cmd.arg("--listen")
                .arg(format!("tcp:127.0.0.1:{}", tls.port))
                .arg("--tls-cert")
                .arg(&tls.cert)
                .arg("--tls-key")
                .arg(&tls.key)
                .arg("--token-file")
                .arg(&tls.token_file);
        }
        cmd.args(args);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("server log"))
            .spawn()
            .expect("start cellos serve");
        let mut served = Self {
            child,
            socket: home.path().join("cellos.sock"),
            log,
            stopped: false,
        };
        served.wait_ready();
        served
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + SERVER_DEADLINE;
        loop {
            if healthy(&self.socket) {
                return;
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.stopped = true;
                panic!("cellos serve exited ({status}): {}", self.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "cellos serve did not answer in {SERVER_DEADLINE:?}: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill {pid}");
    }

    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + SERVER_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.stopped = true;
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                self.stopped = true;
                panic!("cellos serve did not exit in {SERVER_DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM: the server must destroy its cells, remove its socket and exit 0.
    fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.signal(libc::SIGTERM);
        let status = self.wait();
        assert_eq!(
            status.code(),
            Some(0),
            "cellos serve ended with {status} at SIGTERM: {}",
            self.stderr()
        );
        assert!(
            !self.socket.exists(),
            "the socket {} is still there",
            self.socket.display()
        );
    }

    /// SIGKILL: the server dies with its cells' records and cgroups still on the host.
    fn crash(&mut self) {
        self.signal(libc::SIGKILL);
        let status = self.wait();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // A failing test: stop the server, but do not panic again over how it went.
            if !self.stopped {
                self.signal(libc::SIGTERM);
                let _ = self.wait();
            }
            return;
        }
        self.stop();
    }
}

/// Whether a server answers `GET /healthz` with 200 on `socket`.
fn healthy(socket: &Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: cellos\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

fn run(home: &Home, args: &[&str]) -> Output {
    cellos(home).args(args).output().expect("run cellos")
}

/// Run `cellos ARGS` and require exit 0; its stdout.
fn ok(home: &Home, args: &[&str]) -> String {
    let out = run(home, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "cellos {args:?}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// A session cell's spec (no `run`): a workspace at /work and a pids limit.
fn session_spec(home: &Home, prefix: &str) -> (String, PathBuf) {
    let id = unique_id(prefix);
    let spec = home.spec(
        &id,
        "  filesystem:\n    workspace:\n      target: /work\n  limits:\n    pidsMax: 256\n",
    );
    (id, spec)
}

/// `cellos create` of a fresh session cell; its id, as printed.
fn create(home: &Home, prefix: &str) -> String {
    let (id, spec) = session_spec(home, prefix);
    let printed = ok(home, &["create", spec.to_str().expect("utf-8 path")]);
    assert_eq!(printed, format!("{id}\n"));
    id
}

/// `cellos rm`: prints the id, exits 0 (nothing left behind).
fn rm(home: &Home, id: &str) {
    assert_eq!(ok(home, &["rm", id]), format!("{id}\n"));
}

/// Traces of `cell` on the host: any cgroup directory named for it under any hierarchy, any
/// run record (or other entry) of it under the home's `run/`, any process in its cgroups.
fn host_traces(home: &Home, cell: &str) -> Vec<String> {
    let mut found: Vec<String> = processes_of(cell)
        .into_iter()
        .filter(|pid| !orphaned_zombie(pid))
        .map(|pid| format!("process {pid}"))
        .collect();
    let root = Path::new("/sys/fs/cgroup");
    let mut dirs = vec![root.join("cellos").join(cell)];
    for hierarchy in std::fs::read_dir(root).into_iter().flatten().flatten() {
        dirs.push(hierarchy.path().join("cellos").join(cell));
    }
    for dir in dirs {
        if dir.exists() {
            found.push(format!("cgroup {}", dir.display()));
        }
    }
    for entry in std::fs::read_dir(home.path().join("run"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == cell || name.starts_with(&format!("{cell}.")) {
            found.push(format!("run record {}", entry.path().display()));
        }
    }
    found
}

/// A dead process waiting for the host's init to reap it (what a SIGKILLed server's direct
/// children become): it holds nothing but its pid, and reaping it is not CellOS's to do.
fn orphaned_zombie(pid: &str) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    field("State:").starts_with('Z') && field("PPid:") == "1"
}

fn assert_verified(home: &Home) {
    let out = run(home, &["verify"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "cellos verify: {}{}",
        stdout(&out),
        stderr(&out)
    );
}

/// Bytes with every value, in an order that is not a plain cycle.
fn binary_payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 7) ^ (i >> 8)) as u8).collect()
}

/// The command lines of every process the cell shows, one per line (args space-separated).
const LIST_PROCESSES: &str =
    "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < \"$f\"; echo; done 2>/dev/null";

#[test]
fn a_session_cell_over_the_unix_socket_runs_copies_and_leaves_nothing() {
    let home = Home::new();
    let mut server = Served::start(&home);
    let id = create(&home, "srv-unix");

    let out = run(
        &home,
        &[
            "exec",
            &id,
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stdout(&out), "out\n");
    assert_eq!(stderr(&out), "err\n");
    // The server kept that output: the first exec of a cell is e1.
    let out = run(&home, &["logs", &id, "--exec", "e1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        (stdout(&out).as_str(), stderr(&out).as_str()),
        ("out\n", "err\n")
    );

    let payload = binary_payload(300 * 1024);
    assert!((0..=255u8).all(|b| payload.contains(&b)));
    let local = home.path().join("payload.bin");
    std::fs::write(&local, &payload).expect("write payload");
    let into_cell = format!("{id}:/work/f");
    ok(&home, &["cp", local.to_str().expect("utf-8"), &into_cell]);
    // The cell's own processes see what was copied in, byte for byte.
    let out = run(&home, &["exec", &id, "--", "cat", "/work/f"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        out.stdout == payload,
        "cat in the cell differs from the copy"
    );
    let out = run(&home, &["cp", &into_cell, "-"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(out.stdout.len(), payload.len());
    assert!(
        out.stdout == payload,
        "cp back differs from what was copied"
    );

    rm(&home, &id);
    server.stop();
    assert_verified(&home);
    assert_eq!(host_traces(&home, &id), Vec::<String>::new());
}

#[test]
fn sigterm_right_after_the_server_answers_still_shuts_it_down() {
    // The window between answering and waiting for the signal is short: try it many times.
    for _ in 0..50 {
        let home = Home::new();
        Served::start(&home).stop();
    }
}

#[test]
fn an_exec_timeout_exits_124_and_kills_the_whole_tree() {
    let home = Home::new();
    let _server = Served::start(&home);
    let id = create(&home, "srv-timeout");

    let started = Instant::now();
    let out = run(
        &home,
        &[
            "exec",
            "--timeout-ms",
            "300",
            &id,
            "--",
            "sh",
            "-c",
            "sleep 100 & sleep 100",
        ],
    );
    assert_eq!(out.status.code(), Some(124), "{}", stderr(&out));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(stderr(&out).contains("timed out"), "{}", stderr(&out));

    let listing = ok(&home, &["exec", &id, "--", "sh", "-c", LIST_PROCESSES]);
    // The listing sees the cell's processes (at least the shell listing them)...
    assert!(
        listing.lines().any(|l| l.starts_with("sh -c ")),
        "{listing}"
    );
    // ...and none of the timed-out exec's.
    let left: Vec<&str> = listing
        .lines()
        .filter(|l| l.starts_with("sleep 100"))
        .collect();
    assert!(left.is_empty(), "left in the cell: {left:?}\n{listing}");
    rm(&home, &id);
}

#[test]
fn over_tls_the_token_and_the_ca_are_required() {
    let home = Home::new();
    let tls = Tls::new(&home);
    let _server = Served::start_with(&home, Some(&tls), &[]);
    let url = tls.url();
    let cert = tls.cert.to_str().expect("utf-8");
    let token = tls.token_file.to_str().expect("utf-8");
    let remote = |args: &[&str]| {
        let mut all = vec![
            "--server",
            url.as_str(),
            "--ca-cert",
            cert,
            "--token-file",
            token,
        ];
        all.extend_from_slice(args);
        run(&home, &all)
    };
    let (id, spec) = session_spec(&home, "srv-tls");
    let out = remote(&["create", spec.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{id}\n"));
    let out = remote(&["exec", &id, "--", "sh", "-c", "echo over tls; exit 5"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert_eq!(stdout(&out), "over tls\n");
    // The WebSocket route goes through TLS and the token too.
    let mut child = cellos(&home)
        .args(["--server", &url, "--ca-cert", cert, "--token-file", token])
        .args(["exec", "-i", &id, "--", "wc", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"12345")
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "5");

    let wrong = home.path().join("wrong-token");
    std::fs::write(&wrong, "not-the-token\n").expect("write");
    let out = run(
        &home,
        &[
            "--server",
            &url,
            "--ca-cert",
            cert,
            "--token-file",
            wrong.to_str().expect("utf-8"),
            "exec",
            &id,
            "--",
            "true",
        ],
    );
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    let lower = err.to_lowercase();
    assert!(
        lower.contains("token") || lower.contains("unauthorized"),
        "{err}"
    );

    let out = run(
        &home,
        &[
            "--server",
            &url,
            "--token-file",
            token,
            "exec",
            &id,
            "--",
            "true",
        ],
    );
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("certificate"), "{err}");
    assert!(err.contains("--ca-cert"), "{err}");

    let out = remote(&["rm", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{id}\n"));
    assert_eq!(host_traces(&home, &id), Vec::<String>::new());
}

#[test]
fn interactive_exec_pipes_stdin_into_the_cell() {
    let home = Home::new();
    let _server = Served::start(&home);
    let id = create(&home, "srv-stdin");
    let mut child = cellos(&home)
        .args(["exec", "-i", &id, "--", "tr", "a-z", "A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"hello\n")
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "HELLO\n");
    rm(&home, &id);
}

#[test]
fn tty_exec_gets_a_pty_of_the_terminals_size() {
    let home = Home::new();
    let _server = Served::start(&home);
    let id = create(&home, "srv-tty");
    let size = nix::pty::Winsize {
        ws_row: 30,
        ws_col: 100,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
    let terminal = std::fs::File::from(pty.slave);
    let mut child = cellos(&home)
        .args(["exec", "-t", &id, "--", "sh", "-c", "tty; stty size"])
        .stdin(terminal.try_clone().expect("dup"))
        .stdout(terminal.try_clone().expect("dup"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(terminal);
    // Read the terminal until the client (its last holder) closes it: then the master
    // reads EIO.
    let mut master = std::fs::File::from(pty.master);
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = master.read(&mut buf) {
            seen.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&seen).into_owned()
    });
    let status = child.wait().expect("wait");
    let mut err = String::new();
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err);
    assert_eq!(status.code(), Some(0), "{err}");
    let screen = reader.join().expect("reader");
    let lines: Vec<&str> = screen.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert!(
        lines.iter().any(|l| l.starts_with("/dev/pts/")),
        "{screen:?}"
    );
    assert!(lines.contains(&"30 100"), "{screen:?}");
    rm(&home, &id);
}

#[test]
fn a_terminal_resize_reaches_the_cells_pty() {
    use nix::sys::termios::{tcgetattr, LocalFlags};
    let home = Home::new();
    let _server = Served::start(&home);
    let id = create(&home, "srv-winch");
    let winsize = |rows, cols| nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&winsize(30, 100)), None).expect("openpty");
    let terminal = std::fs::File::from(pty.slave);
    let mut child = cellos(&home)
        .args(["exec", "-it", &id, "--", "sh", "-c"])
        .arg("while read line; do [ \"$line\" = q ] && exit 7; stty size; done")
        .stdin(terminal.try_clone().expect("dup"))
        .stdout(terminal.try_clone().expect("dup"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(10);
    while tcgetattr(&terminal)
        .expect("tcgetattr")
        .local_flags
        .contains(LocalFlags::ICANON)
    {
        assert!(
            Instant::now() < deadline,
            "the client never made the terminal raw"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let master = std::fs::File::from(pty.master);
    let mut keys = master.try_clone().expect("dup");
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut master = master;
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = master.read(&mut buf) {
            if tx.send(buf[..n].to_vec()).is_err() {
                return;
            }
        }
    });
    let mut screen = String::new();
    // Press Enter until the cell reports `want` (a resize travels apart from the keys).
    let mut until_size = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !screen.lines().any(|l| l.trim_end_matches('\r') == want) {
            assert!(Instant::now() < deadline, "never saw {want:?}: {screen:?}");
            keys.write_all(b"\r").expect("type");
            while let Ok(bytes) = rx.recv_timeout(Duration::from_millis(100)) {
                screen.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
        screen.clear();
    };
    until_size("30 100");
    let size = winsize(40, 120);
    // TIOCSWINSZ on the terminal, then the SIGWINCH a terminal's foreground job would get.
    assert_eq!(
        unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&terminal),
                libc::TIOCSWINSZ,
                &size,
            )
        },
        0
    );
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    assert_eq!(unsafe { libc::kill(pid, libc::SIGWINCH) }, 0);
    until_size("40 120");
    keys.write_all(b"q\r").expect("type");
    let status = child.wait().expect("wait");
    let mut err = String::new();
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err);
    assert_eq!(status.code(), Some(7), "{err}");
    rm(&home, &id);
}

/// The counter file, as `cellos cp` reads it out of the cell.
fn counter(home: &Home, id: &str) -> String {
    let out = run(home, &["cp", &format!("{id}:/work/n"), "-"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out).trim().to_owned()
}

/// Poll the counter until `done` holds of it, within a few seconds.
fn counter_until(home: &Home, id: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let value = counter(home, id);
        if done(&value) {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: counter at {value:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn pause_stops_the_cell_and_resume_restarts_it() {
    let home = Home::new();
    let _server = Served::start(&home);
    let id = create(&home, "srv-pause");
    ok(
        &home,
        &[
            "exec",
            &id,
            "--",
            "sh",
            "-c",
            "(i=0; while :; do i=$((i+1)); echo $i > /work/n.tmp; mv /work/n.tmp /work/n; \
             sleep 0.02; done) </dev/null >/dev/null 2>&1 &",
        ],
    );
    // Wait for the counter's first write (until then, reading it fails: no such file).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !run(&home, &["cp", &format!("{id}:/work/n"), "-"])
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "the counter never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let first = counter_until(&home, &id, "the counter never started", |v| {
        v.parse::<u64>().is_ok_and(|n| n > 0)
    });
    counter_until(&home, &id, "the counter does not move", |v| v != first);

    assert_eq!(
        ok(&home, &["pause", &id]),
        format!("paused {id} (server)\n")
    );
    let a = counter(&home, &id);
    std::thread::sleep(Duration::from_millis(500));
    let b = counter(&home, &id);
    assert_eq!(a, b, "the counter moved while paused");

    assert_eq!(
        ok(&home, &["resume", &id]),
        format!("resumed {id} (server)\n")
    );
    counter_until(&home, &id, "the counter did not move after resume", |v| {
        v != b
    });
    rm(&home, &id);
}

#[test]
fn cells_of_a_killed_server_are_reclaimed_by_the_next_one() {
    let home = Home::new();
    let mut first = Served::start(&home);
    let ids: Vec<String> = (0..5).map(|_| create(&home, "srv-crash")).collect();
    for id in &ids {
        // Something still runs in each cell when the server dies.
        let script = "sleep 1000 </dev/null >/dev/null 2>&1 & echo hi";
        assert_eq!(ok(&home, &["exec", id, "--", "sh", "-c", script]), "hi\n");
        assert!(
            !host_traces(&home, id).is_empty(),
            "a live cell has a record and cgroups"
        );
    }
    first.crash();

    let mut second = Served::start(&home);
    let said = second.stderr();
    assert!(
        said.contains("reclaimed 5 cell(s) a previous server left"),
        "{said}"
    );
    for id in &ids {
        assert_eq!(host_traces(&home, id), Vec::<String>::new(), "cell {id}");
    }
    second.stop();

    let projection: serde_json::Value =
        serde_json::from_str(&ok(&home, &["project"])).expect("projection JSON");
    for id in &ids {
        assert_eq!(
            projection[id.as_str()]["phase"],
            "destroyed",
            "cell {id}: {}",
            projection[id.as_str()]
        );
    }
    assert_verified(&home);
}

#[test]
fn cells_kept_at_shutdown_are_reclaimed_by_the_next_server() {
    let home = Home::new();
    let mut first = Served::start_with(&home, None, &["--on-shutdown", "keep"]);
    let ids: Vec<String> = (0..2).map(|_| create(&home, "srv-keep")).collect();
    for id in &ids {
        assert_eq!(ok(&home, &["exec", id, "--", "echo", "hi"]), "hi\n");
    }
    first.stop();
    // Kept: the records are there for the next server to find.
    for id in &ids {
        let record = home.path().join("run").join(format!("{id}.json"));
        assert!(
            record.exists(),
            "cell {id} was not kept for the next server"
        );
    }

    let mut second = Served::start(&home);
    let said = second.stderr();
    assert!(
        said.contains("reclaimed 2 cell(s) a previous server left"),
        "{said}"
    );
    second.stop();
    let projection: serde_json::Value =
        serde_json::from_str(&ok(&home, &["project"])).expect("projection JSON");
    for id in &ids {
        assert_eq!(host_traces(&home, id), Vec::<String>::new(), "cell {id}");
        assert_eq!(
            projection[id.as_str()]["phase"],
            "destroyed",
            "cell {id}: {}",
            projection[id.as_str()]
        );
    }
    assert_verified(&home);
}

#[test]
fn ps_lists_the_servers_cells_with_their_state() {
    let home = Home::new();
    let mut server = Served::start(&home);
    let running = create(&home, "srv-ps");
    let paused = create(&home, "srv-ps");
    let destroyed = create(&home, "srv-ps");
    ok(&home, &["pause", &paused]);
    rm(&home, &destroyed);

    let listing = ok(&home, &["ps"]);
    // The server's table comes after the local one (which lists the same cells' records).
    let (_, served) = listing
        .split_once("cells of the server at")
        .unwrap_or_else(|| panic!("no server table: {listing}"));
    let state_of = |id: &str| {
        let row = served
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .unwrap_or_else(|| panic!("no row for {id}: {listing}"));
        row.split_whitespace().nth(1).unwrap_or_default().to_owned()
    };
    assert_eq!(state_of(&running), "running");
    assert_eq!(state_of(&paused), "paused");
    assert_eq!(state_of(&destroyed), "destroyed");

    // SIGTERM destroys what is left, the paused cell included.
    server.stop();
    let projection: serde_json::Value =
        serde_json::from_str(&ok(&home, &["project"])).expect("projection JSON");
    for id in [&running, &paused, &destroyed] {
        assert_eq!(host_traces(&home, id), Vec::<String>::new(), "cell {id}");
        assert_eq!(projection[id.as_str()]["phase"], "destroyed", "cell {id}");
    }
    assert_verified(&home);
}

/// Poll the cell's process list until `done` holds of it.
fn processes_until(home: &Home, id: &str, what: &str, done: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listing = ok(home, &["exec", id, "--", "sh", "-c", LIST_PROCESSES]);
        if done(&listing) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}:\n{listing}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_command_dies_with_its_interrupted_client() {
    let home = Home::new();
    let _server = Served::start(&home);
    let id = create(&home, "srv-intr");
    for flags in [&[][..], &["-i"][..]] {
        let mut client = cellos(&home)
            .arg("exec")
            .args(flags)
            .args([&id, "--", "sleep", "97"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let running = |l: &str| l.lines().any(|l| l.starts_with("sleep 97"));
        processes_until(&home, &id, "the command never started", running);
        let pid = libc::pid_t::try_from(client.id()).expect("pid");
        assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
        let status = client.wait().expect("wait");
        assert!(!status.success(), "{flags:?}: {status}");
        processes_until(&home, &id, "the command outlived its client", |l| {
            !running(l)
        });
    }
    rm(&home, &id);
}

#[test]
fn tokens_from_the_store_authenticate_their_subject_and_stop_at_revocation_or_expiry() {
    let home = Home::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let listen = format!("tcp:127.0.0.1:{port}");
    // No --token-file: the store is the only way in over TCP.
    let _server = Served::start_with(&home, None, &["--listen", &listen]);
    let url = format!("http://127.0.0.1:{port}");
    let token_of = |args: &[&str]| {
        let out = run(&home, &[&["token", "create"][..], args].concat());
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let token = stdout(&out).trim().to_owned();
        let file = home.path().join(format!("token-{}", &token[7..15]));
        std::fs::write(&file, &token).expect("write token");
        (token[7..15].to_owned(), file)
    };
    let (id_a, token_a) = token_of(&["--subject", "team-a"]);
    let (_, expired) = token_of(&["--subject", "team-b", "--expires", "2020-01-01T00:00:00Z"]);
    let with = |token: &Path, args: &[&str]| {
        let file = token.to_str().expect("utf-8");
        run(
            &home,
            &[&["--server", &url, "--token-file", file][..], args].concat(),
        )
    };

    let (cell, spec) = session_spec(&home, "srv-token");
    let out = with(&token_a, &["create", spec.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let all = crate::support::events(&home);
    let created = crate::support::events_of(&all, &cell)
        .into_iter()
        .find(|e| e["cellosactor"].is_string())
        .expect("an event of the cell with its actor");
    assert_eq!(created["cellosactor"], "team-a", "the token's subject acts");

    let out = with(&expired, &["exec", &cell, "--", "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("expired"), "{}", stderr(&out));

    assert_eq!(
        ok(&home, &["token", "revoke", &id_a]).trim(),
        format!("revoked {id_a} (team-a)")
    );
    let out = with(&token_a, &["exec", &cell, "--", "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("revoked"), "{}", stderr(&out));
    rm(&home, &cell);
}

#[test]
fn a_session_cell_that_hits_its_pids_limit_records_it_after_the_exec() {
    let home = Home::new();
    let _server = Served::start(&home);
    let id = unique_id("srv-pids");
    let spec = home.spec(&id, "  limits:\n    pidsMax: 16\n");
    assert_eq!(
        ok(&home, &["create", spec.to_str().expect("utf-8")]),
        format!("{id}\n")
    );
    // More children than the limit allows: forks fail inside the cell (EAGAIN).
    let out = run(
        &home,
        &[
            "exec",
            "--timeout-ms",
            "5000",
            &id,
            "--",
            "sh",
            "-c",
            "for i in $(seq 40); do sleep 1 & done 2>/dev/null; wait",
        ],
    );
    assert!(out.status.code().is_some(), "{}", stderr(&out));
    let all = crate::support::events(&home);
    let hit = crate::support::events_of(&all, &id)
        .into_iter()
        .find(|e| crate::support::short_type(e) == "limit.v1.hit")
        .expect("limit.v1.hit for the session cell");
    assert_eq!(hit["data"]["limit"], "pidsMax", "{hit}");
    assert!(hit["data"]["count"].as_u64().unwrap_or(0) > 0, "{hit}");
    assert!(
        hit["data"]["mechanism"]
            .as_str()
            .unwrap_or("")
            .contains("pids.events max="),
        "{hit}"
    );
    rm(&home, &id);
}

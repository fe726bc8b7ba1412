//! The cell's init as `cellos run` starts it: run in the supervisor's clone, without exec (the
//! supervisor is single-threaded when it clones). Its memory is a copy of the supervisor's,
//! so these tests prove from inside the cell that none of it can be read, and that init
//! still forwards signals and reaps like an exec'd one.

use std::io::{BufRead, BufReader, Lines};
use std::path::Path;
use std::process::{Child, ChildStdout, Stdio};
use std::time::{Duration, Instant};

use crate::support::{processes_of, residue_of, sh, stderr, stdout, unique_id, Home};

#[test]
fn init_in_the_clone_shows_the_cell_nothing_of_the_supervisor() {
    let home = Home::new();
    // With the host key made beforehand, `cellos run` holds no key when it clones init (the
    // very first run, which creates the key, execs init instead).
    assert!(home.run(&["keygen"]).status.success());
    let id = unique_id("clone-init");
    let script = "tr '\\0' '\\n' < /proc/1/cmdline | grep -v '^$'; echo ---; cat /proc/1/comm; \
                  for f in environ mem maps; do \
                    if head -c 64 /proc/1/$f >/dev/null 2>&1; then echo $f readable; \
                    else echo $f denied; fi; done; \
                  if ls /proc/1/fd >/dev/null 2>&1; then echo fd readable; else echo fd denied; fi; \
                  grep -c CELLOS_CANARY /proc/*/environ 2>/dev/null | grep -vc ':0$' || true";
    let spec = home.spec(&id, &sh(script));
    let out = home
        .cellos()
        // The supervisor's environment holds an undeclared secret: the cell must not see it.
        .env("CELLOS_SECRET_CANARY", "CELLOS_CANARY-never-in-the-cell")
        .env("CELLOS_CANARY_PLAIN", "CELLOS_CANARY")
        .args(["run", spec.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let (cmdline, rest) = text.split_once("---\n").expect(&text);
    // Exec'd, init's command line would also hold its argument (`__cell-init`); run in the
    // clone it names only itself, and nothing of `cellos run <host path of the spec>`.
    assert_eq!(cmdline.trim(), "cellos-cell-init", "{text}");
    assert!(!text.contains(home.path().to_str().unwrap()), "{text}");
    let lines: Vec<&str> = rest.lines().collect();
    assert_eq!(
        lines,
        [
            "cellos-cell-ini",
            "environ denied",
            "mem denied",
            "maps denied",
            "fd denied",
            "0"
        ],
        "{text}"
    );
    assert!(residue_of(&home, &id).is_empty());
}

/// Start `cellos run spec` and wait for the workload's first line, `ready`; the supervisor and
/// the rest of the workload's output.
fn run_until_ready(home: &Home, spec: &Path) -> (Child, Lines<BufReader<ChildStdout>>) {
    let mut child = home
        .cellos()
        .args(["run", spec.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    (child, lines)
}

#[test]
fn sigterm_to_cellos_reaches_the_workload_through_init() {
    let home = Home::new();
    assert!(home.run(&["keygen"]).status.success());
    let id = unique_id("sigterm");
    let script = "trap 'echo got TERM; exit 3' TERM; echo ready; while :; do sleep 0.05; done";
    let spec = home.spec(&id, &sh(script));
    let (mut child, mut lines) = run_until_ready(&home, &spec);
    let started = Instant::now();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    assert_eq!(lines.next().unwrap().unwrap(), "got TERM");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3), "the workload's own exit status");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(residue_of(&home, &id).is_empty());
}

#[test]
fn cellos_kill_reaches_the_workload_through_init() {
    let home = Home::new();
    assert!(home.run(&["keygen"]).status.success());
    let id = unique_id("cellos-kill");
    let script = "trap 'echo got USR1; exit 4' USR1; echo ready; while :; do sleep 0.05; done";
    let spec = home.spec(&id, &sh(script));
    let (mut child, mut lines) = run_until_ready(&home, &spec);
    let kill = home.run(&["kill", "--signal", "USR1", &id]);
    assert!(kill.status.success(), "{}", stderr(&kill));
    assert_eq!(lines.next().unwrap().unwrap(), "got USR1");
    assert_eq!(child.wait().unwrap().code(), Some(4));
    // Once the cell is gone, its id names nothing to signal.
    let again = home.run(&["kill", "--signal", "USR1", &id]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains(&id), "{}", stderr(&again));
    assert!(residue_of(&home, &id).is_empty());
}

/// Whether `needle` occurs in any readable mapping of process `pid` (read as host root).
fn memory_contains(pid: &str, needle: &[u8]) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (range, perms) = (fields.next().unwrap(), fields.next().unwrap());
        if !perms.starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
            continue;
        }
        let (start, end) = range.split_once('-').unwrap();
        let start = u64::from_str_radix(start, 16).unwrap();
        let end = u64::from_str_radix(end, 16).unwrap();
        let mut buf = vec![0u8; (end - start) as usize];
        if mem.seek(SeekFrom::Start(start)).is_err() || mem.read_exact(&mut buf).is_err() {
            continue;
        }
        if buf.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
    }
    false
}

#[test]
fn the_cells_init_holds_no_signing_key_while_the_supervisor_does() {
    let home = Home::new();
    // Create the host key first, from another process, so the supervisor below starts with a
    // key it has never held.
    assert!(home.run(&["keygen"]).status.success());
    let hex_seed = std::fs::read_to_string(home.path().join("keys/ed25519.key")).unwrap();
    let hex_seed = hex_seed.trim();
    let seed: Vec<u8> = (0..hex_seed.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex_seed[i..i + 2], 16).unwrap())
        .collect();
    assert_eq!(seed.len(), 32);

    let id = unique_id("keyless-init");
    let spec = home.spec(&id, &sh("echo ready; sleep 30"));
    let (mut child, _output) = run_until_ready(&home, &spec);
    let init = processes_of(&id)
        .into_iter()
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default()
                == "cellos-cell-ini\n"
        })
        .expect("the cell's init");
    let supervisor = child.id().to_string();

    // The positive control: the search finds the key where it is (the supervisor signed the
    // cell's first events before the workload started).
    assert!(
        memory_contains(&supervisor, &seed),
        "the memory search does not find the key in the supervisor"
    );
    assert!(
        !memory_contains(&init, &seed),
        "the cell's init holds the key"
    );
    assert!(!memory_contains(&init, hex_seed.as_bytes()));

    child.kill().unwrap();
    child.wait().unwrap();
    assert!(home.run(&["gc"]).status.success());
    assert!(residue_of(&home, &id).is_empty());
}

//! Networked cells leave nothing on the host: no veth, network namespace, nftables table,
//! route, address (IPv4 or IPv6), listener, address lease or run record outlives its cell,
//! whether it was destroyed (its veth's deletion finishing in a detached process) or its
//! supervisor was killed and `cellos gc` reclaimed it.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cell::{authority, unique_id, Cells};
use crate::internet::{Internet, ALPHA};

const CELLS: usize = 100;

/// Everything networking-related the host shows, one line per item.
/// Items of a test internet ([`Internet`]): namespace `cellos-egi-N`, host veth `egiN`.
fn is_test_internet(item: &str) -> bool {
    let egi = |name: &str| {
        name.strip_prefix("egi")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    item.contains("cellos-egi-")
        || item
            .strip_prefix("link: ")
            .is_some_and(|l| egi(l.split('@').next().unwrap_or(l)))
        || item
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .any(|w| w[0] == "dev" && egi(w[1]))
}

fn host_network_state() -> BTreeSet<String> {
    let lines = |program: &str, args: &[&str], tag: &str| -> Vec<String> {
        let out = Command::new(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| format!("{tag}: {}", l.trim()))
            .collect()
    };
    let mut state = BTreeSet::new();
    // Interface names only: counters and flags change while links live.
    for link in lines("ip", &["-o", "link", "show"], "link") {
        if let Some(name) = link.split(": ").nth(2) {
            state.insert(format!("link: {name}"));
        }
    }
    state.extend(lines("ip", &["netns", "list"], "netns"));
    state.extend(lines(
        "ip",
        &["-4", "route", "show", "table", "all"],
        "route",
    ));
    state.extend(lines(
        "ip",
        &["-6", "route", "show", "table", "all"],
        "route6",
    ));
    state.extend(lines("ip", &["rule", "show"], "rule"));
    // Address and interface only: lifetimes of dynamic addresses count down.
    for l in lines("ip", &["-o", "addr", "show"], "addr") {
        let cols: Vec<&str> = l.split_whitespace().collect();
        if cols.len() > 4 {
            state.insert(format!("addr: {} dev {}", cols[4], cols[2]));
        }
    }
    state.extend(lines("nft", &["list", "tables"], "nft"));
    // Listening sockets by address (the DNS proxies bind on the host end of each veth).
    for l in lines("ss", &["-H", "-l", "-n", "-t", "-u"], "listen") {
        let cols: Vec<&str> = l.split_whitespace().collect();
        if cols.len() > 5 {
            state.insert(format!("listen: {} {}", cols[1], cols[5]));
        }
    }
    state
}

/// Run records and address leases of the cells of `home`.
fn cell_files(home: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for dir in [home.join("run"), home.join("run/net")] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                out.insert(format!("file: {}", entry.path().display()));
            }
        }
    }
    out
}

/// Items present now but not in `before`, once transient ones (another process's live cell
/// on this shared host; a destroyed cell's veth whose deletion is finishing in the background)
/// had a few seconds to go away. Test internets (this one: its IPv6 link-local address arrives
/// a moment after its link is up; or another test process's) are not the cells'.
fn left_over(before: &BTreeSet<String>, home: &Path) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut now = host_network_state();
        now.extend(cell_files(home));
        let extra: Vec<String> = now
            .difference(before)
            .filter(|item| !is_test_internet(item))
            .cloned()
            .collect();
        if extra.is_empty() || Instant::now() >= deadline {
            return extra;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_hundred_networked_cells_then_kill_9_of_a_supervisor_and_gc_leave_no_network_residue() {
    let net = Internet::exclusive();
    let cells = Cells::new();
    let rules = [format!("{{ host: {ALPHA}, port: 443 }}")];
    let before = host_network_state();
    let mut ids = Vec::new();
    for _ in 0..CELLS {
        let id = unique_id("eg-many");
        let spec = cells.spec(&id, &["/bin/true"], &[], &authority(&rules, &[]));
        let out = cells.run(&net, &spec, &[]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "cell {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ids.push(id);
    }
    assert_eq!(left_over(&before, cells.path()), Vec::<String>::new());
    for id in &ids {
        let events = cells.events(id);
        events.assert_network_enforced();
        let destroyed = events
            .0
            .iter()
            .find(|e| e["type"] == "dev.cellos.events.cell.lifecycle.v1.destroyed")
            .unwrap_or_else(|| panic!("{id} has no destroyed event"));
        assert_eq!(destroyed["data"]["residue"], serde_json::json!([]), "{id}");
        assert_eq!(destroyed["data"]["terminalState"], "clean", "{id}");
    }

    let id = unique_id("eg-crash");
    let spec = cells.spec(&id, &["/bin/sleep", "60"], &[], &authority(&rules, &[]));
    let mut supervisor = cells
        .cellos()
        .arg("run")
        .arg("--quiet")
        .arg(&spec)
        .args(["--dns-upstream", &net.dns().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start cellos run");
    // Wait (bounded) until the cell's veth and host table exist.
    let deadline = Instant::now() + Duration::from_secs(20);
    let created = loop {
        let extra: Vec<String> = host_network_state()
            .difference(&before)
            .filter(|item| !is_test_internet(item))
            .cloned()
            .collect();
        let has = |prefix: &str| extra.iter().any(|i| i.starts_with(prefix));
        if has("link: ") && has("nft: ") {
            break extra;
        }
        assert!(
            Instant::now() < deadline,
            "the cell's network never appeared: {extra:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    supervisor.kill().expect("SIGKILL the supervisor");
    supervisor.wait().expect("reap the supervisor");

    let out = cells.cellos().arg("gc").output().expect("run cellos gc");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("reclaimed {id}")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        left_over(&before, cells.path()),
        Vec::<String>::new(),
        "created while running: {created:?}"
    );
    cells.assert_log_verifies();
}

//! Helpers shared by the integration tests.
// Each test binary uses a different subset of the helpers.
#![allow(dead_code)]

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A network namespace created for one test (`ip netns add`) and deleted when dropped.
pub struct TestNetns {
    pub name: String,
}

impl TestNetns {
    pub fn new(tag: &str) -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "cellos-dp-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        run("ip", &["-n", &name, "link", "set", "lo", "up"]);
        Self { name }
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

/// Runs a command and panics with its stderr when it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `f` on a helper thread that joined the namespace at `path`; the test's own threads
/// stay where they are.
pub fn in_netns<T: Send>(path: &str, f: impl FnOnce() -> T + Send) -> T {
    let ns = std::fs::File::open(path).unwrap();
    std::thread::scope(|s| {
        s.spawn(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    })
}

/// Gives the namespace a route to everywhere through a veth pair whose both ends stay inside
/// it, so packets reach the output hook and never leave the namespace.
///
/// IPv6 is disabled on the pair so that neighbour discovery and MLD chatter of a fresh link
/// does not add to the counters the tests read.
pub fn add_default_route(ns: &TestNetns) {
    for key in ["all", "default"] {
        let setting = format!("net.ipv6.conf.{key}.disable_ipv6=1");
        run(
            "ip",
            &["netns", "exec", &ns.name, "sysctl", "-qw", &setting],
        );
    }
    run(
        "ip",
        &[
            "-n", &ns.name, "link", "add", "v0", "type", "veth", "peer", "name", "v1",
        ],
    );
    run(
        "ip",
        &["-n", &ns.name, "addr", "add", "192.0.2.2/24", "dev", "v0"],
    );
    run("ip", &["-n", &ns.name, "link", "set", "v0", "up"]);
    run("ip", &["-n", &ns.name, "link", "set", "v1", "up"]);
    run(
        "ip",
        &["-n", &ns.name, "route", "add", "default", "dev", "v0"],
    );
}

/// The egress plan of a cell whose `spec.authority` is `authority` (YAML, indented four
/// spaces), with a fixed host: two host addresses and NFLOG group 7.
pub fn plan(
    id: &str,
    authority: &str,
    gate: Option<u16>,
    dns_server: &str,
) -> cellos_dataplane::EgressPlan {
    let text = format!(
        "apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec:\n  id: {id}\n  run: {{ argv: [/bin/true] }}\n  authority:\n{authority}"
    );
    let spec = cellos_core::spec::parse_execution_cell(&text).unwrap().spec;
    cellos_dataplane::EgressPlan::from_spec(
        &spec,
        cellos_dataplane::PlanInputs {
            dns_server: dns_server.parse().unwrap(),
            l7_gate_port: gate,
            host_addresses: vec![
                "198.51.100.7".parse().unwrap(),
                "2001:db8:ffff::1".parse().unwrap(),
            ],
            log_group: 7,
        },
    )
    .unwrap()
}

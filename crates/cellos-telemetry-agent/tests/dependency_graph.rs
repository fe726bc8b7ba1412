//! The agent holds no keys, so no signing crate may be in what it links. This walks the
//! dependency graph cargo resolves for the workspace (`cargo metadata`), following normal
//! dependencies only (dev- and build-dependencies are never linked into the binary), and
//! asserts that none of the signing, MAC or host-side crates is reachable from the agent.
//!
//! The graph is filtered to the platform this test is built for, the same one the agent is
//! built for: an unfiltered resolve names crates for every platform (Android, Windows, wasm),
//! which a fresh cargo cache never downloaded. Cargo fetches anything the filtered graph still
//! lacks from the registry instead of failing offline, so the test does not depend on what a
//! developer's cache happens to hold.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

use serde_json::Value;

/// Crates that sign, MAC or hash for integrity, and the host-side crates that bring them in.
const FORBIDDEN: &[&str] = &[
    "cellos-core",
    "cellos-telemetry",
    "ed25519-dalek",
    "ed25519",
    "curve25519-dalek",
    "signature",
    "hmac",
    "sha2",
    "digest",
];

/// The Linux target triple this test (and so the agent) is compiled for.
fn target_triple() -> String {
    let libc = if cfg!(target_env = "musl") {
        "musl"
    } else {
        "gnu"
    };
    format!("{}-unknown-linux-{libc}", std::env::consts::ARCH)
}

/// The resolved workspace graph: package id → name, and package id → its normal dependencies.
struct Graph {
    names: HashMap<String, String>,
    normal_deps: HashMap<String, Vec<String>>,
}

impl Graph {
    fn load() -> Graph {
        let out = Command::new(env!("CARGO"))
            .args([
                "metadata",
                "--format-version",
                "1",
                "--locked",
                "--filter-platform",
            ])
            .arg(target_triple())
            .arg("--manifest-path")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
            .output()
            .expect("run cargo metadata");
        assert!(
            out.status.success(),
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata is JSON");
        let names = meta["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .map(|p| {
                (
                    p["id"].as_str().expect("package id").to_owned(),
                    p["name"].as_str().expect("package name").to_owned(),
                )
            })
            .collect();
        let normal_deps = meta["resolve"]["nodes"]
            .as_array()
            .expect("resolve.nodes (cargo metadata without --no-deps)")
            .iter()
            .map(|node| {
                let deps = node["deps"]
                    .as_array()
                    .expect("node deps")
                    .iter()
                    .filter(|dep| {
                        dep["dep_kinds"]
                            .as_array()
                            .expect("dep_kinds")
                            .iter()
                            .any(|k| k["kind"].is_null())
                    })
                    .map(|dep| dep["pkg"].as_str().expect("dep pkg").to_owned())
                    .collect();
                (node["id"].as_str().expect("node id").to_owned(), deps)
            })
            .collect();
        Graph { names, normal_deps }
    }

    /// Names of every package reachable from workspace package `root` over normal dependencies,
    /// `root` excluded.
    fn reachable_from(&self, root: &str) -> BTreeSet<String> {
        let start = self
            .names
            .iter()
            .find(|(_, name)| name.as_str() == root)
            .map(|(id, _)| id.clone())
            .unwrap_or_else(|| panic!("{root} is not in the workspace graph"));
        let mut seen = BTreeSet::from([start.clone()]);
        let mut todo = vec![start.clone()];
        while let Some(id) = todo.pop() {
            for dep in self.normal_deps.get(&id).into_iter().flatten() {
                if seen.insert(dep.clone()) {
                    todo.push(dep.clone());
                }
            }
        }
        seen.remove(&start);
        seen.iter().map(|id| self.names[id].clone()).collect()
    }
}

fn forbidden_in(reachable: &BTreeSet<String>) -> Vec<&'static str> {
    FORBIDDEN
        .iter()
        .copied()
        .filter(|name| reachable.contains(*name))
        .collect()
}

#[test]
fn no_signing_or_host_crate_is_reachable_from_the_agent() {
    let graph = Graph::load();
    let reachable = graph.reachable_from("cellos-telemetry-agent");
    assert!(
        reachable.contains("cellos-telemetry-wire"),
        "the walk must see the agent's own dependencies: {reachable:?}"
    );
    assert_eq!(
        forbidden_in(&reachable),
        Vec::<&str>::new(),
        "the agent's normal dependency graph: {reachable:?}"
    );
}

/// The same walk from the host side finds the signing code, so the check above can fail.
#[test]
fn the_walk_finds_the_signing_crates_the_host_side_links() {
    let graph = Graph::load();
    let reachable = graph.reachable_from("cellos-telemetry");
    let found = forbidden_in(&reachable);
    for name in ["cellos-core", "ed25519-dalek", "hmac", "sha2"] {
        assert!(found.contains(&name), "{name} not found in {reachable:?}");
    }
}

/// Crates of an async runtime, of sockets or of host system calls: the core is the pure domain
/// (ARCHITECTURE.md, layer L1), so none of them may be linked into it.
const IMPURE_FOR_CORE: &[&str] = &[
    "tokio",
    "mio",
    "socket2",
    "nix",
    "rustix",
    "cellos-linux",
    "cellos-adapters",
    "cellos-dataplane",
    "cellos-supervisor",
];

#[test]
fn the_core_reaches_no_runtime_socket_or_host_crate() {
    let graph = Graph::load();
    let reachable = graph.reachable_from("cellos-core");
    assert!(
        reachable.contains("ed25519-dalek"),
        "the walk must see the core's own dependencies: {reachable:?}"
    );
    let impure: Vec<&str> = IMPURE_FOR_CORE
        .iter()
        .copied()
        .filter(|name| reachable.contains(*name))
        .collect();
    assert_eq!(
        impure,
        Vec::<&str>::new(),
        "the core's normal dependency graph: {reachable:?}"
    );
}

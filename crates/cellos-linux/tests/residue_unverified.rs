//! A residue check that cannot run fails closed: its class is reported unverified (with why),
//! never "nothing left". Each source is made unusable for real: an nftables namespace that cannot be opened, a
//! procfs that is an empty directory, a sysfs that does not exist, a mount table that cannot
//! be read. Where the residue is real (a veth, a host table, a running init), the same check
//! with the host's sources finds it, so "absent" would have been a lie.

mod cell_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use cell_support::*;
use cellos_core::ports::{CellBackend, UnverifiedResidue};
use cellos_linux::backend::{LinuxBackend, LinuxBackendConfig};
use cellos_linux::netscope::pool::AddressPool;
use cellos_linux::netscope::{residue, NetRecord};
use cellos_linux::residue::{Findings, HostSources};
use serde_json::json;

fn run_ok(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A veth (addressed, so the host routes its /30), a host table and a lease named like a
/// cell's, all real; removed on drop.
struct NetResidue {
    rec: NetRecord,
    _state: tempfile::TempDir,
}

impl NetResidue {
    fn new(pool: &str) -> Self {
        let state = tempfile::tempdir().unwrap();
        let id = unique_id("unverified");
        let link = AddressPool::parse(pool).unwrap().link(0);
        let lease = state.path().join("lease");
        std::fs::write(&lease, &id).unwrap();
        let mut rec = NetRecord::new(state.path(), &id, link, lease);
        rec.netns_inode = residue::netns_inode(Path::new("/proc/self/ns/net"));
        let peer = format!("{}p", rec.veth);
        run_ok(
            "ip",
            &[
                "link", "add", &rec.veth, "type", "veth", "peer", "name", &peer,
            ],
        );
        let made = Self { rec, _state: state };
        let addr = format!("{}/30", made.rec.host_addr);
        run_ok("ip", &["addr", "add", &addr, "dev", &made.rec.veth]);
        run_ok("ip", &["link", "set", &made.rec.veth, "up"]);
        run_ok("nft", &["add", "table", "ip", &made.rec.host_table]);
        made
    }

    fn check(&self, sources: &HostSources) -> Findings {
        residue::check(&self.rec, sources)
    }
}

impl Drop for NetResidue {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.rec.veth])
            .status();
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", &self.rec.host_table])
            .status();
    }
}

fn classes(findings: &[UnverifiedResidue]) -> Vec<&str> {
    findings.iter().map(|u| u.class.as_str()).collect()
}

fn found(findings: &Findings, class: &str) -> bool {
    findings.residue.iter().any(|r| r.class == class)
}

fn reason<'a>(findings: &'a [UnverifiedResidue], class: &str) -> &'a str {
    &findings
        .iter()
        .find(|u| u.class == class)
        .unwrap_or_else(|| panic!("{class} not unverified: {findings:?}"))
        .reason
}

#[test]
fn with_nftables_unreadable_a_host_table_that_exists_is_unverified_not_absent() {
    let net = NetResidue::new("10.213.249.0/30");
    let host = net.check(&HostSources::host());
    assert!(found(&host, "nftTable"), "{host:?}");

    // A namespace that cannot be opened: the tables cannot be listed at all.
    let empty = tempfile::tempdir().unwrap();
    let sources = HostSources {
        nftables_netns: Some(empty.path().join("no-such-netns")),
        ..HostSources::host()
    };
    let findings = net.check(&sources);
    assert!(!found(&findings, "nftTable"), "{findings:?}");
    assert_eq!(classes(&findings.unverified), ["nftTable"]);
    let why = reason(&findings.unverified, "nftTable");
    assert!(
        why.contains("no-such-netns") && why.contains("netlink"),
        "{why}"
    );
    // The checks that did not need nftables still ran.
    assert!(
        found(&findings, "veth") && found(&findings, "route"),
        "{findings:?}"
    );
}

#[test]
fn with_procfs_unreadable_routes_listeners_and_the_netns_are_unverified() {
    let net = NetResidue::new("10.213.248.0/30");
    let host = net.check(&HostSources::host());
    assert!(found(&host, "route") && found(&host, "netns"), "{host:?}");

    let empty = tempfile::tempdir().unwrap();
    let sources = HostSources {
        proc: empty.path().to_owned(),
        ..HostSources::host()
    };
    let findings = net.check(&sources);
    assert_eq!(
        classes(&findings.unverified),
        ["route", "listener", "netns"]
    );
    assert!(!found(&findings, "route") && !found(&findings, "netns"));
    assert!(reason(&findings.unverified, "route").contains("is not procfs"));
}

#[test]
fn with_sysfs_missing_a_veth_that_exists_is_unverified_not_absent() {
    let net = NetResidue::new("10.213.247.0/30");
    assert!(found(&net.check(&HostSources::host()), "veth"));
    let sources = HostSources {
        sys_class_net: PathBuf::from("/nonexistent/sys/class/net"),
        ..HostSources::host()
    };
    let findings = net.check(&sources);
    assert!(!found(&findings, "veth"), "{findings:?}");
    assert_eq!(classes(&findings.unverified), ["veth"]);
    assert!(reason(&findings.unverified, "veth").contains("/nonexistent/sys/class/net"));
}

fn backend_reading(state: &Path, sources: HostSources) -> LinuxBackend {
    let mut config = LinuxBackendConfig::new(state, init_exe());
    config.residue_sources = sources;
    LinuxBackend::new(config).expect("backend (tests run as root)")
}

#[test]
fn with_the_mount_table_unreadable_a_destroyed_cell_has_mounts_and_cgroups_unverified() {
    let state = tempfile::tempdir().unwrap();
    // A directory cannot be read as a file, even by root.
    let unreadable = tempfile::tempdir().unwrap();
    let backend = backend_reading(
        state.path(),
        HostSources {
            mountinfo: unreadable.path().to_owned(),
            ..HostSources::host()
        },
    );
    let r = run(
        &backend,
        &spec(&unique_id("mountinfo"), &["/bin/true"], json!({})),
    );
    assert!(r.teardown.destroyed);
    assert!(r.teardown.residue.is_empty(), "{:?}", r.teardown.residue);
    assert_eq!(classes(&r.teardown.unverified), ["mount", "cgroup"]);
    assert!(!r.teardown.residue_free());
    assert!(reason(&r.teardown.unverified, "cgroup").contains("cannot read"));

    // The same cell on the host's sources is verified clean.
    let control = fixture();
    let r = run(
        &control.backend,
        &spec(&unique_id("mountinfo"), &["/bin/true"], json!({})),
    );
    assert!(r.teardown.residue_free(), "{:?}", r.teardown);
}

#[test]
fn a_mount_table_without_cgroup_hierarchies_cannot_rule_out_cgroups() {
    let state = tempfile::tempdir().unwrap();
    let table = tempfile::NamedTempFile::new().unwrap();
    // Only the root mount: a real table's shape, but no cgroup hierarchy to look in.
    std::fs::write(
        table.path(),
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n",
    )
    .unwrap();
    let backend = backend_reading(
        state.path(),
        HostSources {
            mountinfo: table.path().to_owned(),
            ..HostSources::host()
        },
    );
    let report = backend.reclaim(&unique_id("nocgroup")).unwrap();
    assert_eq!(classes(&report.unverified), ["cgroup"]);
    assert!(reason(&report.unverified, "cgroup").contains("lists no cgroup hierarchy"));
}

#[test]
fn reclaim_with_procfs_unreadable_leaves_the_killed_init_unverified() {
    let fx = fixture();
    let id = unique_id("reclaim-proc");
    let (out, err) = (SharedBuf::default(), SharedBuf::default());
    let mut cell = create(
        &fx.backend,
        &shell(&id, "sleep 1000", json!({})),
        Vec::new(),
        Default::default(),
        &out,
        &err,
    );
    cell.start().unwrap();

    let empty = tempfile::tempdir().unwrap();
    let blind = backend_reading(
        fx.state.path(),
        HostSources {
            proc: empty.path().to_owned(),
            ..HostSources::host()
        },
    );
    let report = blind.reclaim(&id).unwrap();
    assert!(report.destroyed && report.forced);
    assert_eq!(classes(&report.unverified), ["process"]);
    assert!(report.residue.is_empty(), "{:?}", report.residue);

    // Nothing is in fact left; the cell's own destroy confirms it on the host's sources.
    let again = cell.destroy().unwrap();
    assert!(again.residue_free(), "{again:?}");
}

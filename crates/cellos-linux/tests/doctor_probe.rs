//! The host probe reports what this machine really offers. This host has every feature
//! (user namespaces, cgroups, seccomp, Landlock, overlayfs, nftables), so every check must say
//! so; refusals and a FORWARD drop policy are provoked for real and must be reported.

#[path = "support/eperm_filter.rs"]
mod eperm_filter;

use std::process::Command;

use cellos_linux::cgroup::{Controller, Layout};
use cellos_linux::doctor::{
    cell_setup, cell_steps, forward, probe, CheckStatus, FeatureCheck, CELL_STEPS, MOUNT_API,
};
use cellos_linux::landlock_rules::{kernel_abi, unenforced_rights};
use cellos_linux::trees::EtcBuild;
use eperm_filter::under_eperm_filter;

fn check<'a>(checks: &'a [FeatureCheck], feature: &str) -> &'a FeatureCheck {
    checks
        .iter()
        .find(|c| c.feature == feature)
        .unwrap_or_else(|| panic!("no check for {feature} in {checks:?}"))
}

#[test]
fn every_check_reports_ok_on_this_capable_host() {
    let checks = probe();
    for feature in [
        "user namespaces",
        "seccomp filter",
        "landlock",
        "overlayfs",
        "pidfd",
        "nftables",
        "egress forwarding",
        forward::FEATURE,
        MOUNT_API,
        CELL_STEPS,
    ] {
        check(&checks, feature);
    }
    for c in &checks {
        assert_eq!(c.status, CheckStatus::Ok, "{c:?}");
        assert_eq!(c.fix, None, "{c:?}");
    }
    let abi = kernel_abi().expect("Landlock ABI");
    let detail = &check(&checks, "landlock").detail;
    assert!(
        detail.starts_with(&format!("Landlock ABI {abi}; ")),
        "{detail}"
    );
    let unenforced = unenforced_rights(Some(abi));
    if unenforced.is_empty() {
        assert!(
            detail.ends_with("every right CellOS applies is enforced"),
            "{detail}"
        );
    } else {
        assert!(detail.contains(&unenforced.join(", ")), "{detail}");
    }
    assert!(check(&checks, "user namespaces")
        .detail
        .starts_with("unshare(CLONE_NEWUSER) works"));
}

#[test]
fn probe_reports_each_cgroup_controller_with_the_version_that_serves_it() {
    let checks = probe();
    for controller in Controller::ALL {
        let c = check(&checks, &format!("cgroup {}", controller.name()));
        let (version, root) = Layout::host()
            .locate(controller)
            .expect("controller available on this host");
        assert_eq!(c.status, CheckStatus::Ok, "{c:?}");
        assert!(c.detail.starts_with(version.as_str()), "{c:?}");
        assert!(c.detail.contains(&root.display().to_string()), "{c:?}");
    }
}

#[test]
fn checks_serialize_their_status_in_camel_case() {
    let json = serde_json::to_value(probe()).expect("serialize");
    let first = &json[0];
    assert_eq!(first["status"], "ok", "{first}");
    assert!(first.get("feature").is_some() && first.get("detail").is_some());
    assert!(first["fix"].is_null(), "{first}");
}

/// `cell_setup` on a thread whose seccomp filter answers EPERM to `syscall`, as an outer
/// container's profile does (the probe's child inherits the filter, as a cell would).
fn cell_setup_filtered(syscall: libc::c_long) -> [FeatureCheck; 2] {
    under_eperm_filter(&[syscall], cell_setup)
}

#[test]
fn cell_steps_pass_here_and_report_a_seccomp_refusal_of_move_mount() {
    let [api, cell] = cell_setup();
    assert_eq!(api.status, CheckStatus::Ok, "{api:?}");
    assert_eq!(cell.status, CheckStatus::Ok, "{cell:?}");
    // This kernel (6.18) takes the detached /etc layer; the fallback is for older ones.
    let trees = cell_steps::supervisor_side().expect("supervisor side");
    assert_eq!(trees.etc_build, EtcBuild::Detached);

    let [api, cell] = cell_setup_filtered(libc::SYS_move_mount);
    assert_eq!(api.status, CheckStatus::Ok, "{api:?}");
    assert_eq!(cell.status, CheckStatus::Missing, "{cell:?}");
    assert!(
        cell.detail.starts_with(
            "move_mount of /etc (a host tree) into the cell refused with EPERM (Operation not \
             permitted); likely cause: this process runs under a seccomp filter"
        ),
        "{cell:?}"
    );
    let fix = cell.fix.as_deref().expect("fix");
    assert!(
        fix.starts_with("run cellos outside that container"),
        "{fix}"
    );
    assert!(!cell.detail.contains("fix:"), "said once: {cell:?}");
}

#[test]
fn a_refused_open_tree_fails_the_mount_api_check_and_leaves_the_cell_steps_unchecked() {
    let [api, cell] = cell_setup_filtered(libc::SYS_open_tree);
    assert_eq!(api.status, CheckStatus::Missing, "{api:?}");
    assert!(
        api.detail
            .starts_with("open_tree(OPEN_TREE_CLONE) of /etc for /etc refused with EPERM"),
        "{api:?}"
    );
    assert!(api.detail.contains("seccomp filter"), "{api:?}");
    assert!(
        api.fix.as_deref().unwrap().contains("seccomp=unconfined"),
        "{api:?}"
    );
    assert_eq!(cell.status, CheckStatus::Unverified, "{cell:?}");
    assert!(cell.detail.starts_with("could not check:"), "{cell:?}");
}

#[test]
fn a_refused_pivot_root_is_reported_by_the_cell_steps() {
    let [_, cell] = cell_setup_filtered(libc::SYS_pivot_root);
    assert_eq!(cell.status, CheckStatus::Missing, "{cell:?}");
    assert!(
        cell.detail
            .starts_with("pivot_root into the cell's root refused with EPERM"),
        "{cell:?}"
    );
}

/// A network namespace of this test, removed on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Self {
        let name = format!("cellos-doctor-{tag}-{}", std::process::id());
        let ok = Command::new("ip").args(["netns", "add", &name]).status();
        assert!(ok.is_ok_and(|s| s.success()), "ip netns add {name}");
        Netns(name)
    }

    fn nft(&self, script: &str) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, "nft", script])
            .output()
            .expect("run nft");
        assert!(out.status.success(), "nft {script}: {out:?}");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn a_forward_chain_with_policy_drop_is_reported_until_cells_are_accepted() {
    let ns = Netns::new("fwd");
    let clean = forward::check(Some(&ns.0));
    assert_eq!(clean.status, CheckStatus::Ok, "{clean:?}");
    assert_eq!(clean.detail, "no IPv4 forward chain with policy drop");

    ns.nft(
        "add table ip filter; \
         add chain ip filter FORWARD { type filter hook forward priority 0; policy drop; }",
    );
    let dropped = forward::check(Some(&ns.0));
    assert_eq!(dropped.status, CheckStatus::Missing, "{dropped:?}");
    assert!(
        dropped.detail.starts_with(
            "ip filter FORWARD has policy drop and accepts no traffic from cv* or to cv*"
        ),
        "{dropped:?}"
    );
    let fix = dropped.fix.expect("fix");
    assert!(
        fix.contains("nft insert rule ip filter FORWARD iifname \"cv*\" accept"),
        "{fix}"
    );

    ns.nft(
        "add rule ip filter FORWARD iifname \"cv*\" accept; \
         add rule ip filter FORWARD oifname \"cv*\" ct state established,related accept",
    );
    let accepted = forward::check(Some(&ns.0));
    assert_eq!(accepted.status, CheckStatus::Ok, "{accepted:?}");
    assert!(
        accepted.detail.contains("accept cv* both ways"),
        "{accepted:?}"
    );
}

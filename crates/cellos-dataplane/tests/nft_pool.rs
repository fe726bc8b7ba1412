//! Pooled bases: a base loaded ahead of time plus a cell's part is exactly the full ruleset
//! (same `nft list`, same bytecode), base keys group specs by rule structure, a base takes
//! one cell part, and the cell starts with zeroed counters.

mod common;

use cellos_dataplane::nftables::Family;
use cellos_dataplane::{EgressPlan, NftController, NftError, Ruleset};
use common::{add_default_route, in_netns, run, TestNetns};

fn plan(authority: &str, gate: Option<u16>, dns_server: &str) -> EgressPlan {
    common::plan("pool", authority, gate, dns_server)
}

const HOSTNAMES: &str = "    egressRules:
      - { host: api.allowed.test, port: 443 }
      - { host: web.allowed.test, port: 80 }
      - { host: db.allowed.test, port: 5432 }
      - { host: quic.allowed.test, port: 443, protocol: udp }
";

const CIDRS: &str = "    egressRules:
      - { host: api.allowed.test, port: 443 }
      - { cidr: 10.1.0.0/16, port: 5432, protocol: udp }
      - { cidr: 10.1.0.0/16, port: 5432 }
      - { cidr: 203.0.113.0/24, port: 22, protocol: udp }
      - { cidr: '2001:db8::/32', port: 443 }
      - { cidr: 'fd00:1::/48', port: 8080 }
      - { cidr: 192.0.2.1, port: 53, protocol: udp }
";

const OTHER_CIDRS: &str = "    egressRules:
      - { host: other.allowed.test, port: 443 }
      - { cidr: 172.16.5.0/24, port: 443 }
      - { cidr: 198.18.0.0/15, port: 80 }
      - { cidr: '2001:db8:1::/48', port: 22, protocol: udp }
";

/// `nft list table inet cellos` in `ns`, plain or with `--debug=netlink` (the bytecode).
fn listing(ns: &TestNetns, debug: bool) -> String {
    let mut args = vec!["netns", "exec", &ns.name, "nft"];
    if debug {
        args.push("--debug=netlink");
    }
    args.extend(["list", "table", "inet", "cellos"]);
    run("ip", &args)
}

/// Loads `ruleset` whole by `nft -f` into one namespace and as base then cell part over
/// netlink into another, and requires the same listing and bytecode.
fn assert_base_and_cell_load_the_full_ruleset(ruleset: &Ruleset) {
    let full = TestNetns::new("pool-full");
    let split = TestNetns::new("pool-split");
    NftController::for_netns(full.path())
        .apply(ruleset.text())
        .unwrap();
    let nft = NftController::for_netns(split.path());
    nft.apply_base(&ruleset.base()).unwrap();
    nft.apply_cell(&ruleset.per_cell()).unwrap();
    assert_eq!(
        listing(&full, false),
        listing(&split, false),
        "base + cell part loaded something else than\n{}",
        ruleset.text()
    );
    assert_eq!(listing(&full, true), listing(&split, true));
}

#[test]
fn base_then_cell_part_loads_exactly_the_full_ruleset() {
    for ruleset in [
        plan(HOSTNAMES, Some(15001), "10.77.0.1").render(),
        plan(HOSTNAMES, None, "10.77.0.1").render(),
        plan(CIDRS, Some(15001), "10.77.0.1").render(),
        plan(OTHER_CIDRS, None, "fd00:77::1").render(),
    ] {
        assert_base_and_cell_load_the_full_ruleset(&ruleset);
    }
}

#[test]
fn the_base_holds_no_elements_and_the_cell_part_holds_them_all() {
    let ruleset = plan(CIDRS, Some(15001), "10.77.0.1").render();
    let base = ruleset.base();
    assert!(base.table().sets.iter().all(|s| s.elements.is_empty()));
    assert_eq!(base.table().sets.len(), ruleset.table().sets.len());
    let part = ruleset.per_cell();
    let elements = |sets: &[cellos_dataplane::nftables::Set]| {
        sets.iter().map(|s| s.elements.len()).sum::<usize>()
    };
    assert_eq!(elements(part.sets()), elements(&ruleset.table().sets));
    assert!(part.text().contains("10.1.0.0/16 . tcp . 5432"));
}

#[test]
fn specs_differing_only_in_cidrs_and_hosts_share_a_base_key() {
    let a = plan(CIDRS, Some(15001), "10.77.0.1").render();
    let b = plan(OTHER_CIDRS, Some(15001), "10.77.0.1").render();
    assert_ne!(
        a.sha256(),
        b.sha256(),
        "the evidence hash is the full ruleset's"
    );
    assert_eq!(a.base().key(), b.base().key());
    // Another rule structure: hostname rules on port 80 add a gated port to the nat chain.
    let c = plan(HOSTNAMES, Some(15001), "10.77.0.1").render();
    assert_ne!(a.base().key(), c.base().key());
    // Without the gate there is no nat chain; another DNS authority is another rule.
    let d = plan(CIDRS, None, "10.77.0.1").render();
    let e = plan(CIDRS, Some(15001), "10.77.0.5").render();
    assert_ne!(a.base().key(), d.base().key());
    assert_ne!(a.base().key(), e.base().key());
}

#[test]
fn a_used_base_refuses_a_second_cell_part_and_keeps_the_first() {
    let first = plan(CIDRS, Some(15001), "10.77.0.1").render();
    let second = plan(OTHER_CIDRS, Some(15001), "10.77.0.1").render();
    let ns = TestNetns::new("pool-twice");
    let nft = NftController::for_netns(ns.path());
    nft.apply_base(&first.base()).unwrap();
    nft.apply_cell(&first.per_cell()).unwrap();
    let before = listing(&ns, false);
    match nft.apply_cell(&second.per_cell()) {
        Err(NftError::BaseClaimed { family, table }) => {
            assert_eq!((family, table.as_str()), (Family::Inet, "cellos"));
        }
        other => panic!("a second cell part was not refused: {other:?}"),
    }
    assert_eq!(listing(&ns, false), before);
    assert!(!before.contains("172.16.5.0/24"), "{before}");
}

#[test]
fn a_cell_part_without_a_base_is_refused() {
    let ns = TestNetns::new("pool-nobase");
    let nft = NftController::for_netns(ns.path());
    let part = plan(CIDRS, None, "10.77.0.1").render().per_cell();
    assert!(matches!(
        nft.apply_cell(&part),
        Err(NftError::NoBase {
            family: Family::Inet,
            ..
        })
    ));
    assert!(!nft.table_exists(Family::Inet, "cellos").unwrap());
}

#[test]
fn the_cell_starts_with_zeroed_counters() {
    let ruleset = plan(CIDRS, None, "10.77.0.1").render();
    let ns = TestNetns::new("pool-counters");
    add_default_route(&ns);
    let nft = NftController::for_netns(ns.path());
    nft.apply_base(&ruleset.base()).unwrap();
    // Traffic while the base waits in the pool: nothing is allowed yet, so it is denied.
    in_netns(&ns.path(), || {
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..3 {
            let _ = sock.send_to(b"probe", "203.0.113.9:22");
        }
    });
    assert_eq!(nft.read_counters().unwrap().get("deny_default").packets, 3);
    nft.apply_cell(&ruleset.per_cell()).unwrap();
    let counters = nft.read_counters().unwrap();
    assert!(
        counters.0.values().all(|c| c.packets == 0 && c.bytes == 0),
        "{counters:?}"
    );
    assert_eq!(counters.0.len(), cellos_dataplane::ruleset::COUNTERS.len());
    // And the cell's own traffic is counted from zero.
    in_netns(&ns.path(), || {
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let _ = sock.send_to(b"probe", "203.0.113.9:22");
    });
    assert_eq!(nft.read_counters().unwrap().get("allow_cidr").packets, 1);
}

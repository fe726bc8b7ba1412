//! The in-process netlink paths against the kernel: table probes and deletion, counters,
//! and typed errors naming the object the kernel rejected.

mod common;

use cellos_dataplane::nftables::{
    Chain, Family, IpVersion, Object, Rule, Set, SetKey, Stmt, Table, Verdict,
};
use cellos_dataplane::{EgressPlan, NftController, NftError, PlanInputs};
use common::{add_default_route, in_netns, run, TestNetns};
use nix::errno::Errno;

fn plan() -> EgressPlan {
    let text = "apiVersion: cellos.io/v1
kind: ExecutionCell
spec:
  id: nl
  run: { argv: [/bin/true] }
  authority:
    egressRules:
      - { cidr: 203.0.113.0/24, port: 22, protocol: udp }
";
    let spec = cellos_core::spec::parse_execution_cell(text).unwrap().spec;
    EgressPlan::from_spec(
        &spec,
        PlanInputs {
            dns_server: "10.77.0.1".parse().unwrap(),
            l7_gate_port: None,
            host_addresses: vec![],
            log_group: 7,
        },
    )
    .unwrap()
}

#[test]
fn table_exists_and_delete_table_tell_present_from_absent() {
    let ns = TestNetns::new("probe");
    let nft = NftController::for_netns(ns.path());
    assert!(!nft.table_exists(Family::Inet, "cellos").unwrap());
    assert!(!nft.delete_table(Family::Inet, "cellos").unwrap());
    nft.apply(&plan().render()).unwrap();
    assert!(nft.table_exists(Family::Inet, "cellos").unwrap());
    // Same name, other family: a different table.
    assert!(!nft.table_exists(Family::Ip, "cellos").unwrap());
    assert!(nft.delete_table(Family::Inet, "cellos").unwrap());
    assert!(!nft.table_exists(Family::Inet, "cellos").unwrap());
    let tables = run("ip", &["netns", "exec", &ns.name, "nft", "list", "tables"]);
    assert!(tables.trim().is_empty(), "{tables}");
}

#[test]
fn counters_read_over_netlink_match_nft_list_counters() {
    let ns = TestNetns::new("counters");
    add_default_route(&ns);
    let nft = NftController::for_netns(ns.path());
    nft.apply(&plan().render()).unwrap();
    in_netns(&ns.path(), || {
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        for dst in [
            "203.0.113.9:22",
            "203.0.113.9:22",
            "10.77.0.1:53",
            "10.0.0.1:1",
        ] {
            let _ = sock.send_to(b"probe", dst);
        }
    });
    let counters = nft.read_counters().unwrap();
    let json: serde_json::Value = serde_json::from_str(&run(
        "ip",
        &[
            "netns", "exec", &ns.name, "nft", "-j", "list", "counters", "table", "inet", "cellos",
        ],
    ))
    .unwrap();
    let listed = cellos_dataplane::flowlog::NftCounters::from_nft_json(&json);
    assert_eq!(counters, listed);
    assert_eq!(counters.get("allow_cidr").packets, 2, "{counters:?}");
    assert_eq!(counters.get("allow_dns").packets, 1, "{counters:?}");
    assert_eq!(counters.get("deny_range").packets, 1, "{counters:?}");
    assert_eq!(counters.0.len(), cellos_dataplane::ruleset::COUNTERS.len());
}

#[test]
fn a_namespace_whose_process_is_gone_is_a_netns_error() {
    let mut child = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let pid = child.id();
    child.kill().unwrap();
    child.wait().unwrap();
    let err = NftController::for_pid(pid)
        .apply(&plan().render())
        .unwrap_err();
    assert!(matches!(err, NftError::Netns { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&format!("/proc/{pid}/ns/net")),
        "{err}"
    );
}

/// A table whose second rule of chain `c` jumps to a chain that does not exist.
fn bad_table() -> Table {
    let rule = |v| Rule(vec![Stmt::Verdict(v)]);
    Table {
        family: Family::Inet,
        name: "bad".into(),
        replace: false,
        counters: vec![],
        sets: vec![Set {
            name: "s".into(),
            key: SetKey::Addr(IpVersion::V4),
            interval: false,
            timeout: false,
            elements: vec![],
        }],
        chains: vec![Chain {
            name: "c".into(),
            base: None,
            rules: vec![rule(Verdict::Accept), rule(Verdict::Jump("missing".into()))],
        }],
    }
}

#[test]
fn a_rejected_rule_is_named_by_chain_and_index_and_nothing_is_loaded() {
    let ns = TestNetns::new("bad");
    let nft = NftController::for_netns(ns.path());
    let err = nft.apply(&bad_table()).unwrap_err();
    let (object, errno) = err.rejected().expect("a rejection by the kernel");
    assert_eq!(
        object,
        &Object::Rule {
            chain: "c".into(),
            index: 1,
            text: "jump missing".into()
        }
    );
    assert_eq!(errno, Errno::ENOENT);
    assert!(
        err.to_string().contains("rule 1 of chain c (jump missing)"),
        "{err}"
    );
    // Atomic: the table, chain and set of the same batch are not there either.
    assert!(!nft.table_exists(Family::Inet, "bad").unwrap());
}

#[test]
fn a_rejected_chain_is_named() {
    let ns = TestNetns::new("badchain");
    let nft = NftController::for_netns(ns.path());
    let mut table = bad_table();
    table.chains[0].rules.clear();
    // The same chain again, now as a base chain: the kernel refuses to turn a regular chain
    // into a base chain, on the second NEWCHAIN.
    table.chains.push(table.chains[0].clone());
    table.chains[1].base = Some(cellos_dataplane::nftables::BaseChain {
        kind: cellos_dataplane::nftables::ChainKind::Filter,
        hook: cellos_dataplane::nftables::Hook::Output,
        priority: cellos_dataplane::nftables::Priority::Filter,
        policy: cellos_dataplane::nftables::Policy::Accept,
    });
    let err = nft.apply(&table).unwrap_err();
    let (object, errno) = err.rejected().expect("a rejection by the kernel");
    assert_eq!(object, &Object::Chain("c".into()), "{err}");
    assert_eq!(errno, Errno::EOPNOTSUPP, "{err}");
}

/// Clears CAP_NET_ADMIN from the calling thread's effective set (capabilities are per
/// thread, so the rest of the test process keeps it).
fn drop_net_admin_in_this_thread() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_NET_ADMIN: u32 = 12;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget/capset read and write exactly one header and two data structs of the
    // layout the version-3 ABI defines; both point to live, writable locals.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()),
            0
        );
        data[0].effective &= !(1 << CAP_NET_ADMIN);
        assert_eq!(
            libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()),
            0
        );
    }
}

#[test]
fn a_batch_refused_as_a_whole_is_an_error_not_a_wait() {
    let ns = TestNetns::new("eperm");
    let path = ns.path();
    let err = std::thread::spawn(move || {
        drop_net_admin_in_this_thread();
        NftController::for_netns(path)
            .apply(&plan().render())
            .unwrap_err()
    })
    .join()
    .unwrap();
    let (object, errno) = err.rejected().expect("a rejection by the kernel");
    assert_eq!(object, &Object::Message("the batch"), "{err}");
    assert_eq!(errno, Errno::EPERM, "{err}");
}

#[test]
fn a_ruleset_is_loaded_once_and_a_second_load_is_refused_leaving_the_first() {
    let ns = TestNetns::new("replace");
    let nft = NftController::for_netns(ns.path());
    let ruleset = plan().render();
    nft.apply(&ruleset).unwrap();
    let once = nft.list_table().unwrap();
    let err = nft.apply(&ruleset).unwrap_err();
    let (object, errno) = err.rejected().expect("a rejection by the kernel");
    assert!(
        matches!(object, Object::Table { name, .. } if name == "cellos"),
        "{err}"
    );
    assert_eq!(errno, Errno::EEXIST, "{err}");
    assert_eq!(nft.list_table().unwrap(), once, "nothing was appended");
    assert!(NftController::for_netns(ns.path())
        .table_exists(Family::Inet, "cellos")
        .unwrap());
}

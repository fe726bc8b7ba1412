//! Loads generated rulesets over netlink inside namespaces the tests create, and checks them
//! with the real `nft` and real packets.

mod common;

use std::time::Duration;

use cellos_dataplane::pin::{AddressPinner, Pin};
use cellos_dataplane::{EgressPlan, NftController, NftPinner, PlanInputs};
use common::{add_default_route, in_netns, run, TestNetns};

fn plan() -> EgressPlan {
    let text = "apiVersion: cellos.io/v1
kind: ExecutionCell
spec:
  id: nft-test
  run: { argv: [/bin/true] }
  authority:
    egressRules:
      - { host: api.allowed.test, port: 443 }
      - { host: db.allowed.test, port: 5432 }
      - { host: udp.allowed.test, port: 5432, protocol: udp }
      - { cidr: 10.1.0.0/16, port: 5432, protocol: udp }
      - { cidr: 10.1.0.0/16, port: 5432 }
      - { cidr: 203.0.113.0/24, port: 22, protocol: udp }
      - { cidr: '2001:db8::/32', port: 443 }
    dnsAuthority:
      hostnameAllowlist: ['*.allowed.test']
";
    let spec = cellos_core::spec::parse_execution_cell(text).unwrap().spec;
    EgressPlan::from_spec(
        &spec,
        PlanInputs {
            dns_server: "10.77.0.1".parse().unwrap(),
            l7_gate_port: Some(15001),
            host_addresses: vec![
                "198.51.100.7".parse().unwrap(),
                "2001:db8:ffff::1".parse().unwrap(),
            ],
            log_group: 7,
        },
    )
    .unwrap()
}

#[test]
fn generated_ruleset_loads_atomically_in_a_fresh_netns() {
    let ns = TestNetns::new("load");
    let nft = NftController::for_netns(ns.path());
    let ruleset = plan().render();
    nft.apply(&ruleset).unwrap();

    let listed = nft.list_table().unwrap();
    for needle in [
        "chain output",
        "policy drop",
        "chain input",
        "chain nat_output",
        "redirect to :15001",
        "set pinned_v4",
        "flags timeout",
        "log prefix \"cellos-deny default \" group 7",
        "10.1.0.0/16 . tcp . 5432",
    ] {
        assert!(listed.contains(needle), "{needle:?} not in\n{listed}");
    }
    // The JSON form parses and holds every named counter.
    let json = nft.list_table_json().unwrap();
    let counters: Vec<&str> = json["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("counter")?.get("name")?.as_str())
        .collect();
    for (name, _) in cellos_dataplane::ruleset::COUNTERS {
        assert!(
            counters.contains(name),
            "counter {name} missing: {counters:?}"
        );
    }
    // The table lives in the test namespace only.
    let host = NftController::current().list_table();
    assert!(host.is_err() || !host.unwrap().contains("redirect to :15001"));

    // Loading again is refused rather than duplicating rules (the table is loaded once).
    assert!(nft.apply(&ruleset).is_err());
    let again = nft.list_table().unwrap();
    assert_eq!(again.matches("chain output").count(), 1);
}

/// Pins `ip` for `name` with `ttl` through the netlink pinner.
fn pin_one(pinner: &NftPinner, name: &str, ip: &str, ttl: u64) {
    pinner
        .pin(&[Pin {
            name: name.into(),
            ip: ip.parse().unwrap(),
            ttl: Duration::from_secs(ttl),
        }])
        .unwrap();
}

fn list_set(ns: &TestNetns, set: &str) -> String {
    run(
        "ip",
        &[
            "netns", "exec", &ns.name, "nft", "list", "set", "inet", "cellos", set,
        ],
    )
}

#[test]
fn pins_are_added_refreshed_and_carry_their_timeout() {
    let ns = TestNetns::new("pin");
    let nft = NftController::for_netns(ns.path());
    let plan = plan();
    nft.apply(&plan.render()).unwrap();
    let pinner = NftPinner {
        controller: nft,
        plan,
    };
    pin_one(&pinner, "db.allowed.test", "203.0.113.10", 300);
    // Pinning the same element again refreshes it instead of failing.
    pin_one(&pinner, "db.allowed.test", "203.0.113.10", 600);
    pin_one(&pinner, "udp.allowed.test", "2001:db8::10", 60);
    let v4 = list_set(&ns, "pinned_v4");
    assert!(v4.contains("203.0.113.10 . tcp . 5432 timeout 10m"), "{v4}");
    let v6 = list_set(&ns, "pinned_v6");
    assert!(v6.contains("2001:db8::10 . udp . 5432 timeout 1m"), "{v6}");
}

#[test]
fn a_rejected_update_names_its_set_and_changes_nothing() {
    use cellos_dataplane::nftables::{Element, ElementUpdate, Family, Object, SetKey};
    let ns = TestNetns::new("reject");
    let nft = NftController::for_netns(ns.path());
    nft.apply(&plan().render()).unwrap();
    let before = nft.list_table().unwrap();
    let update = |set: &str| ElementUpdate {
        family: Family::Inet,
        table: "cellos".into(),
        set: set.into(),
        key: SetKey::AddrProtoPort(cellos_dataplane::nftables::IpVersion::V4),
        refresh: vec![Element {
            addr: cellos_dataplane::nftables::Addr::Host("203.0.113.1".parse().unwrap()),
            proto_port: Some((cellos_dataplane::Proto::Tcp, 1)),
            timeout: Some(Duration::from_secs(5)),
        }],
    };
    let err = nft
        .update_elements(&[update("pinned_v4"), update("no_such_set")])
        .unwrap_err();
    let (object, errno) = err.rejected().expect("a rejection by the kernel");
    assert_eq!(object, &Object::Elements("no_such_set".into()));
    assert_eq!(errno, nix::errno::Errno::ENOENT);
    assert!(
        err.to_string().contains("elements of set no_such_set"),
        "{err}"
    );
    // The first update was in the same transaction: it did not land either.
    assert_eq!(nft.list_table().unwrap(), before);
}

#[test]
fn a_missing_namespace_is_a_clear_error() {
    let err = NftController::for_netns("/run/netns/cellos-dp-does-not-exist")
        .apply(&plan().render())
        .unwrap_err();
    assert!(
        err.to_string().contains("cannot open network namespace"),
        "{err}"
    );
}

/// Sends one UDP datagram from inside the namespace; netfilter drops surface as EPERM.
fn udp_send_allowed(ns: &TestNetns, dst: &str) -> bool {
    let dst: std::net::SocketAddr = dst.parse().unwrap();
    in_netns(&ns.path(), move || {
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        match sock.send_to(b"probe", dst) {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => false,
            Err(e) => panic!("unexpected send error to {dst}: {e}"),
        }
    })
}

#[test]
fn the_kernel_enforces_dns_pins_cidr_rules_and_denied_ranges() {
    use cellos_dataplane::flowlog::{EgressSummary, NftCounters};

    let ns = TestNetns::new("enforce");
    add_default_route(&ns);
    let plan = plan();
    let nft = NftController::for_netns(ns.path());
    nft.apply(&plan.render()).unwrap();

    // Not resolved yet: dropped by the default rule.
    assert!(!udp_send_allowed(&ns, "203.0.113.10:5432"));
    // The DNS authority pins the answer; now exactly that address, port and protocol pass.
    let pinner = NftPinner {
        controller: nft.clone(),
        plan: plan.clone(),
    };
    pinner
        .pin(&[Pin {
            name: "udp.allowed.test".into(),
            ip: "203.0.113.10".parse().unwrap(),
            ttl: Duration::from_secs(60),
        }])
        .unwrap();
    assert!(udp_send_allowed(&ns, "203.0.113.10:5432"));
    assert!(!udp_send_allowed(&ns, "203.0.113.10:5433"));
    assert!(!udp_send_allowed(&ns, "203.0.113.11:5432"));
    // DNS only to the cell's authority.
    assert!(udp_send_allowed(&ns, "10.77.0.1:53"));
    assert!(!udp_send_allowed(&ns, "8.8.8.8:53"));
    // Private ranges are denied unless a rule names them.
    assert!(!udp_send_allowed(&ns, "10.0.0.5:5432"));
    assert!(!udp_send_allowed(&ns, "169.254.169.254:80"));
    assert!(!udp_send_allowed(&ns, "198.51.100.7:5432"));
    assert!(udp_send_allowed(&ns, "10.1.2.3:5432"));
    assert!(!udp_send_allowed(&ns, "10.1.2.3:5433"));
    // A wide CIDR rule does not open the ranges it covers.
    assert!(udp_send_allowed(&ns, "203.0.113.200:22"));

    let counters = nft.read_counters().unwrap();
    assert_eq!(
        counters,
        NftCounters::from_nft_json(&nft.list_table_json().unwrap())
    );
    let summary = EgressSummary::new(&counters, Default::default());
    assert_eq!(summary.flows_allowed, 4, "{summary:?}");
    assert_eq!(summary.denied_range, 4, "{summary:?}");
    assert_eq!(summary.flows_denied, 8, "{summary:?}");
}

struct Events(std::sync::Mutex<Vec<cellos_dataplane::FlowEvent>>);

impl cellos_dataplane::FlowObserver for Events {
    fn flow(&self, event: &cellos_dataplane::FlowEvent) {
        self.0.lock().unwrap().push(event.clone());
    }
}

/// From inside the namespace: connect to `dst`, send `payload`, read until the gate closes.
fn client_in_netns(ns_path: String, dst: &'static str, payload: &'static [u8]) {
    in_netns(&ns_path, move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(dst).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(payload).unwrap();
        let mut back = Vec::new();
        let _ = s.read_to_end(&mut back);
        assert!(back.is_empty());
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirected_connections_reach_the_gate_with_their_original_destination() {
    use cellos_dataplane::l7gate::{ConntrackOriginalDst, GateContext, GatePolicy, L7Gate};
    use std::sync::Arc;

    let ns = TestNetns::new("gate");
    add_default_route(&ns);
    let plan = plan();
    NftController::for_netns(ns.path())
        .apply(&plan.render())
        .unwrap();
    // The gate's listener lives in the cell's namespace, where `redirect to :15001` lands.
    let listener = in_netns(&ns.path(), || {
        let l = std::net::TcpListener::bind("127.0.0.1:15001").unwrap();
        l.set_nonblocking(true).unwrap();
        l
    });
    let events = Arc::new(Events(Default::default()));
    let gate = L7Gate::from_std(
        listener,
        GateContext {
            policy: GatePolicy::new(plan.gate_policy()),
            // Nothing resolved: an allowed name must still be refused.
            resolver: Arc::new(cellos_dataplane::PinTable::new()),
            original_dst: Arc::new(ConntrackOriginalDst),
            observer: events.clone(),
            peek_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
        },
    )
    .unwrap();

    for payload in [
        &b"GET / HTTP/1.1\r\nHost: other.test\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: api.allowed.test\r\n\r\n",
    ] {
        let path = ns.path();
        tokio::task::spawn_blocking(move || client_in_netns(path, "203.0.113.10:443", payload))
            .await
            .unwrap();
    }
    // Each flow's event is emitted before the gate closes it, so both are here.
    let seen: Vec<(String, String)> = events
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|e| (e.dst.to_string(), e.reason.clone()))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("203.0.113.10:443".to_owned(), "host-mismatch".to_owned()),
            ("203.0.113.10:443".to_owned(), "not-resolved".to_owned()),
        ]
    );
    gate.shutdown().await;
}

//! Per-operation cost of the in-process netlink path against the `nft` process doing the
//! same, in one run: medians are printed; each netlink operation's best time must beat the
//! process's best (best times, because the machine is shared and a stall of the kernel's
//! namespace cleanup can land on any single run).
//!
//! `cargo test -p cellos-dataplane --release --test nft_timings -- --nocapture`

mod common;

use std::time::{Duration, Instant};

use cellos_dataplane::nftables::Family;
use cellos_dataplane::pin::{AddressPinner, Pin};
use cellos_dataplane::{EgressPlan, HostTable, NftController, NftPinner, PlanInputs};
use common::TestNetns;

const ROUNDS: usize = 30;

fn plan() -> EgressPlan {
    let text = "apiVersion: cellos.io/v1
kind: ExecutionCell
spec:
  id: timing
  run: { argv: [/bin/true] }
  authority:
    egressRules:
      - { host: api.allowed.test, port: 443 }
      - { host: db.allowed.test, port: 5432 }
      - { host: udp.allowed.test, port: 5432, protocol: udp }
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
            host_addresses: vec!["198.51.100.7".parse().unwrap()],
            log_group: 7,
        },
    )
    .unwrap()
}

/// Median and best of `ROUNDS` runs of `op`, each after `setup`.
fn median(mut setup: impl FnMut(), mut op: impl FnMut()) -> Timing {
    let mut times: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            setup();
            let t = Instant::now();
            op();
            t.elapsed()
        })
        .collect();
    times.sort();
    Timing {
        median: times[ROUNDS / 2],
        best: times[0],
    }
}

struct Timing {
    median: Duration,
    best: Duration,
}

fn report(what: &str, netlink: Timing, process: Timing) {
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{what:<28} netlink {:>8.1} µs   nft process {:>8.1} µs   ({:.0}x)",
        us(netlink.median),
        us(process.median),
        us(process.median) / us(netlink.median)
    );
    assert!(
        netlink.best < process.best,
        "{what}: netlink's best {:?} >= nft's best {:?}",
        netlink.best,
        process.best
    );
}

#[test]
fn every_netlink_operation_beats_the_nft_process() {
    let ns = TestNetns::new("timing");
    let nl = NftController::for_netns(ns.path());
    let plan = plan();
    let ruleset = plan.render();
    let first = Instant::now();
    nl.apply(&ruleset).unwrap();
    println!(
        "first load (opens the socket in the namespace): {:?}",
        first.elapsed()
    );

    let load_nl = median(|| {}, || nl.apply(&ruleset).unwrap());
    let load_nft = median(|| {}, || nl.apply(ruleset.text()).unwrap());
    report("replace cell ruleset", load_nl, load_nft);
    let clear = || {
        nl.delete_table(Family::Inet, "cellos").unwrap();
    };
    let fresh_nl = median(clear, || nl.apply(&ruleset).unwrap());
    let fresh_nft = median(clear, || nl.apply(ruleset.text()).unwrap());
    report("load cell ruleset (fresh)", fresh_nl, fresh_nft);

    let host = HostTable {
        table: "cellos-host-timing".into(),
        veth: "cvtiming".into(),
        host_v4: "10.213.0.1".parse().unwrap(),
        cell_v4: "10.213.0.2".parse().unwrap(),
        host_v6: Some("fd00:cafe::1".parse().unwrap()),
        cell_v6: Some("fd00:cafe::2".parse().unwrap()),
    }
    .render();
    let host_nl = median(|| {}, || nl.apply(&host).unwrap());
    let host_nft = median(|| {}, || nl.apply(host.text()).unwrap());
    report("load host table", host_nl, host_nft);

    let pinner = NftPinner {
        controller: nl.clone(),
        plan: plan.clone(),
    };
    let pins = [Pin {
        name: "db.allowed.test".into(),
        ip: "203.0.113.10".parse().unwrap(),
        ttl: Duration::from_secs(300),
    }];
    let pin_nl = median(|| {}, || pinner.pin(&pins).unwrap());
    let script = plan.pin_script(&pins);
    let pin_nft = median(|| {}, || nl.apply(script.as_str()).unwrap());
    report("pin one address", pin_nl, pin_nft);

    let counters_nl = median(|| {}, || drop(nl.read_counters().unwrap()));
    let counters_nft = median(|| {}, || drop(nl.list_table_json().unwrap()));
    report("read counters", counters_nl, counters_nft);

    let name = "cellos-host-timing";
    let reload = || nl.apply(&host).unwrap();
    let del_nl = median(reload, || {
        assert!(nl.delete_table(Family::Inet, name).unwrap())
    });
    let del_nft = median(reload, || {
        nl.run(&["delete", "table", "inet", name], None).unwrap();
    });
    report("delete table", del_nl, del_nft);

    // A new controller opens its socket inside the namespace (a thread that joins it).
    let path = ns.path();
    let open_nl = median(
        || {},
        || {
            assert!(NftController::for_netns(&path)
                .table_exists(Family::Inet, "cellos")
                .unwrap())
        },
    );
    let open_nft = median(
        || {},
        || drop(nl.run(&["list", "tables", "inet"], None).unwrap()),
    );
    report("open socket + table exists", open_nl, open_nft);

    let exists_nl = median(
        || {},
        || assert!(nl.table_exists(Family::Inet, "cellos").unwrap()),
    );
    let exists_nft = median(
        || {},
        || drop(nl.run(&["list", "tables", "inet"], None).unwrap()),
    );
    report("table exists", exists_nl, exists_nft);
}

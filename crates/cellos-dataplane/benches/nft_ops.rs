//! Each nftables operation in-process (netlink) against the `nft` process doing the same, in
//! real namespaces (root): `cargo bench -p cellos-dataplane --bench nft_ops`. Prints a
//! markdown table of medians and 90th percentiles over `NFT_BENCH_ROUNDS` rounds (50).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use cellos_dataplane::nftables::Family;
use cellos_dataplane::pin::{AddressPinner, Pin};
use cellos_dataplane::{EgressPlan, HostTable, NftController, NftPinner, PlanInputs, Ruleset};
use common::TestNetns;

fn plan() -> EgressPlan {
    let text = "apiVersion: cellos.io/v1
kind: ExecutionCell
spec:
  id: bench
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

/// Median and 90th percentile of one operation.
#[derive(Clone, Copy)]
struct Timing {
    median: Duration,
    p90: Duration,
}

/// Times `op` over `rounds` rounds, each after an untimed `setup` whose value `op` takes;
/// what `op` returns is dropped after the clock stops (a namespace is deleted untimed).
fn time<S, R>(rounds: usize, mut setup: impl FnMut() -> S, mut op: impl FnMut(S) -> R) -> Timing {
    let mut times: Vec<Duration> = (0..rounds)
        .map(|_| {
            let state = setup();
            let t = Instant::now();
            let done = op(state);
            let elapsed = t.elapsed();
            drop(done);
            elapsed
        })
        .collect();
    times.sort();
    Timing {
        median: times[rounds / 2],
        p90: times[(rounds * 9 / 10).min(rounds - 1)],
    }
}

struct Report {
    rows: Vec<(&'static str, Timing, Timing)>,
}

impl Report {
    fn print(&self, rounds: usize) {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!("\n{rounds} rounds each; times in µs.\n");
        println!("| operation | in-process median | in-process p90 | nft median | nft p90 | nft / in-process (median) |");
        println!("|---|---:|---:|---:|---:|---:|");
        for (what, nl, nft) in &self.rows {
            println!(
                "| {what} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1}x |",
                us(nl.median),
                us(nl.p90),
                us(nft.median),
                us(nft.p90),
                us(nft.median) / us(nl.median)
            );
        }
    }
}

fn main() {
    let rounds = std::env::var("NFT_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50usize)
        .max(2);
    let ns = TestNetns::new("bench");
    let nl = NftController::for_netns(ns.path());
    let plan = plan();
    let ruleset = plan.render();
    nl.apply(&ruleset).unwrap();
    let mut report = Report { rows: Vec::new() };
    let mut row = |what, nl: Timing, nft: Timing| report.rows.push((what, nl, nft));

    let t = |op: &dyn Fn()| time(rounds, || (), |()| op());
    row(
        "replace cell ruleset",
        t(&|| nl.apply(&ruleset).unwrap()),
        t(&|| nl.apply(ruleset.text()).unwrap()),
    );
    let clear = || {
        nl.delete_table(Family::Inet, "cellos").unwrap();
    };
    row(
        "load cell ruleset (table absent)",
        time(rounds, clear, |()| nl.apply(&ruleset).unwrap()),
        time(rounds, clear, |()| nl.apply(ruleset.text()).unwrap()),
    );
    let (fresh_nl, fresh_nft) = fresh_namespace(rounds, &ruleset);
    row(
        "full cell ruleset, fresh namespace (+ open socket)",
        fresh_nl,
        fresh_nft,
    );
    let open = fresh_namespace_open(rounds, &ruleset);
    row(
        "full cell ruleset, fresh namespace, socket open",
        open,
        fresh_nft,
    );
    let (base_nl, base_nft, cell_nl, cell_nft) = pooled(rounds, &nl, &ruleset);
    row("pool: apply base", base_nl, base_nft);
    row(
        "pool: apply cell part to ready base (+ counter reset)",
        cell_nl,
        cell_nft,
    );
    nl.apply(&ruleset).unwrap();

    let host = HostTable {
        table: "cellos-host-bench".into(),
        veth: "cvbench".into(),
        host_v4: "10.213.0.1".parse().unwrap(),
        cell_v4: "10.213.0.2".parse().unwrap(),
        host_v6: Some("fd00:cafe::1".parse().unwrap()),
        cell_v6: Some("fd00:cafe::2".parse().unwrap()),
    }
    .render();
    row(
        "load host table",
        t(&|| nl.apply(&host).unwrap()),
        t(&|| nl.apply(host.text()).unwrap()),
    );

    let pinner = NftPinner {
        controller: nl.clone(),
        plan: plan.clone(),
    };
    let pins = [Pin {
        name: "db.allowed.test".into(),
        ip: "203.0.113.10".parse().unwrap(),
        ttl: Duration::from_secs(300),
    }];
    let script = plan.pin_script(&pins);
    row(
        "pin one address",
        t(&|| pinner.pin(&pins).unwrap()),
        t(&|| nl.apply(script.as_str()).unwrap()),
    );
    row(
        "read counters",
        t(&|| drop(nl.read_counters().unwrap())),
        t(&|| drop(nl.list_table_json().unwrap())),
    );

    let name = "cellos-host-bench";
    let reload = || nl.apply(&host).unwrap();
    row(
        "delete table",
        time(rounds, reload, |()| {
            assert!(nl.delete_table(Family::Inet, name).unwrap())
        }),
        time(rounds, reload, |()| {
            nl.run(&["delete", "table", "inet", name], None).unwrap();
        }),
    );
    let path = ns.path();
    let list_tables = || drop(nl.run(&["list", "tables", "inet"], None).unwrap());
    row(
        "open socket + table exists",
        t(&|| {
            assert!(NftController::for_netns(&path)
                .table_exists(Family::Inet, "cellos")
                .unwrap())
        }),
        t(&list_tables),
    );
    row(
        "table exists",
        t(&|| assert!(nl.table_exists(Family::Inet, "cellos").unwrap())),
        t(&list_tables),
    );
    report.print(rounds);
}

/// The full ruleset into a namespace created for the round: a new controller (its socket
/// opened in the namespace) against one `nft -f`.
fn fresh_namespace(rounds: usize, ruleset: &Ruleset) -> (Timing, Timing) {
    let nl = time(
        rounds,
        || TestNetns::new("bench-fresh"),
        |ns| {
            NftController::for_netns(ns.path()).apply(ruleset).unwrap();
            ns
        },
    );
    let nft = time(
        rounds,
        || TestNetns::new("bench-fresh"),
        |ns| {
            NftController::for_netns(ns.path())
                .apply(ruleset.text())
                .unwrap();
            ns
        },
    );
    (nl, nft)
}

/// The full ruleset into a fresh namespace whose socket is already open: the kernel's own
/// first-load cost in a namespace, without the socket's.
fn fresh_namespace_open(rounds: usize, ruleset: &Ruleset) -> Timing {
    time(
        rounds,
        || {
            let ns = TestNetns::new("bench-fresh");
            let nl = NftController::for_netns(ns.path());
            assert!(!nl.table_exists(Family::Inet, "cellos").unwrap());
            (ns, nl)
        },
        |(ns, nl)| {
            nl.apply(ruleset).unwrap();
            ns
        },
    )
}

/// A pooled base, then the cell's part into a ready base (elements, claim, counter reset);
/// the `nft` side runs the part's script and `nft reset counters`.
fn pooled(
    rounds: usize,
    nl: &NftController,
    ruleset: &Ruleset,
) -> (Timing, Timing, Timing, Timing) {
    let (base, part) = (ruleset.base(), ruleset.per_cell());
    let clear = || {
        nl.delete_table(Family::Inet, "cellos").unwrap();
    };
    let base_nl = time(rounds, clear, |()| nl.apply_base(&base).unwrap());
    let base_nft = time(rounds, clear, |()| nl.apply(base.text()).unwrap());
    let ready = || {
        clear();
        nl.apply_base(&base).unwrap();
    };
    let cell_nl = time(rounds, ready, |()| nl.apply_cell(&part).unwrap());
    let cell_nft = time(rounds, ready, |()| {
        nl.apply(part.text()).unwrap();
        nl.run(&["reset", "counters", "table", "inet", "cellos"], None)
            .unwrap();
    });
    (base_nl, base_nft, cell_nl, cell_nft)
}

//! IPv6 from inside cells: each networked cell has an IPv6 address and default route at once,
//! reaches IPv6-only and dual-stack names over IPv6 when its rules allow them, and is denied
//! private, link-local and host IPv6 addresses (directly or through a rebinding answer) unless
//! a rule names them.
//!
//! Allowed flows that go straight to a pinned or declared address are counted, not reported
//! one by one (`flowsAllowed` of `network.v1.summary`); flows through the L7 gate (ports 80 and
//! 443) and drops are events.

use std::net::{IpAddr, SocketAddr};

use crate::cell::{authority, unique_id, Cells};
use crate::internet::{Internet, DUAL, LOOP6, REBIND6, SIX};

const AAAA: u16 = 28;

fn host_rule(name: &str, port: u16) -> String {
    format!("{{ host: {name}, port: {port} }}")
}

fn cidr_rule(ip: IpAddr, port: u16) -> String {
    let bits = if ip.is_ipv4() { 32 } else { 128 };
    format!("{{ cidr: \"{ip}/{bits}\", port: {port}, protocol: tcp }}")
}

fn assert_allowed_at_least(ev: &crate::cell::Events, n: u64) {
    let summary = ev.network_summary();
    assert!(
        summary["flowsAllowed"].as_u64().is_some_and(|a| a >= n),
        "at least {n} allowed flows expected: {summary}"
    );
}

fn status_200(v: &serde_json::Value) -> bool {
    v["response"]
        .as_str()
        .is_some_and(|r| r.starts_with("HTTP/1.0 200") || r.starts_with("HTTP/1.1 200"))
}

#[test]
fn an_ipv6_only_name_is_reachable_over_ipv6_from_the_first_packet() {
    let net = Internet::new();
    let cells = Cells::new();
    let id = unique_id("eg6-only");
    let p = cells.probe(
        &net,
        &id,
        &authority(&[host_rule(SIX, 8080), host_rule(SIX, 443)], &[]),
        &[],
        &format!(
            "
out('state', ipv6_state())
out('resolve', dns(SIX, {AAAA}))
out('http', http(CDN6, 8080, SIX))
out('https', https(CDN6, 443, SIX))
"
        ),
    );
    let state = p.ok("state");
    let routes = state["routes"].to_string();
    assert!(
        routes.contains("00000000000000000000000000000000/0 dev eth0"),
        "no IPv6 default route: {state}"
    );
    assert_eq!(p.dns_rcode("resolve", 0), vec![net.cdn_v6().to_string()]);
    assert!(status_200(p.ok("http")), "{}", p.get("http"));
    assert!(status_200(p.ok("https")), "{}", p.get("https"));
    for port in [8080, 443] {
        assert!(net
            .record()
            .tcp_hits_on(SocketAddr::new(net.cdn_v6(), port))
            .iter()
            .any(|h| h.names(SIX)));
    }
    let ev = cells.events(&id);
    ev.assert_dns("permitted", SIX);
    // Port 443 went through the L7 gate's IPv6 listener.
    ev.assert_flow("allow", net.cdn_v6(), 443, "tcp");
    assert_allowed_at_least(&ev, 2);
    cells.assert_log_verifies();
}

#[test]
fn a_dual_stack_name_is_reachable_over_both_families() {
    let net = Internet::new();
    let cells = Cells::new();
    let id = unique_id("eg6-dual");
    let p = cells.probe(
        &net,
        &id,
        &authority(&[host_rule(DUAL, 8080)], &[]),
        &[],
        &format!(
            "
out('a', dns(DUAL))
out('aaaa', dns(DUAL, {AAAA}))
out('http6', http(CDN6, 8080, DUAL))
out('http4', http(CDN, 8080, DUAL))
"
        ),
    );
    assert_eq!(p.dns_rcode("a", 0), vec![net.cdn().to_string()]);
    assert_eq!(p.dns_rcode("aaaa", 0), vec![net.cdn_v6().to_string()]);
    assert!(status_200(p.ok("http6")), "{}", p.get("http6"));
    assert!(status_200(p.ok("http4")), "{}", p.get("http4"));
    for ip in [net.cdn_v6(), net.cdn()] {
        assert!(net
            .record()
            .tcp_hits_on(SocketAddr::new(ip, 8080))
            .iter()
            .any(|h| h.names(DUAL)));
    }
    assert_allowed_at_least(&cells.events(&id), 2);
}

#[test]
fn ipv6_rebinding_answers_into_ula_or_loopback_are_dropped() {
    let net = Internet::new();
    let cells = Cells::new();
    let id = unique_id("eg6-rebind");
    let p = cells.probe(
        &net,
        &id,
        &authority(&[host_rule(REBIND6, 8080), host_rule(LOOP6, 8080)], &[]),
        &[],
        &format!(
            "
out('ula', dns(REBIND6, {AAAA}))
out('loop', dns(LOOP6, {AAAA}))
out('private6', tcp(PRIVATE6, 8080))
"
        ),
    );
    for label in ["ula", "loop"] {
        let answer = p.get(label);
        assert!(
            answer["addrs"].as_array().is_none_or(|a| a.is_empty()),
            "the rebinding answer reached the cell: {answer}"
        );
    }
    p.failed("private6");
    assert!(net
        .record()
        .tcp_hits_on(SocketAddr::new(net.private_v6(), 8080))
        .is_empty());
    let ev = cells.events(&id);
    let summary = ev.network_summary();
    assert!(
        summary["dnsRebindingDropped"]
            .as_u64()
            .is_some_and(|n| n >= 2),
        "{summary}"
    );
    ev.assert_flow("deny", net.private_v6(), 8080, "tcp");
}

#[test]
fn a_declared_ipv6_cidr_rule_opens_that_address_and_port_only() {
    let net = Internet::new();
    let cells = Cells::new();
    let id = unique_id("eg6-cidr");
    let p = cells.probe(
        &net,
        &id,
        &authority(&[cidr_rule(net.cdn_v6(), 8080)], &[]),
        &[],
        "
out('allowed', http(CDN6, 8080, 'x'))
out('other_port', tcp(CDN6, 80))
",
    );
    assert!(status_200(p.ok("allowed")), "{}", p.get("allowed"));
    p.failed("other_port");
    assert!(net
        .record()
        .tcp_hits_on(SocketAddr::new(net.cdn_v6(), 80))
        .is_empty());
    let ev = cells.events(&id);
    assert_allowed_at_least(&ev, 1);
    ev.assert_flow("deny", net.cdn_v6(), 80, "tcp");
}

#[test]
fn ula_link_local_and_host_ipv6_addresses_are_denied_unless_named() {
    let net = Internet::new();
    let cells = Cells::new();
    let id = unique_id("eg6-ranges");
    let p = cells.probe(
        &net,
        &id,
        &authority(&[cidr_rule(net.cdn_v6(), 8080)], &[]),
        &[],
        "
out('ula', tcp(PRIVATE6, 8080))
out('link_local', tcp('fe80::1%eth0', 8080))
out('host', tcp(HOST6, 8080))
",
    );
    for label in ["ula", "link_local", "host"] {
        p.failed(label);
    }
    assert!(net
        .record()
        .tcp_hits_on(SocketAddr::new(net.private_v6(), 8080))
        .is_empty());
    let ev = cells.events(&id);
    let link_local: IpAddr = "fe80::1".parse().expect("IPv6 literal");
    for ip in [net.private_v6(), link_local, net.host_end_v6()] {
        ev.assert_flow("deny", ip, 8080, "tcp");
    }

    // Named by a rule, the ULA server is reachable.
    let named = unique_id("eg6-named");
    let p = cells.probe(
        &net,
        &named,
        &authority(&[cidr_rule(net.private_v6(), 8080)], &[]),
        &[],
        "out('ula', http(PRIVATE6, 8080, 'x'))\n",
    );
    assert!(status_200(p.ok("ula")), "{}", p.get("ula"));
    assert_allowed_at_least(&cells.events(&named), 1);
    cells.assert_log_verifies();
}

//! The harness itself, from the host: every server of the test internet answers, so that a
//! failure seen from inside a cell is the cell's enforcement and not a broken harness; and the
//! internet leaves nothing behind, even when its test panics.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::cell::on_host;
use crate::dns_wire;
use crate::internet::{Internet, ALPHA, BETA, GAMMA, REBIND};
use crate::servers::Service;

#[test]
fn dnsmasq_answers_every_name_and_logs_the_queries() {
    let net = Internet::new();
    let a = |name| dns_wire::query_a(net.dns(), name, Duration::from_secs(2)).expect(name);
    assert_eq!(a(ALPHA).addrs, vec![net.cdn()]);
    assert_eq!(a(BETA).addrs, a(ALPHA).addrs, "beta shares alpha's address");
    assert_eq!(a(GAMMA).addrs, vec![net.other()]);
    assert_eq!(a(REBIND).addrs, vec![net.private()]);
    for name in [ALPHA, BETA, GAMMA, REBIND] {
        assert!(
            net.dns_log_shows(name, Duration::from_secs(5)),
            "{name} not in the query log:\n{}",
            net.dns_log()
        );
    }
    assert!(!net.dns_log().contains("never-asked.example"));
}

#[test]
fn every_server_answers_from_the_host() {
    let net = Internet::new();
    let p = on_host(
        &net,
        "
out('dns_udp', dns(ALPHA, server=DNS))
out('dns_tcp', dns(GAMMA, server=DNS, tcp=True))
for name, ip in [('cdn', CDN), ('other', OTHER), ('private', PRIVATE), ('cdn6', CDN6)]:
    out(name + '_http80', http(ip, 80, ALPHA))
    out(name + '_http8080', http(ip, 8080, ALPHA))
    out(name + '_udp443', udp(ip, 443))
out('cdn_https_alpha', https(CDN, 443, ALPHA))
out('cdn_https_beta', https(CDN, 443, BETA))
out('cdn6_https_alpha', https(CDN6, 443, ALPHA))
out('private_https_rebind', https(PRIVATE, 443, REBIND))
",
    );
    assert_eq!(p.dns_rcode("dns_udp", 0), vec![net.cdn().to_string()]);
    assert_eq!(p.dns_rcode("dns_tcp", 0), vec![net.other().to_string()]);
    for name in ["cdn", "other", "private", "cdn6"] {
        for port in [80, 8080] {
            let r = p.ok(&format!("{name}_http{port}"));
            assert!(
                r["response"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(&format!("for host {ALPHA}")),
                "{r}"
            );
        }
        assert_eq!(p.ok(&format!("{name}_udp443"))["echo"], true);
    }
    for label in [
        "cdn_https_alpha",
        "cdn_https_beta",
        "cdn6_https_alpha",
        "private_https_rebind",
    ] {
        let r = p.ok(label);
        assert!(
            r["response"]
                .as_str()
                .unwrap_or_default()
                .starts_with("HTTP/1.0 200"),
            "{label}: {r}"
        );
    }
    // The servers saw the names: SNI in the ClientHello, Host in the request.
    let tls = net.record().tcp_hits_on(SocketAddr::new(net.cdn(), 443));
    assert!(tls.iter().all(|h| h.service == Service::Tls));
    assert_eq!(
        net.record()
            .udp_hits_on(SocketAddr::new(net.cdn(), 443))
            .len(),
        1
    );
    assert!(tls.iter().any(|h| h.names(ALPHA)) && tls.iter().any(|h| h.names(BETA)));
    let http = net.record().tcp_hits_on(SocketAddr::new(net.private(), 80));
    assert_eq!(http.len(), 1);
    assert_eq!(http[0].host_header().as_deref(), Some(ALPHA));
}

/// What the host shows of internet `index`: its namespace, veth and routes.
fn traces_of(index: u8) -> Vec<String> {
    let show = |args: &[&str]| {
        String::from_utf8_lossy(&Command::new("ip").args(args).output().expect("ip").stdout)
            .into_owned()
    };
    let mut found = Vec::new();
    let netns = format!("cellos-egi-{index}");
    if show(&["netns", "list"])
        .lines()
        .any(|l| l.split_whitespace().next() == Some(netns.as_str()))
    {
        found.push(netns);
    }
    let veth = format!("egi{index}");
    if show(&["-o", "link", "show"]).contains(&format!(": {veth}@")) {
        found.push(veth.clone());
    }
    for family in ["-4", "-6"] {
        for route in show(&[family, "route", "show", "table", "all"]).lines() {
            if route.contains(&format!("dev {veth} ")) || route.ends_with(&format!("dev {veth}")) {
                found.push(route.to_string());
            }
        }
    }
    found
}

#[test]
fn the_internet_is_removed_when_its_test_panics() {
    let index = std::panic::catch_unwind(|| {
        let net = Internet::new();
        assert!(!traces_of(net.index).is_empty());
        std::panic::panic_any(net.index);
    })
    .expect_err("the closure panics")
    .downcast::<u8>()
    .expect("the panic carries the index");
    assert_eq!(traces_of(*index), Vec::<String>::new());
}

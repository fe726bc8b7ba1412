//! From inside cells: a cell reaches exactly what its spec's `authority` declares, whatever it
//! tries, and every attempt is evidence in a log that verifies.
//!
//! The harness self-tests (`self_test.rs`) make the same attempts from the host, where every
//! one of them succeeds, so a failure seen from a cell is the cell's enforcement.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::cell::{authority, unique_id, Cells};
use crate::internet::{Internet, ALPHA, BETA, GAMMA, REBIND};

fn host_rule(name: &str, port: u16) -> String {
    format!("{{ host: {name}, port: {port} }}")
}

fn cidr_rule(ip: IpAddr, port: u16, protocol: &str) -> String {
    let bits = if ip.is_ipv4() { 32 } else { 128 };
    format!("{{ cidr: \"{ip}/{bits}\", port: {port}, protocol: {protocol} }}")
}

#[test]
fn an_allowed_name_is_reachable_on_its_declared_port_only() {
    let net = Internet::new();
    let cells = Cells::new();
    let id = unique_id("eg-allowed");
    let p = cells.probe(
        &net,
        &id,
        &authority(&[host_rule(ALPHA, 443)], &[]),
        &[],
        "
out('resolve', dns(ALPHA))
out('getaddrinfo', getaddr(ALPHA, 443))
out('https_443', https(CDN, 443, ALPHA))
out('http_80', http(CDN, 80, ALPHA))
out('http_8080', http(CDN, 8080, ALPHA))
",
    );
    assert_eq!(p.dns_rcode("resolve", 0), vec![net.cdn().to_string()]);
    let system = p.ok("getaddrinfo");
    assert!(
        system["addrs"]
            .as_array()
            .is_some_and(|a| a.contains(&net.cdn().to_string().into())),
        "{system}"
    );
    let page = p.ok("https_443");
    assert!(
        page["response"]
            .as_str()
            .is_some_and(|r| r.starts_with("HTTP/1.0 200")),
        "{page}"
    );
    p.failed("http_80");
    p.failed("http_8080");

    let rec = net.record();
    assert!(rec
        .tcp_hits_on(SocketAddr::new(net.cdn(), 443))
        .iter()
        .any(|h| h.names(ALPHA)));
    for port in [80, 8080] {
        assert!(
            rec.tcp_hits_on(SocketAddr::new(net.cdn(), port)).is_empty(),
            "port {port} was reached"
        );
    }

    let ev = cells.events(&id);
    ev.assert_network_enforced();
    ev.assert_dns("permitted", ALPHA);
    ev.assert_flow("allow", net.cdn(), 443, "tcp");
    ev.assert_flow("deny", net.cdn(), 80, "tcp");
    ev.assert_flow("deny", net.cdn(), 8080, "tcp");
    // The destroy-time summary counts what the events show one by one.
    let summary = ev.network_summary();
    for (counter, at_least) in [
        ("dnsPermitted", 1),
        ("gateAllowed", 1),
        ("flowsDenied", 2),
        ("bytesIn", 1),
        ("bytesOut", 1),
    ] {
        assert!(
            summary[counter].as_u64().is_some_and(|n| n >= at_least),
            "{counter} < {at_least}: {summary}"
        );
    }
    cells.assert_log_verifies();
}

#[test]
fn a_name_not_allowed_is_refused_and_never_reaches_the_upstream() {
    let net = Internet::new();
    let cells = Cells::new();
    let id = unique_id("eg-refused");
    // Names a workload might use to carry data out in the query itself.
    let exfil_txt = format!("s3cret-{}.{GAMMA}", std::process::id());
    let exfil_tcp = format!("t0ken-{}.{GAMMA}", std::process::id());
    let body = format!(
        "
out('allowed', dns(ALPHA))
out('gamma', dns(GAMMA))
out('beta_same_address', dns(BETA))
out('exfil_txt', dns('{exfil_txt}', qtype=16))
out('exfil_tcp', dns('{exfil_tcp}', tcp=True))
out('getaddrinfo', getaddr(GAMMA, 443))
"
    );
    let p = cells.probe(
        &net,
        &id,
        &authority(&[host_rule(ALPHA, 443)], &[]),
        &[],
        &body,
    );
    assert_eq!(p.dns_rcode("allowed", 0), vec![net.cdn().to_string()]);
    const REFUSED: u64 = 5;
    for label in ["gamma", "beta_same_address", "exfil_txt", "exfil_tcp"] {
        assert!(p.dns_rcode(label, REFUSED).is_empty());
    }
    p.failed("getaddrinfo");

    // The permitted query did arrive upstream, so the log is live; the refused ones did not.
    assert!(
        net.dns_log_shows(ALPHA, Duration::from_secs(5)),
        "{}",
        net.dns_log()
    );
    let log = net.dns_log();
    for name in [GAMMA, BETA] {
        assert!(!log.contains(name), "{name} reached the upstream:\n{log}");
    }
    assert!(!log.contains("s3cret-") && !log.contains("t0ken-"), "{log}");

    let ev = cells.events(&id);
    ev.assert_dns("permitted", ALPHA);
    for name in [GAMMA, BETA, exfil_txt.as_str(), exfil_tcp.as_str()] {
        ev.assert_dns("refused", name);
    }
    let summary = ev.network_summary();
    assert!(
        summary["dnsRefused"].as_u64().is_some_and(|n| n >= 4),
        "{summary}"
    );
    cells.assert_log_verifies();
}

#[test]
fn a_wildcard_allows_sub_names_but_not_the_apex() {
    let net = Internet::new();
    let cells = Cells::new();
    let id = unique_id("eg-wildcard");
    let wildcard = format!("*.{ALPHA}");
    let p = cells.probe(
        &net,
        &id,
        &authority(
            &[format!("{{ host: \"{wildcard}\", port: 443 }}")],
            &[&wildcard],
        ),
        &[],
        "
out('sub', dns('www.' + ALPHA))
out('apex', dns(ALPHA))
",
    );
    assert_eq!(p.dns_rcode("sub", 0), vec![net.cdn().to_string()]);
    assert!(p.dns_rcode("apex", 5).is_empty());
    let ev = cells.events(&id);
    ev.assert_dns("permitted", &format!("www.{ALPHA}"));
    ev.assert_dns("refused", ALPHA);
    cells.assert_log_verifies();
}

#[test]
fn direct_connections_to_undeclared_addresses_fail() {
    let net = Internet::new();
    let cells = Cells::new();
    let id = unique_id("eg-direct");
    let p = cells.probe(
        &net,
        &id,
        &authority(&[host_rule(ALPHA, 443)], &[]),
        &[],
        "
out('other_443', https(OTHER, 443, GAMMA))
out('other_80', http(OTHER, 80, GAMMA))
out('private_80', http(PRIVATE, 80, REBIND))
",
    );
    for label in ["other_443", "other_80", "private_80"] {
        p.failed(label);
    }
    for ip in [net.other(), net.private()] {
        for port in [80, 443] {
            assert!(net
                .record()
                .tcp_hits_on(SocketAddr::new(ip, port))
                .is_empty());
        }
    }
    let ev = cells.events(&id);
    // The gate saw the TLS attempt (observed); the kernel dropped the others (imposed).
    let gate = ev.assert_flow("deny", net.other(), 443, "tcp");
    assert_eq!(gate["data"]["authority"], "observed", "{gate}");
    for (ip, port) in [(net.other(), 80), (net.private(), 80)] {
        let kernel = ev.assert_flow("deny", ip, port, "tcp");
        assert_eq!(kernel["data"]["authority"], "imposed", "{kernel}");
    }
    cells.assert_log_verifies();
}

#[test]
fn dns_to_any_other_resolver_fails() {
    let net = Internet::new();
    let cells = Cells::new();
    let id = unique_id("eg-resolver");
    let name = format!("direct-{}.{ALPHA}", std::process::id());
    let body = format!(
        "
out('upstream_udp', dns('{name}', server=DNS))
out('upstream_tcp', dns('{name}', server=DNS, tcp=True))
out('other_udp', dns('{name}', server=OTHER))
"
    );
    let p = cells.probe(
        &net,
        &id,
        &authority(&[host_rule(ALPHA, 443)], &[]),
        &[],
        &body,
    );
    for label in ["upstream_udp", "upstream_tcp", "other_udp"] {
        p.failed(label);
    }
    // Give the upstream a moment to log anything that did arrive.
    assert!(!net.dns_log_shows("direct-", Duration::from_secs(1)));
    let ev = cells.events(&id);
    ev.assert_flow("deny", net.dns().ip(), 53, "udp");
    ev.assert_flow("deny", net.dns().ip(), 53, "tcp");
    ev.assert_flow("deny", net.other(), 53, "udp");
    cells.assert_log_verifies();
}

#[test]
fn udp_and_quic_fail_where_not_declared() {
    let net = Internet::new();
    let cells = Cells::new();
    let id = unique_id("eg-udp");
    let p = cells.probe(
        &net,
        &id,
        &authority(
            &[host_rule(ALPHA, 443), cidr_rule(net.other(), 443, "udp")],
            &[],
        ),
        &[],
        "
out('resolve', dns(ALPHA))
# A QUIC Initial starts with a long header (0xc0 | type) and version 1.
out('quic_alpha', udp(CDN, 443, bytes([0xc3, 0, 0, 0, 1]) + bytes(1195)))
out('udp_declared', udp(OTHER, 443))
",
    );
    assert_eq!(p.dns_rcode("resolve", 0), vec![net.cdn().to_string()]);
    p.failed("quic_alpha");
    assert_eq!(p.ok("udp_declared")["echo"], true);
    let udp_hits = |ip| net.record().udp_hits_on(SocketAddr::new(ip, 443)).len();
    assert_eq!(
        udp_hits(net.cdn()),
        0,
        "QUIC reached the allowed name's address"
    );
    assert_eq!(udp_hits(net.other()), 1);
    let ev = cells.events(&id);
    ev.assert_flow("deny", net.cdn(), 443, "udp");
    cells.assert_log_verifies();
}

#[test]
fn ipv6_fails_where_not_declared() {
    let net = Internet::new();
    let cells = Cells::new();
    let id = unique_id("eg-ipv6");
    let p = cells.probe(
        &net,
        &id,
        &authority(
            &[host_rule(ALPHA, 443), cidr_rule(net.other(), 80, "tcp")],
            &[],
        ),
        &[],
        "
out('v6_state', ipv6_state())
out('v6_https', https(CDN6, 443, ALPHA))
out('v6_http', http(CDN6, 80, ALPHA))
out('v6_udp', udp(CDN6, 443))
",
    );
    let attempts = [
        ("v6_https", 443, "tcp"),
        ("v6_http", 80, "tcp"),
        ("v6_udp", 443, "udp"),
    ];
    for (label, _, _) in attempts {
        p.failed(label);
    }
    for port in [80, 443] {
        let local = SocketAddr::new(net.cdn_v6(), port);
        assert!(net.record().tcp_hits_on(local).is_empty());
    }
    assert!(net
        .record()
        .udp_hits_on(SocketAddr::new(net.cdn_v6(), 443))
        .is_empty());

    // Each attempt is a denied flow, unless it never became a packet: the cell has no IPv6
    // address or route to send one from, and the socket said so.
    let state = p.ok("v6_state");
    let empty = |key: &str| state[key].as_array().is_some_and(|a| a.is_empty());
    let no_ipv6_path = empty("addrs") && empty("routes");
    let ev = cells.events(&id);
    for (label, port, protocol) in attempts {
        if ev.flows("deny", net.cdn_v6(), port, protocol).is_empty() {
            let error = p.get(label)["error"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(
                no_ipv6_path && error.contains("Network is unreachable"),
                "{label}: no deny event, yet the cell has an IPv6 path ({state}) or the \
                 attempt failed otherwise ({error})"
            );
        }
    }
    cells.assert_log_verifies();
}

#[test]
fn another_names_sni_on_an_allowed_address_is_denied() {
    let net = Internet::new();
    let cells = Cells::new();
    let id = unique_id("eg-sni");
    let p = cells.probe(
        &net,
        &id,
        &authority(&[host_rule(ALPHA, 443)], &[]),
        &[],
        "
out('resolve', dns(ALPHA))
out('alpha', https(CDN, 443, ALPHA))
out('beta_sni', https(CDN, 443, BETA))
out('no_sni', https(CDN, 443, None, host=BETA))
",
    );
    assert_eq!(p.dns_rcode("resolve", 0), vec![net.cdn().to_string()]);
    p.ok("alpha");
    p.failed("beta_sni");
    p.failed("no_sni");
    // Only the allowed handshake reached the shared server.
    let hits = net.record().tcp_hits_on(SocketAddr::new(net.cdn(), 443));
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert!(hits[0].names(ALPHA) && !hits[0].names(BETA));

    let ev = cells.events(&id);
    let denied = ev.flows("deny", net.cdn(), 443, "tcp");
    assert!(
        denied.len() >= 2,
        "SNI mismatch and missing SNI: {denied:?}"
    );
    assert!(
        denied.iter().any(|e| e["data"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains(BETA))),
        "{denied:?}"
    );
    ev.assert_flow("allow", net.cdn(), 443, "tcp");
    cells.assert_log_verifies();
}

#[test]
fn another_names_host_header_on_an_allowed_address_is_denied() {
    let net = Internet::new();
    let cells = Cells::new();
    let id = unique_id("eg-host");
    let p = cells.probe(
        &net,
        &id,
        &authority(&[host_rule(ALPHA, 80)], &[]),
        &[],
        "
out('resolve', dns(ALPHA))
out('alpha', http(CDN, 80, ALPHA))
out('beta_host', http(CDN, 80, BETA))
",
    );
    assert_eq!(p.dns_rcode("resolve", 0), vec![net.cdn().to_string()]);
    let served = |label: &str| {
        p.get(label)["response"]
            .as_str()
            .is_some_and(|r| r.contains("served by"))
    };
    assert!(served("alpha"), "{}", p.get("alpha"));
    assert!(!served("beta_host"), "{}", p.get("beta_host"));
    let hosts: Vec<Option<String>> = net
        .record()
        .tcp_hits_on(SocketAddr::new(net.cdn(), 80))
        .iter()
        .map(|h| h.host_header())
        .collect();
    assert_eq!(hosts, vec![Some(ALPHA.to_string())]);

    let ev = cells.events(&id);
    let denied = ev.flows("deny", net.cdn(), 80, "tcp");
    assert!(
        denied.iter().any(|e| e["data"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains(BETA))),
        "{denied:?}"
    );
    cells.assert_log_verifies();
}

#[test]
fn a_rebinding_answer_into_a_private_range_is_dropped() {
    let net = Internet::new();
    let cells = Cells::new();
    let id = unique_id("eg-rebind");
    let p = cells.probe(
        &net,
        &id,
        &authority(&[host_rule(REBIND, 80)], &[]),
        &[],
        "
out('resolve', dns(REBIND))
out('getaddrinfo', getaddr(REBIND, 80))
out('private_80', http(PRIVATE, 80, REBIND))
",
    );
    let answer = p.get("resolve");
    assert!(
        answer["addrs"].as_array().is_none_or(|a| a.is_empty()),
        "the private answer reached the cell: {answer}"
    );
    let system = p.get("getaddrinfo");
    assert!(
        !system.to_string().contains(&net.private().to_string()),
        "{system}"
    );
    p.failed("private_80");
    assert!(net
        .record()
        .tcp_hits_on(SocketAddr::new(net.private(), 80))
        .is_empty());

    let ev = cells.events(&id);
    let reported = ev.0.iter().any(|e| {
        e["type"].as_str().is_some_and(|t| t.contains(".dns.v1."))
            && e["data"]["name"].as_str().map(|n| n.trim_end_matches('.')) == Some(REBIND)
            && e["data"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains(&net.private().to_string()))
    });
    assert!(reported, "the dropped answer is not reported: {:?}", ev.0);
    let summary = ev.network_summary();
    assert!(
        summary["dnsRebindingDropped"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{summary}"
    );
    ev.assert_flow("deny", net.private(), 80, "tcp");
    cells.assert_log_verifies();
}

#[test]
fn proxy_environment_variables_change_nothing() {
    let net = Internet::new();
    let cells = Cells::new();
    let id = unique_id("eg-proxy");
    // An allowed name used as a forward proxy to another name, and a proxy at an address
    // nothing allows.
    let via_alpha = format!("http://{ALPHA}:80");
    let via_other = format!("http://{}:80", net.other());
    let env = [
        ("HTTP_PROXY", via_alpha.as_str()),
        ("HTTPS_PROXY", via_alpha.as_str()),
        ("http_proxy", via_alpha.as_str()),
        ("https_proxy", via_alpha.as_str()),
        ("ALL_PROXY", via_alpha.as_str()),
        ("NO_PROXY", ""),
    ];
    let body = format!(
        "
out('resolve', dns(ALPHA))
out('direct_alpha', http(CDN, 80, ALPHA))
out('beta_via_alpha', fetch('http://' + BETA + '/'))
out('beta_tls_via_alpha', fetch('https://' + BETA + '/'))
for key in ('HTTP_PROXY', 'http_proxy', 'HTTPS_PROXY', 'https_proxy'):
    os.environ[key] = '{via_other}'
out('alpha_via_other', fetch('http://' + ALPHA + '/'))
out('beta_tls_via_other', fetch('https://' + BETA + '/'))
"
    );
    let p = cells.probe(
        &net,
        &id,
        &authority(&[host_rule(ALPHA, 80)], &[]),
        &env,
        &body,
    );
    assert!(
        p.ok("direct_alpha")["response"]
            .as_str()
            .is_some_and(|r| r.contains("served by")),
        "{}",
        p.get("direct_alpha")
    );
    for label in [
        "beta_via_alpha",
        "beta_tls_via_alpha",
        "alpha_via_other",
        "beta_tls_via_other",
    ] {
        p.failed(label);
    }
    let hits = net.record().hits();
    assert!(
        hits.iter().all(|h| !h.names(BETA)),
        "a request for beta reached a server: {hits:?}"
    );
    assert!(
        hits.iter().all(|h| h.local.ip() != net.other()),
        "the proxy address was reached: {hits:?}"
    );
    let ev = cells.events(&id);
    ev.assert_flow("deny", net.other(), 80, "tcp");
    let denied = ev.flows("deny", net.cdn(), 80, "tcp");
    assert!(
        denied.iter().any(|e| e["data"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains(BETA))),
        "{denied:?}"
    );
    cells.assert_log_verifies();
}

#[test]
fn malformed_dns_packets_are_dropped_and_the_authority_keeps_answering() {
    let net = Internet::new();
    let cells = Cells::new();
    let id = unique_id("eg-malformed");
    let p = cells.probe(
        &net,
        &id,
        &authority(&[host_rule(ALPHA, 443)], &[]),
        &[],
        "
garbage = [
    b'',
    b'\\x12',
    b'\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00',
    b'\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\xc0\\x0c\\x00\\x01\\x00\\x01',
    b'\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x3f' + b'a' * 10,
    bytes(random.randrange(256) for _ in range(600)),
]
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    for g in garbage:
        s.sendto(g, (resolver(), 53))
try:
    with socket.create_connection((resolver(), 53), timeout=TIMEOUT) as s:
        s.sendall(struct.pack('>H', 65535) + b'\\xff' * 100)
except OSError:
    pass
out('after_garbage', dns(ALPHA))
out('after_garbage_tcp', dns(ALPHA, tcp=True))
",
    );
    for label in ["after_garbage", "after_garbage_tcp"] {
        assert_eq!(p.dns_rcode(label, 0), vec![net.cdn().to_string()]);
    }
    let ev = cells.events(&id);
    let summary = ev.network_summary();
    assert!(
        summary["dnsMalformed"].as_u64().is_some_and(|n| n >= 1),
        "{summary}"
    );
    cells.assert_log_verifies();
}

#[test]
fn cells_take_their_links_from_the_configured_pool() {
    let net = Internet::new();
    let cells = Cells::new();
    let id = unique_id("eg-pool");
    let pool = "10.214.128.0/20";
    let p = cells.probe_with_args(
        &net,
        &id,
        &authority(&[host_rule(ALPHA, 443)], &[]),
        &[],
        "
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    s.connect((resolver(), 53))
    out('link', {'cell': s.getsockname()[0], 'host': resolver()})
",
        &["--net-pool", pool],
    );
    let link = p.ok("link");
    let in_pool = |key: &str| {
        link[key]
            .as_str()
            .and_then(|a| a.parse::<Ipv4Addr>().ok())
            .is_some_and(|a| a.octets()[..2] == [10, 214] && (128..144).contains(&a.octets()[2]))
    };
    assert!(in_pool("cell") && in_pool("host"), "{link} not in {pool}");
}

#[test]
fn a_literal_cidr_rule_opens_its_port_and_nothing_else() {
    let net = Internet::new();
    let cells = Cells::new();
    let id = unique_id("eg-cidr");
    let p = cells.probe(
        &net,
        &id,
        &authority(&[cidr_rule(net.other(), 8080, "tcp")], &[]),
        &[],
        "
out('declared', http(OTHER, 8080, GAMMA))
out('other_port', http(OTHER, 80, GAMMA))
out('other_address', http(CDN, 8080, ALPHA))
",
    );
    assert!(
        p.ok("declared")["response"]
            .as_str()
            .is_some_and(|r| r.contains("served by")),
        "{}",
        p.get("declared")
    );
    p.failed("other_port");
    p.failed("other_address");
    assert_eq!(
        net.record()
            .tcp_hits_on(SocketAddr::new(net.other(), 8080))
            .len(),
        1
    );
    for local in [
        SocketAddr::new(net.other(), 80),
        SocketAddr::new(net.cdn(), 8080),
    ] {
        assert!(
            net.record().tcp_hits_on(local).is_empty(),
            "{local} reached"
        );
    }
    let ev = cells.events(&id);
    ev.assert_flow("deny", net.other(), 80, "tcp");
    ev.assert_flow("deny", net.cdn(), 8080, "tcp");
    cells.assert_log_verifies();
}

#[test]
fn a_private_address_is_reachable_only_when_a_rule_names_it() {
    let net = Internet::new();
    let cells = Cells::new();
    let id = unique_id("eg-private");
    // The private server listens on 80 and 8080; the rule names it on 8080 only.
    let p = cells.probe(
        &net,
        &id,
        &authority(&[cidr_rule(net.private(), 8080, "tcp")], &[]),
        &[],
        "
out('named', http(PRIVATE, 8080, REBIND))
out('not_named', http(PRIVATE, 80, REBIND))
",
    );
    assert!(
        p.ok("named")["response"]
            .as_str()
            .is_some_and(|r| r.contains("served by")),
        "{}",
        p.get("named")
    );
    p.failed("not_named");
    let ev = cells.events(&id);
    let denied = ev.assert_flow("deny", net.private(), 80, "tcp");
    assert!(
        denied["data"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("range")),
        "denied as a private range: {denied}"
    );
    cells.assert_log_verifies();
}

#[test]
fn an_allowed_sni_towards_an_address_the_name_never_resolved_to_is_denied() {
    let net = Internet::new();
    let cells = Cells::new();
    let id = unique_id("eg-unresolved");
    let p = cells.probe(
        &net,
        &id,
        &authority(&[host_rule(ALPHA, 443)], &[]),
        &[],
        "
out('other_address', https(OTHER, 443, ALPHA))
out('before_resolving', https(CDN, 443, ALPHA))
out('resolve', dns(ALPHA))
out('after_resolving', https(CDN, 443, ALPHA))
",
    );
    p.failed("other_address");
    p.failed("before_resolving");
    assert_eq!(p.dns_rcode("resolve", 0), vec![net.cdn().to_string()]);
    p.ok("after_resolving");
    assert!(net
        .record()
        .tcp_hits_on(SocketAddr::new(net.other(), 443))
        .is_empty());
    assert_eq!(
        net.record()
            .tcp_hits_on(SocketAddr::new(net.cdn(), 443))
            .len(),
        1,
        "only the connection after resolving arrives"
    );
    let ev = cells.events(&id);
    for ip in [net.other(), net.cdn()] {
        let denied = ev.assert_flow("deny", ip, 443, "tcp");
        assert!(
            denied["data"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("not-resolved")),
            "{denied}"
        );
    }
    ev.assert_flow("allow", net.cdn(), 443, "tcp");
    cells.assert_log_verifies();
}

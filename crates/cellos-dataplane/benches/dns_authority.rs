//! One DNS round trip on loopback: straight to an upstream responder, and through the DNS
//! authority in front of that same responder (the in-memory pin table as its pinner, so the
//! figure is the authority's own cost without an `nft` process).
//!
//! The responder is a blocking thread answering every A query for `bench.example` with one
//! address, TTL 300, the way dnsmasq answers the egress benchmark.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use cellos_dataplane::dns::{
    CoalescedQueries, DnsAuthorityServer, DnsConfig, DnsObserver, QueryEvent,
};
use cellos_dataplane::{DeniedRanges, PinTable};
use criterion::{criterion_group, criterion_main, Criterion};
use hickory_proto::op::{Message, MessageType, Query};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// Answers every query it receives with one public address.
fn responder() -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind the responder");
    let addr = sock.local_addr().expect("responder address");
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            let Ok(mut m) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let Some(name) = m.queries().first().map(|q| q.name().clone()) else {
                continue;
            };
            m.set_message_type(MessageType::Response)
                .set_recursion_available(true)
                .add_answer(Record::from_rdata(
                    name,
                    300,
                    RData::A(A(Ipv4Addr::new(203, 0, 113, 10))),
                ));
            let _ = sock.send_to(&m.to_vec().expect("encode"), peer);
        }
    });
    addr
}

/// Events are dropped: the egress wiring rate-limits them to a few per second anyway.
struct Discard;

impl DnsObserver for Discard {
    fn query(&self, _: &QueryEvent) {}
    fn coalesced(&self, _: &CoalescedQueries) {}
}

fn query_bytes(id: u16, name: &str) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id)
        .set_recursion_desired(true)
        .add_query(Query::query(
            Name::from_str(name).expect("name"),
            RecordType::A,
        ));
    m.to_vec().expect("encode")
}

/// One blocking round trip from `client` to `server`; `fresh` asks a name never asked before
/// (a cache miss), otherwise always the same name.
fn round_trip(client: &UdpSocket, server: SocketAddr, id: &mut u16, fresh: bool) {
    *id = id.wrapping_add(1);
    let name = if fresh {
        format!("n{id}-{}.miss.example.", std::process::id())
    } else {
        "bench.example.".to_owned()
    };
    let q = query_bytes(*id, &name);
    client.send_to(&q, server).expect("send");
    let mut buf = [0u8; 512];
    loop {
        let n = client.recv(&mut buf).expect("an answer within the timeout");
        if buf[..n.min(2)] == q[..2] {
            return;
        }
    }
}

fn dns(c: &mut Criterion) {
    let upstream = responder();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let config = DnsConfig {
        allowlist: vec!["bench.example".into(), "*.miss.example".into()],
        upstream,
        min_ttl: Duration::from_secs(30),
        max_ttl: Duration::from_secs(300),
        denied_ranges: DeniedRanges::defaults(),
        explicit_cidrs: vec![],
        upstream_timeout: Duration::from_secs(3),
    };
    let server = rt
        .block_on(DnsAuthorityServer::bind(
            "127.0.0.1:0".parse().expect("addr"),
            config,
            Arc::new(PinTable::new()),
            Arc::new(Discard),
        ))
        .expect("authority");
    let client = UdpSocket::bind("127.0.0.1:0").expect("client");
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut id = 0u16;
    let mut group = c.benchmark_group("dns_round_trip");
    let authority = server.local_addr();
    group.bench_function("direct", |b| {
        b.iter(|| round_trip(&client, upstream, &mut id, false))
    });
    group.bench_function("authority_same_name", |b| {
        b.iter(|| round_trip(&client, authority, &mut id, false))
    });
    group.bench_function("authority_new_name", |b| {
        b.iter(|| round_trip(&client, authority, &mut id, true))
    });
    group.finish();
    rt.block_on(server.shutdown());
}

criterion_group!(benches, dns);
criterion_main!(benches);

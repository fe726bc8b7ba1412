//! The DNS authority's answer cache and pin ledger against an in-process upstream on loopback
//! that counts what it is asked and whose answers a test can change.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cellos_dataplane::dns::{
    CoalescedQueries, DnsAuthorityServer, DnsConfig, DnsObserver, QueryEvent, Verdict,
};
use cellos_dataplane::pin::{AddressPinner, Pin, PinError};
use cellos_dataplane::DeniedRanges;
use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Records per (lower-case name without dot, type), and how often each name was asked.
#[derive(Default)]
struct Zone {
    records: HashMap<(String, RecordType), (u32, Vec<RData>)>,
    asked: HashMap<String, u32>,
}

/// An upstream resolver on a loopback UDP port, answering from its [`Zone`].
struct Upstream {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    async fn start() -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let zone = Arc::new(Mutex::new(Zone::default()));
        let z = zone.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let reply = answer(&query, &z);
                let _ = sock.send_to(&reply.to_vec().unwrap(), peer).await;
            }
        });
        Self { addr, zone, task }
    }

    fn set(&self, name: &str, t: RecordType, ttl: u32, data: Vec<RData>) {
        let mut z = self.zone.lock().unwrap();
        z.records.insert((name.to_owned(), t), (ttl, data));
    }

    fn asked(&self, name: &str) -> u32 {
        let z = self.zone.lock().unwrap();
        z.asked.get(name).copied().unwrap_or(0)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(query: &Message, zone: &Mutex<Zone>) -> Message {
    let mut reply = query.clone();
    reply
        .set_message_type(MessageType::Response)
        .set_recursion_available(true);
    let Some(q) = query.queries().first() else {
        return reply;
    };
    let key = q
        .name()
        .to_ascii()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let mut z = zone.lock().unwrap();
    *z.asked.entry(key.clone()).or_default() += 1;
    match z.records.get(&(key, q.query_type())) {
        Some((ttl, data)) => {
            for d in data {
                let owner = match d {
                    RData::CNAME(_) => q.name().clone(),
                    _ => Name::from_str("edge.cdn.example.").unwrap(),
                };
                reply.add_answer(Record::from_rdata(owner, *ttl, d.clone()));
            }
        }
        None => {
            reply.set_response_code(ResponseCode::NXDomain);
        }
    }
    reply
}

/// Pins, events and received answers in one ordered log, plus the events themselves.
#[derive(Default)]
struct Recorder {
    log: Mutex<Vec<String>>,
    events: Mutex<Vec<QueryEvent>>,
    pins: Mutex<Vec<Pin>>,
}

impl Recorder {
    fn note(&self, line: String) {
        self.log.lock().unwrap().push(line);
    }
    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
    fn events(&self) -> Vec<QueryEvent> {
        self.events.lock().unwrap().clone()
    }
    fn pins(&self) -> Vec<Pin> {
        self.pins.lock().unwrap().clone()
    }
}

impl DnsObserver for Recorder {
    fn query(&self, event: &QueryEvent) {
        self.events.lock().unwrap().push(event.clone());
    }
    fn coalesced(&self, _: &CoalescedQueries) {}
}

impl AddressPinner for Recorder {
    fn pin(&self, pins: &[Pin]) -> Result<(), PinError> {
        for p in pins {
            self.note(format!("pin {} {}", p.name, p.ip));
        }
        self.pins.lock().unwrap().extend_from_slice(pins);
        Ok(())
    }
}

struct Fixture {
    up: Upstream,
    server: DnsAuthorityServer,
    rec: Arc<Recorder>,
}

async fn fixture(min_ttl: u64, max_ttl: u64) -> Fixture {
    let up = Upstream::start().await;
    let rec = Arc::new(Recorder::default());
    let config = DnsConfig {
        allowlist: vec!["*.allowed.test".into()],
        upstream: up.addr,
        min_ttl: Duration::from_secs(min_ttl),
        max_ttl: Duration::from_secs(max_ttl),
        denied_ranges: DeniedRanges::defaults(),
        explicit_cidrs: vec![],
        upstream_timeout: Duration::from_secs(5),
    };
    let server = DnsAuthorityServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        config,
        rec.clone(),
        rec.clone(),
    )
    .await
    .unwrap();
    Fixture { up, server, rec }
}

fn a(ip: &str) -> RData {
    RData::A(A::from_str(ip).unwrap())
}

fn query(name: &str, t: RecordType) -> Message {
    let mut m = Message::new();
    m.set_id(rand::random())
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_str(name).unwrap(), t));
    m
}

/// Asks over UDP; notes the answer in the recorder's log once it has arrived.
async fn ask(f: &Fixture, name: &str, t: RecordType) -> Message {
    let q = query(name, t);
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&q.to_vec().unwrap(), f.server.local_addr())
        .await
        .unwrap();
    let mut buf = vec![0u8; 65_535];
    let (n, _) = tokio::time::timeout(Duration::from_secs(10), sock.recv_from(&mut buf))
        .await
        .expect("the authority answers")
        .unwrap();
    let r = Message::from_vec(&buf[..n]).unwrap();
    f.rec.note(format!("answer {name}"));
    assert_eq!(r.id(), q.id());
    assert_eq!(
        r.queries(),
        q.queries(),
        "the client's own question comes back"
    );
    r
}

async fn ask_tcp(f: &Fixture, name: &str, t: RecordType) -> Message {
    let q = query(name, t).to_vec().unwrap();
    let mut stream = TcpStream::connect(f.server.local_addr()).await.unwrap();
    stream.write_u16(q.len() as u16).await.unwrap();
    stream.write_all(&q).await.unwrap();
    let len = stream.read_u16().await.unwrap();
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

fn addresses(m: &Message) -> Vec<IpAddr> {
    m.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn a_repeated_query_is_answered_from_the_cache_without_upstream_or_pinner() {
    let f = fixture(30, 300).await;
    f.up.set(
        "api.allowed.test",
        RecordType::A,
        120,
        vec![a("203.0.113.10")],
    );
    let first = ask(&f, "api.allowed.test.", RecordType::A).await;
    assert_eq!(first.answers()[0].ttl(), 120);
    // Another spelling of the same name is the same question.
    let second = ask(&f, "API.Allowed.Test.", RecordType::A).await;
    assert_eq!(second.response_code(), ResponseCode::NoError);
    assert_eq!(addresses(&second), vec![ip("203.0.113.10")]);
    let ttl = second.answers()[0].ttl();
    assert!((118..=119).contains(&ttl), "TTL counted down: {ttl}");
    assert_eq!(f.up.asked("api.allowed.test"), 1);
    assert_eq!(
        f.rec.pins().len(),
        1,
        "the standing pin is not installed again"
    );
    // Every query is an event, the cached one marked as such.
    let events = f.rec.events();
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e.verdict == Verdict::Permitted
        && e.name == "api.allowed.test"
        && e.answers == 1));
    assert_eq!(
        events[0].reason.as_deref(),
        Some("allowed by *.allowed.test")
    );
    assert_eq!(
        events[1].reason.as_deref(),
        Some("allowed by *.allowed.test; cached answer")
    );
    assert_eq!(f.server.counters().snapshot().permitted, 2);
}

#[tokio::test]
async fn an_expired_answer_is_asked_again_and_a_changed_answer_is_seen() {
    let f = fixture(0, 300).await;
    f.up.set(
        "api.allowed.test",
        RecordType::A,
        2,
        vec![a("203.0.113.10")],
    );
    ask(&f, "api.allowed.test.", RecordType::A).await;
    ask(&f, "api.allowed.test.", RecordType::A).await;
    assert_eq!(f.up.asked("api.allowed.test"), 1);
    f.up.set(
        "api.allowed.test",
        RecordType::A,
        2,
        vec![a("203.0.113.20")],
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = ask(&f, "api.allowed.test.", RecordType::A).await;
    assert_eq!(f.up.asked("api.allowed.test"), 2);
    assert_eq!(addresses(&r), vec![ip("203.0.113.20")]);
    let pinned: Vec<IpAddr> = f.rec.pins().iter().map(|p| p.ip).collect();
    assert_eq!(pinned, vec![ip("203.0.113.10"), ip("203.0.113.20")]);
    assert_eq!(f.rec.events().len(), 3);
}

#[tokio::test]
async fn an_answer_without_more_than_the_minimum_ttl_left_is_not_served_from_the_cache() {
    // TTL 1 is clamped up to the 30 s minimum: a cached copy would have less than that left.
    let f = fixture(30, 300).await;
    f.up.set(
        "short.allowed.test",
        RecordType::A,
        1,
        vec![a("203.0.113.11")],
    );
    for _ in 0..3 {
        let r = ask(&f, "short.allowed.test.", RecordType::A).await;
        assert_eq!(r.answers()[0].ttl(), 30);
    }
    assert_eq!(f.up.asked("short.allowed.test"), 3);
}

#[tokio::test]
async fn pins_are_installed_before_each_answer_leaves() {
    let f = fixture(30, 300).await;
    f.up.set(
        "api.allowed.test",
        RecordType::A,
        300,
        vec![a("203.0.113.10")],
    );
    f.up.set(
        "other.allowed.test",
        RecordType::A,
        30,
        vec![a("203.0.113.10")],
    );
    ask(&f, "api.allowed.test.", RecordType::A).await;
    // A shorter pin of the same address for another name may cut the first name's pin short
    // (pinners refresh an address's timeout), so the next cached answer renews its pin first.
    ask(&f, "other.allowed.test.", RecordType::A).await;
    let cached = ask(&f, "api.allowed.test.", RecordType::A).await;
    assert!(cached.answers()[0].ttl() > 290);
    assert_eq!(f.up.asked("api.allowed.test"), 1);
    assert_eq!(
        f.rec.log(),
        vec![
            "pin api.allowed.test 203.0.113.10",
            "answer api.allowed.test.",
            "pin other.allowed.test 203.0.113.10",
            "answer other.allowed.test.",
            "pin api.allowed.test 203.0.113.10",
            "answer api.allowed.test.",
        ]
    );
    let renewed = f.rec.pins()[2].ttl.as_secs();
    assert!(
        (290..300).contains(&renewed),
        "renewed for what is left: {renewed}"
    );
    // Now it stands: the next cached answer needs no pinner.
    ask(&f, "api.allowed.test.", RecordType::A).await;
    assert_eq!(f.rec.pins().len(), 3, "{:?}", f.rec.pins());
    assert_eq!(f.rec.events().len(), 4);
}

#[tokio::test]
async fn refused_names_stay_refused_whatever_is_cached() {
    let f = fixture(30, 300).await;
    // An allowed alias of a name the cell may not resolve itself.
    f.up.set(
        "alias.allowed.test",
        RecordType::A,
        300,
        vec![
            RData::CNAME(CNAME(Name::from_str("secret.evil.test.").unwrap())),
            a("203.0.113.13"),
        ],
    );
    f.up.set(
        "secret.evil.test",
        RecordType::A,
        300,
        vec![a("203.0.113.13")],
    );
    ask(&f, "alias.allowed.test.", RecordType::A).await;
    for _ in 0..2 {
        let r = ask(&f, "secret.evil.test.", RecordType::A).await;
        assert_eq!(r.response_code(), ResponseCode::Refused);
        assert!(r.answers().is_empty());
    }
    assert_eq!(f.up.asked("secret.evil.test"), 0);
    let verdicts: Vec<Verdict> = f.rec.events().iter().map(|e| e.verdict).collect();
    assert_eq!(
        verdicts,
        vec![Verdict::Permitted, Verdict::Refused, Verdict::Refused]
    );
    assert_eq!(f.server.counters().snapshot().refused, 2);
}

#[tokio::test]
async fn aaaa_answers_are_pinned_and_rebinding_ones_dropped_every_time() {
    let f = fixture(30, 300).await;
    f.up.set(
        "v6.allowed.test",
        RecordType::AAAA,
        300,
        vec![
            RData::AAAA(AAAA::from_str("2001:db8::10").unwrap()),
            RData::AAAA(AAAA::from_str("fd00::1").unwrap()),
        ],
    );
    for _ in 0..2 {
        let r = ask(&f, "v6.allowed.test.", RecordType::AAAA).await;
        assert_eq!(addresses(&r), vec![ip("2001:db8::10")]);
    }
    let pins = f.rec.pins();
    assert_eq!(
        (pins[0].name.as_str(), pins[0].ip),
        ("v6.allowed.test", ip("2001:db8::10"))
    );
    assert!(f.rec.log()[0].starts_with("pin v6.allowed.test"));
    // An answer that lost a record to the rebinding check is asked and reported again.
    assert_eq!(f.up.asked("v6.allowed.test"), 2);
    for e in f.rec.events() {
        assert_eq!(e.rebinding_dropped, vec![ip("fd00::1")]);
    }
    assert_eq!(f.server.counters().snapshot().rebinding_dropped, 2);
    assert!(pins.iter().all(|p| p.ip == ip("2001:db8::10")));
}

#[tokio::test]
async fn a_cached_answer_too_large_for_udp_is_truncated_and_served_whole_over_tcp() {
    let f = fixture(30, 300).await;
    let many: Vec<RData> = (1..=60).map(|i| a(&format!("203.0.113.{i}"))).collect();
    f.up.set("big.allowed.test", RecordType::A, 300, many);
    let udp = ask(&f, "big.allowed.test.", RecordType::A).await;
    assert!(udp.truncated());
    let again = ask(&f, "big.allowed.test.", RecordType::A).await;
    assert!(again.truncated());
    let tcp = ask_tcp(&f, "big.allowed.test.", RecordType::A).await;
    assert!(!tcp.truncated());
    assert_eq!(addresses(&tcp).len(), 60);
    assert_eq!(f.up.asked("big.allowed.test"), 1);
    assert_eq!(f.rec.pins().len(), 60);
    assert_eq!(f.rec.events().len(), 3);
}

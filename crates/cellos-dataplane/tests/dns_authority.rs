//! The DNS authority against a real upstream (dnsmasq on loopback).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cellos_dataplane::dns::{
    CoalescedQueries, DnsAuthorityServer, DnsConfig, DnsObserver, QueryEvent, Verdict,
};
use cellos_dataplane::pin::{AddressPinner, Pin, PinError};
use cellos_dataplane::DeniedRanges;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// A dnsmasq serving fixed records on a free loopback port, logging every query it receives.
struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Dnsmasq {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("queries.log");
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("dnsmasq")
            .args([
                "--no-daemon",
                &format!("--port={port}"),
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--user=root",
                "--pid-file=",
                // TEST-NET-3 documentation address: answered, never contacted.
                "--host-record=api.allowed.test,203.0.113.10,86400",
                "--host-record=short.allowed.test,203.0.113.11,1",
                "--host-record=allowed.test,203.0.113.12",
                // Rebinding: an allowed name pointing into a private range.
                "--host-record=evil.allowed.test,10.0.0.5",
                "--host-record=secret.evil.test,203.0.113.13",
                "--log-queries",
                &format!("--log-facility={}", log.display()),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq is installed by scripts/setup.sh (dnsmasq-base)");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let me = Self {
            child,
            addr,
            log,
            _dir: dir,
        };
        // Wait until it answers; not a timing assertion, only readiness.
        for _ in 0..100 {
            if let Ok(Ok(_)) = tokio::time::timeout(
                Duration::from_millis(100),
                udp_query(addr, &query("api.allowed.test.", RecordType::A)),
            )
            .await
            {
                return me;
            }
        }
        panic!("dnsmasq did not start on {addr}");
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<QueryEvent>>,
    pins: Mutex<Vec<Pin>>,
}

impl DnsObserver for Recorder {
    fn query(&self, event: &QueryEvent) {
        self.events.lock().unwrap().push(event.clone());
    }
    fn coalesced(&self, _: &CoalescedQueries) {}
}

impl AddressPinner for Recorder {
    fn pin(&self, pins: &[Pin]) -> Result<(), PinError> {
        self.pins.lock().unwrap().extend_from_slice(pins);
        Ok(())
    }
}

fn query(name: &str, t: RecordType) -> Message {
    let mut m = Message::new();
    m.set_id(rand_id())
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_str(name).unwrap(), t));
    m
}

fn rand_id() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(100);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

async fn udp_query(server: SocketAddr, q: &Message) -> std::io::Result<Message> {
    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    sock.send_to(&q.to_vec().unwrap(), server).await?;
    let mut buf = vec![0u8; 4096];
    let (n, _) = sock.recv_from(&mut buf).await?;
    Ok(Message::from_vec(&buf[..n]).unwrap())
}

async fn ask(server: SocketAddr, name: &str, t: RecordType) -> Message {
    let q = query(name, t);
    let r = tokio::time::timeout(Duration::from_secs(10), udp_query(server, &q))
        .await
        .expect("the authority answers")
        .unwrap();
    assert_eq!(r.id(), q.id());
    assert_eq!(r.queries(), q.queries());
    r
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

struct Fixture {
    upstream: Dnsmasq,
    server: DnsAuthorityServer,
    rec: Arc<Recorder>,
}

async fn fixture() -> Fixture {
    let upstream = Dnsmasq::start().await;
    let rec = Arc::new(Recorder::default());
    let config = DnsConfig {
        allowlist: vec!["*.allowed.test".into()],
        upstream: upstream.addr,
        min_ttl: Duration::from_secs(30),
        max_ttl: Duration::from_secs(300),
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
    Fixture {
        upstream,
        server,
        rec,
    }
}

#[tokio::test]
async fn allowed_name_is_answered_and_pinned_before_the_reply() {
    let f = fixture().await;
    let r = ask(f.server.local_addr(), "api.allowed.test.", RecordType::A).await;
    assert_eq!(r.response_code(), ResponseCode::NoError);
    let ip: IpAddr = "203.0.113.10".parse().unwrap();
    assert_eq!(addresses(&r), vec![ip]);
    // The pin was installed before the reply was sent.
    let pins = f.rec.pins.lock().unwrap().clone();
    assert_eq!(pins.len(), 1);
    assert_eq!(
        (pins[0].name.as_str(), pins[0].ip),
        ("api.allowed.test", ip)
    );
    let events = f.rec.events.lock().unwrap().clone();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].verdict, Verdict::Permitted);
    assert_eq!(
        (
            events[0].name.as_str(),
            events[0].qtype.as_str(),
            events[0].answers
        ),
        ("api.allowed.test", "A", 1)
    );
    assert_eq!(f.server.counters().snapshot().permitted, 1);
}

#[tokio::test]
async fn ttls_are_clamped_to_min_and_max() {
    let f = fixture().await;
    let long = ask(f.server.local_addr(), "api.allowed.test.", RecordType::A).await;
    assert_eq!(long.answers()[0].ttl(), 300);
    let short = ask(f.server.local_addr(), "short.allowed.test.", RecordType::A).await;
    assert_eq!(short.answers()[0].ttl(), 30);
    let pin_ttls: Vec<u64> = f
        .rec
        .pins
        .lock()
        .unwrap()
        .iter()
        .map(|p| p.ttl.as_secs())
        .collect();
    assert_eq!(pin_ttls, vec![300, 30]);
}

#[tokio::test]
async fn other_names_are_refused_and_never_reach_upstream() {
    let f = fixture().await;
    let r = ask(f.server.local_addr(), "secret.evil.test.", RecordType::TXT).await;
    assert_eq!(r.response_code(), ResponseCode::Refused);
    assert!(r.answers().is_empty());
    // An allowed query afterwards proves the upstream's log is being written.
    ask(f.server.local_addr(), "api.allowed.test.", RecordType::A).await;
    let log = f.upstream.log_text();
    assert!(log.contains("api.allowed.test"), "dnsmasq log:\n{log}");
    assert!(
        !log.contains("secret.evil.test"),
        "refused name leaked upstream:\n{log}"
    );
    let events = f.rec.events.lock().unwrap().clone();
    assert_eq!(events[0].verdict, Verdict::Refused);
    assert_eq!(
        (events[0].name.as_str(), events[0].qtype.as_str()),
        ("secret.evil.test", "TXT")
    );
    assert_eq!(f.server.counters().snapshot().refused, 1);
}

#[tokio::test]
async fn wildcard_does_not_match_the_apex() {
    let f = fixture().await;
    let r = ask(f.server.local_addr(), "allowed.test.", RecordType::A).await;
    assert_eq!(r.response_code(), ResponseCode::Refused);
    assert!(!f.upstream.log_text().contains("query[A] allowed.test "));
}

#[tokio::test]
async fn rebinding_answers_are_dropped_and_reported() {
    let f = fixture().await;
    let r = ask(f.server.local_addr(), "evil.allowed.test.", RecordType::A).await;
    assert!(addresses(&r).is_empty(), "{r:?}");
    assert!(f.rec.pins.lock().unwrap().is_empty());
    let events = f.rec.events.lock().unwrap().clone();
    assert_eq!(
        events[0].rebinding_dropped,
        vec!["10.0.0.5".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(events[0].answers, 0);
    assert_eq!(f.server.counters().snapshot().rebinding_dropped, 1);
}

#[tokio::test]
async fn malformed_packets_are_dropped_and_the_server_keeps_answering() {
    let f = fixture().await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for junk in [
        &b""[..],
        b"\x00",
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        &[0u8; 600],
    ] {
        sock.send_to(junk, f.server.local_addr()).await.unwrap();
    }
    // A response sent to the server is ignored too (no reflection).
    let mut resp = query("api.allowed.test.", RecordType::A);
    resp.set_message_type(hickory_proto::op::MessageType::Response);
    sock.send_to(&resp.to_vec().unwrap(), f.server.local_addr())
        .await
        .unwrap();
    let r = ask(f.server.local_addr(), "api.allowed.test.", RecordType::A).await;
    assert_eq!(
        addresses(&r),
        vec!["203.0.113.10".parse::<IpAddr>().unwrap()]
    );
    let counts = f.server.counters().snapshot();
    assert_eq!(counts.permitted, 1);
    // The empty datagram may or may not be delivered as a packet; the rest always are.
    assert!(counts.malformed >= 4, "{counts:?}");
}

#[tokio::test]
async fn tcp_queries_are_answered() {
    let f = fixture().await;
    let mut stream = TcpStream::connect(f.server.local_addr()).await.unwrap();
    for (name, code) in [
        ("api.allowed.test.", ResponseCode::NoError),
        ("secret.evil.test.", ResponseCode::Refused),
    ] {
        let q = query(name, RecordType::A).to_vec().unwrap();
        stream.write_u16(q.len() as u16).await.unwrap();
        stream.write_all(&q).await.unwrap();
        let len = stream.read_u16().await.unwrap();
        let mut buf = vec![0u8; len as usize];
        stream.read_exact(&mut buf).await.unwrap();
        let r = Message::from_vec(&buf).unwrap();
        assert_eq!(r.response_code(), code, "{name}");
    }
}

//! The L7 gate end to end on loopback, and its SNI parser on a real ClientHello.

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cellos_core::events::FlowVerdict;
use cellos_dataplane::l7gate::{
    parse_client_hello, FixedOriginalDst, GateContext, GatePolicy, Hello, L7Gate,
};
use cellos_dataplane::pin::{AddressPinner, Pin, PinTable};
use cellos_dataplane::{FlowEvent, FlowObserver};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Captures the first bytes Python's `ssl` module sends for `server_hostname`.
fn python_client_hello(server_hostname: &str) -> Vec<u8> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!(
        "import ssl,socket\nctx=ssl.create_default_context()\ns=socket.create_connection(('127.0.0.1',{port}))\ntry:\n  ctx.wrap_socket(s,server_hostname='{server_hostname}')\nexcept Exception:\n  pass\n"
    );
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 is installed by scripts/setup.sh");
    let (mut conn, _) = listener.accept().unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while parse_client_hello(&buf) == Hello::NeedMore {
        let n = conn.read(&mut chunk).unwrap();
        assert!(n > 0, "python closed before a full ClientHello");
        buf.extend_from_slice(&chunk[..n]);
    }
    drop(conn);
    let _ = child.wait();
    buf
}

#[test]
fn sni_of_a_real_python_client_hello() {
    let hello = python_client_hello("API.allowed.test");
    assert_eq!(
        parse_client_hello(&hello),
        Hello::Sni("api.allowed.test".into())
    );
    // Every prefix of a real hello is "need more", never a wrong answer.
    for cut in [0, 1, 5, 6, hello.len() / 2, hello.len() - 1] {
        assert_eq!(
            parse_client_hello(&hello[..cut]),
            Hello::NeedMore,
            "cut at {cut}"
        );
    }
}

struct Channel(mpsc::UnboundedSender<FlowEvent>);

impl FlowObserver for Channel {
    fn flow(&self, event: &FlowEvent) {
        let _ = self.0.send(event.clone());
    }
}

/// An echo server standing in for the original destination; counts connections.
async fn echo_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, accepted)
}

struct Gate {
    gate: L7Gate,
    events: mpsc::UnboundedReceiver<FlowEvent>,
    upstream: SocketAddr,
    upstream_accepts: Arc<AtomicUsize>,
}

/// A gate whose "original destination" is the echo server, with `pinned` resolved to it.
async fn gate(rule: &str, pinned: &str) -> Gate {
    let (upstream, upstream_accepts) = echo_server().await;
    let pins = Arc::new(PinTable::new());
    pins.pin(&[Pin {
        name: pinned.into(),
        ip: upstream.ip(),
        ttl: Duration::from_secs(60),
    }])
    .unwrap();
    let (tx, events) = mpsc::unbounded_channel();
    let ctx = GateContext {
        policy: GatePolicy::new(vec![(rule.into(), upstream.port())]),
        resolver: pins,
        original_dst: Arc::new(FixedOriginalDst(upstream)),
        observer: Arc::new(Channel(tx)),
        peek_timeout: Duration::from_millis(300),
        connect_timeout: Duration::from_secs(5),
    };
    let gate = L7Gate::bind("127.0.0.1:0".parse().unwrap(), ctx)
        .await
        .unwrap();
    Gate {
        gate,
        events,
        upstream,
        upstream_accepts,
    }
}

async fn next_event(g: &mut Gate) -> FlowEvent {
    tokio::time::timeout(Duration::from_secs(10), g.events.recv())
        .await
        .expect("the gate reports every flow")
        .unwrap()
}

/// Sends `first`, then `rest` after the gate had to decide; returns what came back.
async fn exchange(g: &Gate, first: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(g.gate.local_addr()).await.unwrap();
    s.write_all(first).await.unwrap();
    // Writes after a denial may fail with a reset; that is the denial.
    let _ = s.write_all(rest).await;
    let _ = s.shutdown().await;
    let mut back = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut back)).await;
    back
}

#[tokio::test]
async fn allowed_sni_is_spliced_unmodified_and_reported_with_bytes() {
    let mut g = gate("api.allowed.test", "api.allowed.test").await;
    let hello = python_client_hello("api.allowed.test");
    let back = exchange(&g, &hello, b"more-bytes").await;
    // The echo proves the destination received the ClientHello byte for byte: no termination.
    let mut expected = hello.clone();
    expected.extend_from_slice(b"more-bytes");
    assert_eq!(back, expected);
    let e = next_event(&mut g).await;
    assert_eq!(e.verdict, FlowVerdict::Allow);
    assert_eq!(e.dst, g.upstream);
    assert_eq!(e.name.as_deref(), Some("api.allowed.test"));
    assert_eq!(e.bytes_up, expected.len() as u64);
    assert_eq!(e.bytes_down, expected.len() as u64);
}

#[tokio::test]
async fn allowed_http_host_is_spliced() {
    let mut g = gate("*.allowed.test", "www.allowed.test").await;
    let req = b"GET / HTTP/1.1\r\nHost: www.allowed.test\r\n\r\n";
    assert_eq!(exchange(&g, req, b"").await, req.to_vec());
    let e = next_event(&mut g).await;
    assert_eq!(e.verdict, FlowVerdict::Allow);
    assert_eq!(e.name.as_deref(), Some("www.allowed.test"));
}

async fn assert_denied(mut g: Gate, first: &[u8], reason: &str) {
    let back = exchange(&g, first, b"x").await;
    assert!(back.is_empty(), "denied flow got bytes back");
    let e = next_event(&mut g).await;
    assert_eq!((e.verdict, e.reason.as_str()), (FlowVerdict::Deny, reason));
    assert_eq!(
        g.upstream_accepts.load(Ordering::SeqCst),
        0,
        "denied flow reached the destination"
    );
}

#[tokio::test]
async fn sni_mismatch_is_denied() {
    let g = gate("api.allowed.test", "api.allowed.test").await;
    assert_denied(g, &python_client_hello("other.test"), "sni-mismatch").await;
}

#[tokio::test]
async fn missing_sni_is_denied() {
    let g = gate("api.allowed.test", "api.allowed.test").await;
    // An IP literal is never sent as SNI, so this ClientHello has none.
    assert_denied(g, &python_client_hello("127.0.0.1"), "no-sni").await;
}

#[tokio::test]
async fn spoofed_sni_to_an_address_never_resolved_for_it_is_denied() {
    // The cell resolved another name to this address; claiming the allowed name does not help.
    let g = gate("api.allowed.test", "shared-cdn.test").await;
    assert_denied(g, &python_client_hello("api.allowed.test"), "not-resolved").await;
}

#[tokio::test]
async fn http_host_mismatch_is_denied() {
    let g = gate("api.allowed.test", "api.allowed.test").await;
    assert_denied(
        g,
        b"GET / HTTP/1.1\r\nHost: other.test\r\n\r\n",
        "host-mismatch",
    )
    .await;
}

#[tokio::test]
async fn garbage_is_unparseable() {
    let g = gate("api.allowed.test", "api.allowed.test").await;
    assert_denied(g, b"\x00\x01binary", "unparseable").await;
}

#[tokio::test]
async fn silence_is_a_timeout() {
    let mut g = gate("api.allowed.test", "api.allowed.test").await;
    let mut s = TcpStream::connect(g.gate.local_addr()).await.unwrap();
    let mut back = Vec::new();
    let _ = s.read_to_end(&mut back).await;
    let e = next_event(&mut g).await;
    assert_eq!(
        (e.verdict, e.reason.as_str()),
        (FlowVerdict::Deny, "timeout")
    );
    assert_eq!(g.upstream_accepts.load(Ordering::SeqCst), 0);
}

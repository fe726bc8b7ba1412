//! The DNS authority's sockets: UDP and TCP (length-prefixed) on one address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::config::DnsConfig;
use super::filter::{classify, error_response, filter_response, Decision};
use super::observer::{DnsCounters, DnsObserver, QueryEvent, Verdict};
use super::upstream::forward;
use super::DnsError;
use crate::pin::AddressPinner;

/// Queries handled at once; more wait (UDP) or are not accepted yet (TCP).
const MAX_IN_FLIGHT: usize = 256;
/// A TCP client idle this long is disconnected.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Classic DNS UDP payload limit, used when the client sent no EDNS size.
const MIN_UDP_PAYLOAD: usize = 512;

/// A running DNS authority. Dropping it stops serving.
pub struct DnsAuthorityServer {
    local_addr: SocketAddr,
    counters: Arc<DnsCounters>,
    tasks: JoinSet<()>,
}

struct Shared {
    config: DnsConfig,
    pinner: Arc<dyn AddressPinner>,
    observer: Arc<dyn DnsObserver>,
    counters: Arc<DnsCounters>,
    in_flight: Semaphore,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
}

impl DnsAuthorityServer {
    /// Serves UDP and TCP on `listen` (port 0 picks one free port for both).
    ///
    /// `pinner` makes each answer's addresses reachable before the answer is sent; `observer`
    /// receives one event per query (wrap it in a [`super::RateLimitedObserver`]).
    pub async fn bind(
        listen: SocketAddr,
        config: DnsConfig,
        pinner: Arc<dyn AddressPinner>,
        observer: Arc<dyn DnsObserver>,
    ) -> Result<Self, DnsError> {
        let udp = UdpSocket::bind(listen)
            .await
            .map_err(|source| DnsError::Bind {
                addr: listen,
                transport: "udp",
                source,
            })?;
        let addr = udp.local_addr().map_err(|source| DnsError::Bind {
            addr: listen,
            transport: "udp",
            source,
        })?;
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| DnsError::Bind {
                addr,
                transport: "tcp",
                source,
            })?;
        Ok(Self::serve(udp, tcp, config, pinner, observer))
    }

    /// Serves on sockets bound elsewhere, e.g. inside the cell's network namespace.
    /// Both must be non-blocking and the caller must be inside a tokio runtime.
    pub fn from_std(
        udp: std::net::UdpSocket,
        tcp: std::net::TcpListener,
        config: DnsConfig,
        pinner: Arc<dyn AddressPinner>,
        observer: Arc<dyn DnsObserver>,
    ) -> Result<Self, DnsError> {
        let addr = udp.local_addr().map_err(|source| DnsError::Bind {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            transport: "udp",
            source,
        })?;
        let bind_err = |transport, source| DnsError::Bind {
            addr,
            transport,
            source,
        };
        let udp = UdpSocket::from_std(udp).map_err(|e| bind_err("udp", e))?;
        let tcp = TcpListener::from_std(tcp).map_err(|e| bind_err("tcp", e))?;
        Ok(Self::serve(udp, tcp, config, pinner, observer))
    }

    fn serve(
        udp: UdpSocket,
        tcp: TcpListener,
        config: DnsConfig,
        pinner: Arc<dyn AddressPinner>,
        observer: Arc<dyn DnsObserver>,
    ) -> Self {
        let local_addr = udp
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let counters = Arc::new(DnsCounters::default());
        let shared = Arc::new(Shared {
            config,
            pinner,
            observer,
            counters: counters.clone(),
            in_flight: Semaphore::new(MAX_IN_FLIGHT),
        });
        let mut tasks = JoinSet::new();
        tasks.spawn(serve_udp(udp, shared.clone()));
        tasks.spawn(serve_tcp(tcp, shared));
        Self {
            local_addr,
            counters,
            tasks,
        }
    }

    /// The address both transports listen on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Exact totals since start.
    pub fn counters(&self) -> Arc<DnsCounters> {
        self.counters.clone()
    }

    /// Stops serving; queries in progress are abandoned.
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
    }
}

/// The socket stays owned by this loop alone (queries hand their replies back over a
/// channel) and every query task lives in the loop's own set, so stopping the server closes
/// the socket at once and cancels the queries in flight.
async fn serve_udp(sock: UdpSocket, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 65_535];
    let mut queries = JoinSet::new();
    let (reply_tx, mut replies) = tokio::sync::mpsc::unbounded_channel::<(Vec<u8>, SocketAddr)>();
    loop {
        tokio::select! {
            received = sock.recv_from(&mut buf) => {
                let Ok((n, peer)) = received else { continue };
                let packet = buf.get(..n).unwrap_or_default().to_vec();
                let (reply_tx, shared) = (reply_tx.clone(), shared.clone());
                queries.spawn(async move {
                    let Ok(_permit) = shared.in_flight.acquire().await else {
                        return;
                    };
                    if let Some(reply) = handle(&packet, Transport::Udp, &shared).await {
                        let _ = reply_tx.send((reply, peer));
                    }
                });
            }
            Some((reply, peer)) = replies.recv() => {
                // The client may be gone; nothing to report to it then.
                let _ = sock.send_to(&reply, peer).await;
            }
            Some(_) = queries.join_next(), if !queries.is_empty() => {}
        }
    }
}

/// Client connections live in the loop's own set, like UDP queries.
async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    let mut clients = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = shared.clone();
                clients.spawn(async move {
                    let _ = serve_tcp_client(stream, &shared).await;
                });
            }
            Some(_) = clients.join_next(), if !clients.is_empty() => {}
        }
    }
}

async fn serve_tcp_client(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    loop {
        let Ok(len) = tokio::time::timeout(TCP_IDLE, stream.read_u16()).await else {
            return Ok(());
        };
        let mut packet = vec![0u8; usize::from(len?)];
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut packet))
            .await
            .map_err(|_| std::io::ErrorKind::TimedOut)??;
        let reply = {
            let _permit = shared.in_flight.acquire().await;
            handle(&packet, Transport::Tcp, shared).await
        };
        // A malformed message gets no answer; the stream cannot be resynchronised after it.
        let Some(reply) = reply else { return Ok(()) };
        let Ok(reply_len) = u16::try_from(reply.len()) else {
            return Ok(());
        };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&reply_len.to_be_bytes());
        framed.extend_from_slice(&reply);
        stream.write_all(&framed).await?;
    }
}

/// One query in, at most one response out.
async fn handle(packet: &[u8], transport: Transport, shared: &Shared) -> Option<Vec<u8>> {
    let counters = &shared.counters;
    let Ok(query) = Message::from_vec(packet) else {
        DnsCounters::bump(&counters.malformed, 1);
        return None;
    };
    match classify(&query, &shared.config) {
        Decision::Ignore => {
            DnsCounters::bump(&counters.malformed, 1);
            None
        }
        Decision::Refuse {
            name,
            qtype,
            reason,
        } => {
            DnsCounters::bump(&counters.refused, 1);
            shared.observer.query(&QueryEvent {
                name,
                qtype,
                verdict: Verdict::Refused,
                answers: 0,
                reason: Some(reason),
                rebinding_dropped: Vec::new(),
            });
            encode(
                error_response(&query, ResponseCode::Refused),
                &query,
                transport,
            )
        }
        Decision::Forward {
            name,
            qtype,
            pattern,
        } => {
            DnsCounters::bump(&counters.permitted, 1);
            let mut event = QueryEvent {
                name: name.clone(),
                qtype: qtype.to_string(),
                verdict: Verdict::Permitted,
                answers: 0,
                reason: Some(format!("allowed by {pattern}")),
                rebinding_dropped: Vec::new(),
            };
            let config = &shared.config;
            let upstream = forward(
                &query,
                &name,
                qtype,
                config.upstream,
                config.upstream_timeout,
            )
            .await;
            let response = match upstream {
                Ok(up) => {
                    let filtered = filter_response(up, &query, &name, config);
                    DnsCounters::bump(
                        &counters.rebinding_dropped,
                        filtered.rebinding_dropped.len() as u64,
                    );
                    event.rebinding_dropped = filtered.rebinding_dropped;
                    match pin(shared, filtered.pins).await {
                        Ok(()) => {
                            event.answers =
                                u32::try_from(filtered.message.answers().len()).unwrap_or(u32::MAX);
                            filtered.message
                        }
                        Err(reason) => {
                            event.reason = Some(reason);
                            error_response(&query, ResponseCode::ServFail)
                        }
                    }
                }
                Err(e) => {
                    DnsCounters::bump(&counters.upstream_failures, 1);
                    event.reason = Some(e.to_string());
                    error_response(&query, ResponseCode::ServFail)
                }
            };
            shared.observer.query(&event);
            encode(response, &query, transport)
        }
    }
}

/// Installs pins before the answer leaves, off the async threads (the pinner may run `nft`).
async fn pin(shared: &Shared, pins: Vec<crate::pin::Pin>) -> Result<(), String> {
    if pins.is_empty() {
        return Ok(());
    }
    let pinner = shared.pinner.clone();
    match tokio::task::spawn_blocking(move || pinner.pin(&pins)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("pinning task failed: {e}")),
    }
}

/// Encodes `response`; over UDP, one larger than the client accepts is sent truncated (TC set)
/// so the client retries over TCP.
fn encode(response: Message, query: &Message, transport: Transport) -> Option<Vec<u8>> {
    let bytes = response.to_vec().ok()?;
    let limit = query.extensions().as_ref().map_or(MIN_UDP_PAYLOAD, |e| {
        usize::from(e.max_payload()).max(MIN_UDP_PAYLOAD)
    });
    if transport == Transport::Udp && bytes.len() > limit {
        return response.truncate().to_vec().ok();
    }
    Some(bytes)
}

//! The DNS authority's sockets: UDP and TCP (length-prefixed) on one address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::config::DnsConfig;
use super::observer::{DnsCounters, DnsObserver};
use super::resolve::{answer_now, finish, Shared, Step, Transport};
use super::DnsError;
use crate::pin::AddressPinner;

/// Queries handled at once; more wait (UDP) or are not accepted yet (TCP).
const MAX_IN_FLIGHT: usize = 256;
/// A TCP client idle this long is disconnected.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// A running DNS authority. Dropping it stops serving.
pub struct DnsAuthorityServer {
    local_addr: SocketAddr,
    counters: Arc<DnsCounters>,
    tasks: JoinSet<()>,
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
            cache: Default::default(),
            ledger: Default::default(),
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
/// the socket at once and cancels the queries in flight. What needs no waiting (refusals,
/// cached answers) is answered in the loop itself, without a task.
async fn serve_udp(sock: UdpSocket, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 65_535];
    let mut queries = JoinSet::new();
    let (reply_tx, mut replies) = tokio::sync::mpsc::unbounded_channel::<(Vec<u8>, SocketAddr)>();
    loop {
        tokio::select! {
            received = sock.recv_from(&mut buf) => {
                let Ok((n, peer)) = received else { continue };
                let packet = buf.get(..n).unwrap_or_default();
                let pending = match answer_now(packet, Transport::Udp, &shared) {
                    Step::Done(Some(reply)) => {
                        // The client may be gone; nothing to report to it then.
                        let _ = sock.send_to(&reply, peer).await;
                        continue;
                    }
                    Step::Done(None) => continue,
                    Step::Wait(pending) => pending,
                };
                let (reply_tx, shared) = (reply_tx.clone(), shared.clone());
                queries.spawn(async move {
                    let Ok(_permit) = shared.in_flight.acquire().await else {
                        return;
                    };
                    if let Some(reply) = finish(pending, Transport::Udp, &shared).await {
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
        let reply = match answer_now(&packet, Transport::Tcp, shared) {
            Step::Done(reply) => reply,
            Step::Wait(pending) => {
                let _permit = shared.in_flight.acquire().await;
                finish(pending, Transport::Tcp, shared).await
            }
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

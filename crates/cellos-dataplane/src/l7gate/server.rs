//! The gate's listener: read the first bytes, decide, then splice or close. TLS is never
//! terminated: the bytes read to decide are replayed to the destination unchanged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cellos_core::authority::AuthorityKind;
use cellos_core::events::FlowVerdict;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::http::{parse_request_head, Head, MAX_HEAD};
use super::original_dst::OriginalDestination;
use super::policy::{DenyReason, GatePolicy, NameSource};
use super::sni::{parse_client_hello, Hello, MAX_HELLO};
use crate::flow::{FlowEvent, FlowObserver};
use crate::pin::PinnedResolver;

/// Default time a client has to send its ClientHello or request head.
pub const DEFAULT_PEEK_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time to connect to the original destination.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the gate needs besides its socket.
#[derive(Clone)]
pub struct GateContext {
    pub policy: GatePolicy,
    /// The DNS authority's resolutions (a [`crate::PinTable`]).
    pub resolver: Arc<dyn PinnedResolver>,
    pub original_dst: Arc<dyn OriginalDestination>,
    pub observer: Arc<dyn FlowObserver>,
    pub peek_timeout: Duration,
    pub connect_timeout: Duration,
}

/// A running gate. Dropping it stops accepting; spliced flows end with their tasks.
pub struct L7Gate {
    local_addr: SocketAddr,
    tasks: JoinSet<()>,
}

impl L7Gate {
    pub async fn bind(listen: SocketAddr, ctx: GateContext) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        Self::serve(listener, ctx)
    }

    /// Serves on a listener bound elsewhere (inside the cell's namespace, where the
    /// `redirect` lands). It must be non-blocking; the caller must be inside a tokio runtime.
    pub fn from_std(listener: std::net::TcpListener, ctx: GateContext) -> std::io::Result<Self> {
        Self::serve(TcpListener::from_std(listener)?, ctx)
    }

    fn serve(listener: TcpListener, ctx: GateContext) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let mut tasks = JoinSet::new();
        tasks.spawn(accept_loop(listener, Arc::new(ctx)));
        Ok(Self { local_addr, tasks })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
    }
}

async fn accept_loop(listener: TcpListener, ctx: Arc<GateContext>) {
    let mut flows = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    let ctx = ctx.clone();
                    flows.spawn(async move { handle(stream, &ctx).await });
                }
            }
            // Reap finished flows so the set does not grow with the gate's lifetime.
            Some(_) = flows.join_next(), if !flows.is_empty() => {}
        }
    }
}

/// What the client's first bytes say.
enum Claim {
    Name(String, NameSource),
    Denied(DenyReason),
}

async fn handle(mut client: TcpStream, ctx: &GateContext) {
    let original = match ctx.original_dst.original_destination(&client) {
        Ok(addr) => addr,
        Err(_) => {
            let dst = client
                .local_addr()
                .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
            deny(ctx, dst, None, DenyReason::NoOriginalDestination);
            return;
        }
    };
    let mut buf = Vec::with_capacity(2048);
    let claim =
        match tokio::time::timeout(ctx.peek_timeout, read_claim(&mut client, &mut buf)).await {
            Ok(claim) => claim,
            Err(_) => Claim::Denied(DenyReason::Timeout),
        };
    let (name, source) = match claim {
        Claim::Name(name, source) => (name, source),
        Claim::Denied(reason) => return deny(ctx, original, None, reason),
    };
    let pattern = match ctx
        .policy
        .decide(&name, source, original, ctx.resolver.as_ref())
    {
        Ok(pattern) => pattern.to_owned(),
        Err(reason) => return deny(ctx, original, Some(name), reason),
    };
    let mut event = FlowEvent {
        dst: original,
        protocol: "tcp".to_owned(),
        verdict: FlowVerdict::Allow,
        reason: format!("allowed by {pattern}:{}", original.port()),
        name: Some(name),
        bytes_up: 0,
        bytes_down: 0,
        authority: AuthorityKind::Observed,
    };
    let upstream = tokio::time::timeout(ctx.connect_timeout, TcpStream::connect(original)).await;
    let mut upstream = match upstream {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            event.reason = format!("{}; connect failed: {e}", event.reason);
            return ctx.observer.flow(&event);
        }
        Err(_) => {
            event.reason = format!("{}; connect timed out", event.reason);
            return ctx.observer.flow(&event);
        }
    };
    if upstream.write_all(&buf).await.is_ok() {
        event.bytes_up = buf.len() as u64;
        if let Ok((up, down)) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            event.bytes_up += up;
            event.bytes_down = down;
        }
    }
    ctx.observer.flow(&event);
}

fn deny(ctx: &GateContext, dst: SocketAddr, name: Option<String>, reason: DenyReason) {
    ctx.observer.flow(&FlowEvent {
        dst,
        protocol: "tcp".to_owned(),
        verdict: FlowVerdict::Deny,
        reason: reason.as_str().to_owned(),
        name,
        bytes_up: 0,
        bytes_down: 0,
        authority: AuthorityKind::Observed,
    });
}

/// Reads until the first bytes are decisive, keeping them in `buf` for replay.
async fn read_claim(client: &mut TcpStream, buf: &mut Vec<u8>) -> Claim {
    let mut chunk = [0u8; 4096];
    loop {
        let n = match client.read(&mut chunk).await {
            Ok(0) | Err(_) => return Claim::Denied(DenyReason::Unparseable),
            Ok(n) => n,
        };
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if buf.first() == Some(&0x16) {
            match parse_client_hello(buf) {
                Hello::Sni(name) => return Claim::Name(name, NameSource::Sni),
                Hello::NoSni => return Claim::Denied(DenyReason::NoSni),
                Hello::Malformed(_) => return Claim::Denied(DenyReason::Unparseable),
                Hello::NeedMore if buf.len() > MAX_HELLO + 1024 => {
                    return Claim::Denied(DenyReason::Unparseable)
                }
                Hello::NeedMore => {}
            }
        } else {
            match parse_request_head(buf) {
                Head::Host(name) => return Claim::Name(name, NameSource::Host),
                Head::NoHost => return Claim::Denied(DenyReason::HostMismatch),
                Head::Malformed(_) => return Claim::Denied(DenyReason::Unparseable),
                Head::NeedMore if buf.len() > MAX_HEAD => {
                    return Claim::Denied(DenyReason::Unparseable)
                }
                Head::NeedMore => {}
            }
        }
    }
}

//! Forwarding an allowed query to the upstream resolver: UDP first, TCP when truncated.
//!
//! Each query goes out from a fresh ephemeral UDP socket with a fresh random id, and only a
//! response from the upstream's address with that id and the same question is accepted, so an
//! off-path spoofer has to guess both.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

use super::filter::answers_question;
use super::DnsError;

/// Largest DNS message over UDP we accept from upstream.
const MAX_UDP: usize = 65_535;

/// Sends `query` (re-identified) upstream and returns the matching response.
pub(crate) async fn forward(
    query: &Message,
    name: &str,
    qtype: RecordType,
    upstream: SocketAddr,
    wait: Duration,
) -> Result<Message, DnsError> {
    let mut outgoing = query.clone();
    let id: u16 = rand::random();
    outgoing.set_id(id).set_recursion_desired(true);
    let bytes = outgoing
        .to_vec()
        .map_err(|e| DnsError::Upstream(format!("cannot encode the query: {e}")))?;
    let response = udp_exchange(&bytes, id, name, qtype, upstream, wait).await?;
    if !response.truncated() {
        return Ok(response);
    }
    tcp_exchange(&bytes, id, name, qtype, upstream, wait).await
}

async fn udp_exchange(
    bytes: &[u8],
    id: u16,
    name: &str,
    qtype: RecordType,
    upstream: SocketAddr,
    wait: Duration,
) -> Result<Message, DnsError> {
    let local: SocketAddr = match upstream.ip() {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let io = |what: &str, e: std::io::Error| DnsError::Upstream(format!("{what} {upstream}: {e}"));
    let sock = UdpSocket::bind(local)
        .await
        .map_err(|e| io("bind for", e))?;
    sock.connect(upstream)
        .await
        .map_err(|e| io("connect to", e))?;
    sock.send(bytes).await.map_err(|e| io("send to", e))?;
    let mut buf = vec![0u8; MAX_UDP];
    let receive = async {
        loop {
            let n = sock
                .recv(&mut buf)
                .await
                .map_err(|e| io("receive from", e))?;
            let Some(packet) = buf.get(..n) else { continue };
            // Anything that is not the answer to this exact query is ignored, not fatal.
            if let Ok(msg) = Message::from_vec(packet) {
                if msg.id() == id && answers_question(&msg, name, qtype) {
                    return Ok(msg);
                }
            }
        }
    };
    timeout(wait, receive).await.map_err(|_| {
        DnsError::Upstream(format!(
            "{upstream} did not answer over UDP within {wait:?}"
        ))
    })?
}

async fn tcp_exchange(
    bytes: &[u8],
    id: u16,
    name: &str,
    qtype: RecordType,
    upstream: SocketAddr,
    wait: Duration,
) -> Result<Message, DnsError> {
    let io = |what: &str, e: std::io::Error| {
        DnsError::Upstream(format!("{what} {upstream} over TCP: {e}"))
    };
    let exchange = async {
        let mut stream = TcpStream::connect(upstream)
            .await
            .map_err(|e| io("connect to", e))?;
        let len = u16::try_from(bytes.len())
            .map_err(|_| DnsError::Upstream("query longer than 65535 bytes".to_owned()))?;
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(bytes);
        stream
            .write_all(&framed)
            .await
            .map_err(|e| io("send to", e))?;
        let reply_len = stream
            .read_u16()
            .await
            .map_err(|e| io("read length from", e))?;
        let mut reply = vec![0u8; usize::from(reply_len)];
        stream
            .read_exact(&mut reply)
            .await
            .map_err(|e| io("read from", e))?;
        let msg = Message::from_vec(&reply)
            .map_err(|e| DnsError::Upstream(format!("{upstream} sent malformed TCP reply: {e}")))?;
        if msg.id() == id && answers_question(&msg, name, qtype) {
            Ok(msg)
        } else {
            Err(DnsError::Upstream(format!(
                "{upstream} answered another question over TCP"
            )))
        }
    };
    timeout(wait, exchange).await.map_err(|_| {
        DnsError::Upstream(format!(
            "{upstream} did not answer over TCP within {wait:?}"
        ))
    })?
}

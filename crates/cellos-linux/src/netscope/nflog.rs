//! Per-attempt evidence of kernel drops: the cell's ruleset logs every dropped packet to NFLOG
//! (group [`super::egress::LOG_GROUP`], prefix `cellos-deny <reason> `); this reader subscribes
//! to that group over `NETLINK_NETFILTER` inside the cell's namespace (log groups are per
//! namespace) and turns each logged packet into a `flow.v1.decided` deny with authority
//! `Imposed`: destination, port, protocol and the rule's reason.
//!
//! Messages are `netlink-packet-netfilter`'s (its nflog config and packet messages), the socket
//! is `netlink-sys`'s. Events are limited to
//! [`EVENTS_PER_SECOND`] per cell so a flood of retransmissions cannot flood the log; the
//! exact totals are the ruleset's counters, reported in `network.v1.summary`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cellos_core::authority::AuthorityKind;
use cellos_core::events::FlowVerdict;
use cellos_dataplane::ruleset::LOG_PREFIX;
use cellos_dataplane::{FlowEvent, FlowObserver};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::nflog::{
    config_request, ConfigCmd, ConfigMode, ConfigNla, PacketNla, ULogMessage,
};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr as NetlinkAddr};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::error::LinuxError;

/// Drop events per second per cell; the rest are only counted (by the ruleset's counters).
pub const EVENTS_PER_SECOND: u32 = 50;
/// Bytes of each dropped packet the kernel copies to us: IPv6 header plus ports.
const COPY_RANGE: u32 = 64;

/// The request binding this socket to `group` and asking for packet copies.
pub fn bind_request(group: u16, seq: u32) -> Vec<u8> {
    let mut msg = config_request(
        NetfilterProtoFamily::Unspec,
        group,
        vec![
            ConfigNla::Cmd(ConfigCmd::Bind),
            ConfigNla::Mode(ConfigMode::new_packet(COPY_RANGE)),
            // Deliver each packet at once: the kernel's default batches up to 100 packets or
            // one second, and a batch still queued when the cell is torn down would be lost.
            ConfigNla::QThresh(1),
        ],
    );
    msg.header.sequence_number = seq;
    msg.finalize();
    let mut bytes = vec![0; msg.buffer_len()];
    msg.serialize(&mut bytes);
    bytes
}

/// One logged drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedDrop {
    pub dst: SocketAddr,
    pub protocol: String,
    /// The ruleset's reason word (`range`, `default`, `invalid`, `input`).
    pub reason: String,
}

/// What one netlink datagram carried.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub drops: Vec<LoggedDrop>,
    /// Errors the kernel acknowledged (`0` is a plain ACK).
    pub acks: Vec<i32>,
}

/// Splits a datagram into netlink messages; parsing stops at the first malformed one.
pub fn parse(mut buf: &[u8]) -> Parsed {
    let mut out = Parsed::default();
    while let Ok(msg) = NetlinkMessage::<NetfilterMessage>::deserialize(buf) {
        let len = (msg.header.length as usize).max(16);
        buf = buf.get((len + 3) & !3..).unwrap_or_default();
        match msg.payload {
            NetlinkPayload::Error(e) => out.acks.push(e.raw_code()),
            NetlinkPayload::InnerMessage(NetfilterMessage {
                inner: NetfilterMessageInner::ULog(ULogMessage::Packet(nlas)),
                ..
            }) => out.drops.extend(parse_packet(&nlas)),
            _ => {}
        }
    }
    out
}

fn parse_packet(nlas: &[PacketNla]) -> Option<LoggedDrop> {
    let (mut payload, mut prefix) = (None, None);
    for nla in nlas {
        match nla {
            PacketNla::Payload(p) => payload = Some(p.as_slice()),
            PacketNla::Prefix(p) => prefix = Some(p.to_string_lossy()),
            _ => {}
        }
    }
    let reason = prefix?
        .strip_prefix(LOG_PREFIX)?
        .split_whitespace()
        .next()?
        .to_owned();
    let (dst, protocol) = parse_ip(payload?)?;
    Some(LoggedDrop {
        dst,
        protocol,
        reason,
    })
}

/// Destination and transport protocol of an IP packet (IPv6 extension headers are not
/// followed: the protocol is then reported by number and without a port).
fn parse_ip(p: &[u8]) -> Option<(SocketAddr, String)> {
    let (ip, proto, l4): (IpAddr, u8, &[u8]) = match p.first()? >> 4 {
        4 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let dst: [u8; 4] = p.get(16..20)?.try_into().ok()?;
            (
                Ipv4Addr::from(dst).into(),
                *p.get(9)?,
                p.get(ihl..).unwrap_or_default(),
            )
        }
        6 => {
            let dst: [u8; 16] = p.get(24..40)?.try_into().ok()?;
            (
                Ipv6Addr::from(dst).into(),
                *p.get(6)?,
                p.get(40..).unwrap_or_default(),
            )
        }
        _ => return None,
    };
    let (name, port) = match proto {
        6 | 17 => (
            if proto == 6 { "tcp" } else { "udp" }.to_owned(),
            l4.get(2..4)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .unwrap_or(0),
        ),
        1 => ("icmp".to_owned(), 0),
        58 => ("icmpv6".to_owned(), 0),
        other => (format!("ip-proto-{other}"), 0),
    };
    Some((SocketAddr::new(ip, port), name))
}

/// A running reader; [`NflogReader::stop`] ends it and closes its socket.
pub struct NflogReader {
    wake: OwnedFd,
    thread: Option<JoinHandle<()>>,
}

impl NflogReader {
    /// Subscribes to `group` inside `netns` and reports drops to `observer`.
    pub fn start(
        netns: BorrowedFd<'_>,
        group: u16,
        observer: Arc<dyn FlowObserver>,
    ) -> Result<Self, LinuxError> {
        let ns = netns
            .try_clone_to_owned()
            .map_err(|e| LinuxError::io("duplicate the cell's netns descriptor", e))?;
        let sock = std::thread::scope(|s| {
            s.spawn(move || subscribe(ns.as_fd(), group))
                .join()
                .unwrap_or_else(|_| Err("the NFLOG subscribe thread panicked".into()))
        })
        .map_err(|detail| LinuxError::Setup {
            what: format!("subscribe to NFLOG group {group} in the cell's namespace"),
            detail,
        })?;
        let (wake_r, wake_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| LinuxError::errno("pipe", e.raw_os_error()))?;
        let thread = std::thread::Builder::new()
            .name("cellos-nflog".into())
            .spawn(move || read_loop(sock, wake_r, observer.as_ref()))
            .map_err(|e| LinuxError::io("start the NFLOG reader", e))?;
        Ok(Self {
            wake: wake_w,
            thread: Some(thread),
        })
    }

    /// Stops the reader and waits for it (its socket is closed when this returns).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = rustix::io::write(&self.wake, &[1]);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for NflogReader {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Runs on a helper thread inside the cell's namespace.
fn subscribe(netns: BorrowedFd<'_>, group: u16) -> Result<Socket, String> {
    nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("setns: {e}"))?;
    let mut sock = Socket::new(NETLINK_NETFILTER).map_err(|e| format!("netlink socket: {e}"))?;
    sock.bind(&NetlinkAddr::new(0, 0))
        .map_err(|e| format!("bind: {e}"))?;
    sock.send(&bind_request(group, 1), 0)
        .map_err(|e| format!("send config: {e}"))?;
    let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::from(2000u16)) {
        Ok(n) if n > 0 => {}
        _ => return Err("no answer from nfnetlink_log (is nfnetlink_log loaded?)".into()),
    }
    let mut buf = vec![0u8; 4096];
    let n = sock
        .recv(&mut &mut buf[..], 0)
        .map_err(|e| format!("recv ack: {e}"))?;
    match parse(&buf[..n.min(buf.len())]).acks.first() {
        Some(0) => Ok(sock),
        Some(err) => Err(format!(
            "the kernel refused the binding: {}",
            io::Error::from_raw_os_error(-err)
        )),
        None => Err("the kernel did not acknowledge the binding".into()),
    }
}

fn read_loop(sock: Socket, wake: OwnedFd, observer: &dyn FlowObserver) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut limit = EventLimit::new();
    loop {
        let mut fds = [
            PollFd::new(sock.as_fd(), PollFlags::POLLIN),
            PollFd::new(wake.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
        let stopping = fds[1].any().unwrap_or(true);
        // Drain what is queued first: drops logged just before teardown still count.
        loop {
            match sock.recv(&mut &mut buf[..], libc::MSG_DONTWAIT) {
                Ok(n) => report(&parse(&buf[..n.min(buf.len())]).drops, &mut limit, observer),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // ENOBUFS: the kernel dropped notifications under load; the counters still
                // count them. EAGAIN: nothing more queued.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => continue,
                Err(_) => break,
            }
        }
        if stopping {
            return;
        }
    }
}

/// At most [`EVENTS_PER_SECOND`] events per one-second window.
struct EventLimit {
    window: Instant,
    sent: u32,
}

impl EventLimit {
    fn new() -> Self {
        Self {
            window: Instant::now(),
            sent: 0,
        }
    }

    fn admit(&mut self) -> bool {
        if self.window.elapsed() >= Duration::from_secs(1) {
            self.window = Instant::now();
            self.sent = 0;
        }
        self.sent += 1;
        self.sent <= EVENTS_PER_SECOND
    }
}

fn report(drops: &[LoggedDrop], limit: &mut EventLimit, observer: &dyn FlowObserver) {
    for d in drops {
        if !limit.admit() {
            continue;
        }
        observer.flow(&FlowEvent {
            dst: d.dst,
            protocol: d.protocol.clone(),
            verdict: FlowVerdict::Deny,
            reason: format!("nftables drop: {}", d.reason),
            name: None,
            bytes_up: 0,
            bytes_down: 0,
            authority: AuthorityKind::Imposed,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet_msg(prefix: &str, ip: &[u8]) -> Vec<u8> {
        use netlink_packet_core::NetlinkHeader;
        use netlink_packet_netfilter::NetfilterHeader;
        let nlas = vec![
            PacketNla::Prefix(std::ffi::CString::new(prefix).unwrap()),
            PacketNla::Payload(ip.to_vec()),
        ];
        let mut msg = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::from(NetfilterMessage::new(
                NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 7),
                ULogMessage::Packet(nlas),
            )),
        );
        msg.finalize();
        let mut bytes = vec![0; msg.buffer_len()];
        msg.serialize(&mut bytes);
        bytes
    }

    fn ipv4_tcp(dst: [u8; 4], port: u16) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 10, 213, 0, 2];
        p.extend_from_slice(&dst);
        p.extend_from_slice(&[0x9c, 0x40]);
        p.extend_from_slice(&port.to_be_bytes());
        p
    }

    #[test]
    fn logged_packets_become_drops_with_destination_and_reason() {
        let mut dgram = packet_msg("cellos-deny range ", &ipv4_tcp([10, 0, 0, 5], 22));
        dgram.extend(packet_msg(
            "cellos-deny default ",
            &ipv4_tcp([192, 0, 2, 9], 8081),
        ));
        dgram.extend(packet_msg("someone-else ", &ipv4_tcp([192, 0, 2, 9], 1)));
        let parsed = parse(&dgram);
        assert_eq!(
            parsed.drops,
            vec![
                LoggedDrop {
                    dst: "10.0.0.5:22".parse().unwrap(),
                    protocol: "tcp".into(),
                    reason: "range".into()
                },
                LoggedDrop {
                    dst: "192.0.2.9:8081".parse().unwrap(),
                    protocol: "tcp".into(),
                    reason: "default".into()
                },
            ]
        );
    }

    #[test]
    fn truncated_and_garbage_datagrams_are_skipped() {
        let full = packet_msg("cellos-deny range ", &ipv4_tcp([10, 0, 0, 5], 22));
        for cut in 0..full.len() {
            let _ = parse(&full[..cut]);
        }
        assert_eq!(parse(&[0xff; 40]), Parsed::default());
    }

    #[test]
    fn bind_request_is_one_config_message_for_the_group() {
        let m = bind_request(7, 1);
        assert_eq!(
            u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize,
            m.len()
        );
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), (4 << 8) | 1);
        assert_eq!(&m[18..20], &7u16.to_be_bytes());
    }
}

//! A synchronous `NETLINK_ROUTE` client: the few requests a cell's link needs (make a veth
//! pair, address and raise it, add a default route, take it down, delete it), each answered by
//! the kernel's acknowledgement before the next is sent.
//!
//! Messages are `netlink-packet-route`'s, the socket is `netlink-sys`'s; only the
//! request/acknowledge loop is here. It is synchronous on purpose: a cell's link is made on the
//! create path, where a runtime (rtnetlink's tokio connection) would cost more than the
//! requests themselves. A socket is bound to the network namespace it was opened in, whatever
//! the thread using it later: [`Rtnl::open_in`] opens one inside a cell's namespace from a
//! short-lived thread that joins it, so the supervisor's own threads never change namespace.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// Largest datagram the kernel sends on a route socket (a dump part is at most 32 KiB).
const RECV_BUFFER: usize = 64 * 1024;

/// An open route socket of one network namespace.
pub struct Rtnl {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Rtnl {
    /// A route socket of the calling thread's network namespace.
    pub fn open() -> io::Result<Self> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        // Errors then carry the kernel's own explanation where it has one; not fatal if the
        // kernel predates extended acknowledgements.
        let _ = sock.set_ext_ack(true);
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(Self {
            sock,
            seq: 0,
            buf: vec![0; RECV_BUFFER],
        })
    }

    /// A route socket of the namespace `netns`, opened by a thread that joins it and exits.
    pub fn open_in(netns: BorrowedFd<'_>) -> io::Result<Self> {
        std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::setns(netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(io::Error::from)?;
                Self::open()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the netlink socket thread panicked")))
        })
    }

    /// Sends `msg` and waits for its acknowledgement; the kernel's refusal as an errno.
    pub fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.exchange(msg, NLM_F_ACK | flags).map(drop)
    }

    /// Sends a request for one object (`RTM_GET*` without dump) and returns the answer.
    pub fn get(&mut self, msg: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.exchange(msg, NLM_F_ACK)
    }

    /// Sends a dump request and collects every message of the answer.
    pub fn dump(&mut self, msg: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.exchange(msg, NLM_F_DUMP)
    }

    /// Sends `msg` and collects the answer up to its end (acknowledgement, error or end of
    /// dump).
    fn exchange(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        let seq = self.send(msg, NLM_F_REQUEST | flags)?;
        let mut out = Vec::new();
        loop {
            for reply in self.receive(seq)? {
                match reply {
                    Reply::Message(m) => out.push(m),
                    Reply::Done(result) => return result.map(|()| out),
                }
            }
        }
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = flags;
        req.header.sequence_number = self.seq;
        req.finalize();
        let mut bytes = vec![0; req.buffer_len()];
        req.serialize(&mut bytes);
        self.sock.send(&bytes, 0)?;
        Ok(self.seq)
    }

    /// One datagram's messages that answer `seq` (others, stale answers, are skipped).
    fn receive(&mut self, seq: u32) -> io::Result<Vec<Reply>> {
        let n = loop {
            match self.sock.recv(&mut &mut self.buf[..], 0) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        let n = n.min(self.buf.len());
        parse_replies(&self.buf[..n], seq)
    }
}

/// A message of an answer, or its end: the acknowledgement, the error, or the end of a dump.
#[derive(Debug)]
enum Reply {
    Message(RouteNetlinkMessage),
    Done(io::Result<()>),
}

fn parse_replies(mut data: &[u8], seq: u32) -> io::Result<Vec<Reply>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(data)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        let len = (msg.header.length as usize).max(16);
        data = data.get(align4(len)..).unwrap_or_default();
        if msg.header.sequence_number != seq {
            continue;
        }
        out.push(match msg.payload {
            NetlinkPayload::InnerMessage(m) => Reply::Message(m),
            NetlinkPayload::Done(_) => Reply::Done(Ok(())),
            NetlinkPayload::Error(e) if e.code.is_none() => Reply::Done(Ok(())),
            NetlinkPayload::Error(e) => Reply::Done(Err(e.to_io())),
            _ => continue,
        });
    }
    Ok(out)
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::link::LinkMessage;

    #[test]
    fn a_dump_of_our_own_namespace_lists_loopback() {
        let mut rtnl = Rtnl::open().unwrap();
        let links = rtnl
            .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))
            .unwrap();
        assert!(links.iter().any(|m| matches!(
            m,
            RouteNetlinkMessage::NewLink(l) if l.header.index == 1
        )));
    }

    #[test]
    fn refusals_keep_the_kernels_errno() {
        let mut rtnl = Rtnl::open().unwrap();
        let mut msg = LinkMessage::default();
        msg.attributes = vec![netlink_packet_route::link::LinkAttribute::IfName(
            "cvnosuchlink0".into(),
        )];
        let err = rtnl
            .request(RouteNetlinkMessage::DelLink(msg), 0)
            .unwrap_err();
        assert!(
            matches!(err.raw_os_error(), Some(libc::ENODEV) | Some(libc::EPERM)),
            "{err}"
        );
    }
}

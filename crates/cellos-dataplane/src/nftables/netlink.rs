//! The NETLINK_NETFILTER socket: opened inside the target network namespace, then used from
//! any thread (a socket stays in the namespace it was created in).
//!
//! Framing is `netlink-packet-core`'s (header, ACK/error decoding), the socket
//! `netlink-sys`'s; nf_tables payloads are [`super::encode`]'s.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use netlink_packet_core::{
    NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use nix::errno::Errno;

use super::encode::{family_code, Object, Request};
use super::model::Family;

const SUBSYS_NFTABLES: u16 = 10;
const BATCH_BEGIN: u16 = 16;
const BATCH_END: u16 = 17;
/// Large enough for the acknowledgements of a whole ruleset batch.
const RCVBUF: usize = 1 << 20;

/// Why a netlink exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("open a netfilter netlink socket in the target namespace: {0}")]
    Open(#[source] io::Error),
    #[error("join the target network namespace: {0}")]
    Setns(#[source] Errno),
    #[error("netfilter netlink {what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("nf_tables rejected {object}: {errno}")]
    Rejected { object: Object, errno: Errno },
    #[error("nf_tables answered {answered} of {expected} messages of the batch; nothing may have been applied")]
    Incomplete { answered: usize, expected: usize },
    #[error("malformed netlink reply: {0}")]
    Decode(String),
}

/// An nfnetlink message body: `nfgenmsg` and attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NfMsg {
    ty: u16,
    family: u8,
    res_id: u16,
    pub(crate) attrs: Vec<u8>,
}

impl NetlinkSerializable for NfMsg {
    fn message_type(&self) -> u16 {
        self.ty
    }

    fn buffer_len(&self) -> usize {
        4 + self.attrs.len()
    }

    fn serialize(&self, buffer: &mut [u8]) {
        buffer[0] = self.family;
        buffer[1] = 0; // NFNETLINK_V0
        buffer[2..4].copy_from_slice(&self.res_id.to_be_bytes());
        buffer[4..4 + self.attrs.len()].copy_from_slice(&self.attrs);
    }
}

impl NetlinkDeserializable for NfMsg {
    type Error = NetlinkError;

    fn deserialize(header: &NetlinkHeader, payload: &[u8]) -> Result<Self, Self::Error> {
        let (nfgen, attrs) = payload
            .split_first_chunk::<4>()
            .ok_or_else(|| NetlinkError::Decode("message shorter than nfgenmsg".into()))?;
        Ok(Self {
            ty: header.message_type,
            family: nfgen[0],
            res_id: u16::from_be_bytes([nfgen[2], nfgen[3]]),
            attrs: attrs.to_vec(),
        })
    }
}

/// One received message: its sequence number and payload.
type Reply = (u32, NetlinkPayload<NfMsg>);

/// A batch's first error: the index of the refused request (`None`: the batch itself) and
/// the errno.
type BatchError = (Option<usize>, Errno);

/// A bound NETLINK_NETFILTER socket and its sequence counter.
#[derive(Debug)]
pub(crate) struct NfSocket {
    sock: Socket,
    seq: u32,
    /// Send buffer size already ensured.
    sndbuf: usize,
}

impl NfSocket {
    /// Opens the socket in `netns` (the caller's own namespace when `None`). A short-lived
    /// thread joins the namespace and creates the socket, so no thread of the caller ever
    /// changes namespace.
    pub(crate) fn open(netns: Option<OwnedFd>) -> Result<Self, NetlinkError> {
        let Some(ns) = netns else {
            return Self::bind();
        };
        std::thread::spawn(move || {
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(NetlinkError::Setns)?;
            Self::bind()
        })
        .join()
        .map_err(|_| NetlinkError::Open(io::Error::other("socket thread panicked")))?
    }

    fn bind() -> Result<Self, NetlinkError> {
        let mut sock = Socket::new(NETLINK_NETFILTER).map_err(NetlinkError::Open)?;
        sock.bind_auto().map_err(NetlinkError::Open)?;
        // Acknowledgements carry only the request's header, not a copy of the request.
        sock.set_cap_ack(true).map_err(NetlinkError::Open)?;
        {
            use nix::sys::socket::{setsockopt, sockopt};
            // Past `rmem_max` where the caller may (CAP_NET_ADMIN), as `nft` does.
            setsockopt(&sock, sockopt::RcvBufForce, &RCVBUF)
                .or_else(|_| setsockopt(&sock, sockopt::RcvBuf, &RCVBUF))
                .map_err(|errno| NetlinkError::Open(errno.into()))?;
        }
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(NetlinkError::Open)?;
        Ok(Self {
            sock,
            seq: 0,
            sndbuf: 64 * 1024,
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn frame(
        &mut self,
        ty: u16,
        flags: u16,
        family: u8,
        res_id: u16,
        attrs: Vec<u8>,
    ) -> (u32, Vec<u8>) {
        let seq = self.next_seq();
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let body = NfMsg {
            ty,
            family,
            res_id,
            attrs,
        };
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(body));
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        (seq, buf)
    }

    /// Sends `requests` as one nf_tables transaction and checks every acknowledgement: the
    /// first rejected message names its object and errno, and the kernel then applied nothing.
    pub(crate) fn transact(&mut self, requests: &[Request]) -> Result<(), NetlinkError> {
        let (batch, first) = self.batch(requests);
        self.fit_send_buffer(batch.len())?;
        self.sock
            .send(&batch, 0)
            .map_err(|source| NetlinkError::Io {
                what: "send the batch",
                source,
            })?;
        let expected = requests.len();
        let (answered, first_error) = self.answers(first, expected)?;
        if let Some((index, errno)) = first_error {
            let object = match index.and_then(|i| requests.get(i)) {
                Some(r) => r.object.clone(),
                None => Object::Message("the batch"),
            };
            return Err(NetlinkError::Rejected { object, errno });
        }
        if answered < expected {
            return Err(NetlinkError::Incomplete { answered, expected });
        }
        Ok(())
    }

    /// The batch's bytes (BEGIN, each request asking for an ACK, END) and the sequence number
    /// of the first request; the others follow it in order.
    fn batch(&mut self, requests: &[Request]) -> (Vec<u8>, u32) {
        let (_, mut batch) = self.frame(BATCH_BEGIN, NLM_F_REQUEST, 0, SUBSYS_NFTABLES, Vec::new());
        let first = self.seq.wrapping_add(1);
        for r in requests {
            let ty = (SUBSYS_NFTABLES << 8) | u16::from(r.op);
            let flags = NLM_F_REQUEST | NLM_F_ACK | r.flags;
            let (_, bytes) = self.frame(ty, flags, family_code(r.family), 0, r.attrs.clone());
            batch.extend_from_slice(&bytes);
        }
        let (_, end) = self.frame(BATCH_END, NLM_F_REQUEST, 0, SUBSYS_NFTABLES, Vec::new());
        batch.extend_from_slice(&end);
        (batch, first)
    }

    /// Reads the batch's answers: how many requests were answered, and the first error as
    /// (request index, errno), the index `None` when the batch as a whole was refused.
    ///
    /// The kernel processes a batch inside `send`, so every answer is queued by now: after
    /// the first datagram, read only what is queued rather than wait for a count.
    fn answers(
        &self,
        first: u32,
        expected: usize,
    ) -> Result<(usize, Option<BatchError>), NetlinkError> {
        let mut seen = vec![false; expected];
        let mut answered = 0;
        let mut first_error: Option<BatchError> = None;
        while answered < expected {
            let Some(replies) = self.recv(answered == 0 && first_error.is_none())? else {
                break;
            };
            for (seq, payload) in replies {
                let NetlinkPayload::Error(e) = payload else {
                    continue;
                };
                let offset = seq.wrapping_sub(first) as usize;
                let index = (offset < expected).then_some(offset);
                if let Some(i) = index {
                    if std::mem::replace(&mut seen[i], true) {
                        continue;
                    }
                    answered += 1;
                } else if seq != first.wrapping_sub(1) {
                    continue; // not this batch's
                }
                if let Some(code) = e.code {
                    let errno = Errno::from_raw(code.get().abs());
                    // BEGIN refused (index None) comes first, then the lowest index.
                    let earlier = match (first_error, index) {
                        (None, _) => true,
                        (Some((Some(a), _)), Some(b)) => b < a,
                        (Some((Some(_), _)), None) => true,
                        (Some((None, _)), _) => false,
                    };
                    if earlier {
                        first_error = Some((index, errno));
                    }
                }
            }
        }
        Ok((answered, first_error))
    }

    /// A batch is one datagram, which must fit the socket's send buffer: grow it (as `nft`
    /// does), beyond `wmem_max` where the caller may (CAP_NET_ADMIN).
    fn fit_send_buffer(&mut self, len: usize) -> Result<(), NetlinkError> {
        use nix::sys::socket::{setsockopt, sockopt};
        if len <= self.sndbuf {
            return Ok(());
        }
        setsockopt(&self.sock, sockopt::SndBufForce, &len)
            .or_else(|_| setsockopt(&self.sock, sockopt::SndBuf, &len))
            .map_err(|errno| NetlinkError::Io {
                what: "size the send buffer for the batch",
                source: errno.into(),
            })?;
        self.sndbuf = len;
        Ok(())
    }

    /// Sends one non-batched request (GET); returns the replies' bodies up to the final
    /// acknowledgement or dump end, or the errno the kernel answered with.
    pub(crate) fn query(
        &mut self,
        op: u8,
        family: Family,
        dump: bool,
        attrs: Vec<u8>,
    ) -> Result<Result<Vec<NfMsg>, Errno>, NetlinkError> {
        let ty = (SUBSYS_NFTABLES << 8) | u16::from(op);
        let flags = NLM_F_REQUEST | NLM_F_ACK | if dump { NLM_F_DUMP } else { 0 };
        let (seq, bytes) = self.frame(ty, flags, family_code(family), 0, attrs);
        self.sock
            .send(&bytes, 0)
            .map_err(|source| NetlinkError::Io {
                what: "send a request",
                source,
            })?;
        let mut out = Vec::new();
        loop {
            let replies = self.recv(true)?.unwrap_or_default();
            for (s, payload) in replies {
                if s != seq {
                    continue;
                }
                match payload {
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    NetlinkPayload::Done(_) => return Ok(Ok(out)),
                    NetlinkPayload::Error(e) => {
                        return Ok(match e.code {
                            None => Ok(out),
                            Some(code) => Err(Errno::from_raw(code.get().abs())),
                        });
                    }
                    _ => {}
                }
            }
        }
    }

    /// One datagram's messages; `None` when nothing is queued and `block` is false.
    fn recv(&self, block: bool) -> Result<Option<Vec<Reply>>, NetlinkError> {
        let mut buf = vec![0u8; 64 * 1024];
        let flags = if block { 0 } else { libc::MSG_DONTWAIT };
        let n = match self.sock.recv(&mut &mut buf[..], flags) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(source) => {
                return Err(NetlinkError::Io {
                    what: "receive",
                    source,
                })
            }
        };
        let mut out = Vec::new();
        let mut rest = &buf[..n];
        while rest.len() >= 16 {
            let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            if len < 16 || len > rest.len() {
                return Err(NetlinkError::Decode(format!("message length {len}")));
            }
            let msg = NetlinkMessage::<NfMsg>::deserialize(&rest[..len])
                .map_err(|e| NetlinkError::Decode(e.to_string()))?;
            out.push((msg.header.sequence_number, msg.payload));
            rest = &rest[len.next_multiple_of(4).min(rest.len())..];
        }
        Ok(Some(out))
    }
}

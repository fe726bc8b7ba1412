//! The destination a redirected connection was originally sent to.
//!
//! After `redirect to :PORT` in the cell's namespace, conntrack remembers the original
//! destination; `SO_ORIGINAL_DST` (IPv4) and `IP6T_SO_ORIGINAL_DST` (IPv6) read it back from
//! the accepted socket. A trait, so tests can state the destination without NAT.

use std::net::SocketAddr;

use nix::sys::socket::{getsockopt, sockopt};
use tokio::net::TcpStream;

/// Reads the original destination of an accepted connection.
pub trait OriginalDestination: Send + Sync {
    fn original_destination(&self, stream: &TcpStream) -> std::io::Result<SocketAddr>;
}

/// The conntrack view, for listeners inside the cell's namespace behind a `redirect`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConntrackOriginalDst;

impl OriginalDestination for ConntrackOriginalDst {
    fn original_destination(&self, stream: &TcpStream) -> std::io::Result<SocketAddr> {
        let local = stream.local_addr()?;
        let addr = if local.is_ipv4() {
            let sin = getsockopt(stream, sockopt::OriginalDst)?;
            SocketAddr::from((
                std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            ))
        } else {
            let sin6 = getsockopt(stream, sockopt::Ip6tOriginalDst)?;
            SocketAddr::from((
                std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
            ))
        };
        Ok(addr)
    }
}

/// A fixed destination (tests, or a gate in front of exactly one service).
#[derive(Debug, Clone, Copy)]
pub struct FixedOriginalDst(pub SocketAddr);

impl OriginalDestination for FixedOriginalDst {
    fn original_destination(&self, _: &TcpStream) -> std::io::Result<SocketAddr> {
        Ok(self.0)
    }
}

//! CIDR blocks (`10.0.0.0/8`, `2001:db8::/32`) for egress rules.
//!
//! Hand-written on top of `std::net` address parsing (pure, no sockets): the only parts needed
//! are prefix parsing, a host-bits check and containment, which do not justify a dependency.

use std::fmt;
use std::net::IpAddr;

/// A parsed network: address with every host bit zero, and a prefix length in range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{0:?} is not an address/prefix such as 10.0.0.0/8 or 2001:db8::/32")]
    Malformed(String),
    #[error("{0:?} has an address that is neither IPv4 nor IPv6")]
    BadAddress(String),
    #[error("{text:?} has prefix length {prefix}; it must be 0..={max}")]
    PrefixOutOfRange {
        text: String,
        prefix: String,
        max: u8,
    },
    #[error("{text:?} has host bits set; the network is {network}")]
    HostBitsSet { text: String, network: String },
}

impl Cidr {
    /// Parses `addr/prefix`; a bare address means a single host (`/32` or `/128`).
    ///
    /// Host bits must be zero (`10.0.0.1/8` is rejected) so that what is written is exactly the
    /// network that will be allowed.
    pub fn parse(text: &str) -> Result<Cidr, CidrError> {
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        if addr_text.is_empty() {
            return Err(CidrError::Malformed(text.to_owned()));
        }
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| CidrError::BadAddress(text.to_owned()))?;
        let max = max_prefix(addr);
        let prefix_len = match prefix_text {
            None => max,
            Some(p) => {
                let out_of_range = || CidrError::PrefixOutOfRange {
                    text: text.to_owned(),
                    prefix: p.to_owned(),
                    max,
                };
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(out_of_range());
                }
                match p.parse::<u8>() {
                    Ok(n) if n <= max => n,
                    _ => return Err(out_of_range()),
                }
            }
        };
        let network = mask(addr, prefix_len);
        if network != addr {
            return Err(CidrError::HostBitsSet {
                text: text.to_owned(),
                network: format!("{network}/{prefix_len}"),
            });
        }
        Ok(Cidr {
            network,
            prefix_len,
        })
    }

    pub fn network(&self) -> IpAddr {
        self.network
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Is every address of `other` inside `self`? Different address families never nest.
    pub fn contains(&self, other: &Cidr) -> bool {
        let same_family = self.network.is_ipv4() == other.network.is_ipv4();
        same_family
            && other.prefix_len >= self.prefix_len
            && mask(other.network, self.prefix_len) == self.network
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// Zeroes every bit after the first `prefix_len` bits.
fn mask(addr: IpAddr, prefix_len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let keep = u32::MAX
                .checked_shl(32 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V4((bits & keep).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let keep = u128::MAX
                .checked_shl(128 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V6((bits & keep).into())
        }
    }
}

//! The nftables constructs CellOS loads, as data: one value renders to the canonical text
//! ([`super::text`]) and encodes to the netlink batch ([`super::encode`]).
//!
//! Only what the cell and host tables use is here; anything else is unrepresentable, so a
//! table can never hold a construct that one of the two outputs does not know.

use std::net::IpAddr;
use std::time::Duration;

use cellos_core::spec::Cidr;

use crate::ruleset::Proto;

/// Address family of a table (`nfgenmsg.nfgen_family`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Inet,
    Ip,
    Ip6,
}

/// One table; `replace` makes loading it replace any previous table of the same name in the
/// same transaction (`table T` + `delete table T` + the definition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub family: Family,
    pub name: String,
    pub replace: bool,
    /// Named counters, in declaration order.
    pub counters: Vec<String>,
    pub sets: Vec<Set>,
    pub chains: Vec<Chain>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    /// `None` for a regular chain (reached only by `jump`).
    pub base: Option<BaseChain>,
    pub rules: Vec<Rule>,
}

/// A chain attached to a netfilter hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseChain {
    pub kind: ChainKind,
    pub hook: Hook,
    pub priority: Priority,
    pub policy: Policy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainKind {
    Filter,
    Nat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Input,
    Forward,
    Output,
    Postrouting,
}

/// Chain priority; the named ones render by name, as `nft` lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// `filter` (0).
    Filter,
    /// `srcnat` (100).
    SrcNat,
    Value(i32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Accept,
    Drop,
}

/// IPv4 or IPv6: which header an address match reads, which key a set holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpVersion {
    V4,
    V6,
}

impl IpVersion {
    pub fn of(addr: IpAddr) -> Self {
        if addr.is_ipv4() {
            Self::V4
        } else {
            Self::V6
        }
    }

    /// Address length in bytes.
    pub fn addr_len(self) -> usize {
        match self {
            Self::V4 => 4,
            Self::V6 => 16,
        }
    }
}

/// A named set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub name: String,
    pub key: SetKey,
    /// `flags interval`: elements are ranges (prefixes).
    pub interval: bool,
    /// `flags timeout`: elements may expire.
    pub timeout: bool,
    pub elements: Vec<Element>,
}

/// What a set's elements are keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetKey {
    /// `ipv4_addr` / `ipv6_addr`.
    Addr(IpVersion),
    /// `ipv4_addr . inet_proto . inet_service` (or the IPv6 one).
    AddrProtoPort(IpVersion),
}

impl SetKey {
    pub fn version(self) -> IpVersion {
        match self {
            Self::Addr(v) | Self::AddrProtoPort(v) => v,
        }
    }
}

/// An address or a network, as an element or a match operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addr {
    Host(IpAddr),
    /// A network and its prefix length (host bits zero), rendered with the prefix.
    Net(IpAddr, u8),
}

impl From<Cidr> for Addr {
    fn from(c: Cidr) -> Self {
        Self::Net(c.network(), c.prefix_len())
    }
}

impl Addr {
    pub fn version(self) -> IpVersion {
        match self {
            Self::Host(ip) => IpVersion::of(ip),
            Self::Net(ip, _) => IpVersion::of(ip),
        }
    }

    /// Network bytes (big-endian) and prefix length.
    pub fn network(self) -> (Vec<u8>, u8) {
        let (ip, prefix) = match self {
            Self::Host(ip) => (ip, (self.version().addr_len() * 8) as u8),
            Self::Net(ip, prefix) => (ip, prefix),
        };
        let bytes = match ip {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        (bytes, prefix)
    }

    /// First and last address covered (big-endian bytes).
    pub fn range(self) -> (Vec<u8>, Vec<u8>) {
        let (lo, prefix) = self.network();
        let mut hi = lo.clone();
        for (i, byte) in hi.iter_mut().enumerate() {
            let covered = (prefix as usize).saturating_sub(i * 8).min(8);
            *byte |= 0xffu8.checked_shr(covered as u32).unwrap_or(0);
        }
        (lo, hi)
    }
}

/// One set element; `proto_port` is present exactly for [`SetKey::AddrProtoPort`] sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub addr: Addr,
    pub proto_port: Option<(Proto, u16)>,
    /// Only for `flags timeout` sets; whole seconds.
    pub timeout: Option<Duration>,
}

/// One rule: statements in order, the last one usually a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule(pub Vec<Stmt>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stmt {
    Match(Match),
    /// `counter name "N"` (a named counter object of the table).
    Counter(String),
    /// `log prefix "P" group G` (NFLOG).
    Log {
        prefix: String,
        group: u16,
    },
    Reject(Reject),
    /// `redirect to :PORT` (nat chains).
    Redirect(u16),
    /// `masquerade` (nat postrouting).
    Masquerade,
    Verdict(Verdict),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Return,
    Jump(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// `reject with tcp reset`.
    TcpReset,
    /// `reject with icmpx admin-prohibited`.
    IcmpxAdminProhibited,
}

/// Which interface or address field a match reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Input interface / source address.
    In,
    /// Output interface / destination address.
    Out,
}

/// Conntrack states (`ct state`), as the kernel's bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtState {
    Invalid,
    Established,
    Related,
}

/// ICMPv6 types the rulesets name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Icmpv6Type {
    MldListenerReport,
    MldListenerDone,
    NdRouterSolicit,
    NdRouterAdvert,
    NdNeighborSolicit,
    NdNeighborAdvert,
    Mld2ListenerReport,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// `oif "lo"` / `iif "lo"` (the loopback interface, index 1 in every namespace).
    Loopback(Dir),
    /// `iifname "X"` / `oifname != "X"`.
    IfName { dir: Dir, name: String, equal: bool },
    /// `ip daddr 127.0.0.0/8`, `ip6 saddr fd00::2`.
    Addr { dir: Dir, addr: Addr },
    /// `ip daddr @SET` (a [`SetKey::Addr`] set).
    AddrIn { version: IpVersion, set: String },
    /// `ip daddr . meta l4proto . th dport @SET` (a [`SetKey::AddrProtoPort`] set).
    DestIn { version: IpVersion, set: String },
    /// `meta l4proto tcp` / `meta l4proto { tcp, udp }`.
    L4Proto(Vec<Proto>),
    /// `th dport 53` (after an `l4proto` match of TCP/UDP).
    ThDport(u16),
    /// `tcp dport { 80, 443 }`.
    TcpDport(Vec<u16>),
    /// `icmpv6 type { ... }`.
    Icmpv6Type(Vec<Icmpv6Type>),
    /// `ct state established,related`.
    CtState(Vec<CtState>),
}

impl Table {
    /// The set named `name`, if declared.
    pub fn set(&self, name: &str) -> Option<&Set> {
        self.sets.iter().find(|s| s.name == name)
    }
}

/// Set-element changes for one set of an existing table, loaded as one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementUpdate {
    pub family: Family,
    pub table: String,
    pub set: String,
    pub key: SetKey,
    /// Added (or, when present, re-added with a fresh timeout).
    pub refresh: Vec<Element>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_the_prefix() {
        let net = Addr::from(Cidr::parse("100.64.0.0/10").unwrap());
        assert_eq!(net.range(), (vec![100, 64, 0, 0], vec![100, 127, 255, 255]));
        let host = Addr::Host("10.0.0.1".parse().unwrap());
        assert_eq!(host.range().0, host.range().1);
        let all = Addr::from(Cidr::parse("::/0").unwrap());
        assert_eq!(all.range().1, vec![0xff; 16]);
    }
}

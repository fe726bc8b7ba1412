//! Address ranges a cell may never reach unless a rule names them: private, loopback, link-local,
//! CGNAT, ULA, multicast, reserved, IPv4-mapped and NAT64 prefixes, and the host's own addresses.
//!
//! These are denied in two places that must agree: the nftables ruleset (denied-range sets) and
//! the DNS authority (answers pointing here are dropped, which defeats DNS rebinding). Both read
//! the same [`DeniedRanges`].
//!
//! "Names them explicitly" means a literal CIDR rule whose network lies *inside* a denied range
//! (`10.1.0.0/16`, `192.168.1.5/32`). A wide rule such as `0.0.0.0/0` or `172.0.0.0/8` does not
//! open the private ranges it happens to cover: it would be too easy to open the host's LAN by
//! accident.

use std::net::IpAddr;

use cellos_core::spec::Cidr;

/// IPv4 ranges denied by default.
pub const DEFAULT_DENIED_V4: &[&str] = &[
    "0.0.0.0/8",      // "this network"; 0.0.0.0 reaches local listeners on Linux
    "10.0.0.0/8",     // RFC 1918 private
    "100.64.0.0/10",  // RFC 6598 carrier-grade NAT
    "127.0.0.0/8",    // loopback (of the host, seen from a veth)
    "169.254.0.0/16", // link-local, including cloud metadata services
    "172.16.0.0/12",  // RFC 1918 private
    "192.168.0.0/16", // RFC 1918 private
    "224.0.0.0/4",    // multicast
    "240.0.0.0/4",    // reserved and limited broadcast
];

/// IPv6 ranges denied by default.
pub const DEFAULT_DENIED_V6: &[&str] = &[
    "::/128",        // unspecified
    "::1/128",       // loopback
    "::ffff:0:0/96", // IPv4-mapped: would smuggle any IPv4 address past the IPv4 sets
    "64:ff9b::/96",  // NAT64 well-known prefix: reaches any IPv4 address, private ones included
    "fc00::/7",      // unique local addresses
    "fe80::/10",     // link-local
    "ff00::/8",      // multicast
];

/// The denied ranges of one cell: the defaults plus the host's own addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeniedRanges {
    ranges: Vec<Cidr>,
}

impl Default for DeniedRanges {
    fn default() -> Self {
        Self::defaults()
    }
}

impl DeniedRanges {
    /// The default private/reserved ranges of both families.
    pub fn defaults() -> Self {
        let ranges = DEFAULT_DENIED_V4
            .iter()
            .chain(DEFAULT_DENIED_V6)
            .filter_map(|text| Cidr::parse(text).ok())
            .collect();
        Self { ranges }
    }

    /// Adds the host's own addresses (each as a single-host range), so a cell cannot reach
    /// services listening on the host's public interfaces either. Addresses a denied range
    /// already covers are not added again: nftables refuses overlapping interval elements.
    pub fn with_host_addresses(mut self, host: &[IpAddr]) -> Self {
        for ip in host {
            if let Some(host) = host_cidr(*ip) {
                if !self.ranges.iter().any(|r| r.contains(&host)) {
                    self.ranges.push(host);
                }
            }
        }
        self
    }

    /// Every denied range, IPv4 first in declaration order.
    pub fn ranges(&self) -> &[Cidr] {
        &self.ranges
    }

    /// Is `ip` denied? It is when it lies in a denied range and in none of `explicit_allow`.
    ///
    /// IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry, and are denied as
    /// mapped addresses anyway.
    pub fn is_denied(&self, ip: IpAddr, explicit_allow: &[Cidr]) -> bool {
        let canonical = ip.to_canonical();
        let candidates: Vec<Cidr> = [ip, canonical].into_iter().filter_map(host_cidr).collect();
        if candidates.is_empty() {
            return true;
        }
        let in_denied = candidates
            .iter()
            .any(|c| self.ranges.iter().any(|r| r.contains(c)));
        let allowed = candidates
            .iter()
            .any(|c| explicit_allow.iter().any(|a| a.contains(c)));
        in_denied && !allowed
    }

    /// Does a literal CIDR rule name a denied range explicitly (lie inside one)?
    pub fn names_denied_range(&self, rule: &Cidr) -> bool {
        self.ranges.iter().any(|r| r.contains(rule))
    }
}

/// The single-host network of `ip` (`/32` or `/128`). A bare address always parses as its own
/// host network; `None` is never returned in practice, and callers fail closed on it.
pub fn host_cidr(ip: IpAddr) -> Option<Cidr> {
    Cidr::parse(&ip.to_string()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cidr(s: &str) -> Cidr {
        Cidr::parse(s).unwrap()
    }

    #[test]
    fn every_default_range_parses() {
        assert_eq!(
            DeniedRanges::defaults().ranges().len(),
            DEFAULT_DENIED_V4.len() + DEFAULT_DENIED_V6.len()
        );
    }

    #[test]
    fn private_loopback_link_local_cgnat_ula_are_denied() {
        let d = DeniedRanges::defaults();
        for a in [
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "fd00::1",
            "fc00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::ffff:8.8.8.8",
            "64:ff9b::a00:1",
            "ff02::1",
        ] {
            assert!(d.is_denied(ip(a), &[]), "{a} should be denied");
        }
    }

    #[test]
    fn public_addresses_are_not_denied() {
        let d = DeniedRanges::defaults();
        for a in [
            "8.8.8.8",
            "203.0.113.10",
            "172.32.0.1",
            "100.128.0.1",
            "2001:db8::1",
            "2606:4700::1",
        ] {
            assert!(!d.is_denied(ip(a), &[]), "{a} should not be denied");
        }
    }

    #[test]
    fn explicit_cidr_opens_a_denied_range() {
        let d = DeniedRanges::defaults();
        let allow = [cidr("10.1.0.0/16")];
        assert!(!d.is_denied(ip("10.1.2.3"), &allow));
        assert!(d.is_denied(ip("10.2.0.1"), &allow));
    }

    #[test]
    fn host_addresses_are_denied() {
        let d = DeniedRanges::defaults().with_host_addresses(&[ip("198.51.100.7")]);
        assert!(d.is_denied(ip("198.51.100.7"), &[]));
        assert!(!d.is_denied(ip("198.51.100.8"), &[]));
    }

    #[test]
    fn host_addresses_inside_denied_ranges_are_not_listed_twice() {
        let d = DeniedRanges::defaults().with_host_addresses(&[
            ip("10.213.0.1"),
            ip("127.0.0.1"),
            ip("fe80::1"),
        ]);
        assert_eq!(d.ranges(), DeniedRanges::defaults().ranges());
        assert!(d.is_denied(ip("10.213.0.1"), &[]));
    }

    #[test]
    fn only_rules_inside_a_denied_range_name_it() {
        let d = DeniedRanges::defaults();
        assert!(d.names_denied_range(&cidr("10.0.0.0/8")));
        assert!(d.names_denied_range(&cidr("192.168.1.5/32")));
        assert!(!d.names_denied_range(&cidr("0.0.0.0/0")));
        assert!(!d.names_denied_range(&cidr("172.0.0.0/8")));
        assert!(!d.names_denied_range(&cidr("203.0.113.0/24")));
    }
}

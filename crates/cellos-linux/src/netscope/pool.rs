//! Per-cell addresses: the pool (default [`DEFAULT_POOL`]) is carved into /30 links, one per
//! networked cell: network address, host end (`.1`), cell end (`.2`), broadcast. The IPv6 pool
//! (default [`DEFAULT_POOL6`]) is carved into /64s the same way: host end `::1`, cell end `::2`.
//!
//! Why /64 and not a /126 like the IPv4 /30: a /64 is the size of an IPv6 link (RFC 7421;
//! neighbour discovery and every tool assume it), and a /48 holds 65536 of them, four times the
//! default IPv4 pool, so address space is never the limit. The default /48 is fixed rather than
//! random (RFC 4193 suggests a random global id): `fd` followed by the ASCII of `cello`, so the
//! addresses are the same on every host and documented; a host that already uses it (a route
//! or an address in it) simply has those /64s skipped, and `--net-pool6` picks another.
//!
//! One lease holds both families: slot `n` of the IPv4 pool and slot `n` of the IPv6 pool go
//! together, so the IPv6 pool must have at least as many slots as the IPv4 one.
//!
//! A link is leased by creating `<state>/run/net/<network>.lease` with `O_EXCL`, which is
//! atomic across every supervisor sharing the state directory; the file holds the cell id so
//! reclaim finds a lease even when a crash came before the run record mentioned it. A link
//! whose /30 already has a route or an address on the host (another tool, or a supervisor with
//! another state directory using an overlapping pool) is skipped, so two cells never share a
//! subnet on one host.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use cellos_core::spec::Cidr;
use sha2::{Digest, Sha256};

use crate::error::LinuxError;
use crate::residue::CheckError;

/// Default pool of cell links.
pub const DEFAULT_POOL: &str = "10.213.0.0/16";

/// Prefix length of one cell link.
pub const LINK_PREFIX: u8 = 30;

/// Default IPv6 pool of cell links: `fd` + ASCII `cello` (see the module doc).
pub const DEFAULT_POOL6: &str = "fd63:656c:6c6f::/48";

/// Prefix length of one cell's IPv6 link.
pub const LINK_PREFIX6: u8 = 64;

/// An IPv4 pool of /30 links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressPool {
    base: u32,
    prefix_len: u8,
}

impl AddressPool {
    /// Parses `a.b.c.d/n` (IPv4, `n` at most 30, host bits zero).
    pub fn parse(text: &str) -> Result<Self, LinuxError> {
        let refuse = |why: String| LinuxError::Refused {
            what: format!(
                "network pool '{text}': {why}; give an IPv4 network such as {DEFAULT_POOL} \
                 (--net-pool / CELLOS_NET_POOL)"
            ),
        };
        let cidr = Cidr::parse(text).map_err(|e| refuse(e.to_string()))?;
        let IpAddr::V4(net) = cidr.network() else {
            return Err(refuse(
                "cells get IPv4 links; IPv6 pools are not supported".into(),
            ));
        };
        if cidr.prefix_len() > LINK_PREFIX {
            return Err(refuse(format!(
                "a /{} is smaller than one cell link (/{LINK_PREFIX})",
                cidr.prefix_len()
            )));
        }
        Ok(Self {
            base: u32::from(net),
            prefix_len: cidr.prefix_len(),
        })
    }

    /// Number of /30 links in the pool.
    pub fn slots(&self) -> u32 {
        1u32 << (LINK_PREFIX - self.prefix_len)
    }

    /// The slot that `n` wraps to.
    fn slot(&self, n: u32) -> u32 {
        n % self.slots()
    }

    /// The link numbered `slot` (taken modulo the pool size).
    pub fn link(&self, slot: u32) -> Link {
        let network = self.base + (slot % self.slots()) * 4;
        Link {
            network: Ipv4Addr::from(network),
            host: Ipv4Addr::from(network + 1),
            cell: Ipv4Addr::from(network + 2),
        }
    }
}

impl Default for AddressPool {
    fn default() -> Self {
        // The constant is a valid pool; this cannot fail.
        Self {
            base: u32::from(Ipv4Addr::new(10, 213, 0, 0)),
            prefix_len: 16,
        }
    }
}

impl std::fmt::Display for AddressPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix_len)
    }
}

/// An IPv6 pool of /64 links (`--net-pool6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressPool6 {
    base: u128,
    prefix_len: u8,
}

impl AddressPool6 {
    /// Parses `x::/n` (IPv6, `n` at most 64, host bits zero).
    pub fn parse(text: &str) -> Result<Self, LinuxError> {
        let refuse = |why: String| LinuxError::Refused {
            what: format!(
                "IPv6 network pool '{text}': {why}; give an IPv6 network such as \
                 {DEFAULT_POOL6} (--net-pool6 / CELLOS_NET_POOL6)"
            ),
        };
        let cidr = Cidr::parse(text).map_err(|e| refuse(e.to_string()))?;
        let IpAddr::V6(net) = cidr.network() else {
            return Err(refuse("this pool holds the cells' IPv6 links".into()));
        };
        if cidr.prefix_len() > LINK_PREFIX6 {
            return Err(refuse(format!(
                "a /{} is smaller than one cell link (/{LINK_PREFIX6})",
                cidr.prefix_len()
            )));
        }
        Ok(Self {
            base: u128::from(net),
            prefix_len: cidr.prefix_len(),
        })
    }

    /// Number of /64 links in the pool (saturated: more than any IPv4 pool has).
    pub fn slots(&self) -> u64 {
        1u64.checked_shl(u32::from(LINK_PREFIX6 - self.prefix_len))
            .unwrap_or(u64::MAX)
    }

    /// The link numbered `slot` (taken modulo the pool size).
    pub fn link(&self, slot: u32) -> Link6 {
        let index = u128::from(u64::from(slot) % self.slots());
        let network = self.base | (index << (128 - u32::from(LINK_PREFIX6)));
        Link6 {
            network: Ipv6Addr::from(network),
            host: Ipv6Addr::from(network | 1),
            cell: Ipv6Addr::from(network | 2),
        }
    }
}

impl Default for AddressPool6 {
    fn default() -> Self {
        // fd63:656c:6c6f::/48, the constant above.
        Self {
            base: 0xfd63_656c_6c6f_u128 << 80,
            prefix_len: 48,
        }
    }
}

impl std::fmt::Display for AddressPool6 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv6Addr::from(self.base), self.prefix_len)
    }
}

/// One cell's IPv6 /64 link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link6 {
    pub network: Ipv6Addr,
    /// Host end of the veth: the cell's IPv6 gateway.
    pub host: Ipv6Addr,
    /// The cell's `eth0`.
    pub cell: Ipv6Addr,
}

impl Link6 {
    fn contains(&self, ip: Ipv6Addr) -> bool {
        u128::from(ip) >> 64 == u128::from(self.network) >> 64
    }
}

/// One cell's /30 link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub network: Ipv4Addr,
    /// Host end of the veth: gateway and DNS authority of the cell.
    pub host: Ipv4Addr,
    /// The cell's `eth0`.
    pub cell: Ipv4Addr,
}

impl Link {
    fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & !3 == u32::from(self.network)
    }
}

/// Directory of lease files.
pub fn lease_dir(state_dir: &Path) -> PathBuf {
    crate::record::run_dir(state_dir).join("net")
}

/// What one lease holds: the IPv4 and the IPv6 link of the same slot, and the lease file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub link: Link,
    pub link6: Link6,
    pub path: PathBuf,
}

/// Leases a free link of both families for `cell_id`. Probing starts at a slot derived from
/// the id, so concurrent supervisors rarely contend for the same file.
pub fn lease(
    state_dir: &Path,
    pool: &AddressPool,
    pool6: &AddressPool6,
    cell_id: &str,
) -> Result<Lease, LinuxError> {
    if pool6.slots() < u64::from(pool.slots()) {
        return Err(LinuxError::Refused {
            what: format!(
                "IPv6 network pool {pool6} has {} /{LINK_PREFIX6} links, fewer than the {} \
                 /{LINK_PREFIX} links of {pool}: each cell takes one of each; give a larger \
                 --net-pool6 (CELLOS_NET_POOL6) or a smaller --net-pool",
                pool6.slots(),
                pool.slots()
            ),
        });
    }
    let dir = lease_dir(state_dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| LinuxError::io(format!("create {}", dir.display()), e))?;
    let digest = Sha256::digest(cell_id.as_bytes());
    let start = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    let (taken, taken6) = host_networks();
    for i in 0..pool.slots() {
        let slot = pool.slot(start.wrapping_add(i));
        let (link, link6) = (pool.link(slot), pool6.link(slot));
        if taken.iter().any(|ip| link.contains(*ip)) || taken6.iter().any(|ip| link6.contains(*ip))
        {
            continue;
        }
        let path = dir.join(format!("{}.lease", link.network));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                f.write_all(cell_id.as_bytes())
                    .map_err(|e| LinuxError::io(format!("write {}", path.display()), e))?;
                return Ok(Lease { link, link6, path });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(LinuxError::io(format!("create {}", path.display()), e)),
        }
    }
    Err(LinuxError::Refused {
        what: format!(
            "network pool {pool} has no free /{LINK_PREFIX} link ({} cells hold one or the host \
             routes them); give a larger pool with --net-pool / CELLOS_NET_POOL or run `cellos gc`",
            pool.slots()
        ),
    })
}

/// Removes every lease held by `cell_id`; returns the removed files.
pub fn release_all(state_dir: &Path, cell_id: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(lease_dir(state_dir)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "lease"))
        .filter(|p| std::fs::read(p).is_ok_and(|owner| owner == cell_id.as_bytes()))
        .filter(|p| std::fs::remove_file(p).is_ok())
        .collect()
}

/// Leases still held by `cell_id`. A lease directory that does not exist holds nothing; one
/// that cannot be read cannot say.
pub fn held_by(state_dir: &Path, cell_id: &str) -> Result<Vec<PathBuf>, CheckError> {
    let dir = lease_dir(state_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CheckError::read(dir, e)),
    };
    let mut held = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| CheckError::read(&dir, e))?.path();
        match std::fs::read(&path) {
            Ok(owner) if owner == cell_id.as_bytes() => held.push(path),
            Ok(_) => {}
            // Released by its owner while we looked.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(CheckError::read(path, e)),
        }
    }
    Ok(held)
}

/// Addresses already in use on the host, per family: every interface address and every
/// route's destination (`/proc/net/route`, `/proc/net/ipv6_route`).
fn host_networks() -> (Vec<Ipv4Addr>, Vec<Ipv6Addr>) {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for ip in crate::netscope::host_addresses() {
        match ip {
            IpAddr::V4(a) => v4.push(a),
            IpAddr::V6(a) => v6.push(a),
        }
    }
    v4.extend(
        crate::netscope::residue::routes()
            .into_iter()
            .map(|(dst, _)| dst),
    );
    v6.extend(
        crate::netscope::residue::routes6()
            .into_iter()
            .filter(|r| r.prefix_len > 0)
            .map(|r| r.dst),
    );
    (v4, v6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_is_carved_into_slash_30_links() {
        let pool = AddressPool::parse("10.99.0.0/29").unwrap();
        assert_eq!(pool.slots(), 2);
        let l = pool.link(1);
        assert_eq!(
            (l.network, l.host, l.cell),
            (
                "10.99.0.4".parse().unwrap(),
                "10.99.0.5".parse().unwrap(),
                "10.99.0.6".parse().unwrap()
            )
        );
        assert_eq!(pool.link(2), pool.link(0));
        assert_eq!(AddressPool::default().to_string(), DEFAULT_POOL);
        assert_eq!(
            AddressPool::parse(DEFAULT_POOL).unwrap(),
            AddressPool::default()
        );
    }

    #[test]
    fn bad_pools_are_refused_with_the_fix() {
        for bad in ["10.0.0.0/31", "fd00::/64", "10.0.0.1/16", "nonsense"] {
            let e = AddressPool::parse(bad).unwrap_err().to_string();
            assert!(e.contains("--net-pool"), "{bad}: {e}");
        }
    }

    #[test]
    fn leases_are_exclusive_and_released_by_owner() {
        let dir = tempfile::tempdir().unwrap();
        let pool = AddressPool::parse("10.213.250.0/29").unwrap();
        let pool6 = AddressPool6::default();
        let a = lease(dir.path(), &pool, &pool6, "cell-a").unwrap();
        let b = lease(dir.path(), &pool, &pool6, "cell-b").unwrap();
        assert_ne!(a.link, b.link);
        assert_ne!(a.link6, b.link6);
        assert!(lease(dir.path(), &pool, &pool6, "cell-c").is_err());
        assert_eq!(held_by(dir.path(), "cell-a").unwrap(), vec![a.path.clone()]);
        assert_eq!(release_all(dir.path(), "cell-a"), vec![a.path.clone()]);
        assert!(held_by(dir.path(), "cell-a").unwrap().is_empty());
        let c = lease(dir.path(), &pool, &pool6, "cell-c").unwrap();
        assert_eq!((c.link, c.link6), (a.link, a.link6));
    }

    #[test]
    fn ipv6_pool_is_carved_into_slash_64_links() {
        let pool6 = AddressPool6::default();
        assert_eq!(pool6.to_string(), DEFAULT_POOL6);
        assert_eq!(AddressPool6::parse(DEFAULT_POOL6).unwrap(), pool6);
        assert_eq!(pool6.slots(), 65536);
        let l = pool6.link(0x1234);
        assert_eq!(
            l.network,
            "fd63:656c:6c6f:1234::".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            l.host,
            "fd63:656c:6c6f:1234::1".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            l.cell,
            "fd63:656c:6c6f:1234::2".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(pool6.link(65536), pool6.link(0));
        for bad in ["fd00::/65", "10.0.0.0/8", "fd00::1/48", "nonsense"] {
            let e = AddressPool6::parse(bad).unwrap_err().to_string();
            assert!(e.contains("--net-pool6"), "{bad}: {e}");
        }
    }

    #[test]
    fn an_ipv6_pool_smaller_than_the_ipv4_pool_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pool = AddressPool::parse("10.213.0.0/16").unwrap();
        let small = AddressPool6::parse("fd63:656c:6c6f:ff00::/56").unwrap();
        let e = lease(dir.path(), &pool, &small, "cell-a")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--net-pool6"), "{e}");
    }
}

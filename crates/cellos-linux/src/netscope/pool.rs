//! Per-cell addresses: the pool (default [`DEFAULT_POOL`]) is carved into /30 links, one per
//! networked cell: network address, host end (`.1`), cell end (`.2`), broadcast.
//!
//! A link is leased by creating `<state>/run/net/<network>.lease` with `O_EXCL`, which is
//! atomic across every supervisor sharing the state directory; the file holds the cell id so
//! reclaim finds a lease even when a crash came before the run record mentioned it. A link
//! whose /30 already has a route or an address on the host (another tool, or a supervisor with
//! another state directory using an overlapping pool) is skipped, so two cells never share a
//! subnet on one host.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use cellos_core::spec::Cidr;
use sha2::{Digest, Sha256};

use crate::error::LinuxError;
use crate::residue::CheckError;

/// Default pool of cell links.
pub const DEFAULT_POOL: &str = "10.213.0.0/16";

/// Prefix length of one cell link.
pub const LINK_PREFIX: u8 = 30;

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

/// Leases a free link for `cell_id`. Probing starts at a slot derived from the id, so
/// concurrent supervisors rarely contend for the same file.
pub fn lease(
    state_dir: &Path,
    pool: &AddressPool,
    cell_id: &str,
) -> Result<(Link, PathBuf), LinuxError> {
    let dir = lease_dir(state_dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| LinuxError::io(format!("create {}", dir.display()), e))?;
    let digest = Sha256::digest(cell_id.as_bytes());
    let start = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    let taken = host_networks();
    for i in 0..pool.slots() {
        let link = pool.link(start.wrapping_add(i));
        if taken.iter().any(|ip| link.contains(*ip)) {
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
                return Ok((link, path));
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

/// IPv4 addresses already in use on the host: every interface address and every route's
/// destination (`/proc/net/route`, main table).
fn host_networks() -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = crate::netscope::host_addresses()
        .into_iter()
        .filter_map(|ip| match ip {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
        .collect();
    out.extend(
        crate::netscope::residue::routes()
            .into_iter()
            .map(|(dst, _)| dst),
    );
    out
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
        let (a, pa) = lease(dir.path(), &pool, "cell-a").unwrap();
        let (b, _) = lease(dir.path(), &pool, "cell-b").unwrap();
        assert_ne!(a, b);
        assert!(lease(dir.path(), &pool, "cell-c").is_err());
        assert_eq!(held_by(dir.path(), "cell-a").unwrap(), vec![pa.clone()]);
        assert_eq!(release_all(dir.path(), "cell-a"), vec![pa]);
        assert!(held_by(dir.path(), "cell-a").unwrap().is_empty());
        let (c, _) = lease(dir.path(), &pool, "cell-c").unwrap();
        assert_eq!(c, a);
    }
}

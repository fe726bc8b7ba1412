//! Network scope of a cell whose spec declares egress (`authority.egressRules` or
//! `dnsAuthority`). Other cells keep the loopback-only namespace of [`crate::netns`] and pay
//! nothing of this.
//!
//! create (host side, before the workload can run):
//! 1. lease a /30 link and an IPv6 /64 from the pools ([`pool`]) and write the names and addresses into the
//!    cell's run record *before* anything exists, so `reclaim`/`cellos gc` find it after a
//!    crash;
//! 2. after init is cloned into its new network namespace: veth pair with the cell end created
//!    as `eth0` inside that namespace, IPv4 and IPv6 addresses and default routes, forwarding,
//!    all over route netlink ([`rtnl`]), and one host nftables table for that cell only
//!    ([`link`]);
//! 3. the egress dataplane ([`egress`]): the cell's ruleset loaded inside its namespace, the
//!    DNS authority on the host end, the L7 gate listening inside the namespace, kernel drop
//!    logs read over NFLOG; their findings become events through the `RuntimeEvidence` port.
//!
//! destroy/reclaim: stop the dataplane (summary event), delete the veth (its peer goes with
//! it, and with it the routes and addresses), the host table and the lease, then check with
//! [`residue`]. Deleting the veth waits for an RCU grace period; [`teardown`] lets that part
//! finish off the critical path.

pub mod egress;
pub mod link;
pub mod nflog;
pub mod pool;
pub mod residue;
pub mod rtnl;
pub mod teardown;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use cellos_core::ports::Residue;
use cellos_core::spec::ExecutionCellSpec;
use cellos_dataplane::nftables::Family;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::residue::{Findings, HostSources};

pub use pool::{AddressPool, AddressPool6};

/// Host-side network settings of the backend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkConfig {
    /// Pool the cells' /30 links come from (`--net-pool`, `CELLOS_NET_POOL`).
    pub pool: AddressPool,
    /// Pool the cells' IPv6 /64 links come from (`--net-pool6`, `CELLOS_NET_POOL6`).
    pub pool6: AddressPool6,
    /// Where a destroyed cell's veth deletion finishes (see [`teardown`]).
    pub teardown: teardown::LinkTeardown,
    /// Resolver the DNS authorities forward allowed names to (`--dns-upstream`,
    /// `CELLOS_DNS_UPSTREAM`); `None`: the host's resolver from `/etc/resolv.conf`.
    pub dns_upstream: Option<SocketAddr>,
}

/// Whether `spec` gets a network scope (anything but loopback).
pub fn wants_network(spec: &ExecutionCellSpec) -> bool {
    !spec.authority.egress_rules.is_empty() || spec.authority.dns_authority.is_some()
}

/// What a networked cell has on the host, recorded before it is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetRecord {
    /// Host end of the veth pair (`cv<hex>`).
    pub veth: String,
    /// The host nftables table (`inet cellos-host-<hex>`; `ip` in records without IPv6).
    pub host_table: String,
    pub host_addr: Ipv4Addr,
    pub cell_addr: Ipv4Addr,
    /// IPv6 ends of the link; absent in records written before cells had IPv6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_addr6: Option<Ipv6Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell_addr6: Option<Ipv6Addr>,
    /// The address lease file.
    pub lease: PathBuf,
    /// Inode of the cell's network namespace, once init exists.
    pub netns_inode: Option<u64>,
}

impl NetRecord {
    /// Names for `cell_id` of the backend at `state_dir`: a short digest of both, so cells of
    /// different state directories never collide and names stay under the 15-byte interface
    /// name limit.
    pub fn new(state_dir: &Path, cell_id: &str, link: pool::Link, lease: PathBuf) -> Self {
        let mut h = Sha256::new();
        h.update(state_dir.as_os_str().as_encoded_bytes());
        h.update([0]);
        h.update(cell_id.as_bytes());
        let short = &hex::encode(h.finalize())[..10];
        Self {
            veth: format!("cv{short}"),
            host_table: format!("cellos-host-{short}"),
            host_addr: link.host,
            cell_addr: link.cell,
            host_addr6: None,
            cell_addr6: None,
            lease,
            netns_inode: None,
        }
    }

    /// The same record with the IPv6 link of the same lease.
    pub fn with_link6(mut self, link6: pool::Link6) -> Self {
        self.host_addr6 = Some(link6.host);
        self.cell_addr6 = Some(link6.cell);
        self
    }

    /// Family of the host table: `inet` (both families); `ip` for records of cells from
    /// before IPv6, whose tables `gc` must still find.
    pub fn host_table_family(&self) -> Family {
        if self.cell_addr6.is_some() {
            Family::Inet
        } else {
            Family::Ip
        }
    }

    /// `/etc/resolv.conf` of the cell: its DNS authority only.
    pub fn resolv_conf(&self) -> String {
        format!("nameserver {}\noptions edns0\n", self.host_addr)
    }
}

/// Every address of the host's interfaces (denied to cells unless a rule names them).
pub fn host_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out: Vec<IpAddr> = addrs
        .filter_map(|a| {
            let addr = a.address?;
            if let Some(v4) = addr.as_sockaddr_in() {
                return Some(IpAddr::V4(v4.ip()));
            }
            addr.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Removes what `rec` describes (veth, host table, lease, and any other lease of `cell_id`).
/// Returns (removed, failures).
pub fn remove(
    state_dir: &Path,
    cell_id: &str,
    rec: Option<&NetRecord>,
) -> (Vec<Residue>, Vec<Residue>) {
    let mut removed = Vec::new();
    let mut failed = Vec::new();
    let note = |list: &mut Vec<Residue>, class: &str, detail: String| {
        list.push(Residue {
            class: class.into(),
            detail,
        })
    };
    if let Some(rec) = rec {
        match link::delete_veth(&rec.veth) {
            Ok(true) => note(
                &mut removed,
                "veth",
                format!("{} and its peer eth0", rec.veth),
            ),
            Ok(false) => {}
            Err(e) => note(&mut failed, "veth", format!("delete {}: {e}", rec.veth)),
        }
        match link::delete_host_table(rec) {
            Ok(true) => note(
                &mut removed,
                "nftTable",
                format!("{} {}", rec.host_table_family(), rec.host_table),
            ),
            Ok(false) => {}
            Err(e) => note(
                &mut failed,
                "nftTable",
                format!("delete {}: {e}", rec.host_table),
            ),
        }
    }
    for lease in pool::release_all(state_dir, cell_id) {
        note(&mut removed, "file", lease.display().to_string());
    }
    (removed, failed)
}

/// What is left of `cell_id`'s network scope, and what could not be checked.
pub fn residue(
    state_dir: &Path,
    cell_id: &str,
    rec: Option<&NetRecord>,
    sources: &HostSources,
) -> Findings {
    let mut out = rec.map(|r| residue::check(r, sources)).unwrap_or_default();
    out.check(
        "file",
        pool::held_by(state_dir, cell_id).map(|leases| {
            let other: Vec<String> = leases
                .into_iter()
                .filter(|lease| rec.is_none_or(|r| r.lease != *lease))
                .map(|lease| format!("address lease {} still exists", lease.display()))
                .collect();
            (!other.is_empty()).then(|| other.join("; "))
        }),
    );
    out
}

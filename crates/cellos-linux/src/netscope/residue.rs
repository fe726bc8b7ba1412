//! Checks that nothing of a networked cell is left on the host: its veth, host table, routes
//! and addresses (IPv4 and IPv6), DNS listeners and network namespace.
//!
//! All read from `/sys`, `/proc`, route netlink and nf_tables netlink, so the checks see what the
//! kernel has, not what the backend believes it created. A source that cannot be read leaves
//! its class unverified (see [`crate::residue`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::RouteNetlinkMessage;

use cellos_dataplane::nftables::Family;
use cellos_dataplane::NftController;

use crate::error::LinuxError;
use crate::netscope::pool::LINK_PREFIX6;
use crate::netscope::rtnl::Rtnl;
use crate::netscope::NetRecord;
use crate::residue::{entry_exists, file_exists, CheckError, Findings, HostSources, Proc};

/// Whether a network interface of this name exists in the host namespace.
pub fn veth_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Whether the host (or the namespace of `sources`) has the nftables table `<family> <name>`,
/// asked over netlink: a question that cannot be asked says nothing about the table.
fn host_table_present(
    sources: &HostSources,
    family: Family,
    name: &str,
) -> Result<bool, CheckError> {
    let controller = match &sources.nftables_netns {
        Some(path) => NftController::for_netns(path),
        None => NftController::current(),
    };
    controller.table_exists(family, name).map_err(|e| {
        CheckError::Tool(LinuxError::Setup {
            what: format!("list the nftables tables to find {family} {name}"),
            detail: e.to_string(),
        })
    })
}

/// One IPv6 route of `/proc/net/ipv6_route` (every table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route6 {
    pub dst: Ipv6Addr,
    pub prefix_len: u8,
    pub iface: String,
}

/// IPv6 routes of the host; none when they cannot be read (IPv6 disabled included).
pub fn routes6() -> Vec<Route6> {
    Proc::open(Path::new("/proc"))
        .and_then(|proc| routes6_in(&proc))
        .unwrap_or_default()
}

fn routes6_in(proc: &Proc<'_>) -> Result<Vec<Route6>, CheckError> {
    let text = proc.read("net/ipv6_route")?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dst = u128::from_str_radix(f.first()?, 16).ok()?;
            let prefix_len = u8::from_str_radix(f.get(1)?, 16).ok()?;
            Some(Route6 {
                dst: Ipv6Addr::from(dst),
                prefix_len,
                iface: (*f.get(9)?).to_owned(),
            })
        })
        .collect())
}

/// Every address of the host's interfaces as (address, interface index), over route netlink.
fn addresses() -> Result<Vec<(IpAddr, u32)>, CheckError> {
    let unverified = |e| {
        CheckError::Host(LinuxError::io(
            "list the host's addresses (route netlink)",
            e,
        ))
    };
    let mut rtnl = Rtnl::open().map_err(unverified)?;
    let replies = rtnl
        .dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()))
        .map_err(unverified)?;
    Ok(replies
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewAddress(a) => Some(a),
            _ => None,
        })
        .flat_map(|a| {
            let index = a.header.index;
            a.attributes.into_iter().filter_map(move |attr| match attr {
                AddressAttribute::Local(ip) | AddressAttribute::Address(ip) => Some((ip, index)),
                _ => None,
            })
        })
        .collect())
}

/// IPv4 routes of the main table as (destination, interface), from `/proc/net/route`; none
/// when it cannot be read.
pub fn routes() -> Vec<(Ipv4Addr, String)> {
    Proc::open(Path::new("/proc"))
        .and_then(|proc| routes_in(&proc))
        .unwrap_or_default()
}

fn routes_in(proc: &Proc<'_>) -> Result<Vec<(Ipv4Addr, String)>, CheckError> {
    let text = proc.read("net/route")?;
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let iface = f.next()?.to_owned();
            let dst = proc_net_ipv4(f.next()?)?;
            Some((dst, iface))
        })
        .collect())
}

/// An address as `/proc/net/*` prints it: the raw network-order word as a native integer.
fn proc_net_ipv4(hex: &str) -> Option<Ipv4Addr> {
    u32::from_str_radix(hex, 16)
        .ok()
        .map(|v| Ipv4Addr::from(v.to_ne_bytes()))
}

/// Listening sockets of the host namespace bound to `addr:port`: TCP in state LISTEN (a
/// closed connection's TIME_WAIT entry is not a listener), every bound UDP socket.
fn listeners(proc: &Proc<'_>, proto: &str, addr: Ipv4Addr, port: u16) -> Result<usize, CheckError> {
    let text = proc.read(format!("net/{proto}"))?;
    Ok(text
        .lines()
        .skip(1)
        .filter(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let (Some(local), Some(state)) = (fields.get(1), fields.get(3)) else {
                return false;
            };
            if proto == "tcp" && *state != TCP_LISTEN {
                return false;
            }
            let Some((a, p)) = local.split_once(':') else {
                return false;
            };
            proc_net_ipv4(a) == Some(addr) && u16::from_str_radix(p, 16).ok() == Some(port)
        })
        .count())
}

/// `st` of a listening TCP socket in `/proc/net/tcp`.
const TCP_LISTEN: &str = "0A";

/// Inode of a namespace link such as `/proc/<pid>/ns/net` (`net:[4026532...]`).
pub fn netns_inode(link: &Path) -> Option<u64> {
    let target = std::fs::read_link(link).ok()?;
    let text = target.to_str()?;
    text.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// Whether any process is in the namespace, or any descriptor of this process refers to it.
/// A process that exits while we look is simply not in it.
fn netns_in_use(proc: &Proc<'_>, inode: u64) -> Result<bool, CheckError> {
    let root = proc.path("");
    let procs = std::fs::read_dir(&root).map_err(|e| CheckError::read(&root, e))?;
    let by_process = procs.flatten().any(|e| {
        e.file_name()
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
            && netns_inode(&e.path().join("ns/net")) == Some(inode)
    });
    let fd_dir = proc.path("self/fd");
    let by_fd = std::fs::read_dir(&fd_dir)
        .map_err(|e| CheckError::read(&fd_dir, e))?
        .flatten()
        .any(|e| netns_inode(&e.path()) == Some(inode));
    Ok(by_process || by_fd)
}

/// Everything of `rec` the host still has, and what could not be checked.
pub fn check(rec: &NetRecord, sources: &HostSources) -> Findings {
    let mut out = check_link(rec, sources);
    out.extend(check_host_side(rec, sources));
    out.extend(check_lease(rec));
    out
}

/// The link: the host end, its routes (both families) and its addresses.
pub fn check_link(rec: &NetRecord, sources: &HostSources) -> Findings {
    let mut out = Findings::default();
    out.check(
        "veth",
        entry_exists(&sources.sys_class_net, &rec.veth)
            .map(|left| left.then(|| format!("host end {} still exists", rec.veth))),
    );
    out.check(
        "route",
        Proc::open(&sources.proc).and_then(|proc| {
            let mut via = routes_of(rec, &routes_in(&proc)?);
            if rec.host_addr6.is_some() {
                via.extend(routes6_of(rec, routes6_in(&proc)?));
            }
            Ok((!via.is_empty()).then(|| via.join("; ")))
        }),
    );
    let ours: Vec<IpAddr> = [rec.host_addr.into(), rec.cell_addr.into()]
        .into_iter()
        .chain(rec.host_addr6.map(IpAddr::from))
        .chain(rec.cell_addr6.map(IpAddr::from))
        .collect();
    out.check(
        "address",
        addresses().map(|addrs| {
            let left: Vec<String> = addrs
                .into_iter()
                .filter(|(ip, _)| ours.contains(ip))
                .map(|(ip, index)| format!("address {ip} still on interface {index}"))
                .collect();
            (!left.is_empty()).then(|| left.join("; "))
        }),
    );
    out
}

fn routes_of(rec: &NetRecord, routes: &[(Ipv4Addr, String)]) -> Vec<String> {
    let link = u32::from(rec.host_addr) & !3;
    routes
        .iter()
        .filter(|(dst, _)| u32::from(*dst) == link)
        .map(|(dst, iface)| format!("route to {dst}/30 via {iface} still exists"))
        .collect()
}

fn routes6_of(rec: &NetRecord, routes: Vec<Route6>) -> Vec<String> {
    let Some(h6) = rec.host_addr6 else {
        return Vec::new();
    };
    let net6 = u128::from(h6) >> 64;
    routes
        .into_iter()
        .filter(|r| r.prefix_len >= LINK_PREFIX6 && u128::from(r.dst) >> 64 == net6)
        .map(|r| {
            format!(
                "route to {}/{} via {} still exists",
                r.dst, r.prefix_len, r.iface
            )
        })
        .collect()
}

/// What is neither the link nor the lease: the host table, the DNS authority's sockets and the
/// namespace.
pub fn check_host_side(rec: &NetRecord, sources: &HostSources) -> Findings {
    let mut out = check_host_table(rec, sources);
    out.extend(check_sockets(rec, sources));
    out
}

/// The cell's host nftables table.
pub fn check_host_table(rec: &NetRecord, sources: &HostSources) -> Findings {
    let mut out = Findings::default();
    let family = rec.host_table_family();
    out.check(
        "nftTable",
        host_table_present(sources, family, &rec.host_table).map(|left| {
            left.then(|| format!("host table {family} {} still exists", rec.host_table))
        }),
    );
    out
}

/// The DNS authority's sockets and the namespace.
pub fn check_sockets(rec: &NetRecord, sources: &HostSources) -> Findings {
    let mut out = Findings::default();
    let proc = || Proc::open(&sources.proc);
    out.check(
        "listener",
        proc().and_then(|proc| {
            let mut bound = Vec::new();
            for proto in ["udp", "tcp"] {
                let n = listeners(&proc, proto, rec.host_addr, 53)?;
                if n > 0 {
                    bound.push(format!(
                        "{n} {proto} socket(s) still bound to {}:53",
                        rec.host_addr
                    ));
                }
            }
            Ok((!bound.is_empty()).then(|| bound.join("; ")))
        }),
    );
    if let Some(inode) = rec.netns_inode {
        out.check(
            "netns",
            proc()
                .and_then(|proc| netns_in_use(&proc, inode))
                .map(|held| {
                    held.then(|| {
                        format!(
                            "network namespace net:[{inode}] is still held by a process or \
                             descriptor"
                        )
                    })
                }),
        );
    }
    out
}

/// The lease file.
pub fn check_lease(rec: &NetRecord) -> Findings {
    let mut out = Findings::default();
    out.check(
        "file",
        file_exists(&rec.lease).map(|left| {
            left.then(|| format!("address lease {} still exists", rec.lease.display()))
        }),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_words_decode_to_addresses() {
        // 10.213.0.4 as the kernel prints it on this machine's byte order.
        let word = u32::from_ne_bytes([10, 213, 0, 4]);
        assert_eq!(
            proc_net_ipv4(&format!("{word:08X}")),
            Some(Ipv4Addr::new(10, 213, 0, 4))
        );
        assert_eq!(proc_net_ipv4("zz"), None);
    }

    #[test]
    fn only_listening_tcp_and_bound_udp_sockets_count_as_listeners() {
        let lo = Ipv4Addr::LOCALHOST;
        let listener = std::net::TcpListener::bind((lo, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let _client = std::net::TcpStream::connect((lo, port)).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let proc = Proc::open(Path::new("/proc")).unwrap();
        let count = |proto, port| listeners(&proc, proto, lo, port).unwrap();
        assert_eq!(count("tcp", port), 1);
        drop(listener);
        // The accepted connection still has the same local address, but listens no more.
        assert_eq!(count("tcp", port), 0);
        drop(accepted);
        let udp = std::net::UdpSocket::bind((lo, 0)).unwrap();
        let udp_port = udp.local_addr().unwrap().port();
        assert_eq!(count("udp", udp_port), 1);
        drop(udp);
        assert_eq!(count("udp", udp_port), 0);
    }

    #[test]
    fn our_own_namespace_is_in_use() {
        let proc = Proc::open(Path::new("/proc")).unwrap();
        let inode = netns_inode(Path::new("/proc/self/ns/net")).unwrap();
        assert!(netns_in_use(&proc, inode).unwrap());
        assert!(!netns_in_use(&proc, 1).unwrap());
    }
}

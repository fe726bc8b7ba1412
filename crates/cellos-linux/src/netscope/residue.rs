//! Checks that nothing of a networked cell is left on the host: its veth, host table, route,
//! DNS listeners and network namespace.
//!
//! All read from `/sys`, `/proc` and `nft list`, so the checks see what the kernel has, not
//! what the backend believes it created.

use std::net::Ipv4Addr;
use std::path::Path;

use cellos_core::ports::Residue;

use crate::netscope::link::{run_tool, HOST_TABLE_FAMILY};
use crate::netscope::NetRecord;

/// Whether a network interface of this name exists in the host namespace.
pub fn veth_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Whether the host has an nftables table `ip <name>`.
pub fn host_table_exists(name: &str) -> bool {
    run_tool(
        "nft",
        &["list", "table", HOST_TABLE_FAMILY, name],
        None,
        None,
    )
    .is_ok()
}

/// IPv4 routes of the main table as (destination, interface), from `/proc/net/route`.
pub fn routes() -> Vec<(Ipv4Addr, String)> {
    let Ok(text) = std::fs::read_to_string("/proc/net/route") else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let iface = f.next()?.to_owned();
            let dst = proc_net_ipv4(f.next()?)?;
            Some((dst, iface))
        })
        .collect()
}

/// An address as `/proc/net/*` prints it: the raw network-order word as a native integer.
fn proc_net_ipv4(hex: &str) -> Option<Ipv4Addr> {
    u32::from_str_radix(hex, 16)
        .ok()
        .map(|v| Ipv4Addr::from(v.to_ne_bytes()))
}

/// Listening sockets of the host namespace bound to `addr:port`: TCP in state LISTEN (a
/// closed connection's TIME_WAIT entry is not a listener), every bound UDP socket.
fn listeners(proto: &str, addr: Ipv4Addr, port: u16) -> usize {
    let Ok(text) = std::fs::read_to_string(format!("/proc/net/{proto}")) else {
        return 0;
    };
    text.lines()
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
        .count()
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
fn netns_in_use(inode: u64) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    let by_process = procs.flatten().any(|e| {
        e.file_name()
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
            && netns_inode(&e.path().join("ns/net")) == Some(inode)
    });
    let by_fd = std::fs::read_dir("/proc/self/fd")
        .map(|fds| fds.flatten().any(|e| netns_inode(&e.path()) == Some(inode)))
        .unwrap_or(false);
    by_process || by_fd
}

/// Everything of `rec` the host still has.
pub fn check(rec: &NetRecord) -> Vec<Residue> {
    let mut out = Vec::new();
    let mut push = |class: &str, detail: String| {
        out.push(Residue {
            class: class.into(),
            detail,
        })
    };
    if veth_exists(&rec.veth) {
        push("veth", format!("host end {} still exists", rec.veth));
    }
    if host_table_exists(&rec.host_table) {
        push(
            "nftTable",
            format!(
                "host table {HOST_TABLE_FAMILY} {} still exists",
                rec.host_table
            ),
        );
    }
    let link = u32::from(rec.host_addr) & !3;
    for (dst, iface) in routes() {
        if u32::from(dst) == link {
            push(
                "route",
                format!("route to {dst}/30 via {iface} still exists"),
            );
        }
    }
    for proto in ["udp", "tcp"] {
        let n = listeners(proto, rec.host_addr, 53);
        if n > 0 {
            push(
                "listener",
                format!("{n} {proto} socket(s) still bound to {}:53", rec.host_addr),
            );
        }
    }
    if let Some(inode) = rec.netns_inode {
        if netns_in_use(inode) {
            push(
                "netns",
                format!("network namespace net:[{inode}] is still held by a process or descriptor"),
            );
        }
    }
    if rec.lease.exists() {
        push(
            "file",
            format!("address lease {} still exists", rec.lease.display()),
        );
    }
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
        assert_eq!(listeners("tcp", lo, port), 1);
        drop(listener);
        // The accepted connection still has the same local address, but listens no more.
        assert_eq!(listeners("tcp", lo, port), 0);
        drop(accepted);
        let udp = std::net::UdpSocket::bind((lo, 0)).unwrap();
        let udp_port = udp.local_addr().unwrap().port();
        assert_eq!(listeners("udp", lo, udp_port), 1);
        drop(udp);
        assert_eq!(listeners("udp", lo, udp_port), 0);
    }

    #[test]
    fn our_own_namespace_is_in_use() {
        let inode = netns_inode(Path::new("/proc/self/ns/net")).unwrap();
        assert!(netns_in_use(inode));
        assert!(!netns_in_use(1));
    }
}

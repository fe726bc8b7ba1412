//! The cell's link to the host: a veth pair, addresses and routes, and one nftables table on the
//! host that forwards and masquerades for that cell only.
//!
//! Mechanism: `ip -batch` and `nft -f`, each run once per side. The commands that configure the
//! cell's end run in the cell's network namespace because the child process joins it with
//! `setns(2)` between fork and exec (the supervisor's threads never change namespace, and
//! neither `nsenter` nor named `ip netns` entries are involved). The peer is created directly
//! inside the cell's namespace (`peer name eth0 netns <init pid>`), so it never exists on the
//! host under another name.

use std::net::Ipv4Addr;
use std::os::fd::BorrowedFd;

use cellos_dataplane::netns_exec::{self, ToolError};

use crate::error::LinuxError;
use crate::netscope::NetRecord;

/// Family of the per-cell host table (the cell's link is IPv4 only).
pub const HOST_TABLE_FAMILY: &str = "ip";

/// Runs `program args`, feeding `stdin`, optionally inside the network namespace `netns`.
pub fn run_tool(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
    netns: Option<BorrowedFd<'_>>,
) -> Result<String, LinuxError> {
    let netns = netns
        .map(|ns| ns.try_clone_to_owned())
        .transpose()
        .map_err(|e| LinuxError::io("duplicate the cell's netns descriptor", e))?;
    netns_exec::run_tool(program, args, stdin, netns).map_err(|err| match err {
        ToolError::Spawn { source, .. } => LinuxError::MissingFeature {
            feature: program.to_owned(),
            fix: format!(
                "cannot run {program}: {source}; install iproute2 and nftables (apt-get install \
                 iproute2 nftables): networked cells need them"
            ),
        },
        ToolError::Wait { source, .. } => LinuxError::io(format!("wait for {program}"), source),
        ToolError::Failed {
            args,
            status,
            stderr,
            ..
        } => LinuxError::Setup {
            what: format!("{program} {args}"),
            detail: format!("{status}: {stderr}"),
        },
    })
}

/// Turns on IPv4 forwarding (host-wide; never turned off again, other cells and tools may
/// rely on it).
pub fn ensure_ip_forward() -> Result<(), LinuxError> {
    let path = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    std::fs::write(path, "1").map_err(|e| LinuxError::io(format!("enable {path}"), e))
}

/// The host table of one cell: forward only the cell's own address out of its veth and
/// replies back in, masquerade it, and let the cell reach the host only on its DNS authority.
/// The chains' policy is accept so that traffic of other interfaces is not this table's
/// business; everything of the cell's veth that is not allowed is dropped explicitly.
pub fn host_table(rec: &NetRecord) -> String {
    let (t, v, h, c) = (&rec.host_table, &rec.veth, rec.host_addr, rec.cell_addr);
    format!(
        "table {HOST_TABLE_FAMILY} {t}\n\
         delete table {HOST_TABLE_FAMILY} {t}\n\
         table {HOST_TABLE_FAMILY} {t} {{\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\tiifname \"{v}\" ip saddr {c} accept\n\
         \t\tiifname \"{v}\" drop\n\
         \t\toifname \"{v}\" ip daddr {c} ct state established,related accept\n\
         \t\toifname \"{v}\" drop\n\
         \t}}\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority filter; policy accept;\n\
         \t\tiifname \"{v}\" ip saddr {c} ip daddr {h} meta l4proto {{ tcp, udp }} th dport 53 accept\n\
         \t\tiifname \"{v}\" ct state established,related accept\n\
         \t\tiifname \"{v}\" drop\n\
         \t}}\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {c} oifname != \"{v}\" masquerade\n\
         \t}}\n\
         }}\n"
    )
}

/// Creates the veth pair (cell end `eth0` inside the namespace of `init_pid`), addresses the
/// host end, loads the host table and enables forwarding.
pub fn create_host_side(rec: &NetRecord, init_pid: i32) -> Result<(), LinuxError> {
    ensure_ip_forward()?;
    let batch = format!(
        "link add {v} type veth peer name eth0 netns {init_pid}\n\
         addr add {h}/{p} dev {v}\n\
         link set {v} up\n",
        v = rec.veth,
        h = rec.host_addr,
        p = crate::netscope::pool::LINK_PREFIX,
    );
    run_tool("ip", &["-batch", "-"], Some(&batch), None)?;
    // Leases are exclusive within one state directory; a supervisor of another one with an
    // overlapping pool could have taken the same link in the same instant. Refuse rather than
    // route one subnet through two veths.
    let network = Ipv4Addr::from(u32::from(rec.host_addr) & !3);
    if let Some((_, other)) = crate::netscope::residue::routes()
        .into_iter()
        .find(|(dst, iface)| *dst == network && *iface != rec.veth)
    {
        return Err(LinuxError::Refused {
            what: format!(
                "the cell's link {network}/30 is also routed through {other}; give supervisors \
                 with different state directories disjoint pools (--net-pool / CELLOS_NET_POOL)"
            ),
        });
    }
    run_tool("nft", &["-f", "-"], Some(&host_table(rec)), None)?;
    Ok(())
}

/// Addresses `eth0` inside the cell's namespace and routes everything through the host end.
pub fn configure_cell_side(rec: &NetRecord, netns: BorrowedFd<'_>) -> Result<(), LinuxError> {
    let batch = format!(
        "addr add {c}/{p} dev eth0\n\
         link set eth0 up\n\
         route add default via {h} dev eth0\n",
        c = rec.cell_addr,
        h = rec.host_addr,
        p = crate::netscope::pool::LINK_PREFIX,
    );
    run_tool("ip", &["-batch", "-"], Some(&batch), Some(netns)).map(drop)
}

/// Deletes the host end of the veth (the kernel deletes its peer with it). `Ok(false)` when
/// it did not exist.
pub fn delete_veth(name: &str) -> Result<bool, LinuxError> {
    if !crate::netscope::residue::veth_exists(name) {
        return Ok(false);
    }
    match run_tool("ip", &["link", "del", name], None, None) {
        Ok(_) => Ok(true),
        // Gone in between (its namespace died and took the pair with it).
        Err(_) if !crate::netscope::residue::veth_exists(name) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Deletes the cell's host table. `Ok(false)` when it did not exist (one `nft` run either way).
pub fn delete_host_table(name: &str) -> Result<bool, LinuxError> {
    match run_tool(
        "nft",
        &["delete", "table", HOST_TABLE_FAMILY, name],
        None,
        None,
    ) {
        Ok(_) => Ok(true),
        Err(LinuxError::Setup { detail, .. }) if detail.contains("No such file or directory") => {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_table_is_limited_to_the_cells_veth_and_address() {
        let rec = NetRecord {
            veth: "cv0123456789".into(),
            host_table: "cellos-host-0123456789".into(),
            host_addr: "10.213.0.1".parse().unwrap(),
            cell_addr: "10.213.0.2".parse().unwrap(),
            lease: "/x/10.213.0.0.lease".into(),
            netns_inode: None,
        };
        let t = host_table(&rec);
        assert!(t.contains("iifname \"cv0123456789\" ip saddr 10.213.0.2 accept"));
        assert!(t.contains("ip saddr 10.213.0.2 oifname != \"cv0123456789\" masquerade"));
        assert!(t.contains("ip daddr 10.213.0.1 meta l4proto { tcp, udp } th dport 53 accept"));
        assert!(t.starts_with("table ip cellos-host-0123456789\ndelete table ip"));
    }
}

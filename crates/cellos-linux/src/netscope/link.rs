//! The cell's link to the host: a veth pair, addresses (IPv4 and IPv6) and default routes, and
//! one nftables table on the host that forwards and masquerades for that cell only.
//!
//! Mechanism: route netlink requests from this process ([`super::rtnl`]), no `ip` process. The
//! peer is created directly inside the cell's network namespace as `eth0` (`IFLA_NET_NS_PID`
//! of init in the peer's info), so it never exists on the host under another name. The host end
//! is created up; the cell's end is raised, addressed and routed through a route socket opened
//! inside its namespace (the kernel refuses to raise a link in the request that moves it to
//! another namespace). IPv6 addresses are added `nodad` on both ends: duplicate address
//! detection on a two-ended link can only find the other end, and would keep the addresses
//! unusable for a second. The host table is loaded and deleted over nf_tables netlink (`cellos_dataplane::NftController`),
//! no `nft` process either.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::BorrowedFd;

use cellos_dataplane::{HostTable, NftController, NftError};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::LinuxError;
use crate::netscope::pool::{LINK_PREFIX, LINK_PREFIX6};
use crate::netscope::rtnl::Rtnl;
use crate::netscope::NetRecord;

/// Name of the cell's end inside its namespace.
pub const CELL_IFNAME: &str = "eth0";

/// A refused netlink step as an error that keeps the kernel's errno and names the object and
/// the fix.
fn refused(step: &str, object: &str) -> impl FnOnce(io::Error) -> LinuxError {
    let (step, object) = (step.to_owned(), object.to_owned());
    move |source| {
        let fix = match source.raw_os_error() {
            Some(libc::EEXIST) => {
                "it already exists: a cell of this state directory left it; run `cellos gc`"
            }
            Some(libc::EPERM) | Some(libc::EACCES) => {
                "this needs CAP_NET_ADMIN in the host's network namespace (run cellos as root)"
            }
            Some(libc::EOPNOTSUPP) | Some(libc::EAFNOSUPPORT) => {
                "the kernel lacks it: networked cells need veth (modprobe veth) and IPv6 \
                 (not disabled by ipv6.disable=1 or net.ipv6.conf.*.disable_ipv6)"
            }
            Some(libc::ENODEV) => "the interface vanished: its namespace died under us",
            _ => "see the kernel's error",
        };
        LinuxError::io(format!("{step} {object} ({fix})"), source)
    }
}

/// Turns on forwarding (host-wide; never turned off again, other cells and tools may rely on
/// it). IPv6 forwarding makes the kernel ignore router advertisements on interfaces with
/// `accept_ra = 1`; those are set to `2` first (accept them while forwarding), so the host
/// keeps the IPv6 configuration it had.
pub fn ensure_forwarding() -> Result<(), LinuxError> {
    ensure_sysctl("/proc/sys/net/ipv4/ip_forward")?;
    let all = "/proc/sys/net/ipv6/conf/all/forwarding";
    if std::fs::read_to_string(all).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    if let Ok(dirs) = std::fs::read_dir("/proc/sys/net/ipv6/conf") {
        for dir in dirs.flatten() {
            let ra = dir.path().join("accept_ra");
            if std::fs::read_to_string(&ra).is_ok_and(|v| v.trim() == "1") {
                std::fs::write(&ra, "2")
                    .map_err(|e| LinuxError::io(format!("set {} to 2", ra.display()), e))?;
            }
        }
    }
    ensure_sysctl(all)
}

fn ensure_sysctl(path: &str) -> Result<(), LinuxError> {
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    std::fs::write(path, "1").map_err(|e| LinuxError::io(format!("enable {path}"), e))
}

/// The host table of one cell ([`HostTable`]: forwarding, NAT and DNS for that cell's veth
/// and addresses only).
pub fn host_table(rec: &NetRecord) -> HostTable {
    HostTable {
        table: rec.host_table.clone(),
        veth: rec.veth.clone(),
        host_v4: rec.host_addr,
        cell_v4: rec.cell_addr,
        host_v6: rec.host_addr6,
        cell_v6: rec.cell_addr6,
    }
}

/// An nftables request of the host table failed.
fn nft_failed(what: &str, rec: &NetRecord) -> impl FnOnce(NftError) -> LinuxError {
    let (what, rec) = (what.to_owned(), rec.clone());
    move |e| LinuxError::Setup {
        what: format!("{what} the host table {} of {}", rec.host_table, rec.veth),
        detail: format!(
            "{e}; the supervisor needs CAP_NET_ADMIN and the nf_tables module (modprobe nf_tables)"
        ),
    }
}

/// Creates the veth pair (cell end `eth0` inside the namespace of `init_pid`, host end up),
/// addresses the host end, loads the host table and enables forwarding.
pub fn create_host_side(rec: &NetRecord, init_pid: i32) -> Result<(), LinuxError> {
    ensure_forwarding()?;
    create_veth(rec, init_pid)?;
    refuse_overlap(rec)?;
    NftController::current()
        .apply(&host_table(rec).render())
        .map_err(nft_failed("load", rec))
}

/// The veth pair, the host end up and addressed (no forwarding, no host table).
pub fn create_veth(rec: &NetRecord, init_pid: i32) -> Result<(), LinuxError> {
    let mut rtnl = Rtnl::open().map_err(refused("open a route netlink socket for", &rec.veth))?;
    add_veth(&mut rtnl, &rec.veth, init_pid)?;
    let index = link_index(&mut rtnl, &rec.veth)?;
    add_address(
        &mut rtnl,
        &rec.veth,
        index,
        rec.host_addr.into(),
        LINK_PREFIX,
    )?;
    if let Some(h6) = rec.host_addr6 {
        add_address(&mut rtnl, &rec.veth, index, h6.into(), LINK_PREFIX6)?;
    }
    Ok(())
}

/// Leases are exclusive within one state directory; a supervisor of another one with an
/// overlapping pool could have taken the same link in the same instant. Refuse rather than
/// route one subnet through two veths.
fn refuse_overlap(rec: &NetRecord) -> Result<(), LinuxError> {
    let network = Ipv4Addr::from(u32::from(rec.host_addr) & !3);
    let other4 = crate::netscope::residue::routes()
        .into_iter()
        .find(|(dst, iface)| *dst == network && *iface != rec.veth)
        .map(|(_, iface)| (format!("{network}/{LINK_PREFIX}"), iface));
    let other6 = rec.host_addr6.and_then(|h6| {
        let net6 = Ipv6Addr::from(u128::from(h6) & !u128::from(u64::MAX));
        crate::netscope::residue::routes6()
            .into_iter()
            .find(|r| r.dst == net6 && r.prefix_len == LINK_PREFIX6 && r.iface != rec.veth)
            .map(|r| (format!("{net6}/{LINK_PREFIX6}"), r.iface))
    });
    match other4.or(other6) {
        Some((net, other)) => Err(LinuxError::Refused {
            what: format!(
                "the cell's link {net} is also routed through {other}; give supervisors with \
                 different state directories disjoint pools (--net-pool / CELLOS_NET_POOL, \
                 --net-pool6 / CELLOS_NET_POOL6)"
            ),
        }),
        None => Ok(()),
    }
}

/// Addresses `eth0` inside the cell's namespace and routes everything through the host end.
pub fn configure_cell_side(rec: &NetRecord, netns: BorrowedFd<'_>) -> Result<(), LinuxError> {
    let mut rtnl = Rtnl::open_in(netns).map_err(refused(
        "open a route netlink socket in the cell's namespace for",
        CELL_IFNAME,
    ))?;
    let index = link_index(&mut rtnl, CELL_IFNAME)?;
    let mut up = LinkMessage::default();
    up.header.index = index;
    set_up(&mut up, true);
    rtnl.request(RouteNetlinkMessage::SetLink(up), 0)
        .map_err(refused("bring up", CELL_IFNAME))?;
    add_address(
        &mut rtnl,
        CELL_IFNAME,
        index,
        rec.cell_addr.into(),
        LINK_PREFIX,
    )?;
    add_default_route(&mut rtnl, index, rec.host_addr.into())?;
    if let (Some(c6), Some(h6)) = (rec.cell_addr6, rec.host_addr6) {
        add_address(&mut rtnl, CELL_IFNAME, index, c6.into(), LINK_PREFIX6)?;
        add_default_route(&mut rtnl, index, h6.into())?;
    }
    Ok(())
}

/// `ip link add <host> up type veth peer name eth0 netns <init_pid>`.
fn add_veth(rtnl: &mut Rtnl, host: &str, init_pid: i32) -> Result<(), LinuxError> {
    // The peer cannot be raised in the request that moves it (the kernel answers ENOTCONN):
    // the cell side raises it.
    let mut peer = LinkMessage::default();
    peer.attributes = vec![
        LinkAttribute::IfName(CELL_IFNAME.to_owned()),
        LinkAttribute::NetNsPid(init_pid.unsigned_abs()),
    ];
    let mut msg = LinkMessage::default();
    set_up(&mut msg, true);
    msg.attributes = vec![
        LinkAttribute::IfName(host.to_owned()),
        LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]),
    ];
    rtnl.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
        .map_err(refused("create the veth pair", host))
}

fn set_up(msg: &mut LinkMessage, up: bool) {
    msg.header.flags = if up {
        LinkFlags::Up
    } else {
        LinkFlags::empty()
    };
    msg.header.change_mask = LinkFlags::Up;
}

/// A link addressed by name (index 0: the kernel looks the name up).
fn by_name(name: &str) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.attributes = vec![LinkAttribute::IfName(name.to_owned())];
    msg
}

/// The interface `name` of the socket's namespace, if it exists: its index and whether it is up.
fn link_state(rtnl: &mut Rtnl, name: &str) -> io::Result<Option<(u32, bool)>> {
    match rtnl.get(RouteNetlinkMessage::GetLink(by_name(name))) {
        Ok(replies) => Ok(replies.into_iter().find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => {
                Some((l.header.index, l.header.flags.contains(LinkFlags::Up)))
            }
            _ => None,
        })),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

fn link_index(rtnl: &mut Rtnl, name: &str) -> Result<u32, LinuxError> {
    link_state(rtnl, name)
        .map_err(refused("look up", name))?
        .map(|(index, _)| index)
        .ok_or_else(|| refused("look up", name)(io::Error::from_raw_os_error(libc::ENODEV)))
}

fn add_address(
    rtnl: &mut Rtnl,
    ifname: &str,
    index: u32,
    addr: IpAddr,
    prefix_len: u8,
) -> Result<(), LinuxError> {
    let mut msg = AddressMessage::default();
    msg.header.family = family(addr);
    msg.header.prefix_len = prefix_len;
    msg.header.index = index;
    if addr.is_ipv6() {
        msg.header.flags = AddressHeaderFlags::Nodad;
    }
    msg.attributes = vec![
        AddressAttribute::Local(addr),
        AddressAttribute::Address(addr),
    ];
    rtnl.request(
        RouteNetlinkMessage::NewAddress(msg),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .map_err(refused(
        &format!("add address {addr}/{prefix_len} to"),
        ifname,
    ))
}

fn add_default_route(rtnl: &mut Rtnl, index: u32, gateway: IpAddr) -> Result<(), LinuxError> {
    let mut msg = RouteMessage::default();
    msg.header.address_family = family(gateway);
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::Boot;
    msg.header.scope = RouteScope::Universe;
    msg.header.kind = RouteType::Unicast;
    msg.attributes = vec![
        RouteAttribute::Gateway(RouteAddress::from(gateway)),
        RouteAttribute::Oif(index),
    ];
    rtnl.request(
        RouteNetlinkMessage::NewRoute(msg),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .map_err(refused(
        &format!("add the default route via {gateway} on"),
        CELL_IFNAME,
    ))
}

fn family(addr: IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// Whether the host has an interface `name`, and whether it is up (route netlink).
pub fn veth_state(name: &str) -> Result<Option<bool>, LinuxError> {
    let mut rtnl = Rtnl::open().map_err(refused("open a route netlink socket for", name))?;
    Ok(link_state(&mut rtnl, name)
        .map_err(refused("look up", name))?
        .map(|(_, up)| up))
}

/// Takes the host end down: from then on the cell's link neither sends nor receives, and the
/// kernel has dropped its addresses' routes. Cheap, unlike deleting it. `Ok(false)` when it
/// did not exist.
pub fn cut_off(name: &str) -> Result<bool, LinuxError> {
    let mut rtnl = Rtnl::open().map_err(refused("open a route netlink socket for", name))?;
    let mut msg = by_name(name);
    set_up(&mut msg, false);
    match rtnl.request(RouteNetlinkMessage::SetLink(msg), 0) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(false),
        Err(e) => Err(refused("take down", name)(e)),
    }
}

/// Deletes the host end of the veth (the kernel deletes its peer with it, and the routes and
/// addresses of both). Returns once the kernel has finished (it waits for an RCU grace period,
/// 20-30 ms). `Ok(false)` when it did not exist.
pub fn delete_veth(name: &str) -> Result<bool, LinuxError> {
    let mut rtnl = Rtnl::open().map_err(refused("open a route netlink socket for", name))?;
    match rtnl.request(RouteNetlinkMessage::DelLink(by_name(name)), 0) {
        Ok(()) => Ok(true),
        // Gone already (its namespace died and took the pair with it).
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(false),
        Err(e) => Err(refused("delete", name)(e)),
    }
}

/// Deletes the cell's host table. `Ok(false)` when it did not exist.
pub fn delete_host_table(rec: &NetRecord) -> Result<bool, LinuxError> {
    NftController::current()
        .delete_table(rec.host_table_family(), &rec.host_table)
        .map_err(nft_failed("delete", rec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellos_dataplane::nftables::Family;

    fn rec(v6: bool) -> NetRecord {
        NetRecord {
            veth: "cv0123456789".into(),
            host_table: "cellos-host-0123456789".into(),
            host_addr: "10.213.0.1".parse().unwrap(),
            cell_addr: "10.213.0.2".parse().unwrap(),
            host_addr6: v6.then(|| "fd63:656c:6c6f:1::1".parse().unwrap()),
            cell_addr6: v6.then(|| "fd63:656c:6c6f:1::2".parse().unwrap()),
            lease: "/x/10.213.0.0.lease".into(),
            netns_inode: None,
        }
    }

    #[test]
    fn the_host_table_is_the_records_veth_and_addresses() {
        let t = host_table(&rec(true));
        assert_eq!(t.table, "cellos-host-0123456789");
        assert_eq!(t.veth, "cv0123456789");
        assert_eq!(t.cell_v4, rec(true).cell_addr);
        assert_eq!(t.cell_v6, rec(true).cell_addr6);
        let text = t.render().text().to_owned();
        assert!(text.contains("iifname \"cv0123456789\" ip6 saddr fd63:656c:6c6f:1::2 accept"));
        assert!(text.contains("ip saddr 10.213.0.2 oifname != \"cv0123456789\" masquerade"));
        assert_eq!(rec(true).host_table_family(), Family::Inet);
    }

    #[test]
    fn a_record_from_before_ipv6_names_its_ip_table() {
        // Such tables were created as `ip`; deletion and the residue check look there.
        assert_eq!(rec(false).host_table_family(), Family::Ip);
    }

    #[test]
    fn refusals_name_the_object_and_keep_the_errno() {
        let err = refused("delete", "cvX")(io::Error::from_raw_os_error(libc::EPERM));
        let LinuxError::Io { what, source } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(source.raw_os_error(), Some(libc::EPERM));
        assert!(
            what.contains("delete cvX") && what.contains("CAP_NET_ADMIN"),
            "{what}"
        );
    }
}

//! A networked cell's link (veth pair into a fresh network namespace, IPv4 and IPv6 addresses
//! on both ends, the cell's default routes), made in-process over route netlink vs by the two
//! `ip -batch` processes CellOS used before, one round of each back to back so both see the
//! same machine load; then what ending it costs: taking the host end down (what destroy waits
//! for) vs deleting the veth (what finishes in the background), vs `ip link del`. Needs root.
//! Usage: `cargo bench -p cellos-linux --bench cell_link [-- ROUNDS]`.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use cellos_dataplane::netns_exec::run_tool;
use cellos_linux::netscope::link;
use cellos_linux::netscope::pool::{AddressPool, AddressPool6};
use cellos_linux::netscope::NetRecord;

/// A process in a network namespace of its own, the stand-in for a cell's init.
struct Netns {
    child: Child,
    fd: OwnedFd,
}

impl Netns {
    fn new() -> Self {
        let child = Command::new("unshare")
            .args(["-n", "sleep", "60"])
            .spawn()
            .expect("run unshare -n (util-linux)");
        let ours = std::fs::read_link("/proc/self/ns/net").expect("our netns");
        let path = format!("/proc/{}/ns/net", child.id());
        while std::fs::read_link(&path).ok().is_none_or(|ns| ns == ours) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let fd = File::open(&path).expect("open the netns").into();
        Self { child, fd }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn record(state: &std::path::Path, slot: u32) -> NetRecord {
    let pool = AddressPool::parse("10.213.240.0/22").expect("pool");
    let pool6 = AddressPool6::default();
    NetRecord::new(
        state,
        &format!("bench-link-{slot}"),
        pool.link(slot),
        state.join("lease"),
    )
    .with_link6(pool6.link(0xf000 + slot))
}

fn in_process(rec: &NetRecord, ns: &Netns) -> Duration {
    let t = Instant::now();
    link::create_veth(rec, ns.pid()).expect("create the veth");
    link::configure_cell_side(rec, ns.fd.as_fd()).expect("configure the cell side");
    t.elapsed()
}

fn ip_batch(rec: &NetRecord, ns: &Netns) -> Duration {
    let (h6, c6) = (rec.host_addr6.expect("v6"), rec.cell_addr6.expect("v6"));
    let host = format!(
        "link add {v} type veth peer name eth0 netns {pid}\naddr add {h}/30 dev {v}\n\
         addr add {h6}/64 dev {v} nodad\nlink set {v} up\n",
        v = rec.veth,
        pid = ns.pid(),
        h = rec.host_addr,
    );
    let cell = format!(
        "addr add {c}/30 dev eth0\naddr add {c6}/64 dev eth0 nodad\nlink set eth0 up\n\
         route add default via {h} dev eth0\nroute add default via {h6} dev eth0\n",
        c = rec.cell_addr,
        h = rec.host_addr,
    );
    let t = Instant::now();
    run_tool("ip", &["-batch", "-"], Some(&host), None).expect("ip -batch (host)");
    let netns = ns.fd.as_fd().try_clone_to_owned().expect("dup netns");
    run_tool("ip", &["-batch", "-"], Some(&cell), Some(netns)).expect("ip -batch");
    t.elapsed()
}

fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn row(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mean = samples.iter().map(|d| ms(*d)).sum::<f64>() / samples.len() as f64;
    println!(
        "| {name:<44} | {:>8.3} | {:>8.3} | {:>8.3} |",
        ms(samples[samples.len() / 2]),
        mean,
        ms(samples[samples.len() * 9 / 10])
    );
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(30);
    let state = tempfile::tempdir().expect("tempdir");
    let (mut netlink, mut batch, mut down, mut del, mut ip_del) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..rounds as u32 {
        let (a, b) = (Netns::new(), Netns::new());
        let (ra, rb) = (record(state.path(), 2 * i), record(state.path(), 2 * i + 1));
        netlink.push(in_process(&ra, &a));
        batch.push(ip_batch(&rb, &b));
        down.push(timed(|| {
            link::cut_off(&ra.veth).expect("take down");
        }));
        del.push(timed(|| {
            link::delete_veth(&ra.veth).expect("delete");
        }));
        ip_del.push(timed(|| {
            run_tool("ip", &["link", "del", &rb.veth], None, None).expect("ip link del");
        }));
    }
    println!("{rounds} rounds; milliseconds");
    println!(
        "| {:<44} | {:>8} | {:>8} | {:>8} |",
        "", "median", "mean", "p90"
    );
    println!("|{:-<46}|{:-<10}|{:-<10}|{:-<10}|", "", "", "", "");
    row("link, addresses, routes: route netlink", netlink);
    row("link, addresses, routes: two ip -batch", batch);
    row("end: host end down (destroy waits for this)", down);
    row("end: delete the veth, netlink (background)", del);
    row("end: ip link del (before)", ip_del);
}

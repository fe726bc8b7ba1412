//! A small "internet" in a network namespace of its own, connected to the host by a veth pair
//! and reachable from the host by routes through it:
//!
//! | address (index N)       | what                                                        |
//! |-------------------------|-------------------------------------------------------------|
//! | `198.19.N.53:53`        | dnsmasq, upstream DNS with a query log                      |
//! | `198.19.N.10`           | `alpha.example` and `beta.example` (one shared CDN address) |
//! | `198.19.N.20`           | `gamma.example`                                             |
//! | `172.29.N.7`            | a server on a private range; `rebind.example` points here   |
//! | `2001:db8:N::10`        | IPv6 address of the CDN server; `dual.example` (with        |
//! |                         | `198.19.N.10`) and `six.example` (IPv6 only) point here     |
//! | `fd10:db8:N::7`         | a server on a private IPv6 range (ULA); `rebind6.example`   |
//! |                         | points here, `loop6.example` at `::1`                       |
//!
//! Every address server listens on HTTP 80 and 8080, TLS 443 and UDP 443. The public-looking
//! addresses come from the 198.18.0.0/15 benchmarking range, which CellOS does not deny
//! (`cellos_dataplane::ranges`); 172.29.0.0/16 lies in a range it denies.
//!
//! Each internet takes a free index N (0–255) by creating its namespace `cellos-egi-N`, which
//! fails when another test (of any process) holds that index. Dropping it kills the servers
//! and deletes the veth pair (with its routes) and the namespace, even when the test panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use crate::dns_wire;
use crate::servers::{Layout, Record, Servers};

pub const ALPHA: &str = "alpha.example";
/// Served at the same address as [`ALPHA`].
pub const BETA: &str = "beta.example";
pub const GAMMA: &str = "gamma.example";
/// Answered with the private server's address.
pub const REBIND: &str = "rebind.example";
/// Answered with the CDN's IPv4 and IPv6 addresses.
pub const DUAL: &str = "dual.example";
/// Answered with the CDN's IPv6 address only.
pub const SIX: &str = "six.example";
/// Answered (AAAA) with the private IPv6 server's address.
pub const REBIND6: &str = "rebind6.example";
/// Answered (AAAA) with `::1`.
pub const LOOP6: &str = "loop6.example";

/// Port of the TLS server behind the fronts, inside the namespace only.
const TLS_BACKEND_PORT: u16 = 8443;

/// Tests that need the host to themselves (residue counts) take this for writing; every
/// internet holds it for reading while it exists.
static HOST: RwLock<()> = RwLock::new(());

/// One test's internet. Fields drop in declaration order after [`Drop::drop`] ran.
pub struct Internet {
    pub index: u8,
    pub netns: String,
    host_if: String,
    dir: tempfile::TempDir,
    processes: Vec<Child>,
    servers: Option<Servers>,
    _shared: Option<RwLockReadGuard<'static, ()>>,
    _exclusive: Option<RwLockWriteGuard<'static, ()>>,
}

impl Internet {
    /// An internet for a test that shares the host with other tests.
    pub fn new() -> Self {
        Self::build(Some(HOST.read().unwrap_or_else(|e| e.into_inner())), None)
    }

    /// An internet for a test during which no other test of this binary creates or runs
    /// anything (it waits for the others to finish theirs).
    pub fn exclusive() -> Self {
        Self::build(None, Some(HOST.write().unwrap_or_else(|e| e.into_inner())))
    }

    fn build(
        shared: Option<RwLockReadGuard<'static, ()>>,
        exclusive: Option<RwLockWriteGuard<'static, ()>>,
    ) -> Self {
        let (index, netns) = claim_index();
        let mut net = Self {
            index,
            host_if: format!("egi{index}"),
            netns,
            dir: tempfile::tempdir().expect("tempdir"),
            processes: Vec::new(),
            servers: None,
            _shared: shared,
            _exclusive: exclusive,
        };
        net.wire();
        net.start_dnsmasq();
        net.start_servers();
        net.wait_ready();
        net
    }

    // Addresses.

    pub fn host_end(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.index, 1)
    }
    fn far_end(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.index, 2)
    }
    /// The upstream resolver (dnsmasq).
    pub fn dns(&self) -> SocketAddr {
        SocketAddr::new(Ipv4Addr::new(198, 19, self.index, 53).into(), 53)
    }
    /// The shared address of [`ALPHA`] and [`BETA`].
    pub fn cdn(&self) -> IpAddr {
        Ipv4Addr::new(198, 19, self.index, 10).into()
    }
    /// The address of [`GAMMA`].
    pub fn other(&self) -> IpAddr {
        Ipv4Addr::new(198, 19, self.index, 20).into()
    }
    /// The server on a private range, where [`REBIND`] points.
    pub fn private(&self) -> IpAddr {
        Ipv4Addr::new(172, 29, self.index, 7).into()
    }
    /// The CDN server's IPv6 address.
    pub fn cdn_v6(&self) -> IpAddr {
        format!("2001:db8:{}::10", self.index)
            .parse::<Ipv6Addr>()
            .expect("IPv6 literal")
            .into()
    }
    /// The server on a private IPv6 range (ULA), where [`REBIND6`] points.
    pub fn private_v6(&self) -> IpAddr {
        format!("fd10:db8:{}::7", self.index)
            .parse::<Ipv6Addr>()
            .expect("IPv6 literal")
            .into()
    }
    /// The host's end of the link to this internet (a host address, public-looking).
    pub fn host_end_v6(&self) -> IpAddr {
        self.v6_link(1)
            .parse::<Ipv6Addr>()
            .expect("IPv6 literal")
            .into()
    }
    fn v6_link(&self, end: u8) -> String {
        format!("2001:db8:ffff:{}::{end}", self.index)
    }

    /// Every address a server listens on.
    pub fn server_addresses(&self) -> [IpAddr; 5] {
        [
            self.cdn(),
            self.other(),
            self.private(),
            self.cdn_v6(),
            self.private_v6(),
        ]
    }

    /// The PEM certificate of the TLS server (valid for every name above).
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.cert_path()).expect("read certificate")
    }

    /// What the servers received.
    pub fn record(&self) -> &Record {
        &self.servers.as_ref().expect("servers running").record
    }

    /// dnsmasq's query log as written so far.
    pub fn dns_log(&self) -> String {
        std::fs::read_to_string(self.dns_log_path()).unwrap_or_default()
    }

    /// Waits (bounded) until the query log mentions `name`; true when it does.
    pub fn dns_log_shows(&self, name: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.dns_log().contains(name) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn cert_path(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }
    fn dns_log_path(&self) -> PathBuf {
        self.dir.path().join("dnsmasq.log")
    }

    // Construction.

    fn wire(&self) {
        let n = self.index;
        let ns = self.netns.as_str();
        let hif = self.host_if.as_str();
        let host4 = format!("{}/24", self.host_end());
        let far4 = format!("{}/24", self.far_end());
        let (host6, far6) = (
            format!("{}/64", self.v6_link(1)),
            format!("{}/64", self.v6_link(2)),
        );
        run(&[
            "link", "add", hif, "type", "veth", "peer", "name", "up0", "netns", ns,
        ]);
        run(&["addr", "add", &host4, "dev", hif]);
        run(&["-6", "addr", "add", &host6, "dev", hif, "nodad"]);
        run(&["link", "set", hif, "up"]);
        run(&["-n", ns, "link", "set", "lo", "up"]);
        run(&["-n", ns, "addr", "add", &far4, "dev", "up0"]);
        run(&["-n", ns, "-6", "addr", "add", &far6, "dev", "up0", "nodad"]);
        run(&["-n", ns, "link", "set", "up0", "up"]);
        run(&[
            "-n",
            ns,
            "route",
            "add",
            "default",
            "via",
            &self.host_end().to_string(),
        ]);
        run(&[
            "-n",
            ns,
            "-6",
            "route",
            "add",
            "default",
            "via",
            &self.v6_link(1),
        ]);
        for ip in [self.dns().ip(), self.cdn(), self.other(), self.private()] {
            run(&["-n", ns, "addr", "add", &format!("{ip}/32"), "dev", "lo"]);
        }
        for ip in [self.cdn_v6(), self.private_v6()] {
            let addr = format!("{ip}/128");
            run(&["-n", ns, "-6", "addr", "add", &addr, "dev", "lo", "nodad"]);
        }
        let far = self.far_end().to_string();
        run(&["route", "add", &format!("198.19.{n}.0/24"), "via", &far]);
        run(&["route", "add", &format!("172.29.{n}.0/24"), "via", &far]);
        run(&[
            "-6",
            "route",
            "add",
            &format!("2001:db8:{n}::/48"),
            "via",
            &self.v6_link(2),
        ]);
        let private6 = format!("fd10:db8:{n}::/48");
        run(&["-6", "route", "add", &private6, "via", &self.v6_link(2)]);
    }

    fn start_dnsmasq(&mut self) {
        let n = self.index;
        let records = [
            (ALPHA, self.cdn().to_string()),
            (BETA, self.cdn().to_string()),
            (GAMMA, self.other().to_string()),
            (REBIND, self.private().to_string()),
            (DUAL, self.cdn().to_string()),
            (DUAL, self.cdn_v6().to_string()),
            (SIX, self.cdn_v6().to_string()),
            (REBIND6, self.private_v6().to_string()),
            (LOOP6, "::1".to_string()),
        ];
        let mut args = vec![
            "netns".to_string(),
            "exec".into(),
            self.netns.clone(),
            "dnsmasq".into(),
            "--keep-in-foreground".into(),
            "--conf-file=/dev/null".into(),
            "--no-resolv".into(),
            "--no-hosts".into(),
            "--bind-interfaces".into(),
            format!("--listen-address=198.19.{n}.53"),
            "--port=53".into(),
            "--user=root".into(),
            "--pid-file=".into(),
            "--local-ttl=30".into(),
            "--log-queries".into(),
            format!("--log-facility={}", self.dns_log_path().display()),
        ];
        args.extend(
            records
                .iter()
                .map(|(name, ip)| format!("--address=/{name}/{ip}")),
        );
        let child = Command::new("ip")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dnsmasq");
        self.processes.push(child);
    }

    fn start_servers(&mut self) {
        let dir = self.dir.path();
        let san = format!(
            "subjectAltName=DNS:{ALPHA},DNS:{BETA},DNS:{GAMMA},DNS:{REBIND},DNS:{DUAL},DNS:{SIX}"
        );
        let key = dir.join("key.pem");
        let status = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=egress test internet", "-addext", &san])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(self.cert_path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run openssl req");
        assert!(status.success(), "openssl req failed");
        let backend = SocketAddr::from(([127, 0, 0, 1], TLS_BACKEND_PORT));
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                "openssl",
                "s_server",
                "-quiet",
            ])
            .args(["-www", "-accept", &backend.to_string(), "-cert"])
            .arg(self.cert_path())
            .arg("-key")
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start openssl s_server");
        self.processes.push(child);

        let on = |port: u16| -> Vec<SocketAddr> {
            self.server_addresses()
                .iter()
                .map(|ip| SocketAddr::new(*ip, port))
                .collect()
        };
        let layout = Layout {
            http: [on(80), on(8080)].concat(),
            tls: on(443),
            tls_backend: backend,
            udp: on(443),
        };
        self.servers = Some(Servers::start(
            &format!("/run/netns/{}", self.netns),
            layout,
        ));
    }

    /// dnsmasq answers and the TLS backend accepts before any test traffic is sent.
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let ns = std::fs::File::open(format!("/run/netns/{}", self.netns)).expect("open netns");
        let backend_up = std::thread::spawn(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let addr = SocketAddr::from(([127, 0, 0, 1], TLS_BACKEND_PORT));
            while Instant::now() < deadline {
                if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            false
        });
        while Instant::now() < deadline {
            if dns_wire::query_a(self.dns(), ALPHA, Duration::from_millis(200)).is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            backend_up.join().unwrap_or(false),
            "the TLS server did not start in {}",
            self.netns
        );
        assert!(
            dns_wire::query_a(self.dns(), ALPHA, Duration::from_secs(1)).is_some(),
            "dnsmasq does not answer in {}",
            self.netns
        );
    }
}

impl Drop for Internet {
    fn drop(&mut self) {
        for child in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Deleting one end deletes the pair and every route through it, whatever still holds
        // the namespace open.
        let _ = quiet(&["link", "del", &self.host_if]);
        self.servers = None;
        let _ = quiet(&["netns", "delete", &self.netns]);
    }
}

/// Takes the first free index, starting at a point that depends on the process and a counter
/// so parallel tests rarely contend.
fn claim_index() -> (u8, String) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id()
        .wrapping_mul(7)
        .wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed).wrapping_mul(13));
    for step in 0..256u32 {
        let index = ((start + step) % 256) as u8;
        let name = format!("cellos-egi-{index}");
        if quiet(&["netns", "add", &name]) {
            return (index, name);
        }
    }
    panic!("no free test internet index: 256 namespaces cellos-egi-* exist (`ip netns list`)");
}

/// Runs `ip ARGS`, panicking with its error output when it fails.
fn run(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `ip ARGS`; did it succeed?
fn quiet(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

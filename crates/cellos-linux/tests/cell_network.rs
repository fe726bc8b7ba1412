//! Networked cells on a real kernel: a cell whose spec declares egress gets `eth0` with a
//! leased address and reaches exactly what its rules allow; destroy and reclaim leave nothing.
//!
//! The "far end" is a network namespace each test creates (`ip netns add`) and links to the
//! host with its own veth pair, with TCP servers bound inside it and, where names are needed,
//! dnsmasq as the upstream resolver. Cells never send traffic anywhere else.

mod cell_support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cell_support::*;
use cellos_core::events::{CloudEvent, EventKind};
use cellos_core::ports::{Cell, CellBackend, WorkloadExit};
use cellos_core::spec::ExecutionCellSpec;
use cellos_linux::backend::{LinuxBackend, LinuxBackendConfig};
use cellos_linux::netscope::{residue, NetRecord};
use cellos_linux::residue::HostSources;
use serde_json::json;

fn run_ok(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A namespace linked to the host by a veth pair, serving TCP ports; removed on drop.
struct FarEnd {
    ns: String,
    host_veth: String,
    addr: Ipv4Addr,
    stop: Arc<AtomicBool>,
    accepted: Arc<Mutex<BTreeMap<u16, u32>>>,
    dnsmasq: Option<Child>,
    dns_log: Arc<Mutex<Vec<String>>>,
}

impl FarEnd {
    /// Far end at `198.19.<pid>.<4n+2>` (198.18.0.0/15 is benchmark space: not a range cells
    /// are denied by default, and routed nowhere real).
    fn new(ports: &[u16]) -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}{n}", std::process::id() % 100_000);
        let ns = format!("cellos-far-{tag}");
        let host_veth = format!("fh{tag}");
        let third = (std::process::id() % 250) as u8;
        let base = Ipv4Addr::new(198, 19, third, (n as u8 % 60) * 4);
        let host = Ipv4Addr::from(u32::from(base) + 1);
        let addr = Ipv4Addr::from(u32::from(base) + 2);
        run_ok("ip", &["netns", "add", &ns]);
        let mut far = FarEnd {
            ns: ns.clone(),
            host_veth: host_veth.clone(),
            addr,
            stop: Arc::new(AtomicBool::new(false)),
            accepted: Arc::default(),
            dnsmasq: None,
            dns_log: Arc::default(),
        };
        let batch = format!(
            "link add {host_veth} type veth peer name eth0 netns {ns}\n\
             addr add {host}/30 dev {host_veth}\n\
             link set {host_veth} up\n\
             -n {ns} link set lo up\n\
             -n {ns} addr add {addr}/30 dev eth0\n\
             -n {ns} link set eth0 up\n"
        );
        for line in batch.lines() {
            let args: Vec<&str> = line.split_whitespace().collect();
            run_ok("ip", &args);
        }
        for port in ports {
            far.serve(*port);
        }
        far
    }

    fn in_ns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let ns = std::fs::File::open(format!("/run/netns/{}", self.ns)).unwrap();
        std::thread::scope(|s| {
            s.spawn(move || {
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                f()
            })
            .join()
            .unwrap()
        })
    }

    /// Accepts on `port`: reads what the client sends first (briefly), answers
    /// `HTTP/1.0 200 OK` with `far-<port>` and closes.
    fn serve(&mut self, port: u16) {
        let addr = SocketAddr::from((self.addr, port));
        let listener = self.in_ns(|| TcpListener::bind(addr).unwrap());
        listener.set_nonblocking(true).unwrap();
        let (stop, accepted) = (self.stop.clone(), self.accepted.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        *accepted.lock().unwrap().entry(port).or_default() += 1;
                        s.set_nonblocking(false).unwrap();
                        s.set_read_timeout(Some(Duration::from_millis(300)))
                            .unwrap();
                        let mut buf = [0u8; 1024];
                        let _ = s.read(&mut buf);
                        let _ = write!(s, "HTTP/1.0 200 OK\r\n\r\nfar-{port}\n");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
    }

    /// dnsmasq inside the namespace answering `names` with this end's address, nothing else.
    fn dns(&mut self, names: &[&str]) {
        let mut args = vec![
            "netns".to_owned(),
            "exec".to_owned(),
            self.ns.clone(),
            "dnsmasq".to_owned(),
            "--no-daemon".to_owned(),
            "--no-resolv".to_owned(),
            "--no-hosts".to_owned(),
            "--bind-interfaces".to_owned(),
            format!("--listen-address={}", self.addr),
            "--log-queries".to_owned(),
            "--log-facility=-".to_owned(),
            "--pid-file=".to_owned(),
        ];
        for name in names {
            args.push(format!("--address=/{name}/{}", self.addr));
        }
        let mut child = Command::new("ip")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = self.dns_log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("started") {
                    let _ = tx.send(());
                }
                log.lock().unwrap().push(line);
            }
        });
        self.dnsmasq = Some(child);
        rx.recv_timeout(Duration::from_secs(10))
            .expect("dnsmasq did not start");
    }

    fn accepted(&self, port: u16) -> u32 {
        self.accepted
            .lock()
            .unwrap()
            .get(&port)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for FarEnd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(mut c) = self.dnsmasq.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_veth])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.ns])
            .status();
    }
}

fn backend(state: &std::path::Path, upstream: Option<SocketAddr>) -> LinuxBackend {
    let mut config = LinuxBackendConfig::new(state, init_exe());
    config.network.dns_upstream = upstream;
    LinuxBackend::new(config).expect("backend (tests run as root)")
}

struct NetRun {
    stdout: String,
    stderr: String,
    exit: WorkloadExit,
    network: String,
    teardown: cellos_core::ports::TeardownReport,
    events: Vec<CloudEvent>,
}

fn run_networked(backend: &LinuxBackend, spec: &ExecutionCellSpec) -> NetRun {
    let (stdout, stderr) = (SharedBuf::default(), SharedBuf::default());
    let observed = Observed::default();
    let mut cell: Box<dyn Cell> = backend
        .create(request(
            spec,
            Box::new(stdout.clone()),
            Box::new(stderr.clone()),
            observed.clone(),
        ))
        .unwrap_or_else(|e| panic!("create {}: {e}", spec.id));
    let network = cell.isolation().network.clone();
    cell.start().expect("start");
    let outcome = cell.wait(None).expect("wait");
    let teardown = cell.destroy().expect("destroy");
    let events = observed.0.lock().unwrap().clone();
    NetRun {
        stdout: stdout.text(),
        stderr: stderr.text(),
        exit: outcome.exit,
        network,
        teardown,
        events,
    }
}

fn of_kind(events: &[CloudEvent], kind: EventKind) -> Vec<&CloudEvent> {
    events.iter().filter(|e| e.kind() == Some(kind)).collect()
}

/// A `/bin/bash -c script` spec (`/dev/tcp` is a bash feature).
fn bash(id: &str, script: &str, extra: serde_json::Value) -> ExecutionCellSpec {
    spec(id, &["/bin/bash", "-c", script], extra)
}

/// `bash` connects, prints `<label>:` and the first line it read, or `<label>:refused`.
fn probe(label: &str, host: &str, port: u16, request: &str) -> String {
    format!(
        "if exec 3<>/dev/tcp/{host}/{port}; then printf '{request}' >&3; \
         echo \"{label}:$(tail -n1 <&3)\"; exec 3>&-; else echo {label}:refused; fi\n"
    )
}

fn names_of(state: &std::path::Path, id: &str) -> NetRecord {
    NetRecord::new(
        state,
        id,
        cellos_linux::netscope::pool::AddressPool::default().link(0),
        "unused".into(),
    )
}

fn host_has_nft_table(name: &str) -> bool {
    run_ok("nft", &["list", "tables"]).contains(name)
}

#[test]
fn networked_cell_gets_eth0_its_address_and_only_the_allowed_traffic() {
    let far = FarEnd::new(&[8080, 8081]);
    let state = tempfile::tempdir().unwrap();
    let backend = backend(state.path(), Some(SocketAddr::from((far.addr, 53))));
    let id = unique_id("net");
    let f = far.addr.to_string();
    let script = format!(
        "cat /etc/resolv.conf; ip -4 -o addr show dev eth0; ip route show default\n{}{}{}",
        probe("allowed", &f, 8080, ""),
        probe("otherport", &f, 8081, ""),
        probe("private", "10.213.255.254", 8080, ""),
    );
    let spec = bash(
        &id,
        &script,
        json!({
            "filesystem": { "rootfs": "host" },
            "authority": { "egressRules": [ { "cidr": format!("{f}/32"), "port": 8080 } ] }
        }),
    );
    let run = run_networked(&backend, &spec);
    assert_eq!(run.exit, WorkloadExit::Exited { code: 0 }, "{}", run.stderr);

    // The cell's link and resolver.
    let rec_names = names_of(state.path(), &id);
    let eth0 = run
        .stdout
        .lines()
        .find(|l| l.contains("eth0") && l.contains("inet "))
        .unwrap_or_else(|| panic!("no eth0 address in {}", run.stdout));
    let cell_addr: Ipv4Addr = eth0
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap();
    let host_end = Ipv4Addr::from(u32::from(cell_addr) - 1);
    assert!(eth0.contains(&format!("{cell_addr}/30")));
    assert_eq!(
        cell_addr.octets()[..2],
        [10, 213],
        "address from the default pool"
    );
    assert!(run.stdout.contains(&format!("nameserver {host_end}")));
    assert!(run
        .stdout
        .contains(&format!("default via {host_end} dev eth0")));

    // Only the allowed traffic.
    assert!(run.stdout.contains("allowed:far-8080"), "{}", run.stdout);
    assert!(run.stdout.contains("otherport:refused"), "{}", run.stdout);
    assert!(run.stdout.contains("private:refused"), "{}", run.stdout);
    assert_eq!(far.accepted(8080), 1);
    assert_eq!(far.accepted(8081), 0, "a denied port was reached");

    // Evidence: the ruleset, each kernel drop, the summary.
    let enforced = of_kind(&run.events, EventKind::NetworkEnforced);
    assert_eq!(enforced.len(), 1);
    let sha = enforced[0].data["rulesetSha256"].as_str().unwrap();
    assert!(
        run.network.contains(&format!("sha256:{sha}")),
        "{}",
        run.network
    );
    let flows = of_kind(&run.events, EventKind::FlowDecided);
    let denied_8081 = flows
        .iter()
        .find(|e| e.data["dst"] == f.as_str() && e.data["port"] == 8081)
        .unwrap_or_else(|| panic!("no flow event for the denied port: {flows:?}"));
    assert_eq!(denied_8081.data["decision"], "deny");
    assert_eq!(denied_8081.data["authority"], "imposed");
    assert_eq!(denied_8081.data["reason"], "nftables drop: default");
    assert!(flows
        .iter()
        .any(|e| e.data["dst"] == "10.213.255.254" && e.data["reason"] == "nftables drop: range"));
    let summary = of_kind(&run.events, EventKind::NetworkSummary);
    assert_eq!(summary.len(), 1);
    assert!(summary[0].data["flowsAllowed"].as_u64().unwrap() >= 1);
    assert!(summary[0].data["flowsDenied"].as_u64().unwrap() >= 2);
    assert!(summary[0].data["deniedRange"].as_u64().unwrap() >= 1);

    // Nothing left.
    assert!(run.teardown.residue_free(), "{:?}", run.teardown);
    assert!(!residue::veth_exists(&rec_names.veth));
    assert!(!host_has_nft_table(&rec_names.host_table));
}

#[test]
fn hostname_rules_resolve_through_the_dns_authority_and_the_gate_checks_the_host_header() {
    let mut far = FarEnd::new(&[80, 8080]);
    far.dns(&["svc.test", "web.test", "other.test"]);
    let state = tempfile::tempdir().unwrap();
    let backend = backend(state.path(), Some(SocketAddr::from((far.addr, 53))));
    let id = unique_id("dns");
    let script = format!(
        "getent hosts svc.test || echo svc:unresolved\n\
         getent hosts other.test || echo other:unresolved\n{}{}{}",
        probe("svc", "svc.test", 8080, ""),
        probe(
            "web",
            "web.test",
            80,
            "GET / HTTP/1.0\\r\\nHost: web.test\\r\\n\\r\\n"
        ),
        probe(
            "spoof",
            "web.test",
            80,
            "GET / HTTP/1.0\\r\\nHost: other.test\\r\\n\\r\\n"
        ),
    );
    let spec = bash(
        &id,
        &script,
        json!({
            "filesystem": { "rootfs": "host" },
            "authority": { "egressRules": [
                { "host": "svc.test", "port": 8080 },
                { "host": "web.test", "port": 80 }
            ] }
        }),
    );
    let run = run_networked(&backend, &spec);
    assert_eq!(run.exit, WorkloadExit::Exited { code: 0 }, "{}", run.stderr);
    let out = &run.stdout;
    assert!(
        out.lines()
            .any(|l| l.starts_with(&far.addr.to_string()) && l.ends_with("svc.test")),
        "{out}"
    );
    assert!(out.contains("other:unresolved"), "{out}");
    assert!(out.contains("svc:far-8080"), "{out}");
    assert!(out.contains("web:far-80"), "{out}");
    assert!(!out.contains("spoof:far-80"), "{out}");
    assert_eq!(
        far.accepted(80),
        1,
        "only the matching Host reached the server"
    );

    // The refused name never left the host.
    let log = far.dns_log.lock().unwrap().join("\n");
    assert!(log.contains("svc.test"), "{log}");
    assert!(!log.contains("other.test"), "{log}");

    let refused = of_kind(&run.events, EventKind::DnsQueryRefused);
    assert!(refused.iter().any(|e| e.data["name"] == "other.test"));
    let permitted = of_kind(&run.events, EventKind::DnsQueryPermitted);
    assert!(permitted.iter().any(|e| e.data["name"] == "svc.test"));
    let flows = of_kind(&run.events, EventKind::FlowDecided);
    assert!(
        flows.iter().any(|e| e.data["decision"] == "deny"
            && e.data["authority"] == "observed"
            && e.data["port"] == 80),
        "{flows:?}"
    );
    assert!(flows
        .iter()
        .any(|e| e.data["decision"] == "allow" && e.data["port"] == 80));
    let summary = of_kind(&run.events, EventKind::NetworkSummary);
    assert!(summary[0].data["dnsRefused"].as_u64().unwrap() >= 1);
    assert!(summary[0].data["gateDenied"].as_u64().unwrap() >= 1);
    assert!(run.teardown.residue_free(), "{:?}", run.teardown);
}

#[test]
fn concurrent_networked_cells_get_distinct_addresses() {
    let state = tempfile::tempdir().unwrap();
    let backend = Arc::new(backend(
        state.path(),
        Some("192.0.2.53:53".parse().unwrap()),
    ));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let backend = backend.clone();
            std::thread::spawn(move || {
                let id = unique_id("conc");
                let spec = shell(
                    &id,
                    "ip -4 -o addr show dev eth0",
                    json!({
                        "filesystem": { "rootfs": "host" },
                        "authority": { "egressRules": [ { "cidr": "192.0.2.0/24", "port": 9 } ] }
                    }),
                );
                let run = run_networked(&backend, &spec);
                assert!(run.teardown.residue_free(), "{:?}", run.teardown);
                run.stdout
                    .split_whitespace()
                    .skip_while(|w| *w != "inet")
                    .nth(1)
                    .unwrap_or_else(|| panic!("no address: {}", run.stdout))
                    .to_owned()
            })
        })
        .collect();
    let mut addrs: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 4, "{addrs:?}");
    assert!(std::fs::read_dir(state.path().join("run/net"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn loopback_only_cells_get_no_network_scope() {
    let state = tempfile::tempdir().unwrap();
    let backend = backend(state.path(), None);
    let id = unique_id("lo");
    let run = run_networked(
        &backend,
        &shell(
            &id,
            "ip -o link show",
            json!({ "filesystem": { "rootfs": "host" } }),
        ),
    );
    assert_eq!(run.network, "loopback-only");
    let links: Vec<&str> = run
        .stdout
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .collect();
    assert_eq!(links, ["lo"], "{}", run.stdout);
    assert!(run.events.is_empty());
    assert!(!residue::veth_exists(&names_of(state.path(), &id).veth));
}

/// Child mode of [`reclaim_removes_the_network_scope_of_a_killed_supervisor`].
#[test]
#[ignore = "the child process of reclaim_removes_the_network_scope_of_a_killed_supervisor, which runs it"]
fn child_mode_create_networked_cell_then_hang() {
    let (Ok(state), Ok(id)) = (
        std::env::var("CELLOS_TEST_NET_CHILD_STATE"),
        std::env::var("CELLOS_TEST_NET_CHILD_ID"),
    ) else {
        panic!("run only by reclaim_removes_the_network_scope_of_a_killed_supervisor (it sets CELLOS_TEST_NET_CHILD_STATE and CELLOS_TEST_NET_CHILD_ID)");
    };
    let backend = backend(
        std::path::Path::new(&state),
        Some("192.0.2.53:53".parse().unwrap()),
    );
    let spec = shell(
        &id,
        "sleep 1000",
        json!({
            "filesystem": { "rootfs": "host" },
            "authority": { "egressRules": [ { "cidr": "192.0.2.0/24", "port": 9 } ] }
        }),
    );
    let (out, err) = (SharedBuf::default(), SharedBuf::default());
    let mut cell = backend
        .create(request(
            &spec,
            Box::new(out),
            Box::new(err),
            Observed::default(),
        ))
        .unwrap();
    cell.start().unwrap();
    println!("READY");
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[test]
fn reclaim_removes_the_network_scope_of_a_killed_supervisor() {
    let state = tempfile::tempdir().unwrap();
    let backend = backend(state.path(), None);
    let id = unique_id("netcrash");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "--ignored",
            "child_mode_create_networked_cell_then_hang",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CELLOS_TEST_NET_CHILD_STATE", state.path())
        .env("CELLOS_TEST_NET_CHILD_ID", &id)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let ready = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("READY"));
    let record = cellos_linux::record::read(state.path(), &id).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(ready, "child never created its cell");
    let net = record
        .and_then(|r| r.network)
        .expect("network in the run record");
    assert!(host_has_nft_table(&net.host_table));
    assert!(net.lease.exists());

    let report = backend.reclaim(&id).unwrap();
    assert!(report.residue_free(), "{report:?}");
    assert!(report.removed.iter().any(|r| r.class == "nftTable"));
    assert!(!host_has_nft_table(&net.host_table));
    assert!(!residue::veth_exists(&net.veth));
    assert!(!net.lease.exists());
    assert!(residue::check(&net, &HostSources::host()).is_clean());
}

#[test]
fn a_duplicate_cell_id_leaves_the_running_cells_network_alone() {
    let state = tempfile::tempdir().unwrap();
    let backend = backend(state.path(), Some("192.0.2.53:53".parse().unwrap()));
    let id = unique_id("dup");
    let spec = shell(
        &id,
        "sleep 1000",
        json!({
            "filesystem": { "rootfs": "host" },
            "authority": { "egressRules": [ { "cidr": "192.0.2.0/24", "port": 9 } ] }
        }),
    );
    let mut first = backend.create(quiet_request(&spec)).unwrap();
    let net = cellos_linux::record::read(state.path(), &id)
        .unwrap()
        .and_then(|r| r.network)
        .unwrap();
    let second = backend.create(quiet_request(&spec));
    assert!(
        second.is_err(),
        "a second cell with the same id was created"
    );
    assert!(residue::veth_exists(&net.veth));
    assert!(host_has_nft_table(&net.host_table));
    assert!(net.lease.exists());
    let teardown = first.destroy().unwrap();
    assert!(teardown.residue_free(), "{teardown:?}");
    assert!(residue::check(&net, &HostSources::host()).is_clean());
}

#[test]
fn the_residue_check_reports_a_veth_host_table_route_and_lease_that_remain() {
    let state = tempfile::tempdir().unwrap();
    let id = unique_id("resid");
    let link = cellos_linux::netscope::pool::AddressPool::parse("10.213.254.0/30")
        .unwrap()
        .link(0);
    let lease = state.path().join("lease");
    std::fs::write(&lease, &id).unwrap();
    let rec = NetRecord::new(state.path(), &id, link, lease);
    // A veth pair and host table named like the cell's, made by the test.
    run_ok(
        "ip",
        &[
            "link",
            "add",
            &rec.veth,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{}p", rec.veth),
        ],
    );
    struct Cleanup(String, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["link", "del", &self.0]).status();
            let _ = Command::new("nft")
                .args(["delete", "table", "ip", &self.1])
                .status();
        }
    }
    let _cleanup = Cleanup(rec.veth.clone(), rec.host_table.clone());
    run_ok(
        "ip",
        &[
            "addr",
            "add",
            &format!("{}/30", rec.host_addr),
            "dev",
            &rec.veth,
        ],
    );
    run_ok("ip", &["link", "set", &rec.veth, "up"]);
    run_ok("nft", &["add", "table", "ip", &rec.host_table]);

    let found = residue::check(&rec, &HostSources::host());
    assert!(found.unverified.is_empty(), "{:?}", found.unverified);
    let classes: Vec<String> = found.residue.into_iter().map(|r| r.class).collect();
    for class in ["veth", "nftTable", "route", "file"] {
        assert!(
            classes.iter().any(|c| c == class),
            "{class} not reported: {classes:?}"
        );
    }
    let (removed, failed) = cellos_linux::netscope::remove(state.path(), &id, Some(&rec));
    assert!(failed.is_empty(), "{failed:?}");
    assert!(removed.iter().any(|r| r.class == "veth"));
    assert!(removed.iter().any(|r| r.class == "nftTable"));
    std::fs::remove_file(&rec.lease).unwrap();
    assert!(residue::check(&rec, &HostSources::host()).is_clean());
}

#[test]
fn a_link_already_routed_through_another_interface_is_refused() {
    let state = tempfile::tempdir().unwrap();
    let id = unique_id("clash");
    let link = cellos_linux::netscope::pool::AddressPool::parse("10.213.253.0/30")
        .unwrap()
        .link(0);
    let rec = NetRecord::new(state.path(), &id, link, state.path().join("lease"));
    // Another interface already routes the link (a supervisor with an overlapping pool).
    let other = format!("ox{}", std::process::id() % 100_000);
    let mut holder = Command::new("unshare")
        .args(["-n", "sleep", "1000"])
        .spawn()
        .unwrap();
    struct Cleanup(Vec<String>);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            for link in &self.0 {
                let _ = Command::new("ip").args(["link", "del", link]).status();
            }
        }
    }
    let _cleanup = Cleanup(vec![other.clone(), rec.veth.clone()]);
    // The peer must land in the holder's own namespace, never in ours: wait until it has one.
    let ours = residue::netns_inode(std::path::Path::new("/proc/self/ns/net"));
    let theirs = format!("/proc/{}/ns/net", holder.id());
    while residue::netns_inode(std::path::Path::new(&theirs)) == ours {
        std::thread::sleep(Duration::from_millis(1));
    }
    run_ok(
        "ip",
        &[
            "link",
            "add",
            &other,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{other}p"),
        ],
    );
    run_ok(
        "ip",
        &["addr", "add", &format!("{}/30", link.cell), "dev", &other],
    );
    run_ok("ip", &["link", "set", &other, "up"]);

    let result = cellos_linux::netscope::link::create_host_side(&rec, holder.id() as i32);
    let _ = holder.kill();
    let _ = holder.wait();
    let err = result
        .expect_err("a link routed elsewhere was accepted")
        .to_string();
    assert!(err.contains(&other) && err.contains("--net-pool"), "{err}");
}

/// A networked `/bin/true` destroyed with the veth's deletion finishing in `mode`.
fn destroy_in_background(
    mode: cellos_linux::netscope::teardown::LinkTeardown,
) -> (tempfile::TempDir, String, NetRun, NetRecord) {
    let state = tempfile::tempdir().unwrap();
    let mut config = LinuxBackendConfig::new(state.path(), init_exe());
    config.network.dns_upstream = Some("192.0.2.53:53".parse().unwrap());
    config.network.teardown = mode;
    let backend = LinuxBackend::new(config).expect("backend (tests run as root)");
    let id = unique_id("netbg");
    let spec = spec(
        &id,
        &["/bin/true"],
        json!({ "authority": { "egressRules": [ { "cidr": "192.0.2.1/32", "port": 80 } ] } }),
    );
    let observed = Observed::default();
    let mut cell: Box<dyn Cell> = backend
        .create(request(
            &spec,
            Box::new(SharedBuf::default()),
            Box::new(SharedBuf::default()),
            observed.clone(),
        ))
        .unwrap();
    let rec = cellos_linux::record::read(state.path(), &id)
        .unwrap()
        .and_then(|r| r.network)
        .expect("network in the run record");
    cell.start().unwrap();
    let exit = cell.wait(None).unwrap().exit;
    let teardown = cell.destroy().unwrap();
    let run = NetRun {
        stdout: String::new(),
        stderr: String::new(),
        exit,
        network: String::new(),
        teardown,
        events: observed.0.lock().unwrap().clone(),
    };
    (state, id, run, rec)
}

/// Waits (bounded) until `done` holds.
fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn assert_finished_in_background(state: &std::path::Path, id: &str, run: &NetRun, rec: &NetRecord) {
    assert_eq!(run.exit, WorkloadExit::Exited { code: 0 });
    assert!(run.teardown.residue_free(), "{:?}", run.teardown);
    // The report says what is left to the finisher, and claims neither record nor lease.
    let veth = run
        .teardown
        .removed
        .iter()
        .find(|r| r.class == "veth")
        .expect("a veth entry");
    assert!(
        veth.detail.contains("cut off") && veth.detail.contains("background"),
        "{veth:?}"
    );
    let record = cellos_linux::record::record_path(state, id);
    assert!(!run
        .teardown
        .removed
        .iter()
        .any(|r| r.detail.contains(&record.display().to_string())));
    assert!(!host_has_nft_table(&rec.host_table));
    // The finisher deletes the veth, verifies it, then removes the lease and the record.
    eventually("the finisher removes the run record", || !record.exists());
    assert!(!residue::veth_exists(&rec.veth));
    assert!(!rec.lease.exists());
    let left = residue::check(rec, &HostSources::host());
    assert!(left.is_clean(), "{left:?}");
}

#[test]
fn a_thread_finishes_the_veth_deletion_after_destroy_answered() {
    let (state, id, run, rec) =
        destroy_in_background(cellos_linux::netscope::teardown::LinkTeardown::Thread);
    assert_finished_in_background(state.path(), &id, &run, &rec);
}

#[test]
fn a_detached_process_finishes_the_veth_deletion_after_destroy_answered() {
    let (state, id, run, rec) =
        destroy_in_background(cellos_linux::netscope::teardown::LinkTeardown::Detached);
    // Until it is done, the finisher is the record's supervisor: `cellos gc` leaves it alone.
    if let Some(left) = cellos_linux::record::read(state.path(), &id).unwrap() {
        assert_ne!(left.supervisor_pid, std::process::id() as i32, "{left:?}");
        assert!(
            left.supervised()
                || cellos_linux::record::read(state.path(), &id)
                    .unwrap()
                    .is_none(),
            "{left:?}"
        );
    }
    assert_finished_in_background(state.path(), &id, &run, &rec);
}

#[test]
fn a_cell_gets_an_ipv6_address_and_default_route_through_the_host_end() {
    let state = tempfile::tempdir().unwrap();
    let backend = backend(state.path(), Some("192.0.2.53:53".parse().unwrap()));
    let id = unique_id("net6");
    let spec = bash(
        &id,
        "ip -6 -o addr show dev eth0 scope global; ip -6 route show default",
        json!({
            "filesystem": { "rootfs": "host" },
            "authority": { "egressRules": [ { "cidr": "192.0.2.1/32", "port": 80 } ] }
        }),
    );
    let run = run_networked(&backend, &spec);
    assert_eq!(run.exit, WorkloadExit::Exited { code: 0 }, "{}", run.stderr);
    let leased = cellos_linux::netscope::pool::AddressPool6::default();
    let prefix = leased.to_string();
    let prefix = prefix.trim_end_matches(":/48");
    let addr = run
        .stdout
        .lines()
        .find(|l| l.contains("inet6"))
        .unwrap_or_else(|| panic!("no IPv6 address: {}", run.stdout));
    assert!(addr.contains(prefix) && addr.contains("::2/64"), "{addr}");
    // nodad: usable at once, never tentative.
    assert!(!addr.contains("tentative"), "{addr}");
    let route = run
        .stdout
        .lines()
        .find(|l| l.starts_with("default"))
        .unwrap_or_else(|| panic!("no IPv6 default route: {}", run.stdout));
    assert!(route.contains("::1 dev eth0"), "{route}");
    assert!(run.teardown.residue_free(), "{:?}", run.teardown);
}

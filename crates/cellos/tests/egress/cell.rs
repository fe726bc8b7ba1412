//! Running networked cells with the `cellos` binary against a test internet, and reading back
//! what they observed (probe results) and what CellOS recorded (events).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;

use crate::internet::{Internet, ALPHA, BETA, DUAL, GAMMA, LOOP6, REBIND, REBIND6, SIX};

/// The probe functions every workload script starts with.
const PROBES: &str = include_str!("probe.py");

/// A cell id no other test (or concurrent test binary) uses.
pub fn unique_id(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// `authority:` YAML: egress rules (flow-style maps such as `{ host: a.example, port: 443 }`)
/// and, when not empty, a DNS allow-list.
pub fn authority(rules: &[String], dns_allowlist: &[&str]) -> String {
    let mut yaml = String::from("  authority:\n    egressRules:\n");
    for rule in rules {
        yaml.push_str(&format!("      - {rule}\n"));
    }
    if !dns_allowlist.is_empty() {
        yaml.push_str("    dnsAuthority:\n      hostnameAllowlist:\n");
        for name in dns_allowlist {
            yaml.push_str(&format!("        - {}\n", json(name)));
        }
    }
    yaml
}

/// A probe script: the probe functions, the internet's addresses as constants, then `body`.
pub fn script(net: &Internet, body: &str) -> String {
    let constants = [
        ("CA", net.ca_pem()),
        ("DNS", net.dns().ip().to_string()),
        ("CDN", net.cdn().to_string()),
        ("OTHER", net.other().to_string()),
        ("PRIVATE", net.private().to_string()),
        ("CDN6", net.cdn_v6().to_string()),
        ("PRIVATE6", net.private_v6().to_string()),
        ("HOST6", net.host_end_v6().to_string()),
        ("ALPHA", ALPHA.to_string()),
        ("BETA", BETA.to_string()),
        ("GAMMA", GAMMA.to_string()),
        ("REBIND", REBIND.to_string()),
        ("DUAL", DUAL.to_string()),
        ("SIX", SIX.to_string()),
        ("REBIND6", REBIND6.to_string()),
        ("LOOP6", LOOP6.to_string()),
    ];
    let mut text = String::from(PROBES);
    for (name, value) in constants {
        text.push_str(&format!("{name} = {}\n", json(&value)));
    }
    text.push_str(body);
    text
}

/// A JSON string literal, which is also a valid YAML and Python string literal.
pub fn json(text: &str) -> String {
    serde_json::to_string(text).expect("string to JSON")
}

/// What one probe script printed, by label.
pub struct Probes {
    results: BTreeMap<String, Value>,
    transcript: String,
}

impl Probes {
    fn parse(out: &Output) -> Self {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let results = stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| Some((v.get("probe")?.as_str()?.to_string(), v.clone())))
            .collect();
        Self {
            results,
            transcript: format!(
                "stdout:\n{stdout}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    pub fn get(&self, label: &str) -> &Value {
        self.results
            .get(label)
            .unwrap_or_else(|| panic!("no probe {label:?}\n{}", self.transcript))
    }

    /// The probe succeeded; its result.
    pub fn ok(&self, label: &str) -> &Value {
        let v = self.get(label);
        assert!(
            v.get("error").is_none(),
            "probe {label:?} should succeed: {v}\n{}",
            self.transcript
        );
        v
    }

    /// The probe failed.
    pub fn failed(&self, label: &str) {
        let v = self.get(label);
        assert!(
            v.get("error").is_some(),
            "probe {label:?} should fail: {v}\n{}",
            self.transcript
        );
    }

    /// The DNS probe got an answer with response code `rcode`; its addresses.
    pub fn dns_rcode(&self, label: &str, rcode: u64) -> Vec<String> {
        let v = self.ok(label);
        assert_eq!(
            v["rcode"], rcode,
            "probe {label:?}: {v}\n{}",
            self.transcript
        );
        v["addrs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Runs probe scripts with the host's `python3`: the control showing each attempt works
/// when no cell is in the way.
pub fn on_host(net: &Internet, body: &str) -> Probes {
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script(net, body))
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "probe script failed on the host: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Probes::parse(&out)
}

/// A private CELLOS_HOME (event log, key, records) for the cells of one test.
pub struct Cells {
    dir: tempfile::TempDir,
}

impl Cells {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn cellos(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cellos"));
        cmd.env("CELLOS_HOME", self.path())
            .env_remove("CELLOS_SECRETS_DIR")
            .env_remove("CELLOS_DNS_UPSTREAM")
            .env_remove("CELLOS_NET_POOL")
            .env_remove("CELLOS_NET_POOL6");
        cmd
    }

    /// Writes a spec running `argv` with `env` under `authority` (see [`authority`]).
    pub fn spec(&self, id: &str, argv: &[&str], env: &[(&str, &str)], authority: &str) -> PathBuf {
        let argv: Vec<String> = argv.iter().map(|a| json(a)).collect();
        let mut text = format!(
            "apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec:\n  id: {id}\n  run:\n    argv: [{}]\n    timeoutMs: 120000\n    limits:\n      memoryMaxBytes: 256Mi\n      pidsMax: 64\n",
            argv.join(", ")
        );
        if !env.is_empty() {
            text.push_str("    env:\n");
            for (k, v) in env {
                text.push_str(&format!("      {k}: {}\n", json(v)));
            }
        }
        text.push_str("  lifetime:\n    ttlSeconds: 300\n  filesystem:\n    rootfs: host\n");
        text.push_str(authority);
        let path = self.path().join(format!("{id}.yaml"));
        std::fs::write(&path, text).expect("write spec");
        path
    }

    /// `cellos run SPEC ARGS` with the internet's dnsmasq as the upstream resolver.
    pub fn run(&self, net: &Internet, spec: &Path, args: &[&str]) -> Output {
        self.cellos()
            .arg("run")
            .arg(spec)
            .arg("--dns-upstream")
            .arg(net.dns().to_string())
            .args(args)
            .output()
            .expect("run cellos")
    }

    /// Runs a probe script in a cell `id` and returns what it printed. The script itself
    /// never fails (probes catch their errors), so the cell must exit 0.
    pub fn probe(
        &self,
        net: &Internet,
        id: &str,
        authority: &str,
        env: &[(&str, &str)],
        body: &str,
    ) -> Probes {
        self.probe_with_args(net, id, authority, env, body, &[])
    }

    /// [`Cells::probe`] with more `cellos run` arguments.
    pub fn probe_with_args(
        &self,
        net: &Internet,
        id: &str,
        authority: &str,
        env: &[(&str, &str)],
        body: &str,
        args: &[&str],
    ) -> Probes {
        let script = script(net, body);
        let spec = self.spec(id, &["/usr/bin/python3", "-c", &script], env, authority);
        let out = self.run(net, &spec, args);
        let probes = Probes::parse(&out);
        assert_eq!(
            out.status.code(),
            Some(0),
            "cell {id} failed\n{}",
            probes.transcript
        );
        probes
    }

    /// Every event of cell `id`.
    pub fn events(&self, id: &str) -> Events {
        let out = self
            .cellos()
            .args(["events", "--json", "--cell", id])
            .output()
            .expect("run cellos events");
        assert!(
            out.status.success(),
            "cellos events: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let subject = format!("urn:cellos:cell:{id}");
        Events(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).expect("event JSON"))
                .filter(|e| e["subject"] == subject.as_str())
                .collect(),
        )
    }

    /// `cellos verify` accepts the whole log (chain and signatures).
    pub fn assert_log_verifies(&self) {
        let out = self.cellos().arg("verify").output().expect("run verify");
        assert!(
            out.status.success(),
            "cellos verify: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The events of one cell, with lookups for the egress kinds.
pub struct Events(pub Vec<Value>);

impl Events {
    fn short(e: &Value) -> &str {
        e["type"]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches("dev.cellos.events.cell.")
    }

    fn summary(&self) -> String {
        self.0
            .iter()
            .map(|e| format!("{} {}", Self::short(e), e["data"]))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn of_type(&self, short: &str) -> Vec<&Value> {
        self.0.iter().filter(|e| Self::short(e) == short).collect()
    }

    /// The one `network.v1.enforced` event, with its ruleset hash.
    pub fn assert_network_enforced(&self) -> &Value {
        let enforced = self.of_type("network.v1.enforced");
        assert_eq!(
            enforced.len(),
            1,
            "one network.v1.enforced expected:\n{}",
            self.summary()
        );
        let hash = enforced[0]["data"]["rulesetSha256"].as_str().unwrap_or("");
        assert_eq!(hash.len(), 64, "ruleset hash: {}", enforced[0]["data"]);
        enforced[0]
    }

    /// The per-cell `network.v1.summary` counters written at destroy.
    pub fn network_summary(&self) -> &Value {
        let summary = self.of_type("network.v1.summary");
        assert_eq!(
            summary.len(),
            1,
            "one network.v1.summary expected:\n{}",
            self.summary()
        );
        &summary[0]["data"]
    }

    /// A `dns.v1.permitted` or `dns.v1.refused` event for `name`.
    pub fn assert_dns(&self, verdict: &str, name: &str) -> &Value {
        let short = format!("dns.v1.{verdict}");
        self.0
            .iter()
            .find(|e| {
                Self::short(e) == short
                    && e["data"]["name"].as_str().map(|n| n.trim_end_matches('.')) == Some(name)
            })
            .unwrap_or_else(|| panic!("no {short} event for {name}:\n{}", self.summary()))
    }

    /// `flow.v1.decided` events to `dst:port` over `protocol` with `decision` (allow/deny).
    pub fn flows(&self, decision: &str, dst: IpAddr, port: u16, protocol: &str) -> Vec<&Value> {
        self.of_type("flow.v1.decided")
            .into_iter()
            .filter(|e| {
                let d = &e["data"];
                d["decision"] == decision
                    && d["dst"].as_str().and_then(|s| s.parse::<IpAddr>().ok()) == Some(dst)
                    && d["port"] == port
                    && d["protocol"] == protocol
            })
            .collect()
    }

    /// At least one `flow.v1.decided` event to `dst:port` over `protocol` with `decision`.
    pub fn assert_flow(&self, decision: &str, dst: IpAddr, port: u16, protocol: &str) -> &Value {
        self.flows(decision, dst, port, protocol)
            .first()
            .copied()
            .unwrap_or_else(|| {
                panic!(
                    "no flow.v1.decided {decision} for {dst} port {port}/{protocol}:\n{}",
                    self.summary()
                )
            })
    }
}

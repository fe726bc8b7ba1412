//! The cell's nftables ruleset, generated from its spec as one table for one atomic load.
//!
//! Pure: spec in, [`crate::nftables::Table`] out, no processes. [`Ruleset`] holds the table
//! and its canonical text (the hash is over the text); [`crate::NftController`] loads the
//! table over netlink, and `nft -f` of the text loads the same (tests prove it).
//!
//! Layout of table `inet cellos` (inside the cell's network namespace, where the workload holds
//! no `CAP_NET_ADMIN` and so cannot change it):
//!
//! * chain `output`, policy drop, in this order: own loopback (by interface and by
//!   destination, which is how gate-redirected connections show up); IPv6 neighbour discovery
//!   (without it no IPv6 works on the veth); established/related flows;
//!   invalid packets (dropped, logged); the cell's DNS authority on port 53 (UDP and TCP);
//!   `explicit_v4/v6` — literal CIDR rules that lie inside a denied range, which is how a rule
//!   "names" one; `denied_v4/v6` — private, loopback, link-local, CGNAT, ULA, ... and the host's
//!   own addresses (rejected, logged); `wide_v4/v6` — the other literal CIDR rules;
//!   `pinned_v4/v6` — addresses the DNS authority resolved for allowed names, each element
//!   expiring with its DNS TTL (`flags timeout`); everything else rejected and logged. ICMP is
//!   only allowed as `related` (errors about allowed flows).
//! * chain `input`, policy drop: own loopback, IPv6 neighbour discovery and
//!   established/related only.
//! * chain `nat_output` (only when the L7 gate is used): TCP to port 80/443 that a hostname rule
//!   covers is redirected to the gate's port on the cell's loopback, where the gate's listener
//!   (bound inside the cell's namespace) reads SNI / Host and the original destination.
//!
//! Each set keys on `address . protocol . port` concatenations, so an allowed name is reachable
//! only on the ports and protocols its rules declare. Drops are logged to NFLOG group
//! [`PlanInputs::log_group`] with a prefix `cellos-deny <reason> ` and counted in named
//! counters (see [`COUNTERS`]) that [`crate::flowlog`] reads back.

use std::net::IpAddr;
use std::time::Duration;

use cellos_core::spec::{hostname_matches, Cidr, EgressProtocol, ExecutionCellSpec};
use sha2::{Digest, Sha256};

use crate::nftables::{
    Addr, BaseChain, BaseRuleset, CellPart, Chain, ChainKind, CtState, Dir, Element, ElementUpdate,
    Family, Hook, Icmpv6Type, IpVersion, Match, Policy, Priority, Reject, Rule, Set, SetKey, Stmt,
    Table, Verdict,
};
use crate::pin::Pin;
use crate::ranges::DeniedRanges;

/// Name of the table inside the cell's namespace.
pub const TABLE: &str = "cellos";
/// Family of [`TABLE`].
pub const FAMILY: &str = "inet";
/// Mechanism string for `network.v1.enforced`.
pub const MECHANISM: &str = "nftables inet table in cell netns";
/// Prefix of every NFLOG drop message (followed by the reason and a space).
pub const LOG_PREFIX: &str = "cellos-deny";
/// The output chain's deny rules jump to the chain [`REJECT_CHAIN`]. The packet never
/// leaves the cell either way; a TCP reset (other protocols: an administratively-prohibited
/// ICMP error) delivered to the cell's own socket makes a denied `connect` fail at once
/// instead of retrying SYNs for two minutes, so workloads fail fast and legibly. A reset is
/// used for TCP because an ICMP error arriving while `connect` still holds its socket is only
/// a soft error until the next retransmission. The chain's policy (anything no rule matched)
/// stays a silent drop.
/// Name of the chain the deny rules jump to.
pub const REJECT_CHAIN: &str = "reject_flow";

/// TCP ports whose hostname rules go through the L7 gate.
pub const GATED_PORTS: [u16; 2] = [80, 443];

/// Named counters of the table: (name, meaning).
pub const COUNTERS: &[(&str, &str)] = &[
    (
        "established_out",
        "packets of established/related flows leaving the cell",
    ),
    (
        "established_in",
        "packets of established/related flows entering the cell",
    ),
    ("allow_dns", "new flows to the cell's DNS authority"),
    ("allow_cidr", "new flows allowed by a literal CIDR rule"),
    ("allow_pinned", "new flows allowed to a DNS-pinned address"),
    ("deny_invalid", "invalid packets dropped"),
    (
        "deny_range",
        "new flows dropped because the destination is a denied range",
    ),
    (
        "deny_default",
        "new flows dropped because no rule allows them",
    ),
    (
        "deny_input",
        "unsolicited packets entering the cell dropped",
    ),
];

/// Transport protocol of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// The nftables / event spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl From<EgressProtocol> for Proto {
    fn from(p: EgressProtocol) -> Self {
        match p {
            EgressProtocol::Tcp => Proto::Tcp,
            EgressProtocol::Udp => Proto::Udp,
        }
    }
}

/// A hostname egress rule: `pattern` (literal or `*.`), reachable on `port`/`proto`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRule {
    pub pattern: String,
    pub port: u16,
    pub proto: Proto,
}

/// A literal CIDR egress rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CidrRule {
    pub cidr: Cidr,
    pub port: u16,
    pub proto: Proto,
}

/// What the host side decides for a cell, besides its spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanInputs {
    /// Address of the cell's DNS authority (the host end of the veth, e.g. `10.x.y.1`).
    pub dns_server: IpAddr,
    /// Port of the L7 gate's listener inside the cell's namespace; `None` pins hostname rules on
    /// 80/443 at the IP level only.
    pub l7_gate_port: Option<u16>,
    /// The host's own addresses, denied unless a rule names them.
    pub host_addresses: Vec<IpAddr>,
    /// NFLOG group drops are logged to.
    pub log_group: u16,
}

/// Why a spec's egress section cannot be turned into a ruleset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "authority.egressRules[{index}]: port {port} is not 1..=65535; use a TCP/UDP port number"
    )]
    Port { index: usize, port: u32 },
    #[error("authority.egressRules[{index}]: set exactly one of `host` or `cidr`")]
    HostOrCidr { index: usize },
    #[error("authority.egressRules[{index}].cidr: {reason}")]
    Cidr { index: usize, reason: String },
    #[error("authority.egressRules[{index}].host: {reason}")]
    Host { index: usize, reason: String },
    #[error("authority.dnsAuthority.hostnameAllowlist[{index}]: {reason}")]
    Allowlist { index: usize, reason: String },
}

/// A cell's egress decisions, from which the ruleset, the DNS allow-list, the gate policy and
/// the pin commands are all derived, so they cannot disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressPlan {
    inputs: PlanInputs,
    denied: DeniedRanges,
    host_rules: Vec<HostRule>,
    explicit: Vec<CidrRule>,
    wide: Vec<CidrRule>,
    dns_allowlist: Vec<String>,
}

impl EgressPlan {
    /// Builds the plan from `spec.authority`. Every rule is checked again here (the validator
    /// already did) because a bad rule must never turn into a bad ruleset.
    pub fn from_spec(spec: &ExecutionCellSpec, inputs: PlanInputs) -> Result<Self, PlanError> {
        let denied = DeniedRanges::defaults().with_host_addresses(&inputs.host_addresses);
        let mut host_rules = Vec::new();
        let mut explicit = Vec::new();
        let mut wide = Vec::new();
        for (index, rule) in spec.authority.egress_rules.iter().enumerate() {
            let port =
                u16::try_from(rule.port)
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or(PlanError::Port {
                        index,
                        port: rule.port,
                    })?;
            let proto = Proto::from(rule.protocol);
            match (&rule.host, &rule.cidr) {
                (Some(host), None) => {
                    cellos_core::spec::check_hostname_pattern(host)
                        .map_err(|reason| PlanError::Host { index, reason })?;
                    host_rules.push(HostRule {
                        pattern: crate::pin::normalize(host),
                        port,
                        proto,
                    });
                }
                (None, Some(text)) => {
                    let cidr = Cidr::parse(text).map_err(|e| PlanError::Cidr {
                        index,
                        reason: e.to_string(),
                    })?;
                    let rule = CidrRule { cidr, port, proto };
                    if denied.names_denied_range(&cidr) {
                        explicit.push(rule);
                    } else {
                        wide.push(rule);
                    }
                }
                _ => return Err(PlanError::HostOrCidr { index }),
            }
        }
        let mut dns_allowlist = Vec::new();
        if let Some(dns) = &spec.authority.dns_authority {
            for (index, pattern) in dns.hostname_allowlist.iter().enumerate() {
                cellos_core::spec::check_hostname_pattern(pattern)
                    .map_err(|reason| PlanError::Allowlist { index, reason })?;
                dns_allowlist.push(crate::pin::normalize(pattern));
            }
        }
        for rule in &host_rules {
            dns_allowlist.push(rule.pattern.clone());
        }
        dns_allowlist.sort();
        dns_allowlist.dedup();
        Ok(Self {
            inputs,
            denied,
            host_rules,
            explicit,
            wide,
            dns_allowlist,
        })
    }

    pub fn inputs(&self) -> &PlanInputs {
        &self.inputs
    }

    /// The denied ranges (defaults plus the host's addresses).
    pub fn denied(&self) -> &DeniedRanges {
        &self.denied
    }

    /// Names the DNS authority resolves: the allow-list plus every hostname rule.
    pub fn dns_allowlist(&self) -> &[String] {
        &self.dns_allowlist
    }

    /// Literal CIDR rules that open part of a denied range; DNS answers inside them are kept.
    pub fn explicit_cidrs(&self) -> Vec<Cidr> {
        self.explicit.iter().map(|r| r.cidr).collect()
    }

    pub fn host_rules(&self) -> &[HostRule] {
        &self.host_rules
    }

    /// Hostname rules for `network.v1.enforced`'s `allowedHosts` (`pattern:port/proto`).
    pub fn allowed_hosts(&self) -> Vec<String> {
        self.host_rules
            .iter()
            .map(|r| format!("{}:{}/{}", r.pattern, r.port, r.proto.as_str()))
            .collect()
    }

    /// Is this hostname rule enforced by the L7 gate rather than by address pins?
    fn gated(&self, rule: &HostRule) -> bool {
        self.inputs.l7_gate_port.is_some()
            && rule.proto == Proto::Tcp
            && GATED_PORTS.contains(&rule.port)
    }

    /// The L7 gate's policy: (hostname pattern, original port) of every gated rule.
    pub fn gate_policy(&self) -> Vec<(String, u16)> {
        self.host_rules
            .iter()
            .filter(|r| self.gated(r))
            .map(|r| (r.pattern.clone(), r.port))
            .collect()
    }

    /// The (port, protocol) pairs a resolved address of `name` becomes reachable on directly.
    /// Gated rules are absent: their traffic reaches the gate, never the address.
    pub fn pin_targets(&self, name: &str) -> Vec<(u16, Proto)> {
        let mut targets: Vec<(u16, Proto)> = self
            .host_rules
            .iter()
            .filter(|r| !self.gated(r) && hostname_matches(&r.pattern, name))
            .map(|r| (r.port, r.proto))
            .collect();
        targets.sort();
        targets.dedup();
        targets
    }

    /// Element updates that make every pin reachable on its rule's ports, one per address
    /// family that has any; empty when no pin has a directly reachable port.
    pub fn pin_updates(&self, pins: &[Pin]) -> Vec<ElementUpdate> {
        [(IpVersion::V4, "pinned_v4"), (IpVersion::V6, "pinned_v6")]
            .into_iter()
            .filter_map(|(version, set)| {
                let refresh: Vec<Element> = pins
                    .iter()
                    .filter(|p| IpVersion::of(p.ip) == version)
                    .flat_map(|p| {
                        self.pin_targets(&p.name)
                            .into_iter()
                            .map(|(port, proto)| pin_element(p.ip, port, proto, p.ttl))
                    })
                    .collect();
                (!refresh.is_empty()).then(|| ElementUpdate {
                    family: Family::Inet,
                    table: TABLE.to_owned(),
                    set: set.to_owned(),
                    key: SetKey::AddrProtoPort(version),
                    refresh,
                })
            })
            .collect()
    }

    /// The `nft` text of [`EgressPlan::pin_updates`] (what `nft -f` would apply for them).
    pub fn pin_script(&self, pins: &[Pin]) -> String {
        self.pin_updates(pins)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// The whole ruleset as one table, loaded in one transaction.
    pub fn render(&self) -> Ruleset {
        let (denied_v4, denied_v6): (Vec<Cidr>, Vec<Cidr>) = self
            .denied
            .ranges()
            .iter()
            .partition(|c| c.network().is_ipv4());
        let mut sets = vec![
            addr_set("denied_v4", IpVersion::V4, &denied_v4),
            addr_set("denied_v6", IpVersion::V6, &denied_v6),
        ];
        for (name, rules) in [("explicit", &self.explicit), ("wide", &self.wide)] {
            for version in [IpVersion::V4, IpVersion::V6] {
                let elements = rules
                    .iter()
                    .filter(|r| IpVersion::of(r.cidr.network()) == version)
                    .map(|r| Element {
                        addr: Addr::from(r.cidr),
                        proto_port: Some((r.proto, r.port)),
                        timeout: None,
                    })
                    .collect();
                sets.push(dest_set(
                    &format!("{name}_{}", suffix(version)),
                    version,
                    true,
                    elements,
                ));
            }
        }
        for version in [IpVersion::V4, IpVersion::V6] {
            sets.push(dest_set(
                &format!("pinned_{}", suffix(version)),
                version,
                false,
                Vec::new(),
            ));
        }
        let mut chains = vec![self.output_chain(), reject_chain(), self.input_chain()];
        chains.extend(self.nat_chain());
        let table = Table {
            family: Family::Inet,
            name: TABLE.to_owned(),
            // Loaded once into the cell's fresh namespace: nothing to replace, and a replace
            // (a deletion in the same commit) would leave destroy work that closing the
            // socket then waits an RCU grace period for.
            replace: false,
            counters: COUNTERS.iter().map(|(n, _)| (*n).to_owned()).collect(),
            sets,
            chains,
        };
        Ruleset::new(table)
    }

    fn log(&self, reason: &str) -> Stmt {
        Stmt::Log {
            prefix: format!("{LOG_PREFIX} {reason} "),
            group: self.inputs.log_group,
        }
    }

    /// Output: own traffic, then the destination decisions (see the module doc for order).
    fn output_chain(&self) -> Chain {
        let reject = || Stmt::Verdict(Verdict::Jump(REJECT_CHAIN.to_owned()));
        let mut rules = self.output_local_rules();
        for set in ["explicit_v4", "explicit_v6"] {
            rules.push(rule([dest_in(set), counter("allow_cidr"), accept()]));
        }
        for version in [IpVersion::V4, IpVersion::V6] {
            rules.push(rule([
                Stmt::Match(Match::AddrIn {
                    version,
                    set: format!("denied_{}", suffix(version)),
                }),
                counter("deny_range"),
                self.log("range"),
                reject(),
            ]));
        }
        for set in ["wide_v4", "wide_v6"] {
            rules.push(rule([dest_in(set), counter("allow_cidr"), accept()]));
        }
        for set in ["pinned_v4", "pinned_v6"] {
            rules.push(rule([dest_in(set), counter("allow_pinned"), accept()]));
        }
        rules.push(rule([
            counter("deny_default"),
            self.log("default"),
            reject(),
        ]));
        base_chain(
            "output",
            ChainKind::Filter,
            Hook::Output,
            Priority::Filter,
            Policy::Drop,
            rules,
        )
    }

    /// Loopback, neighbour discovery, established flows, invalid packets and DNS.
    fn output_local_rules(&self) -> Vec<Rule> {
        let mut rules = loopback_rules(Dir::Out, Verdict::Accept);
        rules.extend([
            // IPv6 does not work at all without neighbour discovery on the cell's link.
            rule([
                icmpv6(&[
                    Icmpv6Type::NdNeighborSolicit,
                    Icmpv6Type::NdNeighborAdvert,
                    Icmpv6Type::NdRouterSolicit,
                ]),
                accept(),
            ]),
            // Multicast listener reports are the kernel's own chatter when a link comes up,
            // not an attempt of the workload: dropped without a log entry.
            rule([
                icmpv6(&[
                    Icmpv6Type::MldListenerReport,
                    Icmpv6Type::Mld2ListenerReport,
                    Icmpv6Type::MldListenerDone,
                ]),
                Stmt::Verdict(Verdict::Drop),
            ]),
            rule([established(), counter("established_out"), accept()]),
            rule([
                Stmt::Match(Match::CtState(vec![CtState::Invalid])),
                counter("deny_invalid"),
                self.log("invalid"),
                Stmt::Verdict(Verdict::Drop),
            ]),
            rule([
                Stmt::Match(Match::Addr {
                    dir: Dir::Out,
                    addr: Addr::Host(self.inputs.dns_server),
                }),
                Stmt::Match(Match::L4Proto(vec![Proto::Tcp, Proto::Udp])),
                Stmt::Match(Match::ThDport(53)),
                counter("allow_dns"),
                accept(),
            ]),
        ]);
        rules
    }

    fn input_chain(&self) -> Chain {
        let rules = vec![
            rule([Stmt::Match(Match::Loopback(Dir::In)), accept()]),
            rule([
                icmpv6(&[
                    Icmpv6Type::NdNeighborSolicit,
                    Icmpv6Type::NdNeighborAdvert,
                    Icmpv6Type::NdRouterAdvert,
                ]),
                accept(),
            ]),
            rule([established(), counter("established_in"), accept()]),
            rule([
                counter("deny_input"),
                self.log("input"),
                Stmt::Verdict(Verdict::Drop),
            ]),
        ];
        base_chain(
            "input",
            ChainKind::Filter,
            Hook::Input,
            Priority::Filter,
            Policy::Drop,
            rules,
        )
    }

    /// TCP to a gated port goes to the gate, unless a literal CIDR rule allows it directly.
    fn nat_chain(&self) -> Option<Chain> {
        let gate = self.inputs.l7_gate_port?;
        let mut ports: Vec<u16> = self.gate_policy().into_iter().map(|(_, p)| p).collect();
        ports.sort_unstable();
        ports.dedup();
        if ports.is_empty() {
            return None;
        }
        let mut rules = vec![
            rule([loopback_addr(IpVersion::V4), Stmt::Verdict(Verdict::Return)]),
            rule([loopback_addr(IpVersion::V6), Stmt::Verdict(Verdict::Return)]),
        ];
        for set in ["explicit_v4", "explicit_v6", "wide_v4", "wide_v6"] {
            rules.push(rule([dest_in(set), Stmt::Verdict(Verdict::Return)]));
        }
        rules.push(rule([
            Stmt::Match(Match::TcpDport(ports)),
            Stmt::Redirect(gate),
        ]));
        Some(base_chain(
            "nat_output",
            ChainKind::Nat,
            Hook::Output,
            Priority::Value(-100),
            Policy::Accept,
            rules,
        ))
    }
}

fn suffix(v: IpVersion) -> &'static str {
    match v {
        IpVersion::V4 => "v4",
        IpVersion::V6 => "v6",
    }
}

fn rule<const N: usize>(stmts: [Stmt; N]) -> Rule {
    Rule(stmts.into())
}

fn accept() -> Stmt {
    Stmt::Verdict(Verdict::Accept)
}

fn counter(name: &str) -> Stmt {
    Stmt::Counter(name.to_owned())
}

fn established() -> Stmt {
    Stmt::Match(Match::CtState(vec![CtState::Established, CtState::Related]))
}

fn icmpv6(types: &[Icmpv6Type]) -> Stmt {
    Stmt::Match(Match::Icmpv6Type(types.to_vec()))
}

fn dest_in(set: &str) -> Stmt {
    let version = if set.ends_with("v4") {
        IpVersion::V4
    } else {
        IpVersion::V6
    };
    Stmt::Match(Match::DestIn {
        version,
        set: set.to_owned(),
    })
}

/// `ip daddr 127.0.0.0/8` / `ip6 daddr ::1`.
fn loopback_addr(version: IpVersion) -> Stmt {
    let addr = match version {
        IpVersion::V4 => Addr::Net(std::net::Ipv4Addr::new(127, 0, 0, 0).into(), 8),
        IpVersion::V6 => Addr::Host(std::net::Ipv6Addr::LOCALHOST.into()),
    };
    Stmt::Match(Match::Addr {
        dir: Dir::Out,
        addr,
    })
}

/// Own loopback, by interface and by destination (connections redirected to the gate still
/// carry the original output interface; loopback destinations never leave the namespace).
fn loopback_rules(dir: Dir, verdict: Verdict) -> Vec<Rule> {
    vec![
        rule([
            Stmt::Match(Match::Loopback(dir)),
            Stmt::Verdict(verdict.clone()),
        ]),
        rule([loopback_addr(IpVersion::V4), Stmt::Verdict(verdict.clone())]),
        rule([loopback_addr(IpVersion::V6), Stmt::Verdict(verdict)]),
    ]
}

fn reject_chain() -> Chain {
    Chain {
        name: REJECT_CHAIN.to_owned(),
        base: None,
        rules: vec![
            rule([
                Stmt::Match(Match::L4Proto(vec![Proto::Tcp])),
                Stmt::Reject(Reject::TcpReset),
            ]),
            rule([Stmt::Reject(Reject::IcmpxAdminProhibited)]),
        ],
    }
}

fn base_chain(
    name: &str,
    kind: ChainKind,
    hook: Hook,
    priority: Priority,
    policy: Policy,
    rules: Vec<Rule>,
) -> Chain {
    Chain {
        name: name.to_owned(),
        base: Some(BaseChain {
            kind,
            hook,
            priority,
            policy,
        }),
        rules,
    }
}

/// Set of plain address ranges.
fn addr_set(name: &str, version: IpVersion, cidrs: &[Cidr]) -> Set {
    Set {
        name: name.to_owned(),
        key: SetKey::Addr(version),
        interval: true,
        timeout: false,
        elements: cidrs
            .iter()
            .map(|c| Element {
                addr: Addr::from(*c),
                proto_port: None,
                timeout: None,
            })
            .collect(),
    }
}

/// Set of `address . protocol . port` elements: ranges (`interval`) or expiring pins.
fn dest_set(name: &str, version: IpVersion, interval: bool, elements: Vec<Element>) -> Set {
    Set {
        name: name.to_owned(),
        key: SetKey::AddrProtoPort(version),
        interval,
        timeout: !interval,
        elements,
    }
}

/// The pin element for `addr` on `port`/`proto`, expiring after `ttl` (at least one second,
/// nftables' granularity).
fn pin_element(addr: IpAddr, port: u16, proto: Proto, ttl: Duration) -> Element {
    Element {
        addr: Addr::Host(addr),
        proto_port: Some((proto, port)),
        timeout: Some(Duration::from_secs(ttl.as_secs().max(1))),
    }
}

/// A rendered ruleset: the table and its canonical text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    table: Table,
    text: String,
}

impl Ruleset {
    /// Wraps `table` with its canonical text.
    pub fn new(table: Table) -> Self {
        let text = table.to_string();
        Self { table, text }
    }

    /// The table, as loaded by [`crate::NftController::apply`].
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// The canonical `nft` text of [`Ruleset::table`] (what `nft -f` would load).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Hex SHA-256 of [`Ruleset::text`], for `network.v1.enforced`. A table loaded as
    /// [`Ruleset::base`] then [`Ruleset::per_cell`] is this table, so this stays the hash.
    pub fn sha256(&self) -> String {
        ruleset_sha256(&self.text)
    }

    /// The structure without set elements, to load ahead of time into a pooled namespace.
    pub fn base(&self) -> BaseRuleset {
        BaseRuleset::of(&self.table)
    }

    /// The set elements, to load into a ready [`Ruleset::base`] of the same key.
    pub fn per_cell(&self) -> CellPart {
        CellPart::of(&self.table)
    }
}

/// Hex SHA-256 of a ruleset script.
pub fn ruleset_sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn spec(authority_yaml: &str) -> ExecutionCellSpec {
        let text = format!(
            "apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec:\n  id: t1\n  run:\n    argv: [/bin/true]\n  authority:\n{authority_yaml}"
        );
        cellos_core::spec::parse_execution_cell(&text).unwrap().spec
    }

    fn inputs(gate: Option<u16>) -> PlanInputs {
        PlanInputs {
            dns_server: "10.77.0.1".parse().unwrap(),
            l7_gate_port: gate,
            host_addresses: vec!["198.51.100.7".parse().unwrap()],
            log_group: 7,
        }
    }

    const AUTHORITY: &str = "    egressRules:
      - { host: api.allowed.test, port: 443 }
      - { host: '*.cdn.test', port: 8443 }
      - { host: db.allowed.test, port: 5432 }
      - { host: quic.allowed.test, port: 443, protocol: udp }
      - { cidr: 10.1.0.0/16, port: 5432 }
      - { cidr: 203.0.113.0/24, port: 22 }
      - { cidr: '2001:db8::/32', port: 53, protocol: udp }
    dnsAuthority:
      hostnameAllowlist: [resolve-only.test]
";

    fn plan(gate: Option<u16>) -> EgressPlan {
        EgressPlan::from_spec(&spec(AUTHORITY), inputs(gate)).unwrap()
    }

    fn line_index(text: &str, needle: &str) -> usize {
        text.lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line contains {needle:?} in\n{text}"))
    }

    #[test]
    fn output_and_input_default_to_drop() {
        let text = plan(Some(15001)).render().text().to_owned();
        assert!(text.contains("type filter hook output priority filter; policy drop;"));
        assert!(text.contains("type filter hook input priority filter; policy drop;"));
        assert!(text.contains(
            "counter name \"deny_default\" log prefix \"cellos-deny default \" group 7 jump reject_flow"
        ));
        assert!(text.contains(
            "chain reject_flow {\n\t\tmeta l4proto tcp reject with tcp reset\n\t\treject with icmpx admin-prohibited\n\t}"
        ));
    }

    #[test]
    fn dns_only_to_the_cells_authority() {
        let text = plan(None).render().text().to_owned();
        assert!(text.contains(
            "ip daddr 10.77.0.1 meta l4proto { tcp, udp } th dport 53 counter name \"allow_dns\" accept"
        ));
        assert_eq!(text.matches("dport 53").count(), 1);
    }

    #[test]
    fn explicit_private_cidr_precedes_the_denied_ranges_and_wide_cidrs_follow_them() {
        let text = plan(None).render().text().to_owned();
        assert!(text.contains("elements = { 10.1.0.0/16 . tcp . 5432 }"));
        assert!(text.contains("elements = { 203.0.113.0/24 . tcp . 22 }"));
        assert!(text.contains("elements = { 2001:db8::/32 . udp . 53 }"));
        let explicit = line_index(&text, "@explicit_v4 counter");
        let denied = line_index(&text, "ip daddr @denied_v4");
        let wide = line_index(&text, "@wide_v4 counter");
        let pinned = line_index(&text, "@pinned_v4 counter");
        assert!(explicit < denied && denied < wide && wide < pinned);
    }

    #[test]
    fn denied_sets_hold_private_ranges_and_host_addresses() {
        let text = plan(None).render().text().to_owned();
        for r in [
            "10.0.0.0/8",
            "172.16.0.0/12",
            "100.64.0.0/10",
            "169.254.0.0/16",
            "198.51.100.7/32",
        ] {
            assert!(text.contains(r), "{r} missing");
        }
        for r in ["fc00::/7", "fe80::/10", "::1/128", "::ffff:0.0.0.0/96"] {
            assert!(text.contains(r), "{r} missing");
        }
    }

    #[test]
    fn pinned_sets_are_keyed_by_address_protocol_port_and_expire() {
        let text = plan(None).render().text().to_owned();
        assert!(text.contains(
            "set pinned_v4 {\n\t\ttype ipv4_addr . inet_proto . inet_service\n\t\tflags timeout\n\t}"
        ));
        assert!(text.contains("set pinned_v6 {\n\t\ttype ipv6_addr . inet_proto . inet_service"));
    }

    #[test]
    fn hostname_rules_on_80_443_tcp_are_redirected_to_the_gate() {
        let p = plan(Some(15001));
        let text = p.render().text().to_owned();
        assert!(text.contains("type nat hook output priority -100; policy accept;"));
        assert!(text.contains("tcp dport { 443 } redirect to :15001"));
        assert_eq!(p.gate_policy(), vec![("api.allowed.test".to_owned(), 443)]);
        // Gated traffic never reaches the address directly; other ports are pinned.
        assert!(p.pin_targets("api.allowed.test").is_empty());
        assert_eq!(p.pin_targets("db.allowed.test"), vec![(5432, Proto::Tcp)]);
        assert_eq!(p.pin_targets("quic.allowed.test"), vec![(443, Proto::Udp)]);
        assert_eq!(p.pin_targets("x.cdn.test"), vec![(8443, Proto::Tcp)]);
        assert!(p.pin_targets("cdn.test").is_empty());
    }

    #[test]
    fn without_a_gate_hostname_rules_are_pinned_and_nothing_is_redirected() {
        let p = plan(None);
        assert!(!p.render().text().contains("redirect"));
        assert_eq!(p.pin_targets("api.allowed.test"), vec![(443, Proto::Tcp)]);
    }

    #[test]
    fn dns_allowlist_merges_allowlist_and_host_rules() {
        let p = plan(None);
        assert_eq!(
            p.dns_allowlist(),
            [
                "*.cdn.test",
                "api.allowed.test",
                "db.allowed.test",
                "quic.allowed.test",
                "resolve-only.test"
            ]
        );
        assert!(p.pin_targets("resolve-only.test").is_empty());
    }

    #[test]
    fn pin_text_refreshes_the_timeout_atomically() {
        let p = plan(None);
        let pins = [
            Pin {
                name: "db.allowed.test".into(),
                ip: "203.0.113.10".parse().unwrap(),
                ttl: Duration::from_secs(300),
            },
            Pin {
                name: "quic.allowed.test".into(),
                ip: "2001:db8::1".parse().unwrap(),
                ttl: Duration::ZERO,
            },
        ];
        assert_eq!(
            p.pin_script(&pins),
            "add element inet cellos pinned_v4 { 203.0.113.10 . tcp . 5432 timeout 300s }\n\
             delete element inet cellos pinned_v4 { 203.0.113.10 . tcp . 5432 }\n\
             add element inet cellos pinned_v4 { 203.0.113.10 . tcp . 5432 timeout 300s }\n\
             add element inet cellos pinned_v6 { 2001:db8::1 . udp . 443 timeout 1s }\n\
             delete element inet cellos pinned_v6 { 2001:db8::1 . udp . 443 }\n\
             add element inet cellos pinned_v6 { 2001:db8::1 . udp . 443 timeout 1s }\n"
        );
        assert!(p.pin_updates(&pins[..0]).is_empty());
    }

    #[test]
    fn hash_is_the_sha256_of_the_text_and_changes_with_the_rules() {
        let a = plan(None).render();
        assert_eq!(a.sha256(), hex::encode(Sha256::digest(a.text().as_bytes())));
        assert_eq!(a.sha256(), plan(None).render().sha256());
        assert_ne!(a.sha256(), plan(Some(15001)).render().sha256());
    }

    #[test]
    fn bad_rules_are_errors_not_rulesets() {
        let bad_port = spec("    egressRules:\n      - { host: a.test, port: 70000 }\n");
        assert_eq!(
            EgressPlan::from_spec(&bad_port, inputs(None)),
            Err(PlanError::Port {
                index: 0,
                port: 70000
            })
        );
        let both = spec("    egressRules:\n      - { host: a.test, cidr: 10.0.0.0/8, port: 1 }\n");
        assert_eq!(
            EgressPlan::from_spec(&both, inputs(None)),
            Err(PlanError::HostOrCidr { index: 0 })
        );
        let bad_cidr = spec("    egressRules:\n      - { cidr: 10.0.0.1/8, port: 1 }\n");
        assert!(matches!(
            EgressPlan::from_spec(&bad_cidr, inputs(None)),
            Err(PlanError::Cidr { index: 0, .. })
        ));
    }
}

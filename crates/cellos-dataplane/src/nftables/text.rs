//! Canonical `nft` text of the model: what `nft -f` would load for the same table, and what
//! the ruleset's hash is computed over.

use std::fmt::{self, Display, Formatter, Write as _};

use super::model::*;

impl Display for Family {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Inet => "inet",
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
        })
    }
}

impl Display for Table {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let (fam, name) = (self.family, &self.name);
        if self.replace {
            // Create-then-delete-then-define replaces any previous table in one transaction.
            writeln!(f, "table {fam} {name}\ndelete table {fam} {name}")?;
        }
        writeln!(f, "table {fam} {name} {{")?;
        for counter in &self.counters {
            writeln!(f, "\tcounter {counter} {{ }}")?;
        }
        for set in &self.sets {
            write!(f, "{set}")?;
        }
        for chain in &self.chains {
            write!(f, "{chain}")?;
        }
        writeln!(f, "}}")
    }
}

impl Display for Set {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let ty = match self.key {
            SetKey::Addr(v) => addr_type(v).to_owned(),
            SetKey::AddrProtoPort(v) => format!("{} . inet_proto . inet_service", addr_type(v)),
        };
        writeln!(f, "\tset {} {{\n\t\ttype {ty}", self.name)?;
        let flags: Vec<&str> = [(self.interval, "interval"), (self.timeout, "timeout")]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect();
        if !flags.is_empty() {
            writeln!(f, "\t\tflags {}", flags.join(","))?;
        }
        if !self.elements.is_empty() {
            writeln!(f, "\t\telements = {{ {} }}", join(&self.elements, ", "))?;
        }
        writeln!(f, "\t}}")
    }
}

fn addr_type(v: IpVersion) -> &'static str {
    match v {
        IpVersion::V4 => "ipv4_addr",
        IpVersion::V6 => "ipv6_addr",
    }
}

impl Display for Addr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Host(ip) => write!(f, "{ip}"),
            Addr::Net(ip, prefix) => write!(f, "{ip}/{prefix}"),
        }
    }
}

impl Display for Element {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.addr)?;
        if let Some((proto, port)) = self.proto_port {
            write!(f, " . {} . {port}", proto.as_str())?;
        }
        if let Some(t) = self.timeout {
            write!(f, " timeout {}s", t.as_secs())?;
        }
        Ok(())
    }
}

impl Display for Chain {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(f, "\tchain {} {{", self.name)?;
        if let Some(b) = &self.base {
            writeln!(
                f,
                "\t\ttype {} hook {} priority {}; policy {};",
                b.kind, b.hook, b.priority, b.policy
            )?;
        }
        for rule in &self.rules {
            writeln!(f, "\t\t{rule}")?;
        }
        writeln!(f, "\t}}")
    }
}

impl Display for ChainKind {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChainKind::Filter => "filter",
            ChainKind::Nat => "nat",
        })
    }
}

impl Display for Hook {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
        })
    }
}

impl Display for Priority {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Priority::Filter => f.write_str("filter"),
            Priority::SrcNat => f.write_str("srcnat"),
            Priority::Value(v) => write!(f, "{v}"),
        }
    }
}

impl Display for Policy {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Policy::Accept => "accept",
            Policy::Drop => "drop",
        })
    }
}

impl Display for Rule {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(&join(&self.0, " "))
    }
}

impl Display for Stmt {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Stmt::Match(m) => write!(f, "{m}"),
            Stmt::Counter(name) => write!(f, "counter name \"{name}\""),
            Stmt::Log { prefix, group } => write!(f, "log prefix \"{prefix}\" group {group}"),
            Stmt::Reject(Reject::TcpReset) => f.write_str("reject with tcp reset"),
            Stmt::Reject(Reject::IcmpxAdminProhibited) => {
                f.write_str("reject with icmpx admin-prohibited")
            }
            Stmt::Redirect(port) => write!(f, "redirect to :{port}"),
            Stmt::Masquerade => f.write_str("masquerade"),
            Stmt::Verdict(Verdict::Accept) => f.write_str("accept"),
            Stmt::Verdict(Verdict::Drop) => f.write_str("drop"),
            Stmt::Verdict(Verdict::Return) => f.write_str("return"),
            Stmt::Verdict(Verdict::Jump(chain)) => write!(f, "jump {chain}"),
        }
    }
}

impl Display for Match {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Match::Loopback(dir) => write!(f, "{} \"lo\"", pick(*dir, "iif", "oif")),
            Match::IfName { dir, name, equal } => {
                let op = if *equal { "" } else { "!= " };
                write!(f, "{} {op}\"{name}\"", pick(*dir, "iifname", "oifname"))
            }
            Match::Addr { dir, addr } => write!(f, "{} {addr}", field(addr.version(), *dir)),
            Match::AddrIn { version, set } => {
                write!(f, "{} @{set}", field(*version, Dir::Out))
            }
            Match::DestIn { version, set } => write!(
                f,
                "{} . meta l4proto . th dport @{set}",
                field(*version, Dir::Out)
            ),
            Match::L4Proto(protos) => {
                let names: Vec<&str> = protos.iter().map(|p| p.as_str()).collect();
                match names.as_slice() {
                    [one] => write!(f, "meta l4proto {one}"),
                    many => write!(f, "meta l4proto {{ {} }}", many.join(", ")),
                }
            }
            Match::ThDport(port) => write!(f, "th dport {port}"),
            Match::TcpDport(ports) => write!(f, "tcp dport {{ {} }}", join(ports, ", ")),
            Match::Icmpv6Type(types) => write!(f, "icmpv6 type {{ {} }}", join(types, ", ")),
            Match::CtState(states) => write!(f, "ct state {}", join(states, ",")),
        }
    }
}

impl Display for Icmpv6Type {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Icmpv6Type::MldListenerReport => "mld-listener-report",
            Icmpv6Type::MldListenerDone => "mld-listener-done",
            Icmpv6Type::NdRouterSolicit => "nd-router-solicit",
            Icmpv6Type::NdRouterAdvert => "nd-router-advert",
            Icmpv6Type::NdNeighborSolicit => "nd-neighbor-solicit",
            Icmpv6Type::NdNeighborAdvert => "nd-neighbor-advert",
            Icmpv6Type::Mld2ListenerReport => "mld2-listener-report",
        })
    }
}

impl Display for CtState {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CtState::Invalid => "invalid",
            CtState::Established => "established",
            CtState::Related => "related",
        })
    }
}

impl Display for ElementUpdate {
    /// Adding an element that exists does not refresh its timeout, so the elements are added
    /// (ensuring they exist), deleted and added again: one transaction either way.
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let (fam, table, set) = (self.family, &self.table, &self.set);
        let bare: Vec<Element> = self
            .refresh
            .iter()
            .map(|e| Element {
                timeout: None,
                ..e.clone()
            })
            .collect();
        let (timed, bare) = (join(&self.refresh, ", "), join(&bare, ", "));
        writeln!(f, "add element {fam} {table} {set} {{ {timed} }}")?;
        writeln!(f, "delete element {fam} {table} {set} {{ {bare} }}")?;
        writeln!(f, "add element {fam} {table} {set} {{ {timed} }}")
    }
}

fn pick(dir: Dir, input: &'static str, output: &'static str) -> &'static str {
    match dir {
        Dir::In => input,
        Dir::Out => output,
    }
}

fn field(v: IpVersion, dir: Dir) -> &'static str {
    match (v, dir) {
        (IpVersion::V4, Dir::In) => "ip saddr",
        (IpVersion::V4, Dir::Out) => "ip daddr",
        (IpVersion::V6, Dir::In) => "ip6 saddr",
        (IpVersion::V6, Dir::Out) => "ip6 daddr",
    }
}

fn join<T: Display>(items: &[T], sep: &str) -> String {
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        let _ = write!(out, "{item}");
    }
    out
}

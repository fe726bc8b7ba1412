//! The per-cell table in the host's namespace: forwarding and NAT for one cell's veth only.
//!
//! Family `inet`, so one table covers both address families: the cell's own addresses may
//! leave through its veth and replies come back in; the cell reaches the host only for DNS
//! (port 53, TCP and UDP) on the host end of its link; its traffic is masqueraded out of
//! every other interface. With IPv6 the cell also needs neighbour discovery with the host end.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::nftables::{
    Addr, BaseChain, Chain, ChainKind, CtState, Dir, Family, Hook, Icmpv6Type, Match, Policy,
    Priority, Rule, Stmt, Table, Verdict,
};
use crate::ruleset::{Proto, Ruleset};

/// Family of every host table.
pub const HOST_TABLE_FAMILY: Family = Family::Inet;

/// One cell's host-side link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostTable {
    /// Table name (unique per cell, e.g. `cellos-host-<id>`).
    pub table: String,
    /// Host end of the cell's veth.
    pub veth: String,
    pub host_v4: Ipv4Addr,
    pub cell_v4: Ipv4Addr,
    pub host_v6: Option<Ipv6Addr>,
    pub cell_v6: Option<Ipv6Addr>,
}

impl HostTable {
    /// The table. It is created once per cell and never replaced: a leftover of the same name
    /// (a crashed supervisor's, before `cellos gc`) makes loading fail rather than be taken
    /// over, and no deletion enters the commit (its deferred destruction would make closing
    /// the socket wait an RCU grace period).
    pub fn render(&self) -> Ruleset {
        Ruleset::new(Table {
            family: HOST_TABLE_FAMILY,
            name: self.table.clone(),
            replace: false,
            counters: Vec::new(),
            sets: Vec::new(),
            chains: vec![self.forward(), self.input(), self.postrouting()],
        })
    }

    /// (cell, host) address pairs: IPv4, then IPv6 when the link has it.
    fn pairs(&self) -> Vec<(IpAddr, IpAddr)> {
        let mut pairs = vec![(self.cell_v4.into(), self.host_v4.into())];
        if let (Some(cell), Some(host)) = (self.cell_v6, self.host_v6) {
            pairs.push((cell.into(), host.into()));
        }
        pairs
    }

    fn veth(&self, dir: Dir, equal: bool) -> Stmt {
        Stmt::Match(Match::IfName {
            dir,
            name: self.veth.clone(),
            equal,
        })
    }

    fn forward(&self) -> Chain {
        let mut rules = Vec::new();
        for (cell, _) in self.pairs() {
            rules.push(Rule(vec![
                self.veth(Dir::In, true),
                addr(Dir::In, cell),
                verdict(Verdict::Accept),
            ]));
        }
        rules.push(Rule(vec![self.veth(Dir::In, true), verdict(Verdict::Drop)]));
        for (cell, _) in self.pairs() {
            rules.push(Rule(vec![
                self.veth(Dir::Out, true),
                addr(Dir::Out, cell),
                established(),
                verdict(Verdict::Accept),
            ]));
        }
        rules.push(Rule(vec![
            self.veth(Dir::Out, true),
            verdict(Verdict::Drop),
        ]));
        base(
            "forward",
            ChainKind::Filter,
            Hook::Forward,
            Priority::Filter,
            rules,
        )
    }

    fn input(&self) -> Chain {
        let mut rules = Vec::new();
        for (cell, host) in self.pairs() {
            rules.push(Rule(vec![
                self.veth(Dir::In, true),
                addr(Dir::In, cell),
                addr(Dir::Out, host),
                Stmt::Match(Match::L4Proto(vec![Proto::Tcp, Proto::Udp])),
                Stmt::Match(Match::ThDport(53)),
                verdict(Verdict::Accept),
            ]));
        }
        if self.cell_v6.is_some() && self.host_v6.is_some() {
            // Without neighbour discovery the cell cannot resolve the host end's address.
            rules.push(Rule(vec![
                self.veth(Dir::In, true),
                Stmt::Match(Match::Icmpv6Type(vec![
                    Icmpv6Type::NdNeighborSolicit,
                    Icmpv6Type::NdNeighborAdvert,
                ])),
                verdict(Verdict::Accept),
            ]));
        }
        rules.push(Rule(vec![
            self.veth(Dir::In, true),
            established(),
            verdict(Verdict::Accept),
        ]));
        rules.push(Rule(vec![self.veth(Dir::In, true), verdict(Verdict::Drop)]));
        base(
            "input",
            ChainKind::Filter,
            Hook::Input,
            Priority::Filter,
            rules,
        )
    }

    fn postrouting(&self) -> Chain {
        let rules = self
            .pairs()
            .into_iter()
            .map(|(cell, _)| {
                Rule(vec![
                    addr(Dir::In, cell),
                    self.veth(Dir::Out, false),
                    Stmt::Masquerade,
                ])
            })
            .collect();
        base(
            "postrouting",
            ChainKind::Nat,
            Hook::Postrouting,
            Priority::SrcNat,
            rules,
        )
    }
}

fn addr(dir: Dir, ip: IpAddr) -> Stmt {
    Stmt::Match(Match::Addr {
        dir,
        addr: Addr::Host(ip),
    })
}

fn verdict(v: Verdict) -> Stmt {
    Stmt::Verdict(v)
}

fn established() -> Stmt {
    Stmt::Match(Match::CtState(vec![CtState::Established, CtState::Related]))
}

fn base(name: &str, kind: ChainKind, hook: Hook, priority: Priority, rules: Vec<Rule>) -> Chain {
    Chain {
        name: name.to_owned(),
        base: Some(BaseChain {
            kind,
            hook,
            priority,
            policy: Policy::Accept,
        }),
        rules,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(v6: bool) -> HostTable {
        HostTable {
            table: "cellos-host-0123456789".into(),
            veth: "cv0123456789".into(),
            host_v4: "10.213.0.1".parse().unwrap(),
            cell_v4: "10.213.0.2".parse().unwrap(),
            host_v6: v6.then(|| "fd00:cafe::1".parse().unwrap()),
            cell_v6: v6.then(|| "fd00:cafe::2".parse().unwrap()),
        }
    }

    #[test]
    fn host_table_is_limited_to_the_cells_veth_and_address() {
        let t = table(false).render().text().to_owned();
        // Created once per cell, never replaced (a replace deletes, and a deletion commit leaves
        // work the socket's close waits for).
        assert!(t.starts_with("table inet cellos-host-0123456789 {"), "{t}");
        assert!(t.contains("iifname \"cv0123456789\" ip saddr 10.213.0.2 accept"));
        assert!(t.contains("ip saddr 10.213.0.2 oifname != \"cv0123456789\" masquerade"));
        assert!(t.contains("ip daddr 10.213.0.1 meta l4proto { tcp, udp } th dport 53 accept"));
        assert!(!t.contains("ip6"));
    }

    #[test]
    fn ipv6_adds_the_same_rules_for_the_cells_v6_address() {
        let t = table(true).render().text().to_owned();
        for needle in [
            "iifname \"cv0123456789\" ip6 saddr fd00:cafe::2 accept",
            "oifname \"cv0123456789\" ip6 daddr fd00:cafe::2 ct state established,related accept",
            "ip6 saddr fd00:cafe::2 ip6 daddr fd00:cafe::1 meta l4proto { tcp, udp } th dport 53 accept",
            "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept",
            "ip6 saddr fd00:cafe::2 oifname != \"cv0123456789\" masquerade",
        ] {
            assert!(t.contains(needle), "{needle:?} not in\n{t}");
        }
    }
}

//! Semantic rules of a `Formation`: every cell valid, names unique, and the authorisation
//! graph a tree rooted at the coordinator along which authority only narrows.

use std::collections::BTreeMap;

use super::cell::check_cell_spec;
use super::common::check_dns_label;
use crate::spec::cidr::Cidr;
use crate::spec::document::{AuthorityBundle, EgressRule, SecretDeliveryMode};
use crate::spec::formation::FormationSpec;
use crate::spec::hostname::hostname_pattern_covers;
use crate::spec::problem::Problems;

pub(crate) fn check_formation_spec(spec: &FormationSpec, p: &mut Problems) {
    if let Err(why) = check_dns_label(&spec.id) {
        p.push("spec.id", why);
    }
    // Index 0 is the coordinator; member i is node i + 1.
    let mut nodes: Vec<Node<'_>> = vec![Node {
        name: &spec.coordinator.name,
        at: "spec.coordinator".to_owned(),
        authority: &spec.coordinator.cell.authority,
        delivery: spec.coordinator.cell.secret_delivery(),
        cell_id: &spec.coordinator.cell.id,
    }];
    check_cell_spec(&spec.coordinator.cell, "spec.coordinator.cell", p);
    for (i, member) in spec.members.iter().enumerate() {
        let at = format!("spec.members[{i}]");
        check_cell_spec(&member.cell, &format!("{at}.cell"), p);
        nodes.push(Node {
            name: &member.name,
            at,
            authority: &member.cell.authority,
            delivery: member.cell.secret_delivery(),
            cell_id: &member.cell.id,
        });
    }

    let mut by_name: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_cell_id: BTreeMap<&str, usize> = BTreeMap::new();
    for (index, node) in nodes.iter().enumerate() {
        if let Err(why) = check_dns_label(node.name) {
            p.push(format!("{}.name", node.at), why);
        }
        match by_name.get(node.name) {
            Some(&first) => p.push(
                format!("{}.name", node.at),
                format!("duplicates the name of {}", nodes[first].at),
            ),
            None => {
                by_name.insert(node.name, index);
            }
        }
        match by_cell_id.get(node.cell_id) {
            Some(&first) => p.push(
                format!("{}.cell.id", node.at),
                format!("duplicates the cell id of {}", nodes[first].at),
            ),
            None => {
                by_cell_id.insert(node.cell_id, index);
            }
        }
    }

    // parent[i] for every member node whose authorizedBy resolves.
    let mut parent: Vec<Option<usize>> = vec![None; nodes.len()];
    for (i, member) in spec.members.iter().enumerate() {
        let at = format!("spec.members[{i}].authorizedBy");
        match by_name.get(member.authorized_by.as_str()) {
            None => p.push(
                at,
                format!(
                    "no coordinator or member is named {:?}",
                    member.authorized_by
                ),
            ),
            Some(&authorizer) if authorizer == i + 1 => {
                p.push(at, "a member cannot authorise itself")
            }
            Some(&authorizer) => parent[i + 1] = Some(authorizer),
        }
    }

    for node in 1..nodes.len() {
        if let Some(cycle) = cycle_through(node, &parent) {
            let names: Vec<&str> = cycle.iter().map(|&n| nodes[n].name).collect();
            p.push(
                format!("{}.authorizedBy", nodes[node].at),
                format!(
                    "is part of a cycle ({}); every chain must end at the coordinator",
                    names.join(" -> ")
                ),
            );
        }
        if let Some(authorizer) = parent[node] {
            check_narrows(&nodes[node], &nodes[authorizer], p);
        }
    }
}

struct Node<'a> {
    name: &'a str,
    at: String,
    authority: &'a AuthorityBundle,
    delivery: SecretDeliveryMode,
    cell_id: &'a str,
}

/// If following authorisers from `start` comes back to `start`, the nodes of that cycle.
fn cycle_through(start: usize, parent: &[Option<usize>]) -> Option<Vec<usize>> {
    let mut path = vec![start];
    let mut current = start;
    while let Some(next) = parent[current] {
        if next == start {
            path.push(start);
            return Some(path);
        }
        if path.contains(&next) {
            // A cycle further up that `start` only leads into; reported at its own members.
            return None;
        }
        path.push(next);
        current = next;
    }
    None
}

/// A member's authority must be a subset of its authoriser's.
fn check_narrows(member: &Node<'_>, authorizer: &Node<'_>, p: &mut Problems) {
    let at = format!("{}.cell.authority", member.at);
    let by = authorizer.name;
    for (i, name) in member.authority.secret_refs.iter().enumerate() {
        if !authorizer.authority.secret_refs.contains(name) {
            p.push(
                format!("{at}.secretRefs[{i}]"),
                format!("{name} is not held by its authoriser {by:?}"),
            );
        }
    }
    if member.delivery == SecretDeliveryMode::Env
        && authorizer.delivery == SecretDeliveryMode::File
        && !member.authority.secret_refs.is_empty()
    {
        p.push(
            format!("{}.cell.run.secretDelivery", member.at),
            format!("env delivery is wider than the file delivery of its authoriser {by:?}"),
        );
    }
    for (i, rule) in member.authority.egress_rules.iter().enumerate() {
        let covered = authorizer
            .authority
            .egress_rules
            .iter()
            .any(|granted| rule_covers(granted, rule));
        if !covered {
            p.push(
                format!("{at}.egressRules[{i}]"),
                format!("is not within any egress rule of its authoriser {by:?}"),
            );
        }
    }
    let granted_names: &[String] = authorizer
        .authority
        .dns_authority
        .as_ref()
        .map_or(&[], |dns| &dns.hostname_allowlist);
    if let Some(dns) = &member.authority.dns_authority {
        for (i, pattern) in dns.hostname_allowlist.iter().enumerate() {
            if !granted_names
                .iter()
                .any(|granted| hostname_pattern_covers(granted, pattern))
            {
                p.push(
                    format!("{at}.dnsAuthority.hostnameAllowlist[{i}]"),
                    format!(
                        "{pattern:?} is not covered by the DNS allow-list of its authoriser {by:?}"
                    ),
                );
            }
        }
    }
}

/// Same port and protocol, and a destination inside the granted one.
fn rule_covers(granted: &EgressRule, requested: &EgressRule) -> bool {
    if granted.port != requested.port || granted.protocol != requested.protocol {
        return false;
    }
    match (
        (&granted.host, &granted.cidr),
        (&requested.host, &requested.cidr),
    ) {
        ((Some(granted_host), None), (Some(requested_host), None)) => {
            hostname_pattern_covers(granted_host, requested_host)
        }
        ((None, Some(granted_cidr)), (None, Some(requested_cidr))) => {
            match (Cidr::parse(granted_cidr), Cidr::parse(requested_cidr)) {
                (Ok(g), Ok(r)) => g.contains(&r),
                _ => false,
            }
        }
        _ => false,
    }
}

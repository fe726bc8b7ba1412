//! Declared-authority admission: what a guest declares it uses must be a subset of what the spec
//! authorised.
//!
//! A guest can say anything about itself, so a declaration never grants anything. This check
//! only answers "is everything the guest claims to use inside what the spec allowed?"; each
//! element that is not is reported as an [`Excess`]. Matching fails closed: a destination the
//! check cannot relate to an authorised rule (a name against a CIDR rule, an IP against a name
//! rule, a path with `..`) counts as excess.

use core::net::IpAddr;
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::spec::{hostname_matches, Cidr, EgressProtocol, EgressRule, ExecutionCellSpec};

/// One connection the guest declares it makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeclaredEgress {
    /// A hostname or an IP address literal.
    pub destination: String,
    pub port: u32,
    #[serde(default)]
    pub protocol: EgressProtocol,
}

/// Everything a guest declares about its own use of authority.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeclaredSurface {
    #[serde(default)]
    pub egress: Vec<DeclaredEgress>,
    /// Names the guest says it resolved.
    #[serde(default)]
    pub dns_names: Vec<String>,
    /// Secret keys the guest says it read.
    #[serde(default)]
    pub secret_names: Vec<String>,
    /// Absolute paths inside the cell the guest says it writes.
    #[serde(default)]
    pub write_paths: Vec<String>,
}

/// What the spec authorised, in the shape the subset check needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorisedSurface {
    pub egress_rules: Vec<EgressRule>,
    /// Name patterns the cell may resolve: `dnsAuthority.hostnameAllowlist` plus the host of
    /// every egress rule (an egress rule for a name is useless unless the name resolves).
    pub dns_names: Vec<String>,
    pub secret_refs: BTreeSet<String>,
    /// The workspace target and the targets of read-write mounts.
    pub writable_paths: Vec<String>,
}

impl AuthorisedSurface {
    pub fn from_spec(spec: &ExecutionCellSpec) -> Self {
        let authority = &spec.authority;
        let mut dns_names: Vec<String> = authority
            .dns_authority
            .iter()
            .flat_map(|d| d.hostname_allowlist.iter().cloned())
            .collect();
        dns_names.extend(authority.egress_rules.iter().filter_map(|r| r.host.clone()));
        let mut writable_paths = Vec::new();
        if let Some(fs) = &spec.filesystem {
            if let Some(ws) = &fs.workspace {
                writable_paths.push(ws.target.clone());
            }
            writable_paths.extend(
                fs.mounts
                    .iter()
                    .filter(|m| !m.read_only)
                    .map(|m| m.target.clone()),
            );
        }
        AuthorisedSurface {
            egress_rules: authority.egress_rules.clone(),
            dns_names,
            secret_refs: authority.secret_refs.iter().cloned().collect(),
            writable_paths,
        }
    }
}

/// One declared element the spec did not authorise.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Excess {
    #[error("egress to {destination}:{port}/{protocol:?} is not covered by authority.egressRules")]
    Egress {
        destination: String,
        port: u32,
        protocol: EgressProtocol,
    },
    #[error("resolving {0:?} is not covered by authority.dnsAuthority.hostnameAllowlist or an egress rule host")]
    DnsName(String),
    #[error("secret {0:?} is not in authority.secretRefs")]
    Secret(String),
    #[error("writing {0:?} is outside the workspace and the read-write mounts")]
    WritePath(String),
}

/// Check that every element of `declared` is inside `authorised`; list every one that is not.
pub fn validate_declared_authority_surface(
    declared: &DeclaredSurface,
    authorised: &AuthorisedSurface,
) -> Result<(), Vec<Excess>> {
    let mut excess = Vec::new();
    for egress in &declared.egress {
        if !authorised
            .egress_rules
            .iter()
            .any(|rule| egress_rule_covers(rule, egress))
        {
            excess.push(Excess::Egress {
                destination: egress.destination.clone(),
                port: egress.port,
                protocol: egress.protocol,
            });
        }
    }
    for name in &declared.dns_names {
        if !authorised
            .dns_names
            .iter()
            .any(|pattern| hostname_matches(pattern, name))
        {
            excess.push(Excess::DnsName(name.clone()));
        }
    }
    for secret in &declared.secret_names {
        if !authorised.secret_refs.contains(secret) {
            excess.push(Excess::Secret(secret.clone()));
        }
    }
    for path in &declared.write_paths {
        if !authorised
            .writable_paths
            .iter()
            .any(|root| path_within(root, path))
        {
            excess.push(Excess::WritePath(path.clone()));
        }
    }
    if excess.is_empty() {
        Ok(())
    } else {
        Err(excess)
    }
}

fn egress_rule_covers(rule: &EgressRule, egress: &DeclaredEgress) -> bool {
    if rule.port != egress.port || rule.protocol != egress.protocol {
        return false;
    }
    match egress.destination.parse::<IpAddr>() {
        Ok(ip) => {
            let by_host = rule
                .host
                .as_deref()
                .and_then(|h| h.parse::<IpAddr>().ok())
                .is_some_and(|h| h == ip);
            let by_cidr = rule
                .cidr
                .as_deref()
                .is_some_and(|cidr| cidr_contains(cidr, ip));
            by_host || by_cidr
        }
        Err(_) => rule
            .host
            .as_deref()
            .is_some_and(|pattern| hostname_matches(pattern, &egress.destination)),
    }
}

/// `cidr` (or a bare address, as a single host) contains `ip`. A rule that does not parse
/// contains nothing (spec validation reports it; here it must simply not widen anything).
fn cidr_contains(cidr: &str, ip: IpAddr) -> bool {
    match (Cidr::parse(cidr), Cidr::parse(&ip.to_string())) {
        (Ok(network), Ok(host)) => network.contains(&host),
        _ => false,
    }
}

/// Path components of an absolute path, ignoring empty and `.` components; `None` when the
/// path is relative or contains `..` (containment could not be proven lexically).
fn components(path: &str) -> Option<Vec<&str>> {
    if !path.starts_with('/') {
        return None;
    }
    let mut out = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            p => out.push(p),
        }
    }
    Some(out)
}

/// `path` is `root` or below it, compared component-wise (`/work` does not contain `/workx`).
fn path_within(root: &str, path: &str) -> bool {
    match (components(root), components(path)) {
        (Some(root), Some(path)) => path.starts_with(&root),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_rules_contain_addresses_of_their_own_family_only() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(cidr_contains("10.0.0.0/8", ip("10.255.1.2")));
        assert!(!cidr_contains("10.0.0.0/8", ip("11.0.0.1")));
        assert!(cidr_contains("203.0.113.9", ip("203.0.113.9")));
        assert!(cidr_contains("2001:db8::/32", ip("2001:db8::1")));
        assert!(!cidr_contains("2001:db8::/32", ip("10.0.0.1")));
        assert!(!cidr_contains("garbage/8", ip("10.0.0.1")));
    }

    #[test]
    fn paths_are_contained_component_wise_and_dotdot_is_never_contained() {
        assert!(path_within("/work", "/work"));
        assert!(path_within("/work/", "/work/a/./b"));
        assert!(!path_within("/work", "/workx"));
        assert!(!path_within("/work", "/work/../etc"));
        assert!(!path_within("/work", "work/a"));
    }
}

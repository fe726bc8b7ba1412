//! Narrowing a profile: what a call asks for, checked against what the profile grants. A call
//! may ask for fewer egress destinations, a shorter TTL, lower limits or a shorter exec
//! timeout; anything more is a [`Widening`], which the caller is refused and the log records.

use cellos_core::policy::{AdmissionDecision, PolicyViolation, Verdict};
use cellos_core::spec::{
    hostname_pattern_covers, Cidr, DnsAuthority, EgressProtocol, EgressRule, ExecutionCellSpec,
    Lifetime, RunLimits,
};

use crate::args::{LimitsArg, NarrowArgs};
use crate::profile::Profile;

/// The rule name a widening is recorded under in the admission event.
pub const NARROW_ONLY_RULE: &str = "narrowOnly";

/// One thing a call asked for beyond its profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Widening {
    /// The argument, as the caller spelt it (`egress[1]`, `limits.memoryMaxBytes`).
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Widening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// An argument that is malformed (not a widening: nothing was asked for yet).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct BadNarrowing {
    pub field: String,
    pub message: String,
}

/// A cell's spec as a call asked for it, and what of it the profile does not grant.
#[derive(Debug, Clone)]
pub struct Narrowed {
    pub spec: ExecutionCellSpec,
    /// Empty when the call only narrowed.
    pub widenings: Vec<Widening>,
}

/// The spec of a new cell `id` of `profile` under `args`.
pub fn narrow(profile: &Profile, id: &str, args: &NarrowArgs) -> Result<Narrowed, BadNarrowing> {
    let mut spec = profile.template.clone();
    spec.id = id.to_owned();
    let mut widenings = Vec::new();
    if let Some(egress) = &args.egress {
        let rules = egress_rules(profile, egress, &mut widenings)?;
        narrow_egress(&mut spec, rules);
    }
    if let Some(ttl) = args.ttl_seconds {
        let granted = profile
            .template
            .lifetime
            .as_ref()
            .and_then(|l| l.ttl_seconds);
        bound("ttlSeconds", ttl, granted, " s", profile, &mut widenings);
        spec.lifetime
            .get_or_insert_with(Lifetime::default)
            .ttl_seconds = Some(ttl);
    }
    if let Some(limits) = &args.limits {
        spec.limits = Some(narrow_limits(profile, limits, &mut widenings));
    }
    Ok(Narrowed { spec, widenings })
}

/// An exec timeout within the profile: the asked one, or the profile's longest.
pub fn exec_timeout(
    profile_max_ms: u64,
    asked: Option<u64>,
    profile: &str,
) -> Result<u64, Widening> {
    match asked {
        Some(ms) if ms > profile_max_ms => Err(Widening {
            field: "timeoutMs".into(),
            message: format!(
                "{ms} exceeds the limit of profile {profile:?}, {profile_max_ms} ms; ask for \
                 {profile_max_ms} or less"
            ),
        }),
        Some(ms) => Ok(ms),
        None => Ok(profile_max_ms),
    }
}

/// The admission decision a refusal is recorded as.
pub fn denial(profile: &str, widenings: &[Widening]) -> AdmissionDecision {
    let pack_id = pack_id(profile);
    AdmissionDecision {
        verdict: Verdict::Deny,
        packs: vec![pack_id.clone()],
        violations: widenings
            .iter()
            .map(|w| PolicyViolation {
                pack_id: pack_id.clone(),
                rule: NARROW_ONLY_RULE.into(),
                path: w.field.clone(),
                message: w.message.clone(),
            })
            .collect(),
    }
}

/// How a profile is named where packs are (`mcp-profile:python`).
pub fn pack_id(profile: &str) -> String {
    format!("mcp-profile:{profile}")
}

fn bound(
    field: &str,
    asked: u64,
    granted: Option<u64>,
    unit: &str,
    profile: &Profile,
    widenings: &mut Vec<Widening>,
) {
    if let Some(granted) = granted {
        if asked > granted {
            widenings.push(Widening {
                field: field.to_owned(),
                message: format!(
                    "{asked}{unit} exceeds the limit of profile {:?}, {granted}{unit}; ask for \
                     {granted}{unit} or less",
                    profile.name
                ),
            });
        }
    }
}

fn narrow_limits(profile: &Profile, asked: &LimitsArg, widenings: &mut Vec<Widening>) -> RunLimits {
    let granted = profile.template.cell_limits();
    let mut limits = granted.clone();
    let fields = [
        (
            "limits.memoryMaxBytes",
            asked.memory_max_bytes,
            granted.memory_max_bytes,
            &mut limits.memory_max_bytes,
            " bytes",
        ),
        (
            "limits.pidsMax",
            asked.pids_max,
            granted.pids_max,
            &mut limits.pids_max,
            " processes",
        ),
        (
            "limits.cpuMillis",
            asked.cpu_millis,
            granted.cpu_millis,
            &mut limits.cpu_millis,
            " millicores",
        ),
    ];
    for (field, asked, granted, slot, unit) in fields {
        if let Some(asked) = asked {
            bound(field, asked, granted, unit, profile, widenings);
            *slot = Some(asked);
        }
    }
    limits
}

/// The requested `host:port` entries as rules, each checked against the profile's rules.
fn egress_rules(
    profile: &Profile,
    egress: &[String],
    widenings: &mut Vec<Widening>,
) -> Result<Vec<EgressRule>, BadNarrowing> {
    let granted = &profile.template.authority.egress_rules;
    let mut rules = Vec::new();
    for (i, entry) in egress.iter().enumerate() {
        let field = format!("egress[{i}]");
        let (host, port) = parse_entry(&field, entry)?;
        match covered(granted, &host, port) {
            Some(rule) => rules.push(rule),
            None => {
                widenings.push(Widening {
                    message: format!(
                        "{entry} is not in the egress of profile {:?} ({}); ask only for those",
                        profile.name,
                        describe_reach(granted)
                    ),
                    field,
                });
                // Kept in the refused spec, so the recorded denial shows what was asked.
                rules.push(asked_rule(&host, port));
            }
        }
    }
    Ok(rules)
}

fn parse_entry(field: &str, entry: &str) -> Result<(String, u16), BadNarrowing> {
    let bad = |message: &str| BadNarrowing {
        field: field.to_owned(),
        message: format!("{entry:?}: {message}"),
    };
    let (host, port) = entry
        .rsplit_once(':')
        .ok_or_else(|| bad("expected host:port, e.g. pypi.org:443"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| bad("the port must be a number from 1 to 65535"))?;
    if host.is_empty() {
        return Err(bad("the host is empty"));
    }
    Ok((host.trim_matches(['[', ']']).to_ascii_lowercase(), port))
}

/// `host:port` as a rule of its own.
fn asked_rule(host: &str, port: u16) -> EgressRule {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => EgressRule {
            host: None,
            cidr: Some(single_cidr(ip)),
            port: u32::from(port),
            protocol: EgressProtocol::Tcp,
        },
        Err(_) => EgressRule {
            host: Some(host.to_owned()),
            cidr: None,
            port: u32::from(port),
            protocol: EgressProtocol::Tcp,
        },
    }
}

fn single_cidr(ip: std::net::IpAddr) -> String {
    format!("{ip}/{}", if ip.is_ipv4() { 32 } else { 128 })
}

/// The narrowed rule for `host:port` if a granted TCP rule covers it.
fn covered(granted: &[EgressRule], host: &str, port: u16) -> Option<EgressRule> {
    let tcp = |r: &&EgressRule| r.port == u32::from(port) && r.protocol == EgressProtocol::Tcp;
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        let single = Cidr::parse(&single_cidr(ip)).ok()?;
        return granted
            .iter()
            .filter(tcp)
            .filter_map(|r| r.cidr.as_deref().and_then(|c| Cidr::parse(c).ok()))
            .any(|c| c.contains(&single))
            .then(|| asked_rule(host, port));
    }
    granted
        .iter()
        .filter(tcp)
        .any(|r| {
            r.host
                .as_deref()
                .is_some_and(|h| hostname_pattern_covers(h, host))
        })
        .then(|| asked_rule(host, port))
}

/// Replace the spec's egress with `rules`, and its DNS allow-list with their names.
fn narrow_egress(spec: &mut ExecutionCellSpec, rules: Vec<EgressRule>) {
    let mut names: Vec<String> = rules.iter().filter_map(|r| r.host.clone()).collect();
    names.sort();
    names.dedup();
    let authority = &mut spec.authority;
    authority.dns_authority = if names.is_empty() && rules.is_empty() {
        None
    } else {
        Some(DnsAuthority {
            hostname_allowlist: names,
        })
    };
    if rules.is_empty() {
        authority.dns_egress_justification = None;
    }
    authority.egress_rules = rules;
}

/// `host:port` of each rule (`cidr:port` for address rules), or `nothing` when there are none.
pub fn describe_reach(rules: &[EgressRule]) -> String {
    let reach = reach(rules);
    if reach.is_empty() {
        "no network".into()
    } else {
        reach.join(", ")
    }
}

/// Each rule as `host:port` or `cidr:port` (`/udp` appended for UDP).
pub fn reach(rules: &[EgressRule]) -> Vec<String> {
    rules
        .iter()
        .map(|r| {
            let dest = r.host.as_deref().or(r.cidr.as_deref()).unwrap_or("?");
            match r.protocol {
                EgressProtocol::Tcp => format!("{dest}:{}", r.port),
                EgressProtocol::Udp => format!("{dest}:{}/udp", r.port),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Profiles;

    fn web() -> Profile {
        let mut profile = Profiles::builtin()
            .expect("built-in profiles")
            .get("python")
            .expect("python")
            .clone();
        profile.name = "web".into();
        profile.template.authority.egress_rules = vec![
            asked_rule("*.example.org", 443),
            EgressRule {
                host: None,
                cidr: Some("192.0.2.0/24".into()),
                port: 8080,
                protocol: EgressProtocol::Tcp,
            },
        ];
        profile
    }

    fn egress(entries: &[&str]) -> NarrowArgs {
        NarrowArgs {
            egress: Some(entries.iter().map(|e| e.to_string()).collect()),
            ..NarrowArgs::default()
        }
    }

    #[test]
    fn a_covered_host_and_address_narrow_the_egress_and_the_dns_allow_list() {
        let narrowed = narrow(
            &web(),
            "c",
            &egress(&["a.example.org:443", "192.0.2.7:8080"]),
        )
        .expect("well formed");
        assert!(narrowed.widenings.is_empty(), "{:?}", narrowed.widenings);
        assert_eq!(
            reach(&narrowed.spec.authority.egress_rules),
            ["a.example.org:443", "192.0.2.7/32:8080"]
        );
        let dns = narrowed
            .spec
            .authority
            .dns_authority
            .expect("dns authority");
        assert_eq!(dns.hostname_allowlist, ["a.example.org"]);
    }

    #[test]
    fn another_port_host_or_address_is_a_widening_naming_its_entry() {
        let narrowed = narrow(
            &web(),
            "c",
            &egress(&["a.example.org:80", "example.org:443", "192.0.3.1:8080"]),
        )
        .expect("well formed");
        let fields: Vec<&str> = narrowed
            .widenings
            .iter()
            .map(|w| w.field.as_str())
            .collect();
        assert_eq!(fields, ["egress[0]", "egress[1]", "egress[2]"]);
        assert!(narrowed.widenings[0].message.contains("*.example.org:443"));
    }

    #[test]
    fn no_egress_means_no_network_at_all() {
        let narrowed = narrow(&web(), "c", &egress(&[])).expect("well formed");
        assert!(narrowed.spec.authority.egress_rules.is_empty());
        assert!(narrowed.spec.authority.dns_authority.is_none());
    }

    #[test]
    fn limits_may_go_down_not_up() {
        let args = NarrowArgs {
            ttl_seconds: Some(60),
            limits: Some(LimitsArg {
                memory_max_bytes: Some(1 << 30),
                pids_max: Some(10),
                cpu_millis: None,
            }),
            ..NarrowArgs::default()
        };
        let narrowed = narrow(&web(), "c", &args).expect("well formed");
        let fields: Vec<&str> = narrowed
            .widenings
            .iter()
            .map(|w| w.field.as_str())
            .collect();
        assert_eq!(fields, ["limits.memoryMaxBytes"]);
        assert_eq!(narrowed.spec.cell_limits().pids_max, Some(10));
        assert_eq!(narrowed.spec.lifetime.and_then(|l| l.ttl_seconds), Some(60));
    }

    #[test]
    fn a_malformed_entry_is_a_bad_argument_not_a_widening() {
        let err = narrow(&web(), "c", &egress(&["a.example.org"])).expect_err("malformed");
        assert_eq!(err.field, "egress[0]");
        assert!(narrow(&web(), "c", &egress(&["a.example.org:0"])).is_err());
    }

    #[test]
    fn an_exec_timeout_defaults_to_and_is_bounded_by_the_profile() {
        assert_eq!(exec_timeout(1000, None, "p"), Ok(1000));
        assert_eq!(exec_timeout(1000, Some(10), "p"), Ok(10));
        assert_eq!(
            exec_timeout(1000, Some(1001), "p").map_err(|w| w.field),
            Err("timeoutMs".to_string())
        );
    }
}

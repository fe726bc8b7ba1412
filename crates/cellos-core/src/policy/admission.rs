//! `admit`: a spec against policy packs, with every violation and the verdict.
//!
//! Total: it never fails, it only decides. Packs and spec are expected to have passed
//! validation; admission does not repeat structural checks. The only thing it reads is the
//! host paths a filesystem rule must resolve, through a [`PathResolver`].

use crate::spec::{
    hostname_pattern_covers, Enforcement, ExecutionCellSpec, PolicyPackDocument, PolicyRules,
    SecretDeliveryMode,
};

use super::filesystem::{HostPaths, PathResolver};
use super::{AdmissionDecision, PolicyViolation, Verdict};

/// Decides whether `spec` may run under `packs`.
///
/// - `Deny` when an enforcing pack (`enforcement: enforce` with at least one rule) is violated;
/// - `AuditOnly` when violations come only from audit packs, or when any pack has no rules at
///   all (an empty pack is a monitoring pack: the cell runs and the decision records it);
/// - `Admit` otherwise, including when no pack is given.
pub fn admit(spec: &ExecutionCellSpec, packs: &[PolicyPackDocument]) -> AdmissionDecision {
    admit_with(spec, packs, &HostPaths)
}

/// [`admit`], with host paths (mount sources, root directories) resolved by `resolver`.
pub fn admit_with(
    spec: &ExecutionCellSpec,
    packs: &[PolicyPackDocument],
    resolver: &dyn PathResolver,
) -> AdmissionDecision {
    let mut violations = Vec::new();
    let mut enforced_violation = false;
    let mut audit_only = false;
    for pack in packs {
        let rules = &pack.spec.rules;
        let found = check_rules(spec, &pack.spec.id, rules, resolver);
        let enforcing = pack.spec.enforcement == Enforcement::Enforce && !rules.is_empty();
        if rules.is_empty() {
            audit_only = true;
        }
        if !found.is_empty() {
            if enforcing {
                enforced_violation = true;
            } else {
                audit_only = true;
            }
        }
        violations.extend(found);
    }
    let verdict = if enforced_violation {
        Verdict::Deny
    } else if audit_only {
        Verdict::AuditOnly
    } else {
        Verdict::Admit
    };
    AdmissionDecision {
        verdict,
        packs: packs
            .iter()
            .map(|p| format!("{}@{}", p.spec.id, p.spec.version))
            .collect(),
        violations,
    }
}

/// Collects the violations of one pack's rules, in rule order.
pub(super) struct Checker<'a> {
    pack_id: &'a str,
    found: Vec<PolicyViolation>,
}

impl Checker<'_> {
    pub(super) fn violation(
        &mut self,
        rule: &str,
        path: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.found.push(PolicyViolation {
            pack_id: self.pack_id.to_owned(),
            rule: rule.to_owned(),
            path: path.into(),
            message: message.into(),
        });
    }

    /// A maximum is violated by a larger value and by no value (unset means unbounded).
    fn maximum(&mut self, rule: &str, path: &str, max: Option<u64>, actual: Option<u64>) {
        match (max, actual) {
            (Some(max), Some(actual)) if actual > max => {
                self.violation(rule, path, format!("{actual} exceeds the maximum {max}"))
            }
            (Some(max), None) => self.violation(
                rule,
                path,
                format!("must be set (at most {max}); unset means unbounded"),
            ),
            _ => {}
        }
    }
}

fn check_rules(
    spec: &ExecutionCellSpec,
    pack_id: &str,
    rules: &PolicyRules,
    resolver: &dyn PathResolver,
) -> Vec<PolicyViolation> {
    let mut c = Checker {
        pack_id,
        found: Vec::new(),
    };
    let limits = spec.cell_limits();
    let limits_at = spec.limits_path();
    let authority = &spec.authority;
    let allowlist: &[String] = authority
        .dns_authority
        .as_ref()
        .map_or(&[], |dns| &dns.hostname_allowlist);

    c.maximum(
        "maxTtlSeconds",
        "spec.lifetime.ttlSeconds",
        rules.max_ttl_seconds,
        spec.lifetime.as_ref().and_then(|l| l.ttl_seconds),
    );
    c.maximum(
        "maxTimeoutMs",
        "spec.run.timeoutMs",
        rules.max_timeout_ms,
        spec.timeout_ms(),
    );
    c.maximum(
        "maxMemoryBytes",
        &format!("{limits_at}.memoryMaxBytes"),
        rules.max_memory_bytes,
        limits.memory_max_bytes,
    );
    c.maximum(
        "maxCpuMillis",
        &format!("{limits_at}.cpuMillis"),
        rules.max_cpu_millis,
        limits.cpu_millis,
    );
    c.maximum(
        "maxPidsMax",
        &format!("{limits_at}.pidsMax"),
        rules.max_pids_max,
        limits.pids_max,
    );

    if rules.require_limits {
        if limits.memory_max_bytes.is_none() {
            c.violation(
                "requireLimits",
                format!("{limits_at}.memoryMaxBytes"),
                "must be set: this pack requires memory and pids limits",
            );
        }
        if limits.pids_max.is_none() {
            c.violation(
                "requireLimits",
                format!("{limits_at}.pidsMax"),
                "must be set: this pack requires memory and pids limits",
            );
        }
    }

    if rules.require_egress_declared
        && authority.egress_rules.is_empty()
        && authority.dns_authority.is_none()
    {
        c.violation(
            "requireEgressDeclared",
            "spec.authority",
            "must declare egressRules, or an explicit (possibly empty) dnsAuthority to state that the cell reaches nothing",
        );
    }

    if rules.forbid_egress {
        for i in 0..authority.egress_rules.len() {
            c.violation(
                "forbidEgress",
                format!("spec.authority.egressRules[{i}]"),
                "egress is forbidden by this pack",
            );
        }
        for i in 0..allowlist.len() {
            c.violation(
                "forbidEgress",
                format!("spec.authority.dnsAuthority.hostnameAllowlist[{i}]"),
                "egress is forbidden by this pack, DNS included",
            );
        }
    }

    if let Some(allowed) = &rules.allowed_egress_hosts {
        let covered = |pattern: &str| allowed.iter().any(|a| hostname_pattern_covers(a, pattern));
        for (i, rule) in authority.egress_rules.iter().enumerate() {
            match (&rule.host, &rule.cidr) {
                (Some(host), _) if !covered(host) => c.violation(
                    "allowedEgressHosts",
                    format!("spec.authority.egressRules[{i}].host"),
                    format!("{host:?} is not covered by allowedEgressHosts"),
                ),
                (None, Some(cidr)) => c.violation(
                    "allowedEgressHosts",
                    format!("spec.authority.egressRules[{i}].cidr"),
                    format!("{cidr:?}: this pack allows egress only to listed host names, not to CIDR blocks"),
                ),
                _ => {}
            }
        }
        for (i, pattern) in allowlist.iter().enumerate() {
            if !covered(pattern) {
                c.violation(
                    "allowedEgressHosts",
                    format!("spec.authority.dnsAuthority.hostnameAllowlist[{i}]"),
                    format!("{pattern:?} is not covered by allowedEgressHosts"),
                );
            }
        }
    }

    if let Some(allowed) = &rules.allowed_secret_refs {
        for (i, name) in authority.secret_refs.iter().enumerate() {
            if !allowed.contains(name) {
                c.violation(
                    "allowedSecretRefs",
                    format!("spec.authority.secretRefs[{i}]"),
                    format!("{name} is not in allowedSecretRefs"),
                );
            }
        }
        // Export credentials are host secrets too: a spec may only name the ones it may use.
        let targets = spec
            .export
            .iter()
            .flat_map(|e| e.targets.iter().enumerate());
        for (i, target) in targets {
            for (field, name) in target.credentials.iter().flat_map(|c| c.refs()) {
                if !allowed.iter().any(|a| a == name) {
                    c.violation(
                        "allowedSecretRefs",
                        format!("spec.export.targets[{i}].credentials.{field}"),
                        format!("{name} is not in allowedSecretRefs"),
                    );
                }
            }
        }
    }

    if rules.require_file_secret_delivery && spec.secret_delivery() == SecretDeliveryMode::Env {
        c.violation(
            "requireFileSecretDelivery",
            "spec.run.secretDelivery",
            "must be file: this pack keeps secrets out of the environment",
        );
    }

    if rules.require_dns_egress_justification {
        let reaches_names =
            authority.egress_rules.iter().any(|r| r.host.is_some()) || !allowlist.is_empty();
        let justified = authority
            .dns_egress_justification
            .as_deref()
            .is_some_and(|j| !j.trim().is_empty());
        if reaches_names && !justified {
            c.violation(
                "requireDnsEgressJustification",
                "spec.authority.dnsEgressJustification",
                "must say why the cell needs to reach hosts by name",
            );
        }
    }

    if let Some(min) = rules.min_landlock_abi {
        let asked = spec.landlock_min_abi();
        if asked < min {
            c.violation(
                "minLandlockAbi",
                "spec.filesystem.landlock.minAbi",
                format!(
                    "requires Landlock ABI {asked}{}, but this pack requires at least ABI {min}",
                    if asked == 0 {
                        " (Landlock optional)"
                    } else {
                        ""
                    }
                ),
            );
        }
    }

    super::filesystem::check(spec, rules, resolver, &mut c);
    c.found
}

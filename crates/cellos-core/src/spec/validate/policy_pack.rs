//! Semantic rules of a `PolicyPack`.

use super::cell::check_secret_name;
use super::common::{check_dns_label, check_text};
use crate::spec::hostname::check_hostname_pattern;
use crate::spec::landlock::HIGHEST_LANDLOCK_ABI;
use crate::spec::policy_pack::PolicyPackSpec;
use crate::spec::problem::Problems;

pub(crate) fn check_policy_pack_spec(spec: &PolicyPackSpec, p: &mut Problems) {
    if let Err(why) = check_dns_label(&spec.id) {
        p.push("spec.id", why);
    }
    if let Err(why) = check_text(&spec.version) {
        p.push("spec.version", why);
    }
    let rules = &spec.rules;
    let maxima = [
        ("maxTtlSeconds", rules.max_ttl_seconds),
        ("maxMemoryBytes", rules.max_memory_bytes),
        ("maxTimeoutMs", rules.max_timeout_ms),
        ("maxCpuMillis", rules.max_cpu_millis),
        ("maxPidsMax", rules.max_pids_max),
    ];
    for (name, value) in maxima {
        if value == Some(0) {
            p.push(
                format!("spec.rules.{name}"),
                "must be greater than 0 (no cell could ever be admitted)",
            );
        }
    }
    if let Some(min) = rules.min_landlock_abi {
        if min > HIGHEST_LANDLOCK_ABI {
            p.push(
                "spec.rules.minLandlockAbi",
                format!(
                    "Landlock ABI {min} is not supported: CellOS applies Landlock rights up to \
                     ABI {HIGHEST_LANDLOCK_ABI}, so no cell could be admitted; use 1 to \
                     {HIGHEST_LANDLOCK_ABI}"
                ),
            );
        }
    }
    if let Some(hosts) = &rules.allowed_egress_hosts {
        for (i, pattern) in hosts.iter().enumerate() {
            if let Err(why) = check_hostname_pattern(pattern) {
                p.push(format!("spec.rules.allowedEgressHosts[{i}]"), why);
            }
        }
        if rules.forbid_egress && !hosts.is_empty() {
            p.push(
                "spec.rules.allowedEgressHosts",
                "contradicts forbidEgress: true; remove one of them",
            );
        }
    }
    if let Some(names) = &rules.allowed_secret_refs {
        for (i, name) in names.iter().enumerate() {
            if let Err(why) = check_secret_name(name) {
                p.push(format!("spec.rules.allowedSecretRefs[{i}]"), why);
            }
        }
    }
}

//! Semantic rules of a `PolicyPack`.

use super::cell::check_secret_name;
use super::common::{check_absolute_path, check_dns_label, check_text};
use crate::spec::hostname::check_hostname_pattern;
use crate::spec::landlock::HIGHEST_LANDLOCK_ABI;
use crate::spec::policy_pack::{PolicyPackSpec, PolicyRules};
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
        ("maxWorkspaceBytes", rules.max_workspace_bytes),
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
    check_filesystem_rules(rules, p);
}

/// Prefixes are absolute paths and digests are `sha256:` digests, so that admission compares
/// like with like.
fn check_filesystem_rules(rules: &PolicyRules, p: &mut Problems) {
    for (i, rule) in rules.allowed_mount_sources.iter().flatten().enumerate() {
        check_absolute_path(
            &rule.prefix,
            &format!("spec.rules.allowedMountSources[{i}].prefix"),
            p,
        );
    }
    let Some(rootfs) = &rules.allowed_rootfs else {
        return;
    };
    for (list, name) in [
        (&rootfs.path_prefixes, "pathPrefixes"),
        (&rootfs.oci_stores, "ociStores"),
    ] {
        for (i, prefix) in list.iter().enumerate() {
            check_absolute_path(prefix, &format!("spec.rules.allowedRootfs.{name}[{i}]"), p);
        }
    }
    for (i, digest) in rootfs.oci_digests.iter().enumerate() {
        let hex = digest.strip_prefix("sha256:").unwrap_or_default();
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            p.push(
                format!("spec.rules.allowedRootfs.ociDigests[{i}]"),
                format!("{digest:?} is not a digest; write sha256: and 64 lowercase hex digits"),
            );
        }
    }
}

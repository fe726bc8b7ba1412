//! Semantic rules of an `AuthorizationPolicy`.

use std::collections::BTreeMap;

use super::common::{check_dns_label, check_text};
use crate::spec::authorization::AuthorizationPolicySpec;
use crate::spec::problem::Problems;

/// Longest subject name (`uid:4294967295` fits many times over).
const MAX_SUBJECT_LEN: usize = 128;

pub(crate) fn check_authorization_policy_spec(spec: &AuthorizationPolicySpec, p: &mut Problems) {
    if let Err(why) = check_dns_label(&spec.id) {
        p.push("spec.id", why);
    }
    if let Err(why) = check_text(&spec.version) {
        p.push("spec.version", why);
    }
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, grant) in spec.subjects.iter().enumerate() {
        let at = format!("spec.subjects[{i}]");
        if let Err(why) = check_subject_name(&grant.name) {
            p.push(format!("{at}.name"), why);
        }
        if let Some(first) = seen.insert(&grant.name, i) {
            p.push(
                format!("{at}.name"),
                format!("duplicates subjects[{first}]"),
            );
        }
        if let Some(tenant) = &grant.tenant {
            if let Err(why) = check_dns_label(tenant) {
                p.push(format!("{at}.tenant"), why);
            }
        }
        if grant.scopes.is_empty() {
            p.push(
                format!("{at}.scopes"),
                "grants nothing; give at least one scope or remove the subject",
            );
        }
        for (j, pack) in grant.policy_packs.iter().enumerate() {
            if let Err(why) = check_dns_label(pack) {
                p.push(format!("{at}.policyPacks[{j}]"), why);
            }
        }
        for (j, pool) in grant.allowed_pools.iter().enumerate() {
            if let Err(why) = check_dns_label(pool) {
                p.push(format!("{at}.allowedPools[{j}]"), why);
            }
        }
        let quotas = [
            (
                "concurrentCells",
                grant.quotas.concurrent_cells.map(u64::from),
            ),
            ("cellsPerHour", grant.quotas.cells_per_hour.map(u64::from)),
            ("memoryBytes", grant.quotas.memory_bytes),
        ];
        for (name, value) in quotas {
            if value == Some(0) {
                p.push(
                    format!("{at}.quotas.{name}"),
                    "must be greater than 0; remove the subject to deny it everything",
                );
            }
        }
    }
}

/// `uid:N`, or a name of letters, digits, `.`, `_`, `-` and `@` (token subjects).
pub fn check_subject_name(name: &str) -> Result<(), String> {
    if let Some(uid) = name.strip_prefix("uid:") {
        return uid
            .parse::<u32>()
            .map(drop)
            .map_err(|_| format!("{name:?}: after uid: comes a numeric user id"));
    }
    let fits = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@');
    if name.is_empty() || name.len() > MAX_SUBJECT_LEN || !name.chars().all(fits) {
        return Err(format!(
            "{name:?} is not a subject name: use 1 to {MAX_SUBJECT_LEN} letters, digits, \
             '.', '_', '-' or '@', or uid:N"
        ));
    }
    Ok(())
}

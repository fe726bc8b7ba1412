//! Hostname patterns: a literal DNS name, or one leading `*.` label meaning "any sub-name".
//!
//! The same rules serve egress rules, DNS allow-lists, policy packs and formation scope checks,
//! so they live in one place. Hand-written because the grammar is deliberately narrower than
//! general DNS (no `*` in the middle, no partial-label wildcards) and the crates that parse DNS
//! names accept more than a security allow-list should.

use std::net::IpAddr;

/// Longest DNS name in presentation form, without the trailing dot (RFC 1035).
const MAX_NAME_LEN: usize = 253;
/// Longest DNS label (RFC 1035).
const MAX_LABEL_LEN: usize = 63;

/// Checks a pattern (`api.example.com`, `*.example.com`); the error says what is wrong.
pub fn check_hostname_pattern(pattern: &str) -> Result<(), String> {
    match pattern.strip_prefix("*.") {
        Some(rest) => check_dns_name(rest).map_err(|why| format!("after the leading '*.': {why}")),
        None if pattern.contains('*') => Err(format!(
            "{pattern:?} has a misplaced '*'; a wildcard may only be the whole leading label, as in *.example.com"
        )),
        None => check_dns_name(pattern),
    }
}

/// Checks a literal DNS name: dot-separated labels of letters, digits and inner hyphens.
pub fn check_dns_name(name: &str) -> Result<(), String> {
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if bare.parse::<IpAddr>().is_ok() {
        return Err(format!(
            "{name:?} is an IP address, not a name; use a cidr rule such as {bare}/32 instead"
        ));
    }
    if bare.len() > MAX_NAME_LEN {
        return Err(format!("is longer than {MAX_NAME_LEN} characters"));
    }
    for label in bare.split('.') {
        check_label(label).map_err(|why| format!("{name:?}: {why}"))?;
    }
    Ok(())
}

fn check_label(label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err("has an empty label".to_owned());
    }
    if label.contains('*') {
        return Err(format!(
            "label {label:?} has a misplaced '*'; a wildcard may only be the whole leading label"
        ));
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(format!(
            "label {label:?} is longer than {MAX_LABEL_LEN} characters"
        ));
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(format!(
            "label {label:?} may only contain letters, digits and '-'"
        ));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(format!("label {label:?} must not start or end with '-'"));
    }
    Ok(())
}

/// Lower-cases and drops one trailing dot, so `API.Example.com.` and `api.example.com` compare equal.
fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Does `name` (a concrete DNS name) match `pattern`?
///
/// A literal pattern matches only itself. `*.example.com` matches every sub-name at any depth
/// (`a.example.com`, `a.b.example.com`) but never the apex `example.com`. Comparison is
/// case-insensitive and ignores one trailing dot on either side.
pub fn hostname_matches(pattern: &str, name: &str) -> bool {
    let name = normalize(name);
    if name.is_empty() {
        return false;
    }
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            let suffix = normalize(suffix);
            !suffix.is_empty()
                && name.len() > suffix.len() + 1
                && name.ends_with(&suffix)
                && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
        }
        None => normalize(pattern) == name,
    }
}

/// Does the `allowed` pattern cover everything the `requested` pattern can reach?
///
/// A literal covers only the same literal. `*.a.com` covers any name it matches and any
/// wildcard at or below itself (`*.a.com`, `*.x.a.com`), but not `a.com` or `*.com`.
pub fn hostname_pattern_covers(allowed: &str, requested: &str) -> bool {
    match (allowed.strip_prefix("*."), requested.strip_prefix("*.")) {
        (Some(allowed_suffix), Some(requested_suffix)) => {
            normalize(allowed_suffix) == normalize(requested_suffix)
                || hostname_matches(allowed, requested_suffix)
        }
        (None, Some(_)) => false,
        (_, None) => hostname_matches(allowed, requested),
    }
}

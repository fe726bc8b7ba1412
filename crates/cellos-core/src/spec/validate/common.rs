//! Checks shared by every document kind: header, metadata, names and paths.

use std::collections::BTreeMap;

use crate::spec::document::{Metadata, API_VERSION};
use crate::spec::paths::{absolute_path, cell_target};
use crate::spec::problem::Problems;

/// Longest free-text value we accept in ids, labels and names, to keep events bounded.
const MAX_TEXT_LEN: usize = 256;

pub(crate) fn check_header(api_version: &str, kind: &str, expected_kind: &str, p: &mut Problems) {
    if api_version != API_VERSION {
        p.push(
            "apiVersion",
            format!("must be {API_VERSION:?}, not {api_version:?}"),
        );
    }
    if kind != expected_kind {
        p.push("kind", format!("must be {expected_kind:?}, not {kind:?}"));
    }
}

pub(crate) fn check_metadata(metadata: &Metadata, p: &mut Problems) {
    if let Some(name) = &metadata.name {
        if let Err(why) = check_text(name) {
            p.push("metadata.name", why);
        }
    }
    check_string_map(&metadata.labels, "metadata.labels", p);
}

/// Keys like `team` or `example.com/owner`; values short free text.
pub(crate) fn check_string_map(map: &BTreeMap<String, String>, at: &str, p: &mut Problems) {
    for (key, value) in map {
        let key_ok = !key.is_empty()
            && key.len() <= MAX_TEXT_LEN
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
            && key
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric())
            && key
                .bytes()
                .last()
                .is_some_and(|b| b.is_ascii_alphanumeric());
        if !key_ok {
            p.push(
                format!("{at}[{key:?}]"),
                "key must start and end with a letter or digit and contain only letters, digits, '-', '_', '.' and '/'",
            );
        }
        if value.len() > MAX_TEXT_LEN || value.chars().any(char::is_control) {
            p.push(
                format!("{at}[{key:?}]"),
                format!("value must be at most {MAX_TEXT_LEN} bytes without control characters"),
            );
        }
    }
}

/// Non-empty, bounded, printable.
pub(crate) fn check_text(text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        Err("must not be empty".to_owned())
    } else if text.len() > MAX_TEXT_LEN {
        Err(format!("must be at most {MAX_TEXT_LEN} bytes"))
    } else if text.chars().any(char::is_control) {
        Err("must not contain control characters".to_owned())
    } else {
        Ok(())
    }
}

/// An id usable as a hostname label, cgroup name and file name at once.
pub(crate) fn check_dns_label(id: &str) -> Result<(), String> {
    let ok = (1..=63).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-')
        && !id.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{id:?} must be 1-63 lowercase letters, digits or '-', not starting or ending with '-'"
        ))
    }
}

/// A single path component: no '/', not '.' or '..', no NUL.
pub(crate) fn check_file_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("must not be empty".to_owned())
    } else if name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        Err(format!(
            "{name:?} must be a plain file name (no '/', NUL, '.' or '..')"
        ))
    } else if name.len() > 255 {
        Err("must be at most 255 bytes".to_owned())
    } else {
        Ok(())
    }
}

/// Absolute, without `..`, without NUL; returns whether the path passed.
pub(crate) fn check_absolute_path(path: &str, at: &str, p: &mut Problems) -> bool {
    match absolute_path(path) {
        Ok(_) => true,
        Err(why) => {
            p.push(at, why.to_string());
            false
        }
    }
}

/// Checks a mount-like target: absolute, not `/`, not inside a reserved tree.
pub(crate) fn check_target(target: &str, at: &str, p: &mut Problems) {
    if let Err(why) = cell_target(target) {
        p.push(at, why.to_string());
    }
}

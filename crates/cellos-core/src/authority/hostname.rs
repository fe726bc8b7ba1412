//! Host-name pattern matching for the declared-surface check.

/// `name` is covered by `pattern`: a literal name, or `*.suffix` covering every name strictly
/// below `suffix` (any depth) but never `suffix` itself. ASCII case and one trailing dot are
/// ignored; empty labels never match.
pub(crate) fn hostname_matches(pattern: &str, name: &str) -> bool {
    let (Some(pattern), Some(name)) = (normalise(pattern), normalise(name)) else {
        return false;
    };
    match pattern.strip_prefix("*.") {
        Some(suffix) => name
            .strip_suffix(suffix)
            .and_then(|head| head.strip_suffix('.'))
            .is_some_and(|head| !head.is_empty()),
        None => pattern == name,
    }
}

fn normalise(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    has_no_empty_label(&name).then_some(name)
}

fn has_no_empty_label(name: &str) -> bool {
    !name.is_empty() && name.split('.').all(|label| !label.is_empty())
}

#[cfg(test)]
mod tests {
    use super::hostname_matches;

    #[test]
    fn wildcard_covers_sub_names_only_never_the_apex() {
        assert!(hostname_matches("*.example.com", "a.example.com"));
        assert!(hostname_matches("*.example.com", "a.b.example.com"));
        assert!(!hostname_matches("*.example.com", "example.com"));
        assert!(!hostname_matches("*.example.com", "badexample.com"));
        assert!(!hostname_matches("*.example.com", ".example.com"));
    }

    #[test]
    fn literal_names_match_exactly_ignoring_case_and_trailing_dot() {
        assert!(hostname_matches("Api.Example.com", "api.example.com."));
        assert!(!hostname_matches("api.example.com", "api.example.com.evil"));
        assert!(!hostname_matches("", ""));
        assert!(!hostname_matches("*", "anything"));
    }
}

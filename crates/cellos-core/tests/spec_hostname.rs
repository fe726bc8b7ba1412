//! Hostname patterns: validity of wildcards, matching, and coverage between patterns.

use cellos_core::spec::{check_hostname_pattern, hostname_matches, hostname_pattern_covers};
use proptest::prelude::*;

#[test]
fn valid_patterns_are_names_or_one_leading_wildcard_label() {
    for ok in [
        "example.com",
        "api.example.com",
        "localhost",
        "Example.COM",
        "example.com.",
        "*.example.com",
        "*.a.b.example.com",
        "x-1.example.com",
    ] {
        assert_eq!(check_hostname_pattern(ok), Ok(()), "{ok}");
    }
}

#[test]
fn wildcards_anywhere_else_are_rejected() {
    for bad in [
        "*",
        "*.",
        "a.*.b",
        "*foo.bar",
        "foo*.bar",
        "*.*.example.com",
        "example.*",
        "**.example.com",
    ] {
        assert!(check_hostname_pattern(bad).is_err(), "{bad} accepted");
    }
}

#[test]
fn malformed_names_are_rejected() {
    let long_label = "a".repeat(64);
    let long_name = ["abcdefghij"; 26].join(".");
    for bad in [
        "",
        ".",
        "a..b",
        "-a.com",
        "a-.com",
        "a_b.com",
        "a b.com",
        long_label.as_str(),
        long_name.as_str(),
        "10.0.0.1",
        "::1",
    ] {
        assert!(check_hostname_pattern(bad).is_err(), "{bad:?} accepted");
    }
    let ip = check_hostname_pattern("192.0.2.1").unwrap_err();
    assert!(ip.contains("cidr"), "{ip}");
}

#[test]
fn a_wildcard_matches_sub_names_at_any_depth_but_not_the_apex() {
    assert!(hostname_matches("*.example.com", "a.example.com"));
    assert!(hostname_matches("*.example.com", "a.b.example.com"));
    assert!(!hostname_matches("*.example.com", "example.com"));
    assert!(!hostname_matches("*.example.com", "badexample.com"));
    assert!(!hostname_matches("*.example.com", "example.com.evil.net"));
    assert!(!hostname_matches("*.example.com", ".example.com"));
}

#[test]
fn matching_ignores_case_and_one_trailing_dot() {
    assert!(hostname_matches("API.Example.com", "api.example.COM."));
    assert!(hostname_matches("*.Example.com.", "WWW.example.com"));
    assert!(!hostname_matches("example.com", ""));
    assert!(!hostname_matches("example.com", "example.co"));
}

#[test]
fn coverage_between_patterns() {
    assert!(hostname_pattern_covers("*.a.com", "x.a.com"));
    assert!(hostname_pattern_covers("*.a.com", "*.x.a.com"));
    assert!(hostname_pattern_covers("*.a.com", "*.A.com."));
    assert!(!hostname_pattern_covers("*.a.com", "a.com"));
    assert!(!hostname_pattern_covers("*.a.com", "*.com"));
    assert!(!hostname_pattern_covers("*.x.a.com", "*.a.com"));
    assert!(hostname_pattern_covers("x.a.com", "x.a.com"));
    assert!(!hostname_pattern_covers("x.a.com", "*.x.a.com"));
    assert!(!hostname_pattern_covers("a.com", "x.a.com"));
}

fn label() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?"
}

fn name() -> impl Strategy<Value = String> {
    prop::collection::vec(label(), 1..4).prop_map(|labels| labels.join("."))
}

proptest! {
    #[test]
    fn generated_names_are_valid_and_match_themselves(n in name()) {
        prop_assert_eq!(check_hostname_pattern(&n), Ok(()));
        prop_assert!(hostname_matches(&n, &n));
        prop_assert!(hostname_matches(&n, &n.to_ascii_uppercase()));
        let dotted = format!("{n}.");
        prop_assert!(hostname_matches(&n, &dotted));
    }

    #[test]
    fn a_wildcard_matches_every_sub_name_and_never_its_apex(
        base in name(),
        prefix in prop::collection::vec(label(), 1..3),
    ) {
        let pattern = format!("*.{base}");
        let sub = format!("{}.{base}", prefix.join("."));
        prop_assert_eq!(check_hostname_pattern(&pattern), Ok(()));
        prop_assert!(hostname_matches(&pattern, &sub));
        prop_assert!(!hostname_matches(&pattern, &base));
        prop_assert!(hostname_pattern_covers(&pattern, &sub));
        let deeper = format!("*.{sub}");
        prop_assert!(hostname_pattern_covers(&pattern, &deeper));
        prop_assert!(!hostname_pattern_covers(&deeper, &pattern));
    }

    #[test]
    fn a_literal_matches_only_itself(a in name(), b in name()) {
        prop_assert_eq!(hostname_matches(&a, &b), a.eq_ignore_ascii_case(&b));
    }

    #[test]
    fn a_name_glued_to_the_suffix_does_not_match(base in name(), glue in label()) {
        let pattern = format!("*.{base}");
        let glued = format!("{glue}{base}");
        prop_assert!(!hostname_matches(&pattern, &glued));
    }
}

//! Every example document: the valid ones pass validation, and every file in
//! `examples/invalid` produces exactly the problems its `# expect:` lines announce.

use std::fs;
use std::path::Path;

use cellos_core::spec::{parse_document, validate_document, Problem};

#[path = "support/examples.rs"]
mod examples;
use examples::yaml_files;

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn every_valid_example_parses_and_validates() {
    for sub in ["specs", "policies", "formations", "authorization"] {
        for file in yaml_files(sub) {
            let doc =
                parse_document(&read(&file)).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            if let Err(problems) = validate_document(&doc) {
                let listed: Vec<String> = problems.iter().map(Problem::to_string).collect();
                panic!("{}:\n  {}", file.display(), listed.join("\n  "));
            }
        }
    }
}

#[test]
fn example_specs_are_execution_cells_and_policies_are_packs() {
    for (sub, kind) in [
        ("specs", "ExecutionCell"),
        ("policies", "PolicyPack"),
        ("formations", "Formation"),
        ("authorization", "AuthorizationPolicy"),
    ] {
        for file in yaml_files(sub) {
            let doc = parse_document(&read(&file)).expect("valid example");
            assert_eq!(doc.kind(), kind, "{}", file.display());
        }
    }
}

/// One `# expect: path: fragment` line.
struct Expected {
    path: String,
    fragment: String,
}

fn expectations(text: &str) -> (Vec<Expected>, Vec<String>) {
    let mut problems = Vec::new();
    let mut parse_errors = Vec::new();
    for line in text.lines().take_while(|l| l.starts_with('#')) {
        if let Some(rest) = line.strip_prefix("# expect: ") {
            let (path, fragment) = rest
                .split_once(": ")
                .unwrap_or_else(|| panic!("malformed expect line {line:?}"));
            problems.push(Expected {
                path: path.to_owned(),
                fragment: fragment.to_owned(),
            });
        } else if let Some(fragment) = line.strip_prefix("# expect-parse: ") {
            parse_errors.push(fragment.to_owned());
        }
    }
    (problems, parse_errors)
}

#[test]
fn every_invalid_example_reports_exactly_its_expected_problems() {
    for file in yaml_files("invalid") {
        let text = read(&file);
        let (expected, expected_parse) = expectations(&text);
        assert!(
            !expected.is_empty() || !expected_parse.is_empty(),
            "{} announces no expected problem",
            file.display()
        );
        let doc = match parse_document(&text) {
            Ok(doc) => doc,
            Err(e) => {
                let message = e.to_string();
                assert!(
                    !expected_parse.is_empty(),
                    "{}: unexpected parse error {message}",
                    file.display()
                );
                for fragment in &expected_parse {
                    assert!(
                        message.contains(fragment.as_str()),
                        "{}: parse error {message:?} lacks {fragment:?}",
                        file.display()
                    );
                }
                continue;
            }
        };
        assert!(
            expected_parse.is_empty(),
            "{}: expected a parse error, it parsed",
            file.display()
        );
        let problems = validate_document(&doc).expect_err("an invalid example must not validate");
        let listed: Vec<String> = problems.iter().map(Problem::to_string).collect();
        let mut unmatched: Vec<&Problem> = problems.iter().collect();
        for want in &expected {
            let position = unmatched
                .iter()
                .position(|p| p.path == want.path && p.message.contains(want.fragment.as_str()));
            match position {
                Some(i) => {
                    unmatched.remove(i);
                }
                None => panic!(
                    "{}: no problem `{}: {}` among\n  {}",
                    file.display(),
                    want.path,
                    want.fragment,
                    listed.join("\n  ")
                ),
            }
        }
        assert!(
            unmatched.is_empty(),
            "{}: unexpected problems\n  {}",
            file.display(),
            unmatched
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("\n  ")
        );
    }
}

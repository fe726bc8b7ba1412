//! `validate`, `admit`, `schema` on the shipped examples.

use crate::support::{stderr, stdout, Home};

#[path = "../../../cellos-core/tests/support/examples.rs"]
pub mod shipped;
use shipped::yaml_files as examples;

#[test]
fn validate_accepts_every_shipped_example() {
    let home = Home::new();
    let mut args = vec!["validate".to_string()];
    for dir in ["specs", "policies", "formations", "bench"] {
        args.extend(examples(dir).iter().map(|p| p.display().to_string()));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = home.run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn validate_reports_every_problem_with_its_path_and_exits_2() {
    let home = Home::new();
    for file in examples("invalid") {
        let out = home.run(&["validate", &file.display().to_string()]);
        assert_eq!(out.status.code(), Some(2), "{}", file.display());
        let text = std::fs::read_to_string(&file).unwrap();
        let err = stderr(&out);
        for expect in text.lines().filter_map(|l| l.strip_prefix("# expect: ")) {
            let (path, fragment) = expect
                .trim()
                .split_once(": ")
                .unwrap_or((expect.trim(), ""));
            let reported = err
                .lines()
                .any(|l| l.contains(&format!("{path}: ")) && l.contains(fragment));
            assert!(
                reported,
                "{}: missing {expect:?} in:\n{err}",
                file.display()
            );
        }
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn validate_names_the_leaf_field_of_a_wrong_type_and_of_a_missing_id() {
    let home = Home::new();
    let limits = home.spec(
        "leaf-limits",
        "  run:\n    argv: [/bin/true]\n    limits:\n      memoryMaxBytes: lots\n",
    );
    let out = home.run(&["validate", limits.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(": spec.run.limits.memoryMaxBytes: \"lots\" is not a size; write digits"),
        "{err}"
    );
    assert!(!err.contains("spec.run.limits: "), "{err}");

    let pids = home.spec(
        "leaf-pids",
        "  run:\n    argv: [/bin/true]\n    limits: {pidsMax: many}\n",
    );
    let err = stderr(&home.run(&["validate", pids.to_str().unwrap()]));
    assert!(
        err.contains(": spec.run.limits.pidsMax: invalid type: string \"many\", expected u64"),
        "{err}"
    );

    let missing = home.path().join("missing-id.yaml");
    std::fs::write(
        &missing,
        "apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec:\n  run:\n    argv: [/bin/true]\n",
    )
    .unwrap();
    let out = home.run(&["validate", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(": spec.id: required at line 4 column 3"),
        "{err}"
    );
    assert!(!err.contains("missing field"), "{err}");
}

#[test]
fn admit_denies_what_the_pack_forbids_and_names_the_rule() {
    let home = Home::new();
    let spec = home.spec(
        "admit-deny",
        "  run:\n    argv: [\"/bin/true\"]\n  lifetime:\n    ttlSeconds: 5000\n",
    );
    let pack = home.path().join("pack.yaml");
    std::fs::write(
        &pack,
        "apiVersion: cellos.io/v1\nkind: PolicyPack\nspec:\n  id: tight\n  version: \"1\"\n  rules:\n    maxTtlSeconds: 60\n",
    )
    .unwrap();
    let out = home.run(&[
        "admit",
        spec.to_str().unwrap(),
        "--policy",
        pack.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.starts_with("deny"), "{text}");
    assert!(text.contains("spec.lifetime.ttlSeconds"), "{text}");
    assert!(text.contains("maxTtlSeconds"), "{text}");
}

#[test]
fn schema_is_json() {
    let out = Home::new().run(&["schema"]);
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(schema.is_object());
}

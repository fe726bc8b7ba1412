//! The generated JSON Schema agrees with the parser: it accepts every valid example and
//! rejects what strict parsing rejects.

use std::fs;
use std::path::Path;

use cellos_core::spec::{json_schema, parse_document, validate_document};
use serde_json::{json, Value};

#[path = "support/examples.rs"]
mod examples;
use examples::yaml_files as examples;

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&json_schema()).expect("the generated schema compiles")
}

fn as_json(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[test]
fn the_schema_is_a_draft7_one_of_the_four_kinds() {
    let schema = json_schema();
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    let branches = schema["oneOf"].as_array().expect("oneOf");
    assert_eq!(branches.len(), 4);
    for (definition, kind) in [
        ("ExecutionCellDocument", "ExecutionCell"),
        ("PolicyPackDocument", "PolicyPack"),
        ("FormationDocument", "Formation"),
        ("AuthorizationPolicyDocument", "AuthorizationPolicy"),
    ] {
        let doc = &schema["definitions"][definition];
        assert_eq!(doc["properties"]["kind"]["const"], kind);
        assert_eq!(doc["properties"]["apiVersion"]["const"], "cellos.io/v1");
        assert_eq!(doc["additionalProperties"], false);
    }
}

#[test]
fn every_valid_example_is_accepted_by_the_schema() {
    let validator = validator();
    for sub in ["specs", "policies", "formations", "authorization"] {
        for file in examples(sub) {
            let instance = as_json(&file);
            let found = errors(&validator, &instance);
            assert!(found.is_empty(), "{}: {found:?}", file.display());
        }
    }
}

/// Whether our own parser and validator accept `text`.
fn validator_accepts(text: &str) -> bool {
    parse_document(text).is_ok_and(|doc| validate_document(&doc).is_ok())
}

#[test]
fn every_document_the_validator_accepts_in_the_examples_and_the_corpus_is_schema_valid() {
    let validator = validator();
    let mut checked = 0;
    for sub in [
        "specs",
        "policies",
        "formations",
        "bench",
        "agreement",
        "invalid",
    ] {
        for file in examples(sub) {
            let text = fs::read_to_string(&file).expect("read");
            if validator_accepts(&text) {
                let found = errors(&validator, &as_json(&file));
                assert!(found.is_empty(), "{}: {found:?}", file.display());
                checked += 1;
            }
        }
    }
    assert!(checked >= 30, "only {checked} accepted documents");
}

/// YAML reads unquoted scalars where strings are expected; the schema must accept them.
const SCALARS_AS_TEXT: [&str; 5] = [
    "apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec:\n  id: a\n  run: {argv: [/bin/echo, 1, true]}\n  policy: {packId: p, packVersion: 1}\n",
    "apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec:\n  id: a\n  run:\n    argv: [/bin/true]\n    env: {PORT: 8080, DEBUG: true, RATIO: 1.5, EMPTY: ~}\n",
    "apiVersion: cellos.io/v1\nkind: ExecutionCell\nmetadata: {name: 7, labels: {tier: 1}}\nspec:\n  id: a\n  run: {argv: [/bin/true]}\n  placement: {pool: 2, nodeSelector: {rack: 12}}\n",
    "apiVersion: cellos.io/v1\nkind: PolicyPack\nspec: {id: p, version: 2}\n",
    "apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec:\n  id: a\n  run: {argv: [/bin/true], limits: {memoryMaxBytes: 64Mi, pidsMax: 64}}\n  filesystem: {workspace: {target: /w, sizeBytes: 1048576}}\n",
];

#[test]
fn the_schema_takes_numbers_and_booleans_where_the_validator_reads_them_as_text() {
    let validator = validator();
    for text in SCALARS_AS_TEXT {
        assert!(validator_accepts(text), "the validator refuses {text}");
        let instance: Value = serde_yaml::from_str(text).expect("yaml");
        let found = errors(&validator, &instance);
        assert!(found.is_empty(), "{text}: {found:?}");
    }
}

#[test]
fn the_schema_still_refuses_what_no_yaml_reading_makes_valid() {
    let validator = validator();
    let base = json!({
        "apiVersion": "cellos.io/v1", "kind": "ExecutionCell",
        "spec": {"id": "a", "run": {"argv": ["/bin/true"]}}
    });
    for (field, bad) in [
        ("argv", json!("/bin/true")),
        ("timeoutMs", json!("5s")),
        ("secretDelivery", json!(1)),
        ("cwd", json!(["/"])),
    ] {
        let mut doc = base.clone();
        doc["spec"]["run"][field] = bad.clone();
        assert!(
            !validator.is_valid(&doc),
            "run.{field} = {bad} was accepted"
        );
    }
}

#[test]
fn the_schema_rejects_unknown_fields_at_any_depth() {
    let validator = validator();
    let base = json!({
        "apiVersion": "cellos.io/v1",
        "kind": "ExecutionCell",
        "spec": {"id": "a", "run": {"argv": ["/bin/true"]}}
    });
    assert!(validator.is_valid(&base));
    let mut top = base.clone();
    top["extra"] = json!(1);
    assert!(!validator.is_valid(&top));
    let mut nested = base.clone();
    nested["spec"]["run"]["argvv"] = json!([]);
    assert!(!validator.is_valid(&nested));
    let mut deep = base;
    deep["spec"]["authority"] =
        json!({"egressRules": [{"host": "a.b", "port": 1, "proto": "tcp"}]});
    assert!(!validator.is_valid(&deep));
}

#[test]
fn the_schema_rejects_a_wrong_kind_a_missing_field_and_a_bad_rootfs() {
    let validator = validator();
    let wrong_kind = json!({
        "apiVersion": "cellos.io/v1", "kind": "Pod",
        "spec": {"id": "a", "run": {"argv": ["x"]}}
    });
    assert!(!validator.is_valid(&wrong_kind));
    let missing_id = json!({"apiVersion": "cellos.io/v1", "kind": "ExecutionCell",
                            "spec": {"run": {"argv": ["x"]}}});
    assert!(!validator.is_valid(&missing_id));
    // Without run it is a session cell, which the schema accepts.
    let session =
        json!({"apiVersion": "cellos.io/v1", "kind": "ExecutionCell", "spec": {"id": "a"}});
    assert!(validator.is_valid(&session));
    let bad_rootfs = json!({
        "apiVersion": "cellos.io/v1", "kind": "ExecutionCell",
        "spec": {"id": "a", "run": {"argv": ["x"]}, "filesystem": {"rootfs": "hots"}}
    });
    assert!(!validator.is_valid(&bad_rootfs));
    let host_rootfs = json!({
        "apiVersion": "cellos.io/v1", "kind": "ExecutionCell",
        "spec": {"id": "a", "run": {"argv": ["x"]}, "filesystem": {"rootfs": "host"}}
    });
    assert!(validator.is_valid(&host_rootfs));
}

#[test]
fn the_schema_agrees_with_the_parser_on_the_invalid_parse_examples() {
    let validator = validator();
    for file in examples("invalid") {
        let text = fs::read_to_string(&file).expect("read");
        if text.starts_with("# expect-parse:") {
            let instance = as_json(&file);
            assert!(
                !validator.is_valid(&instance),
                "{}: the parser rejects it but the schema accepts it",
                file.display()
            );
        }
    }
}

#[test]
fn the_schema_describes_the_landlock_requirement_of_a_cell_and_of_a_pack() {
    let validator = validator();
    let cell = |landlock: Value| {
        json!({
            "apiVersion": "cellos.io/v1", "kind": "ExecutionCell",
            "spec": {"id": "a", "run": {"argv": ["/bin/true"]}, "filesystem": {"landlock": landlock}}
        })
    };
    assert!(validator.is_valid(&cell(json!({"minAbi": 0}))));
    assert!(validator.is_valid(&cell(json!({"minAbi": 3}))));
    for bad in [
        json!({}),
        json!({"minAbi": -1}),
        json!({"minAbi": "3"}),
        json!({"minAbi": 3, "max": 5}),
    ] {
        assert!(
            !validator.is_valid(&cell(bad.clone())),
            "landlock = {bad} was accepted"
        );
    }
    let pack = |rules: Value| {
        json!({
            "apiVersion": "cellos.io/v1", "kind": "PolicyPack",
            "spec": {"id": "p", "version": "1", "rules": rules}
        })
    };
    assert!(validator.is_valid(&pack(json!({"minLandlockAbi": 2}))));
    assert!(!validator.is_valid(&pack(json!({"minLandlockAbi": "two"}))));
}

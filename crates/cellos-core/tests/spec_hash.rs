//! The canonical spec hash depends on the spec's meaning, not on how it was written.

use cellos_core::spec::{canonical_spec_hash, canonical_spec_json, parse_execution_cell};

const YAML: &str = r#"
# comments do not count
apiVersion: cellos.io/v1
kind: ExecutionCell
spec:
  id: hashed
  run:
    argv: ["/bin/echo", "hi"]
    env:
      B: "2"
      A: "1"
    limits:
      memoryMaxBytes: 64Mi
  lifetime:
    ttlSeconds: 60
  filesystem:
    rootfs: host
    workspace:
      target: /work
      sizeBytes: 16Mi
"#;

/// The same spec as JSON, keys in another order, sizes written as numbers, defaults spelt out.
const JSON: &str = r#"{
  "spec": {
    "filesystem": {"workspace": {"sizeBytes": 16777216, "target": "/work"}, "rootfs": "host"},
    "lifetime": {"ttlSeconds": 60},
    "run": {"secretDelivery": "file", "limits": {"memoryMaxBytes": 67108864},
            "env": {"A": "1", "B": "2"}, "argv": ["/bin/echo", "hi"]},
    "authority": {"secretRefs": []},
    "id": "hashed"
  },
  "kind": "ExecutionCell",
  "apiVersion": "cellos.io/v1"
}"#;

fn hash_of(text: &str) -> String {
    canonical_spec_hash(&parse_execution_cell(text).expect("valid spec").spec)
}

#[test]
fn the_hash_is_sha256_hex_with_a_prefix() {
    let hash = hash_of(YAML);
    let hex = hash.strip_prefix("sha256:").expect("sha256: prefix");
    assert_eq!(hex.len(), 64);
    assert!(hex
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
}

#[test]
fn yaml_and_json_with_other_key_order_and_spelling_hash_the_same() {
    assert_eq!(hash_of(YAML), hash_of(JSON));
}

#[test]
fn reformatting_the_yaml_does_not_change_the_hash() {
    let flow = "apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec: {lifetime: {ttlSeconds: 60}, id: hashed, run: {limits: {memoryMaxBytes: 67108864}, env: {A: '1', B: '2'}, argv: [/bin/echo, hi]}, filesystem: {workspace: {target: /work, sizeBytes: 16Mi}}}\n";
    assert_eq!(hash_of(YAML), hash_of(flow));
}

#[test]
fn any_change_of_meaning_changes_the_hash() {
    let base = hash_of(YAML);
    for (from, to) in [
        ("\"hi\"]", "\"hi!\"]"),
        ("ttlSeconds: 60", "ttlSeconds: 61"),
        ("A: \"1\"", "A: \"0\""),
        ("sizeBytes: 16Mi", "sizeBytes: 16M"),
        ("id: hashed", "id: hashed-2"),
    ] {
        assert!(YAML.contains(from), "{from}");
        assert_ne!(hash_of(&YAML.replace(from, to)), base, "{from} -> {to}");
    }
}

#[test]
fn the_hash_is_stable_across_releases() {
    // Pinned: a change here means every recorded spec hash changes meaning.
    let spec = parse_execution_cell(
        r#"{"apiVersion":"cellos.io/v1","kind":"ExecutionCell","spec":{"id":"t-run","run":{"argv":["true"]}}}"#,
    )
    .expect("minimal spec")
    .spec;
    assert_eq!(
        canonical_spec_json(&spec),
        r#"{"authority":{},"id":"t-run","run":{"argv":["true"],"secretDelivery":"file"}}"#
    );
    // sha256 of the canonical text above, computed independently (`sha256sum`).
    assert_eq!(
        canonical_spec_hash(&spec),
        "sha256:813f1c824ef0beaf6bebc40dba8586f624960fc152daa2a22013723b95113afb"
    );
}

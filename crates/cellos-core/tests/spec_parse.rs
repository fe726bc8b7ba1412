//! Parsing: YAML and JSON, dispatch on kind, strictness, and errors that locate the mistake.

use cellos_core::spec::{
    parse_document, parse_execution_cell, parse_formation, parse_policy_pack, ByteSize, Document,
    Enforcement, Format, ParseError, RootfsSpec, SecretDeliveryMode,
};

const MINIMAL_JSON: &str = r#"{"apiVersion":"cellos.io/v1","kind":"ExecutionCell","spec":{"id":"t-run",
"authority":{"secretRefs":[]},"lifetime":{"ttlSeconds":60},"run":{"argv":["true"]}}}"#;

#[test]
fn the_original_systems_minimal_json_spec_parses() {
    let doc = parse_execution_cell(MINIMAL_JSON).expect("minimal spec");
    assert_eq!(doc.spec.id, "t-run");
    assert_eq!(doc.spec.argv(), ["true"]);
    assert_eq!(
        doc.spec.lifetime.as_ref().and_then(|l| l.ttl_seconds),
        Some(60)
    );
    assert_eq!(doc.spec.secret_delivery(), SecretDeliveryMode::File);
}

#[test]
fn format_is_detected_from_the_first_character() {
    assert_eq!(Format::detect("  \n{\"a\":1}"), Format::Json);
    assert_eq!(Format::detect("apiVersion: cellos.io/v1"), Format::Yaml);
    assert_eq!(Format::detect("---\nkind: x"), Format::Yaml);
}

#[test]
fn parse_document_dispatches_on_kind() {
    let cell = parse_document(MINIMAL_JSON).expect("cell");
    assert!(matches!(cell, Document::ExecutionCell(_)));
    let pack = parse_document(
        "apiVersion: cellos.io/v1\nkind: PolicyPack\nspec:\n  id: p\n  version: '1'\n",
    )
    .expect("pack");
    match pack {
        Document::PolicyPack(p) => {
            assert_eq!(p.spec.enforcement, Enforcement::Enforce);
            assert!(p.spec.rules.is_empty());
        }
        other => panic!("expected a policy pack, got {}", other.kind()),
    }
    let formation = parse_document(
        "apiVersion: cellos.io/v1\nkind: Formation\nspec:\n  id: f\n  coordinator:\n    name: c\n    cell: {id: c, run: {argv: [/bin/true]}}\n",
    )
    .expect("formation");
    assert_eq!(formation.kind(), "Formation");
}

#[test]
fn unknown_and_missing_kinds_are_named() {
    let unknown = parse_document("apiVersion: cellos.io/v1\nkind: Pod\nspec: {}\n").unwrap_err();
    assert_eq!(unknown, ParseError::UnknownKind("Pod".to_owned()));
    assert!(unknown
        .to_string()
        .contains("ExecutionCell, PolicyPack, Formation and AuthorizationPolicy"));
    let missing = parse_document("apiVersion: cellos.io/v1\nspec: {}\n").unwrap_err();
    assert_eq!(missing, ParseError::MissingKind);
}

#[test]
fn a_typed_parser_rejects_another_kind() {
    let err = parse_policy_pack(MINIMAL_JSON).unwrap_err();
    assert_eq!(
        err,
        ParseError::WrongKind {
            expected: "PolicyPack",
            found: "ExecutionCell".to_owned()
        }
    );
    assert!(parse_formation(MINIMAL_JSON).is_err());
}

#[test]
fn a_yaml_unknown_field_error_names_the_field_its_parent_and_the_line() {
    let text = "apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec:\n  id: a\n  run:\n    argv: [/bin/true]\n    memory: 5\n";
    let err = parse_execution_cell(text).unwrap_err();
    match &err {
        ParseError::Invalid {
            format,
            line,
            message,
            ..
        } => {
            assert_eq!(*format, Format::Yaml);
            assert_eq!(*line, Some(7));
            assert!(
                message.starts_with("spec.run.memory: unknown field, expected one of `argv`"),
                "{message}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_json_missing_field_is_named_by_its_full_path_with_the_line() {
    let text = "{\"apiVersion\":\"cellos.io/v1\",\"kind\":\"ExecutionCell\",\n\"spec\":{\"id\":\"a\",\"run\":{\"cwd\":\"/\"}}}";
    let err = parse_execution_cell(text).unwrap_err();
    match &err {
        ParseError::Invalid {
            format,
            line,
            message,
            ..
        } => {
            assert_eq!(*format, Format::Json);
            assert_eq!(*line, Some(2));
            assert_eq!(message, "spec.run.argv: required at line 2 column 34");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn unknown_fields_are_rejected_at_every_level() {
    for (text, field) in [
        ("apiVersion: cellos.io/v1\nkind: ExecutionCell\nextra: 1\nspec: {id: a, run: {argv: [x]}}\n", "extra"),
        ("apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec: {id: a, run: {argv: [x]}, lifetime: {ttl: 5}}\n", "ttl"),
        ("apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec: {id: a, run: {argv: [x]}, authority: {egressRules: [{host: a.b, port: 1, proto: tcp}]}}\n", "proto"),
        ("apiVersion: cellos.io/v1\nkind: PolicyPack\nspec: {id: p, version: '1', rules: {maxTTL: 5}}\n", "maxTTL"),
    ] {
        let err = parse_document(text).unwrap_err().to_string();
        assert!(err.contains(&format!("{field}: unknown field")), "{err}");
    }
}

#[test]
fn rootfs_host_literal_and_maps_deserialize_and_round_trip() {
    let host = parse_execution_cell(
        "apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec: {id: a, run: {argv: [x]}, filesystem: {rootfs: host}}\n",
    )
    .expect("host rootfs");
    let fs = host.spec.filesystem.expect("filesystem");
    assert_eq!(fs.rootfs, RootfsSpec::Host);
    assert_eq!(serde_json::to_value(&fs.rootfs).unwrap(), "host");

    let oci = parse_execution_cell(
        r#"{"apiVersion":"cellos.io/v1","kind":"ExecutionCell","spec":{"id":"a","run":{"argv":["x"]},
        "filesystem":{"rootfs":{"ociLayout":"/images/alpine","ref":"latest"}}}}"#,
    )
    .expect("oci rootfs");
    let rootfs = oci.spec.filesystem.expect("filesystem").rootfs;
    match &rootfs {
        RootfsSpec::Oci(o) => {
            assert_eq!(o.oci_layout, "/images/alpine");
            assert_eq!(o.reference, "latest");
        }
        other => panic!("unexpected {other:?}"),
    }
    let json = serde_json::to_string(&rootfs).unwrap();
    let back: RootfsSpec = serde_json::from_str(&json).unwrap();
    assert_eq!(back, rootfs);

    let path: RootfsSpec = serde_yaml::from_str("path: /srv/rootfs").unwrap();
    assert!(matches!(path, RootfsSpec::Path(p) if p.path == "/srv/rootfs"));
}

#[test]
fn rootfs_mistakes_get_specific_messages() {
    let word = serde_yaml::from_str::<RootfsSpec>("hst")
        .unwrap_err()
        .to_string();
    assert!(word.contains("not \"hst\""), "{word}");
    let half = serde_yaml::from_str::<RootfsSpec>("ociLayout: /img")
        .unwrap_err()
        .to_string();
    assert!(half.contains("also needs ref"), "{half}");
    let typo = serde_yaml::from_str::<RootfsSpec>("pth: /img")
        .unwrap_err()
        .to_string();
    assert!(typo.contains("unknown field `pth`"), "{typo}");
    let both = serde_yaml::from_str::<RootfsSpec>("{path: /a, ociLayout: /b, ref: c}")
        .unwrap_err()
        .to_string();
    assert!(both.contains("either path, or ociLayout and ref"), "{both}");
}

#[test]
fn memory_limits_accept_size_strings_and_store_bytes() {
    let doc = parse_execution_cell(
        "apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec: {id: a, run: {argv: [x], limits: {memoryMaxBytes: 256Mi}}}\n",
    )
    .expect("size string");
    let limits = doc.spec.run.and_then(|r| r.limits).expect("limits");
    assert_eq!(limits.memory_max_bytes, Some(256 * 1024 * 1024));
    let err = parse_execution_cell(
        "apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec: {id: a, run: {argv: [x], limits: {memoryMaxBytes: lots}}}\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("spec.run.limits.memoryMaxBytes: \"lots\" is not a size"),
        "{err}"
    );
    assert!(err.contains("line 3 column 40"), "{err}");
}

const CELL_HEADER: &str = "apiVersion: cellos.io/v1\nkind: ExecutionCell\n";

fn message(text: &str) -> String {
    match parse_document(text).unwrap_err() {
        ParseError::Invalid { message, .. } => message,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_missing_required_field_is_named_by_its_own_path() {
    assert_eq!(
        message(&format!("{CELL_HEADER}spec:\n  run:\n    argv: [x]\n")),
        "spec.id: required at line 4 column 3"
    );
    assert!(message(&format!(
        "{CELL_HEADER}spec:\n  id: a\n  run:\n    argv: [x]\n  filesystem: {{workspace: {{}}}}\n"
    ))
    .starts_with("spec.filesystem.workspace.target: required"));
    assert!(message(
        "apiVersion: cellos.io/v1\nkind: Formation\nspec:\n  id: f\n  coordinator:\n    name: c\n    cell: {run: {argv: [/bin/true]}}\n"
    )
    .starts_with("spec.coordinator.cell.id: required"));
    assert!(
        message("kind: ExecutionCell\nspec: {id: a, run: {argv: [x]}}\n")
            .starts_with("apiVersion: required")
    );
}

#[test]
fn the_leaf_is_named_past_scalars_yaml_reads_as_text_and_in_any_key_order() {
    // `id: 123` and `PORT: 8080` are text to YAML but numbers to the replay.
    assert!(message(&format!(
        "{CELL_HEADER}spec:\n  id: 123\n  run:\n    env: {{PORT: 8080}}\n    argv: [x]\n    limits: {{memoryMaxBytes: lots}}\n"
    ))
    .starts_with("spec.run.limits.memoryMaxBytes: \"lots\" is not a size"));
    assert!(message(&format!(
        "{CELL_HEADER}spec:\n  run:\n    env: {{PORT: 8080}}\n    argv: [x]\n"
    ))
    .starts_with("spec.id: required"));
    // `run` comes before `id` in key order; the text's first mistake is still the one named.
    let json = r#"{"apiVersion":"cellos.io/v1","kind":"ExecutionCell","spec":{"run":{"argv":"x"},"id":5}}"#;
    assert!(
        message(json).starts_with("spec.run.argv: invalid type: string \"x\", expected a sequence"),
        "{}",
        message(json)
    );
}

#[test]
fn a_wrong_type_inside_a_mapping_names_the_leaf_field() {
    assert!(message(&format!(
        "{CELL_HEADER}spec:\n  id: a\n  run:\n    argv: [x]\n    limits:\n      pidsMax: lots\n"
    ))
    .starts_with("spec.run.limits.pidsMax: invalid type: string \"lots\", expected u64"));
    assert!(message(&format!(
        "{CELL_HEADER}spec:\n  id: a\n  run: {{argv: [x]}}\n  authority:\n    egressRules: [{{host: a.b, port: http}}]\n"
    ))
    .starts_with("spec.authority.egressRules[0].port: invalid type"));
    assert!(message(&format!(
        "{CELL_HEADER}spec:\n  id: a\n  run: {{argv: [x]}}\n  filesystem:\n    workspace: {{target: /w, sizeBytes: -1}}\n"
    ))
    .starts_with("spec.filesystem.workspace.sizeBytes: byte size -1 must not be negative"));
}

#[test]
fn workspace_sizes_keep_their_written_form() {
    let doc = parse_execution_cell(
        "apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec: {id: a, run: {argv: [x]}, filesystem: {workspace: {target: /w, sizeBytes: 64Mi}}}\n",
    )
    .expect("workspace");
    let ws = doc.spec.filesystem.and_then(|f| f.workspace).expect("ws");
    assert_eq!(ws.size_bytes, Some(ByteSize::Text("64Mi".to_owned())));
    assert_eq!(ws.size_bytes.map(|s| s.bytes()), Some(Ok(64 << 20)));
    let negative = serde_json::from_str::<ByteSize>("-5")
        .unwrap_err()
        .to_string();
    assert!(negative.contains("must not be negative"), "{negative}");
}

#[test]
fn a_byte_order_mark_is_ignored() {
    let with_bom = format!("\u{feff}{MINIMAL_JSON}");
    assert_eq!(
        parse_execution_cell(&with_bom).unwrap(),
        parse_execution_cell(MINIMAL_JSON).unwrap()
    );
}

#[test]
fn a_document_serialises_as_itself_and_parses_back() {
    for sub_and_name in [
        "specs/python-workspace.yaml",
        "specs/egress.yaml",
        "policies/strict.yaml",
        "formations/build-pipeline.yaml",
    ] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples")
            .join(sub_and_name);
        let text = std::fs::read_to_string(&path).expect("example");
        let doc = parse_document(&text).expect("valid example");
        let json = serde_json::to_string(&doc).expect("serialises");
        assert_eq!(
            parse_document(&json).expect("parses back"),
            doc,
            "{sub_and_name}"
        );
    }
}

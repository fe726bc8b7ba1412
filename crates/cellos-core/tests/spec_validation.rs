//! Semantic validation rules not already covered by the example corpus.

use cellos_core::spec::{
    parse_execution_cell, parse_formation, validate_execution_cell, validate_formation, Problem,
    DEFAULT_MIN_LANDLOCK_ABI, HIGHEST_LANDLOCK_ABI,
};

fn cell(spec_yaml: &str) -> Result<(), Vec<Problem>> {
    let text = format!("apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec:\n{spec_yaml}");
    validate_execution_cell(&parse_execution_cell(&text).expect("parses"))
}

fn problems(spec_yaml: &str) -> Vec<String> {
    cell(spec_yaml)
        .expect_err("should be invalid")
        .iter()
        .map(Problem::to_string)
        .collect()
}

#[test]
fn problem_display_is_path_colon_message() {
    let p = Problem {
        path: "spec.run.argv".to_owned(),
        message: "must not be empty".to_owned(),
    };
    assert_eq!(p.to_string(), "spec.run.argv: must not be empty");
}

#[test]
fn a_minimal_spec_is_valid() {
    assert_eq!(cell("  id: a\n  run: {argv: [/bin/true]}\n"), Ok(()));
}

#[test]
fn landlock_min_abi_ranges_from_optional_to_the_highest_applied_abi() {
    let landlock = |abi: u32| {
        format!("  id: a\n  run: {{argv: [/bin/true]}}\n  filesystem: {{landlock: {{minAbi: {abi}}}}}\n")
    };
    for abi in 0..=HIGHEST_LANDLOCK_ABI {
        assert_eq!(cell(&landlock(abi)), Ok(()), "minAbi {abi}");
    }
    let p = problems(&landlock(HIGHEST_LANDLOCK_ABI + 1));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("spec.filesystem.landlock.minAbi: Landlock ABI 6 is not supported"),
        "{p:?}"
    );
}

#[test]
fn an_unset_landlock_requirement_is_abi_1() {
    let text =
        "apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec:\n  id: a\n  run: {argv: [x]}\n";
    let doc = parse_execution_cell(text).expect("parses");
    assert_eq!(doc.spec.landlock_min_abi(), DEFAULT_MIN_LANDLOCK_ABI);
    assert_eq!(DEFAULT_MIN_LANDLOCK_ABI, 1);
}

#[test]
fn ids_follow_dns_label_rules() {
    for ok in ["a", "a-b", "x1", &"a".repeat(63)] {
        assert_eq!(
            cell(&format!("  id: '{ok}'\n  run: {{argv: [x]}}\n")),
            Ok(()),
            "{ok}"
        );
    }
    for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64)] {
        let found = problems(&format!("  id: '{bad}'\n  run: {{argv: [x]}}\n"));
        assert_eq!(found.len(), 1, "{bad}: {found:?}");
        assert!(found[0].starts_with("spec.id: "), "{found:?}");
    }
}

#[test]
fn nul_bytes_are_rejected_in_argv_env_and_paths() {
    let found = problems(
        "  id: a\n  run:\n    argv: [\"/bin/echo\", \"a\\0b\"]\n    cwd: \"/tmp\\0\"\n    env: {K: \"v\\0\"}\n",
    );
    assert_eq!(
        found,
        [
            "spec.run.argv[1]: must not contain NUL bytes",
            "spec.run.cwd: must not contain NUL bytes",
            "spec.run.env.K: value must not contain NUL bytes",
        ]
    );
}

#[test]
fn a_timeout_equal_to_the_ttl_is_allowed() {
    assert_eq!(
        cell("  id: a\n  run: {argv: [x], timeoutMs: 60000}\n  lifetime: {ttlSeconds: 60}\n"),
        Ok(())
    );
}

#[test]
fn limit_boundaries() {
    assert_eq!(
        cell("  id: a\n  run: {argv: [x], limits: {memoryMaxBytes: 1Mi, pidsMax: 1, cpuMillis: 1024000}}\n"),
        Ok(())
    );
    let found =
        problems("  id: a\n  run: {argv: [x], limits: {memoryMaxBytes: 1048575, cpuMillis: 0}}\n");
    assert_eq!(found.len(), 2, "{found:?}");
}

#[test]
fn workspace_needs_a_nonzero_size_and_a_safe_target() {
    let found = problems(
        "  id: a\n  run: {argv: [x]}\n  filesystem: {workspace: {target: /run/secrets/x, sizeBytes: 0}}\n",
    );
    assert_eq!(
        found,
        [
            "spec.filesystem.workspace.target: must not be '/' or inside /proc, /dev, /sys, /run/secrets or /run/cellos (the cell's init provides them); choose another target",
            "spec.filesystem.workspace.sizeBytes: must be greater than 0 (a tmpfs of size 0 would be unlimited)",
        ]
    );
    assert_eq!(
        cell("  id: a\n  run: {argv: [x]}\n  filesystem: {workspace: {target: /work, source: /srv/work}}\n"),
        Ok(())
    );
}

#[test]
fn a_mount_may_not_shadow_the_workspace() {
    let found = problems(
        "  id: a\n  run: {argv: [x]}\n  filesystem:\n    mounts: [{source: /srv, target: /work}]\n    workspace: {target: /work/., sizeBytes: 1Mi}\n",
    );
    assert_eq!(
        found,
        ["spec.filesystem.workspace.target: duplicates the target of spec.filesystem.mounts[0].target"]
    );
}

#[test]
fn targets_that_merely_share_a_prefix_with_reserved_trees_are_allowed() {
    assert_eq!(
        cell("  id: a\n  run: {argv: [x]}\n  filesystem: {mounts: [{source: /srv, target: /process}, {source: /srv, target: /devices}]}\n"),
        Ok(())
    );
}

#[test]
fn env_delivery_without_collisions_is_valid() {
    assert_eq!(
        cell("  id: a\n  run: {argv: [x], secretDelivery: env, env: {OTHER: x}}\n  authority: {secretRefs: [API_TOKEN]}\n"),
        Ok(())
    );
    // With file delivery the secret never enters the environment, so the name is free.
    assert_eq!(
        cell("  id: a\n  run: {argv: [x], env: {API_TOKEN: x}}\n  authority: {secretRefs: [API_TOKEN]}\n"),
        Ok(())
    );
}

#[test]
fn secret_names_follow_the_pattern() {
    let long = format!("A{}", "B".repeat(127));
    let too_long = format!("A{}", "B".repeat(128));
    for ok in ["A", "_", "API_TOKEN", "X9", long.as_str()] {
        assert_eq!(
            cell(&format!(
                "  id: a\n  run: {{argv: [x]}}\n  authority: {{secretRefs: ['{ok}']}}\n"
            )),
            Ok(()),
            "{ok}"
        );
    }
    for bad in ["", "9A", "api", "A-B", "A B", too_long.as_str()] {
        let found = problems(&format!(
            "  id: a\n  run: {{argv: [x]}}\n  authority: {{secretRefs: ['{bad}']}}\n"
        ));
        assert_eq!(found.len(), 1, "{bad}: {found:?}");
    }
}

#[test]
fn egress_accepts_names_wildcards_and_both_address_families() {
    assert_eq!(
        cell("  id: a\n  run: {argv: [x]}\n  authority:\n    egressRules:\n      - {host: '*.example.com', port: 443}\n      - {host: example.com, port: 65535, protocol: udp}\n      - {cidr: '2001:db8::/32', port: 1}\n"),
        Ok(())
    );
}

#[test]
fn export_targets_of_every_kind_validate() {
    assert_eq!(
        cell("  id: a\n  run: {argv: [x]}\n  export:\n    artifacts:\n      - {name: a.txt, path: /work/a.txt, target: web}\n      - {name: b, path: /work/b, target: bucket}\n    targets:\n      - {name: local, kind: localPath, path: /var/lib/exports}\n      - {name: web, kind: http, url: 'https://example.com/upload'}\n      - {name: bucket, kind: s3, bucket: my-bucket, prefix: runs/, region: eu-west-1}\n"),
        Ok(())
    );
}

#[test]
fn remote_export_targets_take_endpoints_credentials_retries_and_timeouts() {
    assert_eq!(
        cell("  id: a\n  run: {argv: [x]}\n  export:\n    targets:\n      - {name: web, kind: http, url: 'https://example.com/up', retries: 5, timeoutSeconds: 30, credentials: {authorizationRef: UP_TOKEN}}\n      - {name: b, kind: s3, bucket: my-bucket, endpoint: 'http://127.0.0.1:9000', credentials: {accessKeyIdRef: S3_ID, secretAccessKeyRef: S3_KEY, sessionTokenRef: S3_TOKEN}}\n"),
        Ok(())
    );
}

#[test]
fn export_credentials_and_settings_that_do_not_fit_their_target_are_named() {
    let found = problems(
        "  id: a\n  run: {argv: [x]}\n  export:\n    targets:\n      - {name: l, kind: localPath, path: /out, retries: 2, credentials: {authorizationRef: T}}\n      - {name: h, kind: http, url: 'https://a.test', endpoint: 'https://b.test', timeoutSeconds: 0, credentials: {accessKeyIdRef: ID, secretAccessKeyRef: KEY}}\n      - {name: s, kind: s3, bucket: abc, credentials: {accessKeyIdRef: ID, authorizationRef: 'bad name'}}\n",
    );
    let expect = [
        "spec.export.targets[0].retries: does not apply to localPath targets",
        "spec.export.targets[0].credentials: does not apply to localPath targets",
        "spec.export.targets[1].endpoint: does not apply to http targets",
        "spec.export.targets[1].timeoutSeconds: must be greater than 0",
        "spec.export.targets[1].credentials.accessKeyIdRef: does not apply to http targets",
        "spec.export.targets[2].credentials.authorizationRef: does not apply to s3 targets",
        "spec.export.targets[2].credentials: accessKeyIdRef and secretAccessKeyRef go together",
    ];
    for e in expect {
        assert!(
            found.iter().any(|f| f.starts_with(e)),
            "{e} not in {found:#?}"
        );
    }
    assert!(
        found.iter().any(
            |f| f.starts_with("spec.export.targets[2].credentials.authorizationRef:")
                && !f.contains("does not apply")
        ),
        "the bad secret name is named: {found:#?}"
    );
}

#[test]
fn a_document_with_many_problems_reports_them_all_at_once() {
    let found = problems(
        "  id: BAD\n  run: {argv: [], timeoutMs: 0, limits: {pidsMax: 0}}\n  lifetime: {ttlSeconds: 0}\n  authority: {secretRefs: [x], egressRules: [{port: 0}]}\n",
    );
    assert_eq!(found.len(), 8, "{found:#?}");
}

fn formation(members: &str) -> Result<(), Vec<Problem>> {
    let text = format!(
        "apiVersion: cellos.io/v1\nkind: Formation\nspec:\n  id: f\n  coordinator:\n    name: root\n    cell:\n      id: root\n      run: {{argv: [x]}}\n      authority:\n        secretRefs: [A, B]\n        egressRules:\n          - {{host: '*.example.com', port: 443}}\n          - {{cidr: 10.0.0.0/8, port: 53, protocol: udp}}\n  members:\n{members}"
    );
    validate_formation(&parse_formation(&text).expect("parses"))
}

#[test]
fn formation_members_may_narrow_their_authoriser() {
    assert_eq!(
        formation("    - name: mid\n      authorizedBy: root\n      cell:\n        id: mid\n        run: {argv: [x]}\n        authority:\n          secretRefs: [A]\n          egressRules:\n            - {host: '*.api.example.com', port: 443}\n            - {cidr: 10.1.0.0/16, port: 53, protocol: udp}\n    - name: leaf\n      authorizedBy: mid\n      cell:\n        id: leaf\n        run: {argv: [x]}\n        authority:\n          egressRules: [{host: v1.api.example.com, port: 443}]\n"),
        Ok(())
    );
}

#[test]
fn formation_members_may_not_widen_port_protocol_or_network() {
    let found: Vec<String> = formation("    - name: wide\n      authorizedBy: root\n      cell:\n        id: wide\n        run: {argv: [x]}\n        authority:\n          egressRules:\n            - {host: api.example.com, port: 80}\n            - {cidr: 10.0.0.0/8, port: 53}\n            - {cidr: 11.0.0.0/8, port: 53, protocol: udp}\n")
        .expect_err("widening")
        .iter()
        .map(Problem::to_string)
        .collect();
    assert_eq!(found.len(), 3, "{found:#?}");
    for (i, line) in found.iter().enumerate() {
        assert!(
            line.starts_with(&format!(
                "spec.members[0].cell.authority.egressRules[{i}]: is not within"
            )),
            "{line}"
        );
    }
}

#[test]
fn a_grandchild_is_checked_against_its_own_authoriser_not_the_root() {
    let found: Vec<String> = formation("    - name: mid\n      authorizedBy: root\n      cell:\n        id: mid\n        run: {argv: [x]}\n        authority: {secretRefs: [A]}\n    - name: leaf\n      authorizedBy: mid\n      cell:\n        id: leaf\n        run: {argv: [x]}\n        authority: {secretRefs: [B]}\n")
        .expect_err("B is held by root but not by mid")
        .iter()
        .map(Problem::to_string)
        .collect();
    assert_eq!(
        found,
        ["spec.members[1].cell.authority.secretRefs[0]: B is not held by its authoriser \"mid\""]
    );
}

#[test]
fn a_member_cannot_authorise_itself() {
    let found = formation(
        "    - name: me\n      authorizedBy: me\n      cell: {id: me, run: {argv: [x]}}\n",
    )
    .expect_err("self");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].path, "spec.members[0].authorizedBy");
}

#[test]
fn a_build_capability_refusal_names_each_field_that_asks_for_more() {
    use cellos_core::spec::{check_capabilities, Capabilities, ExportTargetKind};
    let doc = parse_execution_cell(
        "apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec:\n  id: a\n  run: {argv: [x]}\n  telemetry: {enabled: true}\n  export:\n    targets:\n      - {name: l, kind: localPath, path: /out}\n      - {name: h, kind: http, url: 'https://a.test'}\n      - {name: s, kind: s3, bucket: abc}\n",
    )
    .expect("parses");
    assert_eq!(validate_execution_cell(&doc), Ok(()), "valid as a spec");
    assert_eq!(check_capabilities(&doc.spec, &Capabilities::all()), Ok(()));
    let local_only = Capabilities {
        export_kinds: [ExportTargetKind::LocalPath].into_iter().collect(),
        telemetry_agent: false,
    };
    let found: Vec<String> = check_capabilities(&doc.spec, &local_only)
        .expect_err("asks for more than local exports")
        .iter()
        .map(|p| p.path.clone())
        .collect();
    assert_eq!(
        found,
        [
            "spec.export.targets[1].kind",
            "spec.export.targets[2].kind",
            "spec.telemetry.enabled"
        ]
    );
}

#[test]
fn a_spec_without_run_is_a_session_cell_with_its_own_limits_and_lifetime() {
    assert_eq!(
        cell("  id: s\n  limits: {memoryMaxBytes: 64Mi, pidsMax: 32}\n  lifetime: {ttlSeconds: 60, idleTimeoutSeconds: 10}\n"),
        Ok(())
    );
    assert_eq!(
        cell("  id: s\n  lifetime: {idleTimeoutSeconds: 10}\n"),
        Ok(())
    );
}

#[test]
fn session_fields_are_checked_where_they_are_given() {
    let found = problems("  id: s\n  lifetime: {}\n  limits: {pidsMax: 0}\n");
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("spec.lifetime: give ttlSeconds")),
        "{found:?}"
    );
    assert!(
        found.iter().any(|p| p.starts_with("spec.limits.pidsMax")),
        "{found:?}"
    );
    let found = problems(
        "  id: s\n  run: {argv: [x], limits: {pidsMax: 8}}\n  limits: {pidsMax: 8}\n  lifetime: {idleTimeoutSeconds: 5}\n",
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("spec.limits: is also given as run.limits")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p
                .starts_with("spec.lifetime.idleTimeoutSeconds: applies to session cells only")),
        "{found:?}"
    );
    let found = problems("  id: s\n  lifetime: {idleTimeoutSeconds: 0}\n");
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("spec.lifetime.idleTimeoutSeconds: must be 1..=")),
        "{found:?}"
    );
}

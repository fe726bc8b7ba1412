//! `kind: AuthorizationPolicy`: parsing, scopes, tenants and every validation problem named.

use cellos_core::spec::{
    json_schema, parse_authorization_policy, parse_document, validate_authorization_policy,
    validate_document, Scope,
};

const POLICY: &str = "apiVersion: cellos.io/v1
kind: AuthorizationPolicy
spec:
  id: shared-server
  version: '1'
  subjects:
    - name: team-a
      scopes: [cells:create, cells:read, cells:exec, cells:files, cells:delete, events:read]
      policyPacks: [tenant-default]
      allowedPools: [python]
      quotas: {concurrentCells: 10, cellsPerHour: 200, memoryBytes: 8Gi}
    - name: ci-bot@team-a
      tenant: team-a
      scopes: [cells:create, cells:read]
    - name: uid:0
      scopes: [admin]
";

#[test]
fn a_policy_parses_validates_and_answers_scope_and_tenant_questions() {
    let doc = parse_authorization_policy(POLICY).expect("parses");
    validate_authorization_policy(&doc).expect("valid");
    let [team, bot, root] = &doc.spec.subjects[..] else {
        panic!("three subjects");
    };
    assert_eq!(team.tenant(), "team-a");
    assert_eq!(
        bot.tenant(),
        "team-a",
        "a subject may act for another tenant"
    );
    assert!(team.allows(Scope::CellsExec));
    assert!(!team.allows(Scope::FormationsWrite));
    assert!(!bot.allows(Scope::CellsDelete));
    assert!(
        Scope::ALL.iter().all(|s| root.allows(*s)),
        "admin implies every scope"
    );
    assert_eq!(team.quotas.memory_bytes, Some(8 << 30));
    assert_eq!(team.quotas.concurrent_cells, Some(10));
    let any = parse_document(POLICY).expect("parses as any document");
    assert_eq!(any.kind(), "AuthorizationPolicy");
    validate_document(&any).expect("valid as any document");
}

#[test]
fn unknown_scopes_and_fields_are_structure_errors_naming_the_field() {
    let bad_scope = POLICY.replace("cells:exec", "cells:execute");
    let err = parse_authorization_policy(&bad_scope)
        .unwrap_err()
        .to_string();
    assert!(err.contains("spec.subjects[0].scopes[2]"), "{err}");
    let bad_field = POLICY.replace("allowedPools", "pools");
    let err = parse_authorization_policy(&bad_field)
        .unwrap_err()
        .to_string();
    assert!(err.contains("spec.subjects[0].pools"), "{err}");
    assert_eq!("cells:files".parse::<Scope>(), Ok(Scope::CellsFiles));
    assert!("root"
        .parse::<Scope>()
        .unwrap_err()
        .contains("cells:create"));
}

#[test]
fn every_semantic_problem_is_named_at_once() {
    let text = "apiVersion: cellos.io/v1
kind: AuthorizationPolicy
spec:
  id: BAD_ID
  version: '1'
  subjects:
    - {name: 'has space', scopes: [cells:read]}
    - {name: a, scopes: []}
    - {name: a, tenant: Not_A_Label, scopes: [admin], quotas: {concurrentCells: 0}}
    - {name: 'uid:x', scopes: [admin], policyPacks: ['no/slash']}
";
    let doc = parse_authorization_policy(text).expect("parses");
    let problems: Vec<String> = validate_authorization_policy(&doc)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    for path in [
        "spec.id:",
        "spec.subjects[0].name:",
        "spec.subjects[1].scopes:",
        "spec.subjects[2].name: duplicates subjects[1]",
        "spec.subjects[2].tenant:",
        "spec.subjects[2].quotas.concurrentCells:",
        "spec.subjects[3].name:",
        "spec.subjects[3].policyPacks[0]:",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(path)),
            "{path} not in {problems:#?}"
        );
    }
}

#[test]
fn the_schema_covers_the_new_kind() {
    let schema = json_schema();
    let doc = &schema["definitions"]["AuthorizationPolicyDocument"];
    assert_eq!(doc["properties"]["kind"]["const"], "AuthorizationPolicy");
    let text = serde_json::to_string(&schema).unwrap();
    assert!(text.contains("formations:write"));
}

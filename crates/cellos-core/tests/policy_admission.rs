//! Admission: every rule admits, denies, and is audit-only under an audit pack.

use std::fs;
use std::path::Path;

use cellos_core::policy::{admit, AdmissionDecision, PolicyViolation, Verdict};
use cellos_core::spec::{
    parse_execution_cell, parse_policy_pack, validate_policy_pack, ExecutionCellSpec,
    PolicyPackDocument,
};

fn spec(spec_yaml: &str) -> ExecutionCellSpec {
    let text =
        format!("apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec:\n  id: c\n{spec_yaml}");
    parse_execution_cell(&text).expect("spec parses").spec
}

fn pack(id: &str, enforcement: &str, rules: &str) -> PolicyPackDocument {
    let text = format!(
        "apiVersion: cellos.io/v1\nkind: PolicyPack\nspec:\n  id: {id}\n  version: '2'\n  enforcement: {enforcement}\n  rules: {rules}\n"
    );
    let doc = parse_policy_pack(&text).expect("pack parses");
    validate_policy_pack(&doc).expect("pack is valid");
    doc
}

/// Runs one rule against a passing and a failing spec, enforced and audited, and returns the
/// violations of the failing spec.
fn exercise(rules: &str, passing: &str, failing: &str) -> Vec<PolicyViolation> {
    let enforce = [pack("p", "enforce", rules)];
    let audit = [pack("p", "audit", rules)];

    let ok = admit(&spec(passing), &enforce);
    assert_eq!(
        ok.verdict,
        Verdict::Admit,
        "{rules}: {passing}: {:?}",
        ok.violations
    );
    assert!(ok.violations.is_empty());

    let denied = admit(&spec(failing), &enforce);
    assert_eq!(denied.verdict, Verdict::Deny, "{rules}: {failing}");
    assert!(!denied.violations.is_empty());

    let audited = admit(&spec(failing), &audit);
    assert_eq!(audited.verdict, Verdict::AuditOnly, "{rules}: {failing}");
    assert_eq!(audited.violations, denied.violations);
    for v in &denied.violations {
        assert_eq!(v.pack_id, "p");
        assert!(v.path.starts_with("spec."), "{v:?}");
        assert!(!v.message.is_empty());
    }
    denied.violations
}

fn only(violations: &[PolicyViolation]) -> &PolicyViolation {
    assert_eq!(violations.len(), 1, "{violations:#?}");
    &violations[0]
}

const RUN: &str = "  run: {argv: [x]}\n";

#[test]
fn max_ttl_seconds() {
    let v = exercise(
        "{maxTtlSeconds: 60}",
        &format!("{RUN}  lifetime: {{ttlSeconds: 60}}\n"),
        &format!("{RUN}  lifetime: {{ttlSeconds: 61}}\n"),
    );
    let v = only(&v);
    assert_eq!(
        (v.rule.as_str(), v.path.as_str()),
        ("maxTtlSeconds", "spec.lifetime.ttlSeconds")
    );
    assert_eq!(v.message, "61 exceeds the maximum 60");
}

#[test]
fn a_maximum_also_requires_the_value_to_be_set() {
    let v = exercise(
        "{maxTtlSeconds: 60}",
        &format!("{RUN}  lifetime: {{ttlSeconds: 1}}\n"),
        RUN,
    );
    assert!(only(&v).message.contains("must be set"), "{v:?}");
}

#[test]
fn max_timeout_ms() {
    let v = exercise(
        "{maxTimeoutMs: 1000}",
        "  run: {argv: [x], timeoutMs: 1000}\n",
        "  run: {argv: [x], timeoutMs: 1001}\n",
    );
    assert_eq!(only(&v).path, "spec.run.timeoutMs");
}

#[test]
fn max_memory_bytes_accepts_size_strings() {
    let v = exercise(
        "{maxMemoryBytes: 256Mi}",
        "  run: {argv: [x], limits: {memoryMaxBytes: 256Mi}}\n",
        "  run: {argv: [x], limits: {memoryMaxBytes: 257Mi}}\n",
    );
    let v = only(&v);
    assert_eq!(v.path, "spec.run.limits.memoryMaxBytes");
    assert_eq!(
        v.message,
        format!("{} exceeds the maximum {}", 257u64 << 20, 256u64 << 20)
    );
}

#[test]
fn max_cpu_millis_and_max_pids_max() {
    let v = exercise(
        "{maxCpuMillis: 500, maxPidsMax: 10}",
        "  run: {argv: [x], limits: {cpuMillis: 500, pidsMax: 10}}\n",
        "  run: {argv: [x], limits: {cpuMillis: 501, pidsMax: 11}}\n",
    );
    let rules: Vec<&str> = v.iter().map(|v| v.rule.as_str()).collect();
    assert_eq!(rules, ["maxCpuMillis", "maxPidsMax"]);
}

#[test]
fn require_limits_needs_memory_and_pids() {
    let v = exercise(
        "{requireLimits: true}",
        "  run: {argv: [x], limits: {memoryMaxBytes: 64Mi, pidsMax: 8}}\n",
        "  run: {argv: [x], limits: {cpuMillis: 100}}\n",
    );
    let paths: Vec<&str> = v.iter().map(|v| v.path.as_str()).collect();
    assert_eq!(
        paths,
        ["spec.run.limits.memoryMaxBytes", "spec.run.limits.pidsMax"]
    );
}

#[test]
fn require_egress_declared_accepts_rules_or_an_explicit_empty_dns_authority() {
    exercise(
        "{requireEgressDeclared: true}",
        &format!("{RUN}  authority: {{egressRules: [{{host: a.example.com, port: 443}}]}}\n"),
        RUN,
    );
    let v = exercise(
        "{requireEgressDeclared: true}",
        &format!("{RUN}  authority: {{dnsAuthority: {{}}}}\n"),
        &format!("{RUN}  authority: {{secretRefs: [A]}}\n"),
    );
    assert_eq!(only(&v).path, "spec.authority");
}

#[test]
fn forbid_egress_reports_every_rule_and_dns_entry() {
    let v = exercise(
        "{forbidEgress: true}",
        &format!("{RUN}  authority: {{dnsAuthority: {{hostnameAllowlist: []}}}}\n"),
        &format!("{RUN}  authority:\n    egressRules: [{{host: a.com, port: 443}}, {{cidr: 10.0.0.0/8, port: 80}}]\n    dnsAuthority: {{hostnameAllowlist: [a.com]}}\n"),
    );
    let paths: Vec<&str> = v.iter().map(|v| v.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.authority.egressRules[0]",
            "spec.authority.egressRules[1]",
            "spec.authority.dnsAuthority.hostnameAllowlist[0]",
        ]
    );
}

#[test]
fn allowed_egress_hosts_cover_by_pattern() {
    let rules = "{allowedEgressHosts: ['*.a.com', b.com]}";
    exercise(
        rules,
        &format!("{RUN}  authority:\n    egressRules: [{{host: x.a.com, port: 443}}, {{host: '*.x.a.com', port: 443}}, {{host: B.com, port: 443}}]\n    dnsAuthority: {{hostnameAllowlist: ['*.a.com', b.com]}}\n"),
        &format!("{RUN}  authority: {{egressRules: [{{host: a.com, port: 443}}]}}\n"),
    );
    let v = exercise(
        rules,
        RUN,
        &format!("{RUN}  authority:\n    egressRules: [{{host: '*.com', port: 443}}, {{host: x.b.com, port: 443}}, {{cidr: 10.0.0.0/8, port: 80}}]\n    dnsAuthority: {{hostnameAllowlist: [c.com]}}\n"),
    );
    let paths: Vec<&str> = v.iter().map(|v| v.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.authority.egressRules[0].host",
            "spec.authority.egressRules[1].host",
            "spec.authority.egressRules[2].cidr",
            "spec.authority.dnsAuthority.hostnameAllowlist[0]",
        ]
    );
    assert!(v.iter().all(|v| v.rule == "allowedEgressHosts"));
}

#[test]
fn allowed_secret_refs() {
    let v = exercise(
        "{allowedSecretRefs: [API_TOKEN]}",
        &format!("{RUN}  authority: {{secretRefs: [API_TOKEN]}}\n"),
        &format!("{RUN}  authority: {{secretRefs: [API_TOKEN, DB_PASSWORD]}}\n"),
    );
    let v = only(&v);
    assert_eq!(v.path, "spec.authority.secretRefs[1]");
    assert!(v.message.contains("DB_PASSWORD"));
}

#[test]
fn require_file_secret_delivery() {
    let v = exercise(
        "{requireFileSecretDelivery: true}",
        &format!("{RUN}  authority: {{secretRefs: [A]}}\n"),
        "  run: {argv: [x], secretDelivery: env}\n  authority: {secretRefs: [A]}\n",
    );
    assert_eq!(only(&v).path, "spec.run.secretDelivery");
}

#[test]
fn require_dns_egress_justification_only_when_names_are_reached() {
    let rules = "{requireDnsEgressJustification: true}";
    exercise(
        rules,
        &format!("{RUN}  authority: {{egressRules: [{{host: a.com, port: 443}}], dnsEgressJustification: fetch data}}\n"),
        &format!("{RUN}  authority: {{egressRules: [{{host: a.com, port: 443}}], dnsEgressJustification: '  '}}\n"),
    );
    exercise(
        rules,
        &format!("{RUN}  authority: {{egressRules: [{{cidr: 10.0.0.0/8, port: 443}}]}}\n"),
        &format!("{RUN}  authority: {{dnsAuthority: {{hostnameAllowlist: [a.com]}}}}\n"),
    );
}

#[test]
fn min_landlock_abi_denies_a_spec_asking_for_less() {
    let landlock = |abi: u32| format!("{RUN}  filesystem: {{landlock: {{minAbi: {abi}}}}}\n");
    let v = exercise("{minLandlockAbi: 3}", &landlock(3), &landlock(2));
    let v = only(&v);
    assert_eq!(
        (v.rule.as_str(), v.path.as_str()),
        ("minLandlockAbi", "spec.filesystem.landlock.minAbi")
    );
    assert!(
        v.message.contains("ABI 2") && v.message.contains("at least ABI 3"),
        "{v:?}"
    );
    exercise("{minLandlockAbi: 3}", &landlock(5), &landlock(1));
}

#[test]
fn min_landlock_abi_1_denies_optional_landlock_and_counts_an_unset_requirement_as_1() {
    let optional = format!("{RUN}  filesystem: {{landlock: {{minAbi: 0}}}}\n");
    let v = exercise("{minLandlockAbi: 1}", RUN, &optional);
    assert!(only(&v).message.contains("Landlock optional"), "{v:?}");
    // An unset requirement is ABI 1, below a pack asking for 2.
    let v = exercise(
        "{minLandlockAbi: 2}",
        &format!("{RUN}  filesystem: {{landlock: {{minAbi: 2}}}}\n"),
        RUN,
    );
    assert_eq!(only(&v).path, "spec.filesystem.landlock.minAbi");
}

#[test]
fn a_pack_requiring_a_landlock_abi_cellos_does_not_apply_is_invalid() {
    let text = "apiVersion: cellos.io/v1\nkind: PolicyPack\nspec:\n  id: p\n  version: '1'\n  rules: {minLandlockAbi: 6}\n";
    let problems = validate_policy_pack(&parse_policy_pack(text).expect("parses"))
        .expect_err("ABI 6 is beyond what CellOS applies");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, "spec.rules.minLandlockAbi");
    assert!(problems[0].message.contains("up to ABI 5"), "{problems:?}");
}

#[test]
fn a_pack_without_rules_is_audit_only_even_without_violations() {
    let empty = pack("observe", "enforce", "{}");
    let decision = admit(&spec(RUN), &[empty]);
    assert_eq!(
        decision,
        AdmissionDecision {
            verdict: Verdict::AuditOnly,
            packs: vec!["observe@2".to_owned()],
            violations: vec![],
        }
    );
}

#[test]
fn no_packs_admit() {
    let decision = admit(&spec(RUN), &[]);
    assert_eq!(decision.verdict, Verdict::Admit);
    assert!(decision.packs.is_empty());
}

#[test]
fn an_enforcing_violation_wins_over_audit_packs_and_all_violations_are_kept() {
    let packs = [
        pack("audit-ttl", "audit", "{maxTtlSeconds: 10}"),
        pack("enforce-pids", "enforce", "{maxPidsMax: 5}"),
        pack("clean", "enforce", "{forbidEgress: true}"),
    ];
    let decision = admit(
        &spec("  run: {argv: [x], limits: {pidsMax: 6}}\n  lifetime: {ttlSeconds: 20}\n"),
        &packs,
    );
    assert_eq!(decision.verdict, Verdict::Deny);
    assert_eq!(decision.packs, ["audit-ttl@2", "enforce-pids@2", "clean@2"]);
    let owners: Vec<(&str, &str)> = decision
        .violations
        .iter()
        .map(|v| (v.pack_id.as_str(), v.rule.as_str()))
        .collect();
    assert_eq!(
        owners,
        [
            ("audit-ttl", "maxTtlSeconds"),
            ("enforce-pids", "maxPidsMax")
        ]
    );
}

fn example(sub: &str, name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(sub)
        .join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_example_specs_under_the_example_policies() {
    let default = parse_policy_pack(&example("policies", "default.yaml")).expect("default");
    let strict = parse_policy_pack(&example("policies", "strict.yaml")).expect("strict");
    let egress_audit =
        parse_policy_pack(&example("policies", "egress-audit.yaml")).expect("egress-audit");
    let load = |name: &str| {
        parse_execution_cell(&example("specs", name))
            .expect(name)
            .spec
    };

    for name in [
        "hello.yaml",
        "python-workspace.yaml",
        "secrets.yaml",
        "export.yaml",
        "limits.yaml",
        "egress.yaml",
    ] {
        let decision = admit(&load(name), std::slice::from_ref(&default));
        assert_eq!(
            decision.verdict,
            Verdict::Admit,
            "{name}: {:?}",
            decision.violations
        );
    }
    assert_eq!(
        admit(&load("limits.yaml"), std::slice::from_ref(&strict)).verdict,
        Verdict::Admit
    );
    // hello sets no timeout or CPU bound, which strict requires.
    let hello = admit(&load("hello.yaml"), std::slice::from_ref(&strict));
    assert_eq!(hello.verdict, Verdict::Deny);
    let rules: Vec<&str> = hello.violations.iter().map(|v| v.rule.as_str()).collect();
    assert_eq!(rules, ["maxTimeoutMs", "maxCpuMillis"]);
    // egress.yaml reaches a CIDR block, outside the audit pack's host list: recorded, not denied.
    let egress = admit(&load("egress.yaml"), &[default, egress_audit]);
    assert_eq!(
        egress.verdict,
        Verdict::AuditOnly,
        "{:?}",
        egress.violations
    );
    assert_eq!(
        only(&egress.violations).path,
        "spec.authority.egressRules[2].cidr"
    );
}

#[test]
fn session_cells_are_admitted_on_their_own_limits_and_need_a_ttl_under_a_ttl_cap() {
    let found = exercise(
        "{maxTtlSeconds: 600}",
        "  lifetime: {ttlSeconds: 600, idleTimeoutSeconds: 60}\n",
        "  lifetime: {idleTimeoutSeconds: 60}\n",
    );
    assert_eq!(found[0].path, "spec.lifetime.ttlSeconds");
    let found = exercise(
        "{maxMemoryBytes: 67108864, requireLimits: true}",
        "  limits: {memoryMaxBytes: 64Mi, pidsMax: 16}\n",
        "  limits: {memoryMaxBytes: 128Mi, pidsMax: 16}\n",
    );
    assert_eq!(found[0].path, "spec.limits.memoryMaxBytes");
}

#[test]
fn export_credentials_are_secrets_the_pack_must_allow() {
    let export = |name: &str| {
        format!("  run: {{argv: [x]}}\n  export:\n    targets:\n      - {{name: h, kind: http, url: 'https://a.test', credentials: {{authorizationRef: {name}}}}}\n")
    };
    let found = exercise(
        "{allowedSecretRefs: [UPLOAD]}",
        &export("UPLOAD"),
        &export("OTHER"),
    );
    let v = only(&found);
    assert_eq!(v.rule, "allowedSecretRefs");
    assert_eq!(
        v.path,
        "spec.export.targets[0].credentials.authorizationRef"
    );
}

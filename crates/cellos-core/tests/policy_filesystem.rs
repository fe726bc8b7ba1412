//! Filesystem authority of policy packs: mount sources, root filesystems and the workspace cap,
//! judged by where each host path really leads (real directories and symlinks in a temporary
//! tree).

use std::os::unix::fs::symlink;
use std::path::Path;

use cellos_core::policy::{admit, PolicyViolation, Verdict};
use cellos_core::spec::{
    parse_execution_cell, parse_policy_pack, validate_policy_pack, ExecutionCellSpec,
    PolicyPackDocument,
};

fn spec(filesystem_yaml: &str) -> ExecutionCellSpec {
    let text = format!(
        "apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec:\n  id: c\n  run: {{argv: [/bin/true]}}\n  filesystem: {filesystem_yaml}\n"
    );
    parse_execution_cell(&text).expect("spec parses").spec
}

fn pack(rules: &str) -> PolicyPackDocument {
    let text =
        format!("apiVersion: cellos.io/v1\nkind: PolicyPack\nspec:\n  id: fs\n  version: '1'\n  rules: {rules}\n");
    let doc = parse_policy_pack(&text).expect("pack parses");
    validate_policy_pack(&doc).expect("pack is valid");
    doc
}

fn violations(rules: &str, filesystem: &str) -> Vec<PolicyViolation> {
    let decision = admit(&spec(filesystem), &[pack(rules)]);
    if decision.violations.is_empty() {
        assert_eq!(decision.verdict, Verdict::Admit);
    } else {
        assert_eq!(decision.verdict, Verdict::Deny, "{:?}", decision.violations);
    }
    decision.violations
}

fn refused(rules: &str, filesystem: &str, rule: &str, path: &str) -> String {
    let found = violations(rules, filesystem);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].rule, rule, "{found:#?}");
    assert_eq!(found[0].path, path, "{found:#?}");
    found[0].message.clone()
}

/// A tree with an allowed prefix `srv/allowed` (holding `data/`), a directory outside it
/// standing in for the CellOS home, and symlinks leading out.
struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("srv/allowed/data")).unwrap();
        std::fs::create_dir_all(root.join("srv/rw/out")).unwrap();
        std::fs::create_dir_all(root.join("home/.cellos")).unwrap();
        symlink("/", root.join("srv/allowed/to-root")).unwrap();
        symlink(root.join("home/.cellos"), root.join("srv/allowed/to-home")).unwrap();
        symlink("data", root.join("srv/allowed/inside")).unwrap();
        Self { dir }
    }

    fn path(&self, rel: &str) -> String {
        self.dir.path().join(rel).display().to_string()
    }

    /// Rules allowing `srv/allowed` read-only and `srv/rw` read-write.
    fn rules(&self) -> String {
        format!(
            "{{allowedMountSources: [{{prefix: {}}}, {{prefix: {}, readWrite: true}}]}}",
            self.path("srv/allowed"),
            self.path("srv/rw")
        )
    }

    fn mount(&self, source: &str, read_only: bool) -> String {
        let source = if source.starts_with('/') {
            source.to_owned()
        } else {
            self.path(source)
        };
        format!("{{mounts: [{{source: '{source}', target: /m, readOnly: {read_only}}}]}}")
    }
}

const MOUNT: &str = "spec.filesystem.mounts[0].source";

#[test]
fn sources_under_an_allowed_prefix_are_admitted_read_only_and_read_write_where_allowed() {
    let t = Tree::new();
    assert!(violations(&t.rules(), &t.mount("srv/allowed/data", true)).is_empty());
    assert!(violations(&t.rules(), &t.mount("srv/allowed", true)).is_empty());
    assert!(violations(&t.rules(), &t.mount("srv/allowed/inside", true)).is_empty());
    assert!(violations(&t.rules(), &t.mount("srv/rw/out", false)).is_empty());
}

#[test]
fn the_host_root_and_tmp_read_write_are_refused_with_the_rule_named() {
    let t = Tree::new();
    let root = refused(
        &t.rules(),
        &t.mount("/", true),
        "allowedMountSources",
        MOUNT,
    );
    assert!(root.contains("not under an allowed prefix"), "{root}");
    let tmp = refused(
        &t.rules(),
        &t.mount("/tmp", false),
        "allowedMountSources",
        MOUNT,
    );
    assert!(tmp.contains("\"/tmp\""), "{tmp}");
}

#[test]
fn read_write_under_a_read_only_prefix_is_refused() {
    let t = Tree::new();
    let why = refused(
        &t.rules(),
        &t.mount("srv/allowed/data", false),
        "allowedMountSources",
        MOUNT,
    );
    assert!(why.contains("read-only"), "{why}");
}

#[test]
fn the_cellos_home_outside_every_prefix_is_refused() {
    let t = Tree::new();
    refused(
        &t.rules(),
        &t.mount("home/.cellos", true),
        "allowedMountSources",
        MOUNT,
    );
}

#[test]
fn symlinks_that_lead_out_of_an_allowed_prefix_are_refused_by_where_they_lead() {
    let t = Tree::new();
    let why = refused(
        &t.rules(),
        &t.mount("srv/allowed/to-root", true),
        "allowedMountSources",
        MOUNT,
    );
    assert!(why.contains("resolves to /"), "{why}");
    let why = refused(
        &t.rules(),
        &t.mount("srv/allowed/to-home", true),
        "allowedMountSources",
        MOUNT,
    );
    assert!(why.contains(&t.path("home/.cellos")), "{why}");
}

#[test]
fn dot_dot_paths_that_only_look_allowed_are_refused() {
    let t = Tree::new();
    // Validation refuses `..` in a source too; admission does not rely on it.
    let source = format!("{}/../../../home/.cellos", t.path("srv/allowed/data"));
    let why = refused(
        &t.rules(),
        &t.mount(&source, true),
        "allowedMountSources",
        MOUNT,
    );
    assert!(why.contains("resolves to"), "{why}");
}

#[test]
fn a_source_that_does_not_resolve_is_refused_not_passed() {
    let t = Tree::new();
    let why = refused(
        &t.rules(),
        &t.mount("srv/allowed/missing", true),
        "allowedMountSources",
        MOUNT,
    );
    assert!(why.contains("cannot be resolved"), "{why}");
}

#[test]
fn an_empty_list_allows_no_host_mounts_at_all() {
    let t = Tree::new();
    let why = refused(
        "{allowedMountSources: []}",
        &t.mount("srv/allowed/data", true),
        "allowedMountSources",
        MOUNT,
    );
    assert!(why.contains("allows no host mounts"), "{why}");
    let workspace = format!(
        "{{workspace: {{target: /w, source: '{}'}}}}",
        t.path("srv/rw")
    );
    refused(
        "{allowedMountSources: []}",
        &workspace,
        "allowedMountSources",
        "spec.filesystem.workspace.source",
    );
    assert!(violations("{allowedMountSources: []}", "{workspace: {target: /w}}").is_empty());
}

#[test]
fn a_workspace_host_directory_is_a_read_write_source() {
    let t = Tree::new();
    let ws = |rel: &str| format!("{{workspace: {{target: /w, source: '{}'}}}}", t.path(rel));
    assert!(violations(&t.rules(), &ws("srv/rw/out")).is_empty());
    refused(
        &t.rules(),
        &ws("srv/allowed/data"),
        "allowedMountSources",
        "spec.filesystem.workspace.source",
    );
}

#[test]
fn root_filesystem_kinds_are_refused_unless_named() {
    let t = Tree::new();
    let digest = format!("sha256:{}", "ab".repeat(32));
    let rules = format!(
        "{{allowedRootfs: {{pathPrefixes: ['{}'], ociStores: ['{}'], ociDigests: ['{digest}']}}}}",
        t.path("srv/allowed"),
        t.path("srv/rw")
    );
    refused(
        &rules,
        "{rootfs: host}",
        "allowedRootfs",
        "spec.filesystem.rootfs",
    );
    let path = |rel: &str| format!("{{rootfs: {{path: '{}'}}}}", t.path(rel));
    assert!(violations(&rules, &path("srv/allowed/data")).is_empty());
    refused(
        &rules,
        &path("srv/allowed/to-root"),
        "allowedRootfs",
        "spec.filesystem.rootfs.path",
    );
    let oci = |layout: &str, reference: &str| {
        format!("{{rootfs: {{ociLayout: '{layout}', ref: '{reference}'}}}}")
    };
    assert!(violations(&rules, &oci(&t.path("srv/rw/out"), "app:1")).is_empty());
    assert!(violations(&rules, &oci(&t.path("home"), &digest)).is_empty());
    refused(
        &rules,
        &oci(&t.path("home"), "app:1"),
        "allowedRootfs",
        "spec.filesystem.rootfs.ociLayout",
    );
    assert!(violations("{allowedRootfs: {host: true}}", "{rootfs: host}").is_empty());
}

#[test]
fn the_workspace_size_is_capped_including_its_default() {
    let rules = "{maxWorkspaceBytes: 32Mi}";
    assert!(violations(rules, "{workspace: {target: /w, sizeBytes: 16Mi}}").is_empty());
    let why = refused(
        rules,
        "{workspace: {target: /w, sizeBytes: 1Gi}}",
        "maxWorkspaceBytes",
        "spec.filesystem.workspace.sizeBytes",
    );
    assert!(why.contains("exceeds the maximum 33554432"), "{why}");
    // No sizeBytes means the 64 MiB default, which is over this cap.
    refused(
        rules,
        "{workspace: {target: /w}}",
        "maxWorkspaceBytes",
        "spec.filesystem.workspace.sizeBytes",
    );
}

#[test]
fn packs_with_relative_prefixes_or_bad_digests_are_invalid() {
    let parse = |rules: &str| {
        let text = format!(
            "apiVersion: cellos.io/v1\nkind: PolicyPack\nspec:\n  id: fs\n  version: '1'\n  rules: {rules}\n"
        );
        let doc = parse_policy_pack(&text).expect("pack parses");
        format!(
            "{:?}",
            validate_policy_pack(&doc).expect_err("pack is invalid")
        )
    };
    let err = parse("{allowedMountSources: [{prefix: srv}]}");
    assert!(
        err.contains("spec.rules.allowedMountSources[0].prefix"),
        "{err}"
    );
    let err = parse("{allowedRootfs: {ociDigests: [sha256:abc]}}");
    assert!(
        err.contains("spec.rules.allowedRootfs.ociDigests[0]"),
        "{err}"
    );
    let err = parse("{maxWorkspaceBytes: 0}");
    assert!(err.contains("spec.rules.maxWorkspaceBytes"), "{err}");
}

#[test]
fn nothing_is_resolved_without_filesystem_rules() {
    // A pack without filesystem rules does not judge mounts (existing packs keep their meaning).
    let missing = Path::new("/nonexistent/cellos/source");
    assert!(!missing.exists());
    let fs = format!(
        "{{mounts: [{{source: {}, target: /m}}]}}",
        missing.display()
    );
    assert!(violations("{forbidEgress: true}", &fs).is_empty());
}

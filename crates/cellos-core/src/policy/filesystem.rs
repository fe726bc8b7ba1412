//! The filesystem rules of a pack: which host paths a cell may bind, read-only or read-write,
//! which root filesystems it may use, and how large its workspace may be.
//!
//! A path is judged by where it really leads: each source is resolved (symlinks, `..`) through
//! a [`PathResolver`] before it is compared, component by component, with prefixes that are
//! resolved the same way. `/srv/allowed/../../etc` and a symlink under `/srv/allowed` that
//! points at `/` are therefore both outside `/srv/allowed`. A source that cannot be resolved is
//! refused (the rule cannot be checked, so it does not pass).

use std::path::{Path, PathBuf};

use crate::spec::{
    ExecutionCellSpec, MountSourceRule, PolicyRules, RootfsRules, RootfsSpec,
    DEFAULT_WORKSPACE_BYTES,
};

use super::admission::Checker;

/// Resolves host paths for admission; the host's filesystem in production ([`HostPaths`]).
pub trait PathResolver {
    /// The absolute path `path` leads to, every symlink and `..` resolved.
    fn resolve(&self, path: &Path) -> std::io::Result<PathBuf>;
}

/// Resolution by the host's filesystem (`realpath(3)`).
#[derive(Debug, Clone, Copy, Default)]
pub struct HostPaths;

impl PathResolver for HostPaths {
    fn resolve(&self, path: &Path) -> std::io::Result<PathBuf> {
        std::fs::canonicalize(path)
    }
}

/// A host path the spec binds, where it is declared and how.
struct Source<'a> {
    path: &'a str,
    at: String,
    read_write: bool,
}

fn sources(spec: &ExecutionCellSpec) -> Vec<Source<'_>> {
    let Some(fs) = &spec.filesystem else {
        return Vec::new();
    };
    let mut out: Vec<Source<'_>> = fs
        .mounts
        .iter()
        .enumerate()
        .map(|(i, m)| Source {
            path: &m.source,
            at: format!("spec.filesystem.mounts[{i}].source"),
            read_write: !m.read_only,
        })
        .collect();
    if let Some(source) = fs.workspace.as_ref().and_then(|w| w.source.as_deref()) {
        out.push(Source {
            path: source,
            at: "spec.filesystem.workspace.source".into(),
            read_write: true,
        });
    }
    out
}

/// Checks the filesystem rules of one pack.
pub(super) fn check(
    spec: &ExecutionCellSpec,
    rules: &PolicyRules,
    resolver: &dyn PathResolver,
    c: &mut Checker<'_>,
) {
    if let Some(allowed) = &rules.allowed_mount_sources {
        for source in sources(spec) {
            check_mount_source(&source, allowed, resolver, c);
        }
    }
    if let Some(allowed) = &rules.allowed_rootfs {
        check_rootfs(spec, allowed, resolver, c);
    }
    if let Some(max) = rules.max_workspace_bytes {
        check_workspace_size(spec, max, c);
    }
}

/// Whether `resolved` is `prefix` or lies below it, once `prefix` is resolved too (a prefix
/// that does not exist holds nothing).
fn under(resolved: &Path, prefix: &str, resolver: &dyn PathResolver) -> bool {
    resolver
        .resolve(Path::new(prefix))
        .is_ok_and(|p| resolved.starts_with(p))
}

fn check_mount_source(
    source: &Source<'_>,
    allowed: &[MountSourceRule],
    resolver: &dyn PathResolver,
    c: &mut Checker<'_>,
) {
    const RULE: &str = "allowedMountSources";
    let resolved = match resolver.resolve(Path::new(source.path)) {
        Ok(resolved) => resolved,
        Err(e) => {
            return c.violation(
                RULE,
                &source.at,
                format!(
                    "{:?} cannot be resolved ({e}), so it cannot be checked against \
                     allowedMountSources",
                    source.path
                ),
            )
        }
    };
    let shown = if resolved == Path::new(source.path) {
        format!("{:?}", source.path)
    } else {
        format!("{:?} (resolves to {})", source.path, resolved.display())
    };
    let matching: Vec<&MountSourceRule> = allowed
        .iter()
        .filter(|rule| under(&resolved, &rule.prefix, resolver))
        .collect();
    if matching.is_empty() {
        let why = if allowed.is_empty() {
            "this pack allows no host mounts".to_owned()
        } else {
            let prefixes: Vec<&str> = allowed.iter().map(|r| r.prefix.as_str()).collect();
            format!(
                "it is not under an allowed prefix ({})",
                prefixes.join(", ")
            )
        };
        c.violation(RULE, &source.at, format!("{shown} may not be bound: {why}"));
    } else if source.read_write && !matching.iter().any(|rule| rule.read_write) {
        c.violation(
            RULE,
            &source.at,
            format!(
                "{shown} may only be bound read-only under this pack; set readOnly: true or \
                 ask for a prefix with readWrite: true"
            ),
        );
    }
}

fn check_rootfs(
    spec: &ExecutionCellSpec,
    allowed: &RootfsRules,
    resolver: &dyn PathResolver,
    c: &mut Checker<'_>,
) {
    const RULE: &str = "allowedRootfs";
    let rootfs = spec
        .filesystem
        .as_ref()
        .map_or(&RootfsSpec::Host, |fs| &fs.rootfs);
    let resolved_under = |path: &str, prefixes: &[String]| {
        resolver
            .resolve(Path::new(path))
            .is_ok_and(|r| prefixes.iter().any(|p| under(&r, p, resolver)))
    };
    match rootfs {
        RootfsSpec::Host if !allowed.host => c.violation(
            RULE,
            "spec.filesystem.rootfs",
            "rootfs: host is not allowed by this pack; use a root filesystem it allows",
        ),
        RootfsSpec::Path(p) if !resolved_under(&p.path, &allowed.path_prefixes) => c.violation(
            RULE,
            "spec.filesystem.rootfs.path",
            format!(
                "{:?} is not under an allowed root directory ({})",
                p.path,
                allowed.path_prefixes.join(", ")
            ),
        ),
        RootfsSpec::Oci(oci)
            if !allowed.oci_digests.contains(&oci.reference)
                && !resolved_under(&oci.oci_layout, &allowed.oci_stores) =>
        {
            c.violation(
                RULE,
                "spec.filesystem.rootfs.ociLayout",
                format!(
                    "image {:?} of {:?} is neither in an allowed store ({}) nor an allowed \
                     digest",
                    oci.reference,
                    oci.oci_layout,
                    allowed.oci_stores.join(", ")
                ),
            )
        }
        _ => {}
    }
}

fn check_workspace_size(spec: &ExecutionCellSpec, max: u64, c: &mut Checker<'_>) {
    let Some(ws) = spec
        .filesystem
        .as_ref()
        .and_then(|fs| fs.workspace.as_ref())
    else {
        return;
    };
    if ws.source.is_some() {
        // A host directory: governed by allowedMountSources, it has no tmpfs size.
        return;
    }
    let size = match ws.size_bytes.as_ref().map(|s| s.bytes()) {
        None => DEFAULT_WORKSPACE_BYTES,
        Some(Ok(size)) => size,
        Some(Err(e)) => {
            return c.violation(
                "maxWorkspaceBytes",
                "spec.filesystem.workspace.sizeBytes",
                format!("cannot be read ({e}), so it cannot be checked against {max}"),
            )
        }
    };
    if size > max {
        c.violation(
            "maxWorkspaceBytes",
            "spec.filesystem.workspace.sizeBytes",
            format!("{size} exceeds the maximum {max}"),
        );
    }
}

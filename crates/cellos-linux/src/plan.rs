//! From spec to [`InitConfig`]: everything the in-cell init needs, validated on the host side.
//!
//! The supervisor side resolves and checks every host path (sources must exist and contain no
//! symlinks, targets must stay inside the cell) so that init only executes a plan. Init re-opens
//! each source with `RESOLVE_NO_SYMLINKS`, so a symlink swapped in after validation is refused
//! instead of followed.

use std::path::{Component, Path, PathBuf};

use cellos_core::spec::{
    absolute_path, cell_target, check_secret_name, validate_cell_spec, ExecutionCellSpec, Problem,
    SecretDeliveryMode, DEFAULT_WORKSPACE_BYTES,
};
use serde::{Deserialize, Serialize};

use crate::error::LinuxError;

/// Uid and gid of the workload inside the cell's user namespace (unprivileged there).
pub const WORKLOAD_ID: u32 = 1000;

/// `PATH` used when the spec's environment does not set one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Host system directories shared read-only with a `rootfs: host` cell (symlinks among them,
/// as on merged-/usr systems, are recreated as symlinks instead of bound).
pub const HOST_SYSTEM_ENTRIES: &[&str] = &["usr", "bin", "sbin", "lib", "lib64", "lib32", "libx32"];

/// Top-level directories of an image rootfs that init provides itself.
const PROVIDED_BY_INIT: &[&str] = &["proc", "dev", "sys", "tmp", "run", "etc"];

/// The plan init executes. Contains no secret values (those travel as separate frames).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
/// Unknown fields are refused, here and in every part of the plan: an init built from older
/// sources must fail closed on a plan it does not fully understand, never skip a protection.
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InitConfig {
    pub cell_id: String,
    /// Directory (in init's private mount namespace) on which init mounts the new root.
    pub build_dir: PathBuf,
    /// Top-level entries of the new root.
    pub root: Vec<RootEntry>,
    /// Source of the cell's `/etc` (host `/etc` or the image's), if any.
    pub etc_source: Option<PathBuf>,
    /// Overlay layer of whiteouts that hides host secrets in `/etc` (host rootfs only).
    pub etc_mask: Option<PathBuf>,
    /// Index (among the descriptors sent after the config) of the detached `/etc` overlay.
    pub etc_fd: Option<usize>,
    /// Declared mounts and the workspace, parents before children.
    pub mounts: Vec<MountPlan>,
    /// The workload; empty for a session cell.
    pub argv: Vec<String>,
    /// A session cell: init runs no workload and serves execs until the supervisor closes the
    /// control channel.
    pub session: bool,
    /// `KEY=value` entries, without secrets.
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub secret_delivery: SecretDeliveryMode,
    pub landlock: LandlockPaths,
    /// The Landlock ABI the supervisor reported; the workload refuses to start under another.
    pub expected_landlock_abi: Option<u32>,
    /// The seccomp program (compiled once on the supervisor side), as BPF instructions.
    pub seccomp: Vec<BpfInstruction>,
    /// Keep the namespaces after the workload ends, until the supervisor closes the control
    /// pipe (artifacts are read through them). Without declared artifacts init exits at once,
    /// so the kernel tears the cell down while the supervisor records the outcome.
    pub keep_after_exit: bool,
    /// The in-cell telemetry agent init starts beside the workload (`spec.telemetry.enabled`).
    pub telemetry_agent: Option<AgentPlan>,
    /// The cell's `/etc/resolv.conf` (networked cells: their DNS authority only).
    #[serde(default)]
    pub resolv_conf: Option<String>,
}

/// How init starts the telemetry agent: as the workload's uid, confined like it, with only
/// this environment (never the workload's, which may hold secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentPlan {
    /// Cell path of the (read-only bound) agent binary.
    pub path: String,
    /// `KEY=value` entries.
    pub env: Vec<String>,
}

/// One classic-BPF instruction of the seccomp program. In the plan it travels packed into one
/// integer (`code << 48 | jt << 40 | jf << 32 | k`): the program is hundreds of
/// instructions, and as JSON objects it was most of the plan's bytes and of the time both
/// sides spent encoding and parsing it, on the way to the cell's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "u64", into = "u64")]
pub struct BpfInstruction {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

impl From<BpfInstruction> for u64 {
    fn from(i: BpfInstruction) -> u64 {
        u64::from(i.code) << 48 | u64::from(i.jt) << 40 | u64::from(i.jf) << 32 | u64::from(i.k)
    }
}

impl From<u64> for BpfInstruction {
    fn from(packed: u64) -> BpfInstruction {
        // Truncating casts pick the fields out again.
        BpfInstruction {
            code: (packed >> 48) as u16,
            jt: (packed >> 40) as u8,
            jf: (packed >> 32) as u8,
            k: packed as u32,
        }
    }
}

/// A top-level entry of the new root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind", deny_unknown_fields)]
pub enum RootEntry {
    Symlink {
        name: String,
        target: PathBuf,
    },
    /// `fd`: index of the detached tree of `source` among the descriptors sent after the
    /// config (assigned by the backend, see [`crate::trees`]).
    Dir {
        name: String,
        source: PathBuf,
        fd: usize,
    },
    File {
        name: String,
        source: PathBuf,
        fd: usize,
    },
}

/// A mount inside the cell, after validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind", deny_unknown_fields)]
pub enum MountPlan {
    /// Bind of a host path (symlink-free, checked to exist); `fd` is the index of the detached
    /// tree of `source` among the descriptors sent after the config.
    Bind {
        source: PathBuf,
        target: String,
        read_only: bool,
        is_dir: bool,
        fd: usize,
    },
    /// The size-capped workspace tmpfs, owned by the workload.
    Tmpfs { target: String, size_bytes: u64 },
}

impl MountPlan {
    pub fn target(&self) -> &str {
        match self {
            MountPlan::Bind { target, .. } | MountPlan::Tmpfs { target, .. } => target,
        }
    }
}

/// Landlock path sets, as cell paths (see `landlock_rules::LandlockPlan`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LandlockPaths {
    pub read_exec: Vec<String>,
    pub read_only: Vec<String>,
    pub read_write: Vec<String>,
}

impl LandlockPaths {
    /// Whether any writable path is also executable: what the isolation report records, read
    /// from the rules init applies rather than from the spec.
    pub fn writable_exec(&self) -> bool {
        self.read_write.iter().any(|p| self.read_exec.contains(p))
    }
}

impl InitConfig {
    /// Number each host tree the plan needs (root entries, binds, `/etc`), in the order
    /// [`Self::tree_sources`] lists them. Returns how many there are.
    pub fn number_trees(&mut self) -> usize {
        let mut n = 0;
        let mut next = || {
            n += 1;
            n - 1
        };
        for entry in &mut self.root {
            if let RootEntry::Dir { fd, .. } | RootEntry::File { fd, .. } = entry {
                *fd = next();
            }
        }
        for m in &mut self.mounts {
            if let MountPlan::Bind { fd, .. } = m {
                *fd = next();
            }
        }
        if self.etc_source.is_some() {
            self.etc_fd = Some(next());
        }
        n
    }

    /// How many trees [`Self::number_trees`] numbered.
    pub fn tree_count(&self) -> usize {
        let roots = self
            .root
            .iter()
            .filter(|e| !matches!(e, RootEntry::Symlink { .. }))
            .count();
        let binds = self
            .mounts
            .iter()
            .filter(|m| matches!(m, MountPlan::Bind { .. }))
            .count();
        roots + binds + usize::from(self.etc_fd.is_some())
    }
}

/// Where the rootfs of a cell comes from, after resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolvedRootfs {
    Host,
    /// A directory used as the root (from `rootfs: {path}` or a materialised OCI image).
    Dir(PathBuf),
}

/// Inputs of [`build`] that do not come from the spec.
pub struct PlanContext<'a> {
    pub build_dir: &'a Path,
    pub rootfs: &'a ResolvedRootfs,
    pub etc_mask: Option<&'a Path>,
    pub secret_delivery: SecretDeliveryMode,
    pub secret_keys: &'a [String],
    pub expected_landlock_abi: Option<u32>,
    pub seccomp: Vec<BpfInstruction>,
    /// Telemetry binds (socket, agent binary; targets under `/run/cellos`) and the agent, when
    /// `spec.telemetry.enabled`.
    pub telemetry: Option<(Vec<MountPlan>, AgentPlan)>,
}

/// Turn `spec` into the plan init executes.
///
/// The spec is checked by the core's validator first, so the plan refuses exactly what
/// `cellos validate` refuses, with the same messages; what follows uses the values that
/// validation vouched for (normalised targets, parsed sizes). Only what needs the host (do the
/// declared sources exist, free of symlinks?) is checked here, reported by field path too.
pub fn build(spec: &ExecutionCellSpec, ctx: PlanContext<'_>) -> Result<InitConfig, LinuxError> {
    validate_cell_spec(spec).map_err(|problems| LinuxError::Invalid { problems })?;
    for key in ctx.secret_keys {
        check_secret_name(key).map_err(|why| refused(format!("delivered secret key: {why}")))?;
    }

    let (root, etc_source) = match ctx.rootfs {
        ResolvedRootfs::Host => (host_root_entries()?, Some(PathBuf::from("/etc"))),
        ResolvedRootfs::Dir(dir) => image_root_entries(dir)?,
    };

    let fs = spec.filesystem.clone().unwrap_or_default();
    // Each declared mount with the field that declared it, to name it in a refusal.
    let mut declared: Vec<(String, MountPlan)> = Vec::new();
    for (i, m) in fs.mounts.iter().enumerate() {
        let field = format!("spec.filesystem.mounts[{i}]");
        let target = target(&format!("{field}.target"), &m.target)?;
        let plan = bind_plan(&field, &m.source, target, m.read_only)?;
        declared.push((format!("{field}.target"), plan));
    }
    let mut workspace_target = None;
    if let Some(ws) = &fs.workspace {
        let field = "spec.filesystem.workspace";
        let target = target(&format!("{field}.target"), &ws.target)?;
        workspace_target = Some(target.clone());
        let plan = match &ws.source {
            Some(source) => bind_plan(field, source, target, false)?,
            None => {
                let size_bytes = match &ws.size_bytes {
                    Some(size) => size
                        .bytes()
                        .map_err(|e| invalid(format!("{field}.sizeBytes"), e.to_string()))?,
                    None => DEFAULT_WORKSPACE_BYTES,
                };
                MountPlan::Tmpfs { target, size_bytes }
            }
        };
        declared.push((format!("{field}.target"), plan));
    }
    let trees = Trees {
        root: &root,
        etc: etc_source.as_deref(),
        declared: &declared,
    };
    for (field, m) in &declared {
        trees.check_mount_point(field, m.target())?;
    }
    let mut mounts: Vec<MountPlan> = declared.into_iter().map(|(_, m)| m).collect();
    // Init's own binds, under the reserved /run/cellos that no declared target may enter.
    let telemetry_agent = ctx.telemetry.map(|(binds, agent)| {
        mounts.extend(binds);
        agent
    });
    // Parents before children, so a nested target is created inside its parent mount.
    mounts.sort_by_key(|m| m.target().matches('/').count());

    let home = workspace_target.clone().unwrap_or_else(|| "/".to_owned());
    let empty = std::collections::BTreeMap::new();
    let run_env = spec.run.as_ref().map_or(&empty, |r| &r.env);
    let cwd = match spec.run.as_ref().and_then(|r| r.cwd.as_ref()) {
        Some(cwd) => absolute_path(cwd).map_err(|e| invalid("spec.run.cwd", e.to_string()))?,
        None => home.clone(),
    };

    let mut env: Vec<String> = run_env
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    if !run_env.contains_key("PATH") {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    if !run_env.contains_key("HOME") {
        env.push(format!("HOME={home}"));
    }

    let landlock = landlock_paths(&root, &mounts, !fs.no_exec_writable);
    Ok(InitConfig {
        cell_id: spec.id.clone(),
        build_dir: ctx.build_dir.to_path_buf(),
        root,
        etc_source,
        etc_mask: match ctx.rootfs {
            ResolvedRootfs::Host => ctx.etc_mask.map(Path::to_path_buf),
            ResolvedRootfs::Dir(_) => None,
        },
        etc_fd: None,
        mounts,
        argv: spec.argv().to_vec(),
        session: spec.is_session(),
        env,
        cwd,
        uid: WORKLOAD_ID,
        gid: WORKLOAD_ID,
        secret_delivery: ctx.secret_delivery,
        landlock,
        expected_landlock_abi: ctx.expected_landlock_abi,
        seccomp: ctx.seccomp,
        keep_after_exit: spec
            .export
            .as_ref()
            .is_some_and(|e| !e.artifacts.is_empty()),
        telemetry_agent,
        resolv_conf: None,
    })
}

/// The normal form of a target the validator accepted (see [`cell_target`]).
fn target(field: &str, target: &str) -> Result<String, LinuxError> {
    cell_target(target).map_err(|e| invalid(field, e.to_string()))
}

/// One spec problem, as the validator would report it.
fn invalid(path: impl Into<String>, message: String) -> LinuxError {
    LinuxError::Invalid {
        problems: vec![Problem {
            path: path.into(),
            message,
        }],
    }
}

/// The trees a declared target can land in, to find out on the host, before anything is
/// created, whether init will be able to make its mount point: inside a read-only tree (a
/// system directory, an image directory, `/etc`, a read-only bind) it must already exist,
/// and it may not go through a symlink.
struct Trees<'a> {
    root: &'a [RootEntry],
    etc: Option<&'a Path>,
    declared: &'a [(String, MountPlan)],
}

impl Trees<'_> {
    fn check_mount_point(&self, field: &str, target: &str) -> Result<(), LinuxError> {
        // The innermost declared mount that holds `target`, else the root entry it is under.
        let holder = self
            .declared
            .iter()
            .map(|(_, m)| m)
            .filter(|m| target.starts_with(&format!("{}/", m.target())))
            .max_by_key(|m| m.target().len());
        let (tree, source, rest) = match holder {
            Some(MountPlan::Bind {
                source,
                read_only: true,
                target: at,
                ..
            }) => (at.clone(), source.as_path(), &target[at.len() + 1..]),
            // A tmpfs or a writable bind: init creates the mount point in it.
            Some(_) => return Ok(()),
            None => {
                let relative = &target[1..];
                let (top, rest) = relative.split_once('/').unwrap_or((relative, ""));
                match self.root_tree(top) {
                    Some(RootTree::Symlink(link)) => {
                        return Err(refused(format!(
                            "{field}: '{target}' goes through /{top}, a symlink in this cell's root (to {}); declare the resolved path",
                            link.display()
                        )))
                    }
                    Some(RootTree::ReadOnly(source)) if !rest.is_empty() => {
                        (format!("/{top}"), source, rest)
                    }
                    // The entry itself, or a name in the root tmpfs: init makes it.
                    Some(RootTree::ReadOnly(_)) | None => return Ok(()),
                }
            }
        };
        let host = source.join(rest);
        let exists = std::fs::canonicalize(&host).is_ok_and(|real| Some(real) == normalize(&host));
        if exists {
            return Ok(());
        }
        let on_host = if host == Path::new(target) {
            String::new()
        } else {
            format!(" (it would be {} on this host)", host.display())
        };
        Err(refused(format!(
            "{field}: '{target}' is inside {tree}, which is read-only in this cell, and does not exist there{on_host} or goes through a symlink; choose a path that exists in it, or one outside read-only trees such as /data"
        )))
    }

    /// What the cell's root has at its top-level `name`.
    fn root_tree(&self, name: &str) -> Option<RootTree<'_>> {
        if name == "etc" {
            return self.etc.map(RootTree::ReadOnly);
        }
        self.root.iter().find_map(|entry| match entry {
            RootEntry::Symlink { name: n, target } if n == name => Some(RootTree::Symlink(target)),
            RootEntry::Dir {
                name: n, source, ..
            }
            | RootEntry::File {
                name: n, source, ..
            } if n == name => Some(RootTree::ReadOnly(source)),
            _ => None,
        })
    }
}

/// A top-level entry of the cell's root, as far as mount points are concerned.
enum RootTree<'a> {
    Symlink(&'a Path),
    /// A tree (or file) bound read-only from this host path.
    ReadOnly(&'a Path),
}

/// Landlock sets: the whole tree readable, system directories and read-only mounts executable,
/// only scratch areas, the workspace and read-write mounts writable. With `writable_exec`
/// (the default, as in Docker and bubblewrap) `/tmp`, the workspace and read-write mounts are
/// executable too, so a workload can run what it builds; without it nothing it can write is
/// executable (`filesystem.noExecWritable`).
fn landlock_paths(root: &[RootEntry], mounts: &[MountPlan], writable_exec: bool) -> LandlockPaths {
    let mut paths = LandlockPaths {
        read_only: vec!["/".into()],
        read_write: WRITABLE_DEVICES.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    for entry in root {
        if let RootEntry::Dir { name, .. } = entry {
            paths.read_exec.push(format!("/{name}"));
        }
    }
    let mut scratch = vec!["/tmp".to_owned()];
    for m in mounts {
        match m {
            MountPlan::Bind {
                target,
                read_only: true,
                ..
            } => paths.read_exec.push(target.clone()),
            other => scratch.push(other.target().to_owned()),
        }
    }
    if writable_exec {
        paths.read_exec.extend(scratch.iter().cloned());
    }
    paths.read_write.extend(scratch);
    paths
}

/// Devices and device-backed scratch areas the workload may write; never executable (`/dev`
/// and `/dev/pts` are mounted noexec, `/dev/shm` holds shared memory, not programs).
const WRITABLE_DEVICES: &[&str] = &[
    "/dev/shm",
    "/dev/pts",
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
];

/// Root entries of a `rootfs: host` cell: the system directories that exist on this host.
fn host_root_entries() -> Result<Vec<RootEntry>, LinuxError> {
    let mut entries = Vec::new();
    for name in HOST_SYSTEM_ENTRIES {
        let path = Path::new("/").join(name);
        if let Some(entry) = root_entry(name, &path)? {
            entries.push(entry);
        }
    }
    Ok(entries)
}

/// Root entries of an image directory: every top-level entry except those init provides.
fn image_root_entries(dir: &Path) -> Result<(Vec<RootEntry>, Option<PathBuf>), LinuxError> {
    let canonical = symlink_free("spec.filesystem.rootfs", dir)?;
    let read = std::fs::read_dir(&canonical)
        .map_err(|e| LinuxError::io(format!("read rootfs directory {}", dir.display()), e))?;
    let mut entries = Vec::new();
    for item in read {
        let item = item.map_err(|e| LinuxError::io(format!("read {}", dir.display()), e))?;
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        if PROVIDED_BY_INIT.contains(&name) {
            continue;
        }
        if let Some(entry) = root_entry(name, &item.path())? {
            entries.push(entry);
        }
    }
    entries.sort_by(|a, b| entry_name(a).cmp(entry_name(b)));
    let etc = canonical.join("etc");
    let etc_source = std::fs::symlink_metadata(&etc)
        .ok()
        .filter(|m| m.is_dir())
        .map(|_| etc);
    Ok((entries, etc_source))
}

fn entry_name(entry: &RootEntry) -> &str {
    match entry {
        RootEntry::Symlink { name, .. }
        | RootEntry::Dir { name, .. }
        | RootEntry::File { name, .. } => name,
    }
}

fn root_entry(name: &str, path: &Path) -> Result<Option<RootEntry>, LinuxError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LinuxError::io(format!("stat {}", path.display()), e)),
    };
    let name = name.to_owned();
    let ft = meta.file_type();
    Ok(if ft.is_symlink() {
        let target = std::fs::read_link(path)
            .map_err(|e| LinuxError::io(format!("readlink {}", path.display()), e))?;
        Some(RootEntry::Symlink { name, target })
    } else if ft.is_dir() {
        Some(RootEntry::Dir {
            name,
            source: path.to_path_buf(),
            fd: 0,
        })
    } else if ft.is_file() {
        Some(RootEntry::File {
            name,
            source: path.to_path_buf(),
            fd: 0,
        })
    } else {
        None
    })
}

/// A bind of the host path `source` (declared at `field`) on the validated `target`.
fn bind_plan(
    field: &str,
    source: &str,
    target: String,
    read_only: bool,
) -> Result<MountPlan, LinuxError> {
    let field = format!("{field}.source");
    let canonical = symlink_free(&field, Path::new(source))?;
    let meta = std::fs::metadata(&canonical)
        .map_err(|e| LinuxError::io(format!("{field}: '{source}'"), e))?;
    if !meta.is_dir() && !meta.is_file() {
        return Err(refused(format!(
            "{field}: '{source}' is neither a directory nor a regular file"
        )));
    }
    Ok(MountPlan::Bind {
        source: canonical,
        target,
        read_only,
        is_dir: meta.is_dir(),
        fd: 0,
    })
}

/// The canonical form of `path`, refused when it differs from the lexical form (a symlink
/// somewhere along it): a symlink in a declared source could be repointed by whoever controls
/// that directory, so we bind only paths that mean what they say.
fn symlink_free(field: &str, path: &Path) -> Result<PathBuf, LinuxError> {
    if !path.is_absolute() {
        return Err(refused(format!(
            "{field}: '{}' is not an absolute path",
            path.display()
        )));
    }
    let lexical = normalize(path).ok_or_else(|| {
        refused(format!(
            "{field}: '{}' contains '..': give the resolved path",
            path.display()
        ))
    })?;
    let canonical = std::fs::canonicalize(path)
        .map_err(|e| LinuxError::io(format!("{field}: '{}' (must exist)", path.display()), e))?;
    if canonical != lexical {
        return Err(refused(format!(
            "{field}: '{}' goes through a symlink (resolves to '{}'): declare the resolved path",
            path.display(),
            canonical.display()
        )));
    }
    Ok(canonical)
}

/// Lexical normalisation: drops `.` and duplicate slashes; `None` on `..`.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn refused(what: impl Into<String>) -> LinuxError {
    LinuxError::Refused { what: what.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpf_instructions_travel_packed_and_come_back_whole() {
        let program = [
            BpfInstruction {
                code: 0x20,
                jt: 0,
                jf: 0,
                k: 4,
            },
            BpfInstruction {
                code: 0x15,
                jt: 255,
                jf: 7,
                k: 0xc000_003e,
            },
            BpfInstruction {
                code: 0xffff,
                jt: 1,
                jf: 254,
                k: u32::MAX,
            },
        ];
        let json = serde_json::to_string(&program).unwrap();
        assert_eq!(
            json,
            "[9007199254740996,6191383262003262,18446464793461129215]"
        );
        let back: Vec<BpfInstruction> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, program);
    }

    /// A spec that runs `/bin/true` and nothing more.
    fn true_spec() -> ExecutionCellSpec {
        serde_json::from_value(serde_json::json!({"id": "p", "run": {"argv": ["/bin/true"]}}))
            .unwrap()
    }

    /// A host-rootfs context with file secrets `secret_keys`, no Landlock, seccomp or telemetry.
    fn host_context(secret_keys: &[String]) -> PlanContext<'_> {
        PlanContext {
            build_dir: Path::new("/tmp"),
            rootfs: &ResolvedRootfs::Host,
            etc_mask: None,
            secret_delivery: SecretDeliveryMode::File,
            secret_keys,
            expected_landlock_abi: None,
            seccomp: Vec::new(),
            telemetry: None,
        }
    }

    #[test]
    fn an_init_refuses_a_plan_field_it_does_not_know() {
        let plan = build(
            &true_spec(),
            PlanContext {
                expected_landlock_abi: Some(5),
                seccomp: vec![BpfInstruction {
                    code: 6,
                    jt: 0,
                    jf: 0,
                    k: 0x7fff_0000,
                }],
                ..host_context(&[])
            },
        )
        .unwrap();
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(
            serde_json::from_value::<InitConfig>(json.clone()).unwrap(),
            plan
        );
        let mut newer = json;
        newer["futureProtection"] = serde_json::json!(true);
        let err = serde_json::from_value::<InitConfig>(newer).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `futureProtection`"),
            "{err}"
        );
    }

    #[test]
    fn writable_places_are_executable_unless_the_spec_asks_for_w_xor_x() {
        let root = vec![RootEntry::Dir {
            name: "usr".into(),
            source: "/usr".into(),
            fd: 0,
        }];
        let bind = |target: &str, read_only| MountPlan::Bind {
            source: "/srv".into(),
            target: target.into(),
            read_only,
            is_dir: true,
            fd: 1,
        };
        let mounts = vec![
            MountPlan::Tmpfs {
                target: "/work".into(),
                size_bytes: 1 << 20,
            },
            bind("/data", false),
            bind("/inputs", true),
        ];
        let default = landlock_paths(&root, &mounts, true);
        for place in ["/tmp", "/work", "/data"] {
            assert!(default.read_write.iter().any(|p| p == place), "{place}");
            assert!(default.read_exec.iter().any(|p| p == place), "{place}");
        }
        assert!(default.read_exec.iter().all(|p| !p.starts_with("/dev")));
        assert!(default.writable_exec());

        let w_xor_x = landlock_paths(&root, &mounts, false);
        assert_eq!(w_xor_x.read_write, default.read_write);
        assert_eq!(w_xor_x.read_exec, ["/usr", "/inputs"]);
        assert!(!w_xor_x.writable_exec());
    }

    #[test]
    fn symlinked_sources_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let canonical_dir = std::fs::canonicalize(dir.path()).unwrap();
        assert!(symlink_free("s", &canonical_dir.join("real")).is_ok());
        let err = symlink_free("s", &canonical_dir.join("link")).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
    }

    #[test]
    fn a_delivered_secret_key_that_is_not_a_secret_name_is_refused() {
        let keys = ["../x".to_owned()];
        let err = build(&true_spec(), host_context(&keys)).unwrap_err();
        assert!(matches!(err, LinuxError::Refused { .. }), "{err}");
        assert!(
            err.to_string().contains("\"../x\" is not a secret name"),
            "{err}"
        );
    }
}

//! Per-cell control groups: resource limits, process tracking, kill and removal.
//!
//! cgroup v2 is first-class; v1 is the fallback, chosen per controller at run time (hybrid hosts
//! keep controllers in v1 hierarchies beside an empty v2 tree). Every limit is recorded with the
//! exact mechanism that enforced it, because evidence must say what was applied, not what was
//! asked. A requested limit whose controller exists in neither version fails closed.
//!
//! Layout: `<hierarchy root>/<parent>/<cell-id>`, parent `cellos` unless `CELLOS_CGROUP_PARENT`
//! names another relative path. The cell also gets a leaf in the v2 tree even when that tree has
//! no controllers: it tracks every process and offers `cgroup.kill`.

pub mod freeze;
pub(crate) mod layout;

use std::collections::BTreeSet;
use std::fs;
use std::io::{ErrorKind, Write};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use cellos_core::ports::{LimitEnforcement, LimitHit};

pub use layout::{Controller, Hierarchy, Layout};

use crate::error::LinuxError;
use crate::residue::CheckError;

/// Environment variable naming the parent cgroup (relative to each hierarchy root).
pub const PARENT_ENV: &str = "CELLOS_CGROUP_PARENT";
/// Parent cgroup used when [`PARENT_ENV`] is unset.
pub const DEFAULT_PARENT: &str = "cellos";

/// CFS period used for CPU bandwidth limits (the kernel default).
const CPU_PERIOD_US: u64 = 100_000;
/// Smallest CFS quota the kernel accepts.
const CPU_MIN_QUOTA_US: u64 = 1_000;
/// Rounds of "list processes, SIGKILL them" before giving up on a cell that keeps forking.
const KILL_ROUNDS: u32 = 200;
/// Attempts at rmdir while the kernel still reports the cgroup busy (exiting tasks).
const RMDIR_ATTEMPTS: u32 = 100;

/// Resource limits for one cell; `None` leaves the resource unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupLimits {
    pub memory_max_bytes: Option<u64>,
    pub pids_max: Option<u64>,
    /// CPU bandwidth in millicores (1000 = one full core).
    pub cpu_millis: Option<u64>,
}

impl CgroupLimits {
    fn requests(&self, controller: Controller) -> bool {
        match controller {
            Controller::Memory => self.memory_max_bytes.is_some(),
            Controller::Pids => self.pids_max.is_some(),
            Controller::Cpu => self.cpu_millis.is_some(),
        }
    }
}

/// Which cgroup version serves a controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CgroupVersion {
    V2,
    V1,
}

impl CgroupVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            CgroupVersion::V2 => "v2",
            CgroupVersion::V1 => "v1",
        }
    }
}

impl std::fmt::Display for CgroupVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The cell's directory in one hierarchy.
#[derive(Debug)]
struct Leaf {
    path: PathBuf,
    version: CgroupVersion,
    controllers: Vec<Controller>,
    /// Whether this create made the directory (only those are removed when create fails).
    created: bool,
    /// A v2 leaf kept only for tracking (no controllers) beside v1 leaves: when the v2 tree is
    /// not writable (read-only in some containers) the cell goes on without it.
    optional: bool,
}

/// The cgroups of one cell, one leaf per hierarchy.
///
/// Dropping a `CellCgroup` that was not [`CellCgroup::remove`]d kills its processes and removes
/// its directories (best effort), so an error path in the caller leaves no residue.
/// See [`CellCgroup::join_handles`].
#[derive(Debug, Default)]
pub struct JoinHandles {
    /// Write-only `tasks` files of the v1 leaves; the child writes `"0"` to each.
    pub v1_tasks: Vec<OwnedFd>,
    /// The v2 leaf directory, for `clone3(CLONE_INTO_CGROUP)`.
    pub v2_leaf: Option<OwnedFd>,
}

#[derive(Debug)]
pub struct CellCgroup {
    cell_id: String,
    leaves: Vec<Leaf>,
    paths: Vec<PathBuf>,
    controllers: Vec<(Controller, CgroupVersion)>,
    enforcement: Vec<LimitEnforcement>,
    /// Limit counters read just before removal, so they survive the directories.
    final_hits: Option<Vec<LimitHit>>,
    removed: bool,
}

/// The counters that prove an enforced limit was hit, by path.
#[derive(Debug, Clone, Default)]
pub struct LimitProbe {
    counters: Vec<LimitCounter>,
}

#[derive(Debug, Clone)]
struct LimitCounter {
    limit: &'static str,
    path: PathBuf,
    /// e.g. `cgroup v2 pids.events`.
    what: String,
    key: &'static str,
}

impl LimitProbe {
    /// Every limit whose counter is above zero now (a counter that cannot be read, its cgroup
    /// gone, counts nothing).
    pub fn read(&self) -> Vec<LimitHit> {
        self.counters
            .iter()
            .filter_map(|c| {
                let count = read_keyed(&c.path, c.key).filter(|n| *n > 0)?;
                Some(LimitHit {
                    limit: c.limit.into(),
                    mechanism: format!("{} {}={count}", c.what, c.key),
                    count,
                })
            })
            .collect()
    }
}

impl CellCgroup {
    /// Create the cell's cgroups and write `limits`. On failure nothing created here remains.
    pub fn create(cell_id: &str, limits: &CgroupLimits) -> Result<CellCgroup, LinuxError> {
        Self::create_in(Layout::host(), cell_id, limits)
    }

    fn create_in(
        layout: &Layout,
        cell_id: &str,
        limits: &CgroupLimits,
    ) -> Result<CellCgroup, LinuxError> {
        validate_cell_id(cell_id)?;
        if limits.cpu_millis == Some(0) {
            return Err(LinuxError::Refused {
                what: "limits.cpuMillis is 0: a cell needs at least 1 millicore".into(),
            });
        }
        let parent = parent_path()?;

        let mut leaves: Vec<Leaf> = Vec::new();
        if let Some(v2) = &layout.v2 {
            leaves.push(Leaf {
                path: v2.join(&parent).join(cell_id),
                version: CgroupVersion::V2,
                controllers: Vec::new(),
                created: false,
                optional: false,
            });
        }
        for controller in Controller::ALL {
            let Some((version, root)) = layout.locate(controller) else {
                if limits.requests(controller) {
                    return Err(missing_controller(controller, layout));
                }
                continue;
            };
            // An unlimited cpu controller in a v1 hierarchy of its own would only add a cgroup
            // to create and remove per cell: it enforces nothing, and the cell's processes are
            // already held by its other leaves.
            if version == CgroupVersion::V1
                && controller == Controller::Cpu
                && !limits.requests(controller)
            {
                continue;
            }
            let path = root.join(&parent).join(cell_id);
            match leaves.iter_mut().find(|l| l.path == path) {
                Some(leaf) => leaf.controllers.push(controller),
                None => leaves.push(Leaf {
                    path,
                    version,
                    controllers: vec![controller],
                    created: false,
                    optional: false,
                }),
            }
        }
        if leaves.is_empty() {
            return Err(LinuxError::missing(
                "cgroups",
                "no cgroup2 or cgroup v1 hierarchy is mounted: mount cgroup2 at /sys/fs/cgroup \
                 (mount -t cgroup2 none /sys/fs/cgroup)",
            ));
        }

        let has_v1_leaf = leaves.iter().any(|l| l.version == CgroupVersion::V1);
        for leaf in &mut leaves {
            leaf.optional =
                leaf.version == CgroupVersion::V2 && leaf.controllers.is_empty() && has_v1_leaf;
        }

        let mut cgroup = CellCgroup {
            cell_id: cell_id.to_owned(),
            paths: leaves.iter().map(|l| l.path.clone()).collect(),
            leaves,
            controllers: Vec::new(),
            enforcement: Vec::new(),
            final_hits: None,
            removed: false,
        };
        match cgroup.set_up(layout, &parent, limits) {
            Ok(()) => Ok(cgroup),
            Err(err) => {
                cgroup.undo_create();
                Err(err)
            }
        }
    }

    fn set_up(
        &mut self,
        layout: &Layout,
        parent: &Path,
        limits: &CgroupLimits,
    ) -> Result<(), LinuxError> {
        let mut skipped = Vec::new();
        for leaf in &mut self.leaves {
            let made = make_leaf(leaf, layout, parent, limits);
            match made {
                Ok(()) => leaf.created = true,
                Err(MakeLeaf::Exists) => {
                    return Err(LinuxError::Refused {
                        what: format!(
                            "cgroup {} already exists: cell id '{}' is in use or left over by a \
                             crashed supervisor; reclaim it (cellos gc) first",
                            leaf.path.display(),
                            self.cell_id
                        ),
                    })
                }
                Err(MakeLeaf::Failed(_)) if leaf.optional => skipped.push(leaf.path.clone()),
                Err(MakeLeaf::Failed(err)) => return Err(err),
            }
        }
        self.leaves.retain(|l| !skipped.contains(&l.path));
        self.paths.retain(|p| !skipped.contains(p));
        for leaf in &self.leaves {
            for &controller in &leaf.controllers {
                self.controllers.push((controller, leaf.version));
                if let Some(e) = write_limit(leaf, controller, limits)? {
                    self.enforcement.push(e);
                }
            }
        }
        self.controllers.sort();
        Ok(())
    }

    /// Remove what a failed create made; never touch directories that existed before.
    fn undo_create(&mut self) {
        for leaf in self.leaves.iter().rev().filter(|l| l.created) {
            let _ = remove_tree(&leaf.path);
        }
        self.removed = true;
    }

    /// Handles with which a freshly cloned, still single-threaded child joins the cell's
    /// cgroups itself, without the parent writing its pid anywhere.
    ///
    /// Why: moving another process (`cgroup.procs` with a pid) takes the kernel's global
    /// threadgroup lock for writing, which waits for an RCU grace period — about 9 ms on an idle
    /// host, on every cell. A single thread moving itself (`"0"` into a v1 `tasks` file) skips
    /// that lock, and so does `clone3(CLONE_INTO_CGROUP)` for the v2 leaf. The files are opened
    /// here, with the supervisor's credentials, which is what the kernel checks.
    pub fn join_handles(&self) -> Result<JoinHandles, LinuxError> {
        if self.removed {
            return Err(LinuxError::NotFound {
                what: format!("cgroup of cell '{}' (already removed)", self.cell_id),
            });
        }
        let mut handles = JoinHandles::default();
        for leaf in &self.leaves {
            match leaf.version {
                CgroupVersion::V1 => {
                    let path = leaf.path.join("tasks");
                    let file = fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(|e| LinuxError::io(format!("open {}", path.display()), e))?;
                    handles.v1_tasks.push(OwnedFd::from(file));
                }
                CgroupVersion::V2 => {
                    let dir = fs::File::open(&leaf.path)
                        .map_err(|e| LinuxError::io(format!("open {}", leaf.path.display()), e))?;
                    handles.v2_leaf = Some(OwnedFd::from(dir));
                }
            }
        }
        Ok(handles)
    }

    /// Move `pid` (a host pid) into the cell's v2 leaf only; the fallback when
    /// `CLONE_INTO_CGROUP` is unavailable (v1 leaves are joined by the child itself).
    pub fn add_process_v2(&self, pid: i32) -> Result<(), LinuxError> {
        match self.v2_path() {
            Some(path) => write_file(&path.join("cgroup.procs"), &pid.to_string()),
            None => Ok(()),
        }
    }

    /// Move `pid` (a host pid) into the cell's leaf in every hierarchy.
    pub fn add_process(&self, pid: i32) -> Result<(), LinuxError> {
        if self.removed {
            return Err(LinuxError::NotFound {
                what: format!("cgroup of cell '{}' (already removed)", self.cell_id),
            });
        }
        for leaf in &self.leaves {
            write_file(&leaf.path.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    pub fn cell_id(&self) -> &str {
        &self.cell_id
    }

    /// Limits that were actually written, each with the files that enforce it.
    pub fn enforcement(&self) -> Vec<LimitEnforcement> {
        self.enforcement.clone()
    }

    /// Which version serves each controller the cell uses.
    pub fn controllers(&self) -> &[(Controller, CgroupVersion)] {
        &self.controllers
    }

    /// `v2 (memory,pids,cpu)`, `v1 (memory,pids,cpu)` or a mix such as
    /// `v2 (memory) + v1 (pids,cpu)`; `v2 (tracking only)` when no controller is used.
    pub fn version_summary(&self) -> String {
        let names = |version: CgroupVersion| -> Vec<&'static str> {
            Controller::ALL
                .into_iter()
                .filter(|c| self.controllers.contains(&(*c, version)))
                .map(Controller::name)
                .collect()
        };
        let parts: Vec<String> = [CgroupVersion::V2, CgroupVersion::V1]
            .into_iter()
            .filter_map(|v| {
                let n = names(v);
                (!n.is_empty()).then(|| format!("{v} ({})", n.join(",")))
            })
            .collect();
        if parts.is_empty() {
            match self.v2_path() {
                Some(_) => "v2 (tracking only)".into(),
                None => "none".into(),
            }
        } else {
            parts.join(" + ")
        }
    }

    /// The cell's leaf in the v2 tree (usable with `clone3(CLONE_INTO_CGROUP)`).
    pub fn v2_path(&self) -> Option<&Path> {
        self.leaves
            .iter()
            .find(|l| l.version == CgroupVersion::V2)
            .map(|l| l.path.as_path())
    }

    /// Limits the cell hit so far, from the counters of its cgroups (the counts read just
    /// before removal, once removed).
    pub fn limit_hits(&self) -> Vec<LimitHit> {
        match &self.final_hits {
            Some(hits) => hits.clone(),
            None => self.limit_probe().read(),
        }
    }

    /// Where the counters of the enforced limits are, for reading them while the cell lives
    /// (by its session, after each exec) without holding the cgroup.
    pub fn limit_probe(&self) -> LimitProbe {
        let mut counters = Vec::new();
        for leaf in &self.leaves {
            for &controller in &leaf.controllers {
                if !self
                    .enforcement
                    .iter()
                    .any(|e| e.limit == spec_name(controller))
                {
                    continue;
                }
                let (file, key) = match (controller, leaf.version) {
                    (Controller::Memory, CgroupVersion::V2) => ("memory.events", "oom_kill"),
                    (Controller::Memory, CgroupVersion::V1) => ("memory.oom_control", "oom_kill"),
                    (Controller::Pids, _) => ("pids.events", "max"),
                    (Controller::Cpu, _) => ("cpu.stat", "nr_throttled"),
                };
                counters.push(LimitCounter {
                    limit: spec_name(controller),
                    path: leaf.path.join(file),
                    what: format!("cgroup {} {file}", leaf.version),
                    key,
                });
            }
        }
        LimitProbe { counters }
    }

    /// Host pids still in the cell's cgroups (every hierarchy, nested groups included).
    pub fn procs(&self) -> Result<Vec<i32>, LinuxError> {
        procs_under(&self.paths)
    }

    /// Kill every process of the cell and wait until the cgroups are empty.
    pub fn kill_all(&self) -> Result<(), LinuxError> {
        if self.removed {
            return Ok(());
        }
        // A pause may have left the cell in a v1 freezer cgroup: frozen v1 tasks do not die
        // until thawed, and that cgroup must be removed with the others.
        let mut roots = self.paths.clone();
        roots.extend(freeze::thaw_v1_for_kill(&self.cell_id));
        kill_under(&roots, self.v2_path())
    }

    /// Remove the cell's directories in every hierarchy. Idempotent. Processes must be gone
    /// (see [`Self::kill_all`]); a busy cgroup is retried briefly while exiting tasks leave.
    pub fn remove(&mut self) -> Result<(), LinuxError> {
        if self.removed {
            return Ok(());
        }
        self.final_hits = Some(self.limit_hits());
        if let Some(freezer) = freeze::v1_freezer_dir(&self.cell_id)? {
            remove_tree(&freezer)?;
        }
        for leaf in self.leaves.iter().rev() {
            remove_tree(&leaf.path)?;
        }
        self.removed = true;
        Ok(())
    }

    /// The cell's leaf directories, v2 first.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Garbage-collect what a dead supervisor left of `cell_id`: kill its processes and remove
    /// its directories in the v2 tree and every v1 hierarchy. Returns the removed directories.
    pub fn reclaim(cell_id: &str) -> Result<Vec<PathBuf>, LinuxError> {
        validate_cell_id(cell_id)?;
        let parent = parent_path()?;
        let layout = Layout::host();
        let found: Vec<PathBuf> = layout
            .all_roots()
            .into_iter()
            .map(|(_, root)| root.join(&parent).join(cell_id))
            .filter(|p| p.is_dir())
            .collect();
        if found.is_empty() {
            return Ok(found);
        }
        let v2 = layout
            .v2
            .as_ref()
            .map(|root| root.join(&parent).join(cell_id))
            .filter(|p| found.contains(p));
        // The freezer cgroup, if a pause made one, is among `found`; thaw it so SIGKILL lands.
        let _ = freeze::thaw_v1_for_kill(cell_id);
        kill_under(&found, v2.as_deref())?;
        for path in &found {
            remove_tree(path)?;
        }
        Ok(found)
    }

    /// Cell ids that have a directory under the parent in any hierarchy.
    pub fn list_leftovers() -> Vec<String> {
        let Ok(parent) = parent_path() else {
            return Vec::new();
        };
        let mut ids = BTreeSet::new();
        for (_, root) in Layout::host().all_roots() {
            let Ok(entries) = fs::read_dir(root.join(&parent)) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    if let Some(name) = entry.file_name().to_str() {
                        if validate_cell_id(name).is_ok() {
                            ids.insert(name.to_owned());
                        }
                    }
                }
            }
        }
        ids.into_iter().collect()
    }

    /// Whether any hierarchy may still have a directory for `cell_id`: true unless the host's
    /// mount table rules it out.
    pub fn exists(cell_id: &str) -> bool {
        Self::leftover_dirs(cell_id, Path::new("/proc/self/mountinfo"))
            .map_or(true, |dirs| !dirs.is_empty())
    }

    /// Residue check: the directories of `cell_id` that still exist in the cgroup hierarchies
    /// of the mount table at `mountinfo`. The table is read afresh (a check must not trust a
    /// cached layout), and one without any cgroup hierarchy cannot rule anything out.
    pub fn leftover_dirs(cell_id: &str, mountinfo: &Path) -> Result<Vec<PathBuf>, CheckError> {
        validate_cell_id(cell_id).map_err(CheckError::Host)?;
        let parent = parent_path().map_err(CheckError::Host)?;
        let text = fs::read_to_string(mountinfo).map_err(|e| CheckError::read(mountinfo, e))?;
        let layout = Layout::from_mountinfo(&text);
        let roots = layout.all_roots();
        if roots.is_empty() {
            return Err(CheckError::NotTheSource {
                path: mountinfo.to_owned(),
                what: "lists no cgroup hierarchy",
            });
        }
        let mut left = Vec::new();
        for (_, root) in roots {
            let dir = root.join(&parent).join(cell_id);
            match fs::metadata(&dir) {
                Ok(meta) if meta.is_dir() => left.push(dir),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(CheckError::read(dir, e)),
            }
        }
        Ok(left)
    }
}

impl Drop for CellCgroup {
    fn drop(&mut self) {
        if !self.removed {
            let _ = self.kill_all();
            let _ = self.remove();
        }
    }
}

enum MakeLeaf {
    Exists,
    Failed(LinuxError),
}

/// Create the parent levels, enable v2 controllers on them, then the leaf itself.
fn make_leaf(
    leaf: &mut Leaf,
    layout: &Layout,
    parent: &Path,
    limits: &CgroupLimits,
) -> Result<(), MakeLeaf> {
    if let Some(parent_dir) = leaf.path.parent() {
        fs::create_dir_all(parent_dir).map_err(|source| {
            MakeLeaf::Failed(LinuxError::Cgroup {
                path: parent_dir.to_path_buf(),
                source,
            })
        })?;
    }
    if leaf.version == CgroupVersion::V2 && !leaf.controllers.is_empty() {
        if let Some(v2_root) = &layout.v2 {
            enable_v2_controllers(v2_root, parent, &mut leaf.controllers, limits)
                .map_err(MakeLeaf::Failed)?;
        }
    }
    match fs::create_dir(&leaf.path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == ErrorKind::AlreadyExists => Err(MakeLeaf::Exists),
        Err(source) => Err(MakeLeaf::Failed(LinuxError::Cgroup {
            path: leaf.path.clone(),
            source,
        })),
    }
}

/// Spec name of the limit a controller enforces.
fn spec_name(controller: Controller) -> &'static str {
    match controller {
        Controller::Memory => "memoryMaxBytes",
        Controller::Pids => "pidsMax",
        Controller::Cpu => "cpuMillis",
    }
}

/// Cell ids become directory names: a conservative alphabet keeps them from escaping the parent
/// or colliding with cgroup interface files (which all contain a dot after a controller name).
pub fn validate_cell_id(cell_id: &str) -> Result<(), LinuxError> {
    let ok = !cell_id.is_empty()
        && cell_id.len() <= 128
        && !cell_id.starts_with('.')
        && !cell_id.starts_with("cgroup.")
        && cell_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(LinuxError::Refused {
            what: format!(
                "cell id '{cell_id}' cannot name a cgroup: use 1-128 characters from \
                 [A-Za-z0-9._-], not starting with '.'"
            ),
        })
    }
}

/// The parent cgroup, relative to each hierarchy root.
fn parent_path() -> Result<PathBuf, LinuxError> {
    let raw = std::env::var(PARENT_ENV).unwrap_or_else(|_| DEFAULT_PARENT.to_owned());
    let path = PathBuf::from(raw.trim_matches('/'));
    let valid = path.components().next().is_some()
        && path.components().all(|c| matches!(c, Component::Normal(_)));
    if valid {
        Ok(path)
    } else {
        Err(LinuxError::Refused {
            what: format!(
                "{PARENT_ENV}='{raw}' must be a relative cgroup path without '.' or '..' \
                 components, e.g. 'cellos'"
            ),
        })
    }
}

fn missing_controller(controller: Controller, layout: &Layout) -> LinuxError {
    let name = controller.name();
    let v2 = match &layout.v2 {
        Some(root) => format!("{}/cgroup.controllers", root.display()),
        None => "no cgroup2 mount".into(),
    };
    LinuxError::missing(
        format!("cgroup controller '{name}'"),
        format!(
            "not in v2 ({v2}) nor v1 (no hierarchy mounted with -o {name}): enable it in v2 by \
             delegating it to CellOS (systemd Delegate=yes, or write '+{name}' to the parent's \
             cgroup.subtree_control), or mount it as v1 (mount -t cgroup -o {name} cgroup \
             /sys/fs/cgroup/{name}); check the kernel has it built in and is not booted with \
             cgroup_disable={name}"
        ),
    )
}

/// Enable the cell's v2 controllers on every level from the v2 root down to the parent.
/// Controllers the limits do not need are dropped from the leaf when they cannot be enabled.
fn enable_v2_controllers(
    v2_root: &Path,
    parent: &Path,
    controllers: &mut Vec<Controller>,
    limits: &CgroupLimits,
) -> Result<(), LinuxError> {
    let mut levels = vec![v2_root.to_path_buf()];
    let mut dir = v2_root.to_path_buf();
    for component in parent.components() {
        dir.push(component);
        levels.push(dir.clone());
    }
    let mut failed: Vec<(Controller, LinuxError)> = Vec::new();
    for level in &levels {
        let file = level.join("cgroup.subtree_control");
        let enabled = fs::read_to_string(&file).unwrap_or_default();
        for &controller in controllers.iter() {
            let name = controller.name();
            if failed.iter().any(|(c, _)| *c == controller)
                || enabled.split_whitespace().any(|c| c == name)
            {
                continue;
            }
            if let Err(err) = write_file(&file, &format!("+{name}")) {
                let err = match &err {
                    LinuxError::Io { source, .. } if source.raw_os_error() == Some(libc::EBUSY) => {
                        LinuxError::missing(
                            format!(
                                "cgroup v2 controller '{name}' in {} (that cgroup holds \
                                 processes, and v2 forbids controllers over internal processes)",
                                file.display()
                            ),
                            "run the supervisor in a leaf cgroup and give CellOS a delegated \
                             subtree without processes (systemd Delegate=yes), or point \
                             CELLOS_CGROUP_PARENT at one",
                        )
                    }
                    _ => err,
                };
                failed.push((controller, err));
            }
        }
    }
    for (controller, err) in failed {
        if limits.requests(controller) {
            return Err(err);
        }
        controllers.retain(|c| *c != controller);
    }
    Ok(())
}

/// Write one limit into `leaf` and describe the mechanism; `None` when the limit is unset.
fn write_limit(
    leaf: &Leaf,
    controller: Controller,
    limits: &CgroupLimits,
) -> Result<Option<LimitEnforcement>, LinuxError> {
    let dir = &leaf.path;
    let v = leaf.version;
    let (value, mechanism) = match controller {
        Controller::Memory => {
            let Some(bytes) = limits.memory_max_bytes else {
                return Ok(None);
            };
            let mechanism = match v {
                CgroupVersion::V2 => {
                    write_file(&dir.join("memory.max"), &bytes.to_string())?;
                    let mut m = String::from("cgroup v2 memory.max");
                    if write_if_present(&dir.join("memory.swap.max"), "0")? {
                        m.push_str("+memory.swap.max=0");
                    } else {
                        m.push_str(" (memory.swap.max absent: no swap accounting)");
                    }
                    // No `memory.oom.group`: a group kill would take init too (it shares the
                    // cgroup, and only CAP_SYS_RESOURCE, which hosts often withhold, could exempt
                    // it), and init must survive to report the exit. The OOM killer picks the
                    // workload, whose score init's child raised to the maximum.
                    m
                }
                CgroupVersion::V1 => {
                    // limit_in_bytes first: memsw may never be below it.
                    write_file(&dir.join("memory.limit_in_bytes"), &bytes.to_string())?;
                    if write_if_present(
                        &dir.join("memory.memsw.limit_in_bytes"),
                        &bytes.to_string(),
                    )? {
                        "cgroup v1 memory.limit_in_bytes+memory.memsw.limit_in_bytes".into()
                    } else {
                        write_file(&dir.join("memory.swappiness"), "0")?;
                        "cgroup v1 memory.limit_in_bytes+memory.swappiness=0 \
                         (memory.memsw absent: swap not limited, only discouraged)"
                            .into()
                    }
                }
            };
            (bytes, mechanism)
        }
        Controller::Pids => {
            let Some(max) = limits.pids_max else {
                return Ok(None);
            };
            write_file(&dir.join("pids.max"), &max.to_string())?;
            (max, format!("cgroup {v} pids.max"))
        }
        Controller::Cpu => {
            let Some(millis) = limits.cpu_millis else {
                return Ok(None);
            };
            let (quota, period) = cpu_bandwidth(millis);
            let mechanism = match v {
                CgroupVersion::V2 => {
                    write_file(&dir.join("cpu.max"), &format!("{quota} {period}"))?;
                    format!("cgroup v2 cpu.max=\"{quota} {period}\"")
                }
                CgroupVersion::V1 => {
                    write_file(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
                    write_file(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                    format!("cgroup v1 cpu.cfs_quota_us={quota}+cpu.cfs_period_us={period}")
                }
            };
            (millis, mechanism)
        }
    };
    Ok(Some(LimitEnforcement {
        limit: spec_name(controller).into(),
        value,
        mechanism,
    }))
}

/// CFS `(quota, period)` in microseconds for `millis` millicores. Below 10 millicores the quota
/// would fall under the kernel minimum (1 ms), so the period grows instead (up to 1 s).
fn cpu_bandwidth(millis: u64) -> (u64, u64) {
    let quota = millis.saturating_mul(CPU_PERIOD_US / 1000);
    if quota >= CPU_MIN_QUOTA_US {
        (quota, CPU_PERIOD_US)
    } else {
        (CPU_MIN_QUOTA_US, CPU_MIN_QUOTA_US * 1000 / millis.max(1))
    }
}

/// Write `value` to an existing cgroup interface file.
fn write_file(path: &Path, value: &str) -> Result<(), LinuxError> {
    let what = || format!("write '{value}' to {}", path.display());
    let mut file = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| LinuxError::io(what(), e))?;
    file.write_all(value.as_bytes())
        .map_err(|e| LinuxError::io(what(), e))
}

/// Write `value` when the interface file exists; `false` when it does not.
fn write_if_present(path: &Path, value: &str) -> Result<bool, LinuxError> {
    match write_file(path, value) {
        Ok(()) => Ok(true),
        Err(LinuxError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => Ok(false),
        Err(err) => Err(err),
    }
}

/// Value of `key` in a flat-keyed cgroup file (`key value` per line).
fn read_keyed(path: &Path, key: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Directories of `roots` and all their descendants (a cell may nest cgroups of its own).
fn tree_dirs(roots: &[PathBuf]) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut dirs = Vec::new();
    let mut stack: Vec<PathBuf> = roots.to_vec();
    while let Some(dir) = stack.pop() {
        let Ok(meta) = fs::metadata(&dir) else {
            continue;
        };
        // A cgroup directory links two more than it has child cgroups: list only those
        // that have some (a leaf holds dozens of control files, and listing is most of the
        // cost of a teardown that finds nothing).
        if meta.nlink() > 2 {
            if let Ok(entries) = fs::read_dir(&dir) {
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(entry.path());
                    }
                }
            }
        }
        dirs.push(dir);
    }
    dirs
}

fn procs_under(roots: &[PathBuf]) -> Result<Vec<i32>, LinuxError> {
    let mut pids = BTreeSet::new();
    for dir in tree_dirs(roots) {
        let file = dir.join("cgroup.procs");
        match fs::read_to_string(&file) {
            Ok(text) => pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok())),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(LinuxError::io(format!("read {}", file.display()), e)),
        }
    }
    Ok(pids.into_iter().collect())
}

/// Kill everything under `roots`: `cgroup.kill` on v2 when the kernel has it, then SIGKILL
/// rounds until no process is left. Each signal goes through a pidfd opened while the pid was
/// listed and re-checked afterwards, so a recycled pid outside the cell is never signalled.
fn kill_under(roots: &[PathBuf], v2_leaf: Option<&Path>) -> Result<(), LinuxError> {
    if let Some(v2) = v2_leaf {
        let _ = write_if_present(&v2.join("cgroup.kill"), "1");
    }
    let mut pause = Duration::from_millis(1);
    for _ in 0..KILL_ROUNDS {
        let listed = procs_under(roots)?;
        if listed.is_empty() {
            return Ok(());
        }
        let pidfds: Vec<(i32, OwnedFd)> = listed
            .iter()
            .filter_map(|&pid| {
                let p = rustix::process::Pid::from_raw(pid)?;
                rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty())
                    .ok()
                    .map(|fd| (pid, fd))
            })
            .collect();
        let still = procs_under(roots)?;
        for (pid, fd) in &pidfds {
            if still.binary_search(pid).is_ok() {
                let _ = rustix::process::pidfd_send_signal(fd, rustix::process::Signal::Kill);
            }
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
    let left = procs_under(roots)?;
    if left.is_empty() {
        return Ok(());
    }
    Err(LinuxError::Setup {
        what: format!("kill cell processes in {}", display_paths(roots)),
        detail: format!(
            "{} process(es) still present after {KILL_ROUNDS} SIGKILL rounds: {left:?}",
            left.len()
        ),
    })
}

/// rmdir `root` and its descendants, deepest first. Missing directories are fine.
fn remove_tree(root: &Path) -> Result<(), LinuxError> {
    let mut dirs = tree_dirs(&[root.to_path_buf()]);
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for dir in dirs {
        rmdir_retrying(&dir)?;
    }
    Ok(())
}

fn rmdir_retrying(dir: &Path) -> Result<(), LinuxError> {
    let mut attempt = 0;
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < RMDIR_ATTEMPTS => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(source) => {
                return Err(LinuxError::Cgroup {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        }
    }
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_bandwidth_maps_millicores_to_quota() {
        assert_eq!(cpu_bandwidth(1000), (100_000, 100_000));
        assert_eq!(cpu_bandwidth(250), (25_000, 100_000));
        assert_eq!(cpu_bandwidth(2500), (250_000, 100_000));
        // Below the kernel's 1 ms minimum quota the period stretches instead.
        assert_eq!(cpu_bandwidth(5), (1_000, 200_000));
        assert_eq!(cpu_bandwidth(1), (1_000, 1_000_000));
    }

    #[test]
    fn requested_limit_without_controller_fails_closed_naming_it() {
        let no_cgroups = Layout::default();
        let limits = CgroupLimits {
            pids_max: Some(5),
            ..CgroupLimits::default()
        };
        let err = CellCgroup::create_in(&no_cgroups, "cell", &limits).expect_err("fail closed");
        assert_eq!(
            cellos_core::ports::PortError::from(err).kind,
            cellos_core::ports::PortErrorKind::MissingFeature
        );
        let err = CellCgroup::create_in(&no_cgroups, "cell", &limits).expect_err("fail closed");
        let message = err.to_string();
        assert!(message.contains("cgroup controller 'pids'"), "{message}");
        assert!(message.contains("mount -t cgroup -o pids"), "{message}");
    }

    #[test]
    fn zero_cpu_is_refused() {
        let limits = CgroupLimits {
            cpu_millis: Some(0),
            ..CgroupLimits::default()
        };
        let err = CellCgroup::create_in(&Layout::default(), "cell", &limits).expect_err("zero");
        assert!(matches!(err, LinuxError::Refused { .. }), "{err}");
    }

    #[test]
    fn cell_ids_that_could_escape_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            ".hidden",
            "cgroup.procs",
            "a b",
        ] {
            assert!(validate_cell_id(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["cell-1", "c_2.run", "0123abcd"] {
            assert!(validate_cell_id(good).is_ok(), "{good:?} refused");
        }
    }
}

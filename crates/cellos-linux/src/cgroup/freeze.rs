//! Pause and resume a cell through the cgroup freezer.
//!
//! v2 is preferred: every non-root v2 cgroup has `cgroup.freeze`, no controller needed. On
//! hybrid hosts whose v2 leaf does not hold the cell's processes, the v1 `freezer` hierarchy is
//! used instead. Its cgroup is made lazily at pause (never at create, which is on the measured
//! path of every cell), set FROZEN while still empty, and then filled: a task attached to a
//! FROZEN v1 cgroup freezes on arrival and a frozen task cannot fork, so moving the cell's
//! processes in converges.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{parent_path, procs_under, validate_cell_id, write_file, CgroupVersion, Layout};
use crate::error::LinuxError;

/// How long the kernel gets to report the whole cell frozen or thawed.
const SETTLE: Duration = Duration::from_secs(2);
/// Rounds of moving processes into a v1 freezer cgroup before giving up.
const MOVE_ROUNDS: u32 = 100;

/// Which freezer to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreezerChoice {
    /// v2 `cgroup.freeze` when the cell's v2 leaf holds its processes, else the v1 freezer.
    Auto,
    /// The v1 freezer hierarchy even when a v2 leaf exists (hosts and tests that need it).
    V1,
}

/// The mechanism that froze or thawed the cell, for evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreezeMechanism {
    V2,
    V1,
}

impl FreezeMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            FreezeMechanism::V2 => "cgroup v2 cgroup.freeze",
            FreezeMechanism::V1 => "cgroup v1 freezer.state",
        }
    }
}

impl std::fmt::Display for FreezeMechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Freeze every process of `cell_id`.
pub fn freeze(cell_id: &str, choice: FreezerChoice) -> Result<FreezeMechanism, LinuxError> {
    let dirs = CellDirs::find(cell_id)?;
    match (choice, dirs.v2_holding()) {
        (FreezerChoice::Auto, Some(v2)) => {
            set_v2(&v2, true)?;
            Ok(FreezeMechanism::V2)
        }
        _ => {
            freeze_v1(&dirs)?;
            Ok(FreezeMechanism::V1)
        }
    }
}

/// Thaw `cell_id`, whichever freezer holds it (a v1 freezer cgroup, if present, wins: it is
/// only there because a pause chose it).
pub fn thaw(cell_id: &str) -> Result<FreezeMechanism, LinuxError> {
    let dirs = CellDirs::find(cell_id)?;
    if let Some(freezer) = dirs.freezer.as_ref().filter(|p| p.is_dir()) {
        set_v1_state(freezer, "THAWED")?;
        return Ok(FreezeMechanism::V1);
    }
    match &dirs.v2 {
        Some(v2) if v2.is_dir() => {
            set_v2(v2, false)?;
            Ok(FreezeMechanism::V2)
        }
        _ => Err(not_found(cell_id)),
    }
}

/// The v1 freezer cgroup `cell_id` would use, when the host mounts a freezer hierarchy.
pub fn v1_freezer_dir(cell_id: &str) -> Result<Option<PathBuf>, LinuxError> {
    validate_cell_id(cell_id)?;
    let parent = parent_path()?;
    Ok(freezer_root(Layout::host()).map(|root| root.join(parent).join(cell_id)))
}

/// Thaw (so that SIGKILL takes effect: v1 frozen tasks do not die while frozen) the v1
/// freezer cgroup of `cell_id` if a pause made one. Returns it, for the caller to kill through
/// and remove.
pub(crate) fn thaw_v1_for_kill(cell_id: &str) -> Option<PathBuf> {
    let dir = v1_freezer_dir(cell_id).ok()??;
    if !dir.is_dir() {
        return None;
    }
    let _ = write_file(&dir.join("freezer.state"), "THAWED");
    Some(dir)
}

fn freezer_root(layout: &Layout) -> Option<&Path> {
    layout
        .v1
        .iter()
        .find(|h| h.v1_options.iter().any(|o| o == "freezer"))
        .map(|h| h.mount_point.as_path())
}

/// The cell's existing directories: its v2 leaf, its v1 leaves (freezer excluded) and the
/// place of its v1 freezer cgroup.
struct CellDirs {
    cell_id: String,
    v2: Option<PathBuf>,
    v1: Vec<PathBuf>,
    freezer: Option<PathBuf>,
}

impl CellDirs {
    fn find(cell_id: &str) -> Result<CellDirs, LinuxError> {
        validate_cell_id(cell_id)?;
        let parent = parent_path()?;
        let layout = Layout::host();
        let freezer = freezer_root(layout).map(|root| root.join(&parent).join(cell_id));
        let mut v2 = None;
        let mut v1 = Vec::new();
        for (version, root) in layout.all_roots() {
            let dir = root.join(&parent).join(cell_id);
            if !dir.is_dir() || Some(&dir) == freezer.as_ref() {
                continue;
            }
            match version {
                CgroupVersion::V2 => v2 = Some(dir),
                CgroupVersion::V1 => v1.push(dir),
            }
        }
        if v2.is_none() && v1.is_empty() {
            return Err(not_found(cell_id));
        }
        Ok(CellDirs {
            cell_id: cell_id.to_owned(),
            v2,
            v1,
            freezer,
        })
    }

    /// The v2 leaf, if it holds every process the v1 leaves hold (and at least one).
    fn v2_holding(&self) -> Option<PathBuf> {
        let v2 = self.v2.as_ref()?;
        let in_v2 = procs_under(std::slice::from_ref(v2)).ok()?;
        if in_v2.is_empty() {
            return None;
        }
        let in_v1 = procs_under(&self.v1).ok()?;
        in_v1
            .iter()
            .all(|p| in_v2.binary_search(p).is_ok())
            .then(|| v2.clone())
    }
}

fn not_found(cell_id: &str) -> LinuxError {
    LinuxError::NotFound {
        what: format!("cgroup of cell '{cell_id}' (not running on this host)"),
    }
}

/// Write `cgroup.freeze` and wait for `cgroup.events` to report the state.
fn set_v2(leaf: &Path, frozen: bool) -> Result<(), LinuxError> {
    let want = if frozen { "1" } else { "0" };
    write_file(&leaf.join("cgroup.freeze"), want)?;
    let events = leaf.join("cgroup.events");
    wait_for(&events, |text| {
        text.lines().any(|l| l.trim() == format!("frozen {want}"))
    })
}

fn freeze_v1(dirs: &CellDirs) -> Result<(), LinuxError> {
    let freezer = dirs.freezer.clone().ok_or_else(|| {
        LinuxError::missing(
            "cgroup freezer",
            format!(
                "cell '{}' has no v2 leaf holding its processes and no v1 freezer hierarchy is \
                 mounted: mount one (mount -t cgroup -o freezer cgroup /sys/fs/cgroup/freezer)",
                dirs.cell_id
            ),
        )
    })?;
    if let Some(parent) = freezer.parent() {
        fs::create_dir_all(parent).map_err(|source| LinuxError::Cgroup {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    match fs::create_dir(&freezer) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(LinuxError::Cgroup {
                path: freezer,
                source,
            })
        }
    }
    write_file(&freezer.join("freezer.state"), "FROZEN")?;
    let sources: Vec<PathBuf> = dirs.v1.iter().chain(dirs.v2.iter()).cloned().collect();
    move_all_into(&sources, &freezer)?;
    wait_for(&freezer.join("freezer.state"), |text| {
        text.trim() == "FROZEN"
    })
}

/// Move every process under `sources` into `freezer` until none is missing from it.
fn move_all_into(sources: &[PathBuf], freezer: &Path) -> Result<(), LinuxError> {
    let procs_file = freezer.join("cgroup.procs");
    for _ in 0..MOVE_ROUNDS {
        let inside = procs_under(&[freezer.to_path_buf()])?;
        let missing: Vec<i32> = procs_under(sources)?
            .into_iter()
            .filter(|p| inside.binary_search(p).is_err())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        for pid in missing {
            match write_file(&procs_file, &pid.to_string()) {
                Ok(()) => {}
                // The process exited between listing and moving.
                Err(LinuxError::Io { source, .. })
                    if source.raw_os_error() == Some(libc::ESRCH) => {}
                Err(err) => return Err(err),
            }
        }
    }
    Err(LinuxError::Setup {
        what: format!("freeze through {}", procs_file.display()),
        detail: format!("processes still outside the freezer after {MOVE_ROUNDS} rounds"),
    })
}

fn set_v1_state(freezer: &Path, state: &str) -> Result<(), LinuxError> {
    let file = freezer.join("freezer.state");
    write_file(&file, state)?;
    wait_for(&file, |text| text.trim() == state)
}

/// Poll `file` until `settled` holds, for at most [`SETTLE`]: freezing is asynchronous.
fn wait_for(file: &Path, settled: impl Fn(&str) -> bool) -> Result<(), LinuxError> {
    let start = Instant::now();
    loop {
        let text = fs::read_to_string(file)
            .map_err(|e| LinuxError::io(format!("read {}", file.display()), e))?;
        if settled(&text) {
            return Ok(());
        }
        if start.elapsed() > SETTLE {
            return Err(LinuxError::Setup {
                what: format!("wait for {}", file.display()),
                detail: format!(
                    "did not settle within {} ms (reads '{}')",
                    SETTLE.as_millis(),
                    text.trim().replace('\n', ", ")
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

//! The residue check after destroy and reclaim, failing closed.
//!
//! Each check reads the kernel's own view (procfs, sysfs, the mount table, `nft`). A check
//! that cannot read its source or run its tool does not conclude "nothing left": it records
//! its class as unverified, with why, and the cell's terminal state is then not clean. The
//! sources are parameters ([`HostSources`]) so that tests can make each one fail for real.

use std::io;
use std::path::{Path, PathBuf};

use cellos_core::ports::{Residue, TeardownReport, UnverifiedResidue};

use crate::error::LinuxError;

/// Where the residue checks read the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSources {
    /// procfs (`/proc`): processes and their namespaces, `net/route`, `net/tcp`, `net/udp`.
    pub proc: PathBuf,
    /// The host namespace's mount table (`/proc/self/mountinfo`): cgroup hierarchies, mounts.
    pub mountinfo: PathBuf,
    /// The host's network interfaces (`/sys/class/net`).
    pub sys_class_net: PathBuf,
    /// The network namespace whose nftables tables the host-table check lists, as a path
    /// (`/proc/<pid>/ns/net`); `None`: the supervisor's own, where host tables live.
    pub nftables_netns: Option<PathBuf>,
}

impl HostSources {
    /// The running host's own sources.
    pub fn host() -> Self {
        Self {
            proc: PathBuf::from("/proc"),
            mountinfo: PathBuf::from("/proc/self/mountinfo"),
            sys_class_net: PathBuf::from("/sys/class/net"),
            nftables_netns: None,
        }
    }
}

impl Default for HostSources {
    fn default() -> Self {
        Self::host()
    }
}

/// Why one check could not run.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// A source could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A source is readable but is not what the check reads (an empty directory as procfs, a
    /// mount table without any cgroup hierarchy).
    #[error("{} {what}", path.display())]
    NotTheSource { path: PathBuf, what: &'static str },
    /// A tool the check runs could not run, or failed.
    #[error("{0}")]
    Tool(#[source] LinuxError),
    /// A host operation the check relies on failed, or its configuration is invalid (the
    /// error names what and the fix).
    #[error("{0}")]
    Host(#[source] LinuxError),
}

impl CheckError {
    pub fn read(path: impl Into<PathBuf>, source: io::Error) -> Self {
        CheckError::Read {
            path: path.into(),
            source,
        }
    }

    /// What to change so the check can run, when the error does not already say it.
    fn fix(&self) -> Option<&'static str> {
        match self {
            CheckError::Read { .. } | CheckError::NotTheSource { .. } => Some(
                "run cellos where procfs, sysfs and the host mount table are mounted and \
                 readable (not in a chroot, not under a profile that hides /proc or /sys)",
            ),
            // A tool that could not be started already names the package to install.
            CheckError::Tool(LinuxError::MissingFeature { .. }) | CheckError::Host(_) => None,
            CheckError::Tool(_) => Some(
                "the supervisor must be able to list nftables tables over netlink (root with \
                 CAP_NET_ADMIN, the nf_tables module loaded)",
            ),
        }
    }
}

/// Whether `name` exists in the directory `dir`, where `dir` itself must exist: a check whose
/// source directory is gone cannot say anything about what is in it.
pub fn entry_exists(dir: &Path, name: &str) -> Result<bool, CheckError> {
    std::fs::metadata(dir).map_err(|e| CheckError::read(dir, e))?;
    let path = dir.join(name);
    path.try_exists().map_err(|e| CheckError::read(path, e))
}

/// Whether `path` exists; only a definite "no" (or "yes") counts.
pub fn file_exists(path: &Path) -> Result<bool, CheckError> {
    path.try_exists().map_err(|e| CheckError::read(path, e))
}

/// Reads procfs at `root`, refusing a root that is not procfs (no `self/stat`): an empty or
/// wrong directory would otherwise show no processes, namespaces or sockets at all.
pub struct Proc<'a> {
    root: &'a Path,
}

impl<'a> Proc<'a> {
    pub fn open(root: &'a Path) -> Result<Self, CheckError> {
        let probe = root.join("self/stat");
        match std::fs::metadata(&probe) {
            Ok(_) => Ok(Self { root }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(CheckError::NotTheSource {
                path: root.to_owned(),
                what: "is not procfs (it has no self/stat)",
            }),
            Err(e) => Err(CheckError::read(probe, e)),
        }
    }

    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }

    /// A whole procfs file.
    pub fn read(&self, rel: impl AsRef<Path>) -> Result<String, CheckError> {
        let path = self.path(rel);
        std::fs::read_to_string(&path).map_err(|e| CheckError::read(path, e))
    }

    /// Whether `pid` still runs with start time `start` (field 22 of its `stat`). A pid
    /// without a `stat` is gone; a zombie counts as gone (it holds nothing but its pid).
    pub fn runs(&self, pid: i32, start: u64) -> Result<bool, CheckError> {
        let path = self.path(format!("{pid}/stat"));
        match std::fs::read_to_string(&path) {
            Ok(stat) => Ok(crate::record::start_time_of_stat(&stat) == Some(start)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(CheckError::read(path, e)),
        }
    }
}

/// What the residue check found, and which classes it could not check.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Findings {
    pub residue: Vec<Residue>,
    pub unverified: Vec<UnverifiedResidue>,
}

impl Findings {
    /// Record one check of `class`: `Ok(Some(detail))` is something left, `Ok(None)` nothing.
    pub fn check(&mut self, class: &str, outcome: Result<Option<String>, CheckError>) {
        match outcome {
            Ok(None) => {}
            Ok(Some(detail)) => self.found(class, detail),
            Err(err) => self.unverified(class, &err),
        }
    }

    pub fn found(&mut self, class: &str, detail: String) {
        self.residue.push(Residue {
            class: class.into(),
            detail,
        });
    }

    pub fn unverified(&mut self, class: &str, err: &CheckError) {
        self.unverified.push(UnverifiedResidue {
            class: class.into(),
            reason: match err.fix() {
                Some(fix) => format!("{err}; {fix}"),
                None => err.to_string(),
            },
        });
    }

    /// Every check ran and found nothing.
    pub fn is_clean(&self) -> bool {
        self.residue.is_empty() && self.unverified.is_empty()
    }

    pub fn extend(&mut self, other: Findings) {
        self.residue.extend(other.residue);
        self.unverified.extend(other.unverified);
    }

    /// Put the findings into `report` (one entry per distinct finding).
    pub fn into_report(mut self, report: &mut TeardownReport) {
        report.residue.append(&mut self.residue);
        report.unverified.append(&mut self.unverified);
        report.residue.dedup();
        report.unverified.dedup();
    }
}

/// Mount points of the mount table at `mountinfo` (field 5 of each line, unescaped).
pub fn mount_points(mountinfo: &Path) -> Result<Vec<PathBuf>, CheckError> {
    let text = std::fs::read_to_string(mountinfo).map_err(|e| CheckError::read(mountinfo, e))?;
    let points: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(crate::cgroup::layout::unescape_mountinfo(p)))
        .collect();
    if points.is_empty() {
        return Err(CheckError::NotTheSource {
            path: mountinfo.to_owned(),
            what: "lists no mounts (not a mount table)",
        });
    }
    Ok(points)
}

/// The mount check: no host mount lies on or below one of the cell's host paths.
pub fn mounts_on(sources: &HostSources, paths: &[PathBuf]) -> Result<Option<String>, CheckError> {
    let on: Vec<String> = mount_points(&sources.mountinfo)?
        .into_iter()
        .filter(|m| paths.iter().any(|p| m.starts_with(p)))
        .map(|m| m.display().to_string())
        .collect();
    Ok((!on.is_empty()).then(|| format!("host mounts on the cell's paths: {}", on.join(", "))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_procfs_opens_and_an_empty_directory_is_refused() {
        assert!(Proc::open(Path::new("/proc")).is_ok());
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            Proc::open(empty.path()),
            Err(CheckError::NotTheSource { .. })
        ));
    }

    #[test]
    fn our_own_process_runs_and_a_wrong_start_time_does_not() {
        let proc = Proc::open(Path::new("/proc")).unwrap();
        let me = std::process::id() as i32;
        let start = crate::record::process_start_time(me).unwrap();
        assert!(proc.runs(me, start).unwrap());
        assert!(!proc.runs(me, start + 1).unwrap());
    }

    #[test]
    fn an_entry_of_a_missing_directory_cannot_be_ruled_out() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!entry_exists(dir.path(), "x").unwrap());
        let gone = dir.path().join("gone");
        assert!(matches!(
            entry_exists(&gone, "x"),
            Err(CheckError::Read { .. })
        ));
    }

    #[test]
    fn a_mount_table_that_is_a_directory_or_empty_is_not_read_as_no_mounts() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            mount_points(dir.path()),
            Err(CheckError::Read { .. })
        ));
        let empty = dir.path().join("mountinfo");
        std::fs::write(&empty, "").unwrap();
        assert!(matches!(
            mount_points(&empty),
            Err(CheckError::NotTheSource { .. })
        ));
        assert!(mount_points(Path::new("/proc/self/mountinfo"))
            .unwrap()
            .contains(&PathBuf::from("/")));
    }
}

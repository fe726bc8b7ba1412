//! Where the cgroup hierarchies are mounted and which version serves each controller.
//!
//! Hosts differ: pure v2 (`/sys/fs/cgroup` is cgroup2 with `cgroup.controllers`), hybrid (v1
//! hierarchies hold the controllers, an empty v2 tree sits at `/sys/fs/cgroup/unified`) and
//! pure v1. We decide per controller at run time: v2 when the unified root lists it in
//! `cgroup.controllers`, else the v1 hierarchy that has it mounted.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::CgroupVersion;

/// The controllers CellOS sets limits with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Controller {
    Memory,
    Pids,
    Cpu,
}

impl Controller {
    pub const ALL: [Controller; 3] = [Controller::Memory, Controller::Pids, Controller::Cpu];

    /// Kernel name of the controller.
    pub fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpu => "cpu",
        }
    }
}

/// One mounted cgroup v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub mount_point: PathBuf,
    /// The controllers (and `name=` options) bound to this hierarchy.
    pub v1_options: Vec<String>,
}

/// The host's cgroup mounts, read once per process from `/proc/self/mountinfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    /// The cgroup2 mount, if any.
    pub v2: Option<PathBuf>,
    /// Controllers listed in the v2 root's `cgroup.controllers`.
    pub v2_controllers: Vec<String>,
    /// Every v1 hierarchy (including named ones such as `name=systemd`).
    pub v1: Vec<Hierarchy>,
}

impl Layout {
    /// The host layout, detected on first use. Mounts of cgroup hierarchies do not change while
    /// a supervisor runs, and caching keeps cell creation to a few mkdir and writes.
    pub fn host() -> &'static Layout {
        static LAYOUT: OnceLock<Layout> = OnceLock::new();
        LAYOUT.get_or_init(Layout::detect)
    }

    /// Read `/proc/self/mountinfo` and the v2 root's controllers.
    pub fn detect() -> Layout {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut layout = Layout::from_mountinfo(&mountinfo);
        if let Some(v2) = &layout.v2 {
            layout.v2_controllers = std::fs::read_to_string(v2.join("cgroup.controllers"))
                .map(|s| s.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default();
        }
        layout
    }

    /// Parse the cgroup mounts out of mountinfo text (see proc(5)). The format is one line per
    /// mount with a `-` separator before fstype/source/super-options; parsing those few fields
    /// here is smaller than pulling a procfs crate onto the cell-creation path.
    pub fn from_mountinfo(text: &str) -> Layout {
        let mut layout = Layout::default();
        for line in text.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let Some(sep) = fields.iter().position(|f| *f == "-") else {
                continue;
            };
            let (Some(mount_point), Some(fstype), Some(super_opts)) =
                (fields.get(4), fields.get(sep + 1), fields.get(sep + 3))
            else {
                continue;
            };
            let mount_point = PathBuf::from(unescape_mountinfo(mount_point));
            match *fstype {
                "cgroup2" if layout.v2.is_none() => layout.v2 = Some(mount_point),
                "cgroup" => {
                    let opts: Vec<String> = super_opts
                        .split(',')
                        .filter(|o| !matches!(*o, "rw" | "ro") && !o.contains("release_agent"))
                        .map(str::to_owned)
                        .collect();
                    // The same hierarchy bind-mounted twice: keep the first mount.
                    if !layout.v1.iter().any(|h| h.v1_options == opts) {
                        layout.v1.push(Hierarchy {
                            mount_point,
                            v1_options: opts,
                        });
                    }
                }
                _ => {}
            }
        }
        layout
    }

    /// Which version serves `controller`, and the mount point of its hierarchy.
    pub fn locate(&self, controller: Controller) -> Option<(CgroupVersion, &Path)> {
        if let Some(v2) = &self.v2 {
            if self.v2_controllers.iter().any(|c| c == controller.name()) {
                return Some((CgroupVersion::V2, v2.as_path()));
            }
        }
        self.v1
            .iter()
            .find(|h| h.v1_options.iter().any(|o| o == controller.name()))
            .map(|h| (CgroupVersion::V1, h.mount_point.as_path()))
    }

    /// Every hierarchy root (v2 first), for garbage collection and residue checks.
    pub fn all_roots(&self) -> Vec<(CgroupVersion, &Path)> {
        self.v2
            .iter()
            .map(|p| (CgroupVersion::V2, p.as_path()))
            .chain(
                self.v1
                    .iter()
                    .map(|h| (CgroupVersion::V1, h.mount_point.as_path())),
            )
            .collect()
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
pub(crate) fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_layout_locates_controllers_in_v1() {
        let layout = Layout::from_mountinfo(HYBRID);
        assert_eq!(layout.v2, Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(
            layout.locate(Controller::Memory),
            Some((CgroupVersion::V1, Path::new("/sys/fs/cgroup/memory")))
        );
        assert_eq!(
            layout.locate(Controller::Cpu),
            Some((CgroupVersion::V1, Path::new("/sys/fs/cgroup/cpu,cpuacct")))
        );
        assert_eq!(layout.all_roots().len(), 5);
    }

    #[test]
    fn v2_controllers_take_precedence() {
        let mut layout = Layout::from_mountinfo(
            "30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n",
        );
        layout.v2_controllers = vec!["memory".into(), "pids".into()];
        assert_eq!(
            layout.locate(Controller::Pids),
            Some((CgroupVersion::V2, Path::new("/sys/fs/cgroup")))
        );
        assert_eq!(layout.locate(Controller::Cpu), None);
    }

    #[test]
    fn escaped_mount_points_are_decoded() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/trail\\04"), "/trail\\04");
    }
}

//! Kernel refusals of the steps that build a cell, explained.
//!
//! A bare `Operation not permitted (os error 1)` from `open_tree` or `pivot_root` is exactly
//! what a host under Docker's default seccomp profile, an AppArmor profile or an old kernel
//! produces, and says nothing about which of them it is. Every mount-API and namespace step
//! reports a [`Refusal`] instead: the call, the errno, the likely cause (judged from the errno,
//! the step and how this process is confined right now) and what to change. For `fsconfig` the
//! kernel's own explanation from the filesystem context's log is kept too.

use std::fmt;
use std::os::fd::BorrowedFd;

/// A namespace a step creates or enters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    User,
    Mount,
    Pid,
    Net,
    Ipc,
    Uts,
    Cgroup,
}

impl Namespace {
    /// The `CLONE_NEW*` flag's name.
    pub fn flag(self) -> &'static str {
        match self {
            Namespace::User => "CLONE_NEWUSER",
            Namespace::Mount => "CLONE_NEWNS",
            Namespace::Pid => "CLONE_NEWPID",
            Namespace::Net => "CLONE_NEWNET",
            Namespace::Ipc => "CLONE_NEWIPC",
            Namespace::Uts => "CLONE_NEWUTS",
            Namespace::Cgroup => "CLONE_NEWCGROUP",
        }
    }

    /// The kernel option that provides it.
    fn config(self) -> &'static str {
        match self {
            Namespace::User => "CONFIG_USER_NS",
            Namespace::Mount => "CONFIG_NAMESPACES",
            Namespace::Pid => "CONFIG_PID_NS",
            Namespace::Net => "CONFIG_NET_NS",
            Namespace::Ipc => "CONFIG_IPC_NS",
            Namespace::Uts => "CONFIG_UTS_NS",
            Namespace::Cgroup => "CONFIG_CGROUPS",
        }
    }

    /// The sysctl that caps how many may exist.
    fn limit(self) -> &'static str {
        match self {
            Namespace::User => "user.max_user_namespaces",
            Namespace::Mount => "user.max_mnt_namespaces",
            Namespace::Pid => "user.max_pid_namespaces",
            Namespace::Net => "user.max_net_namespaces",
            Namespace::Ipc => "user.max_ipc_namespaces",
            Namespace::Uts => "user.max_uts_namespaces",
            Namespace::Cgroup => "user.max_cgroup_namespaces",
        }
    }
}

/// One kernel step of building a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `clone`/`clone3` of the cell's init into its new namespaces.
    CloneNamespaces,
    /// `unshare` of one more namespace (init enters its cgroup namespace this way).
    Unshare(Namespace),
    /// `open_tree(OPEN_TREE_CLONE)`: a detached copy of a host tree.
    OpenTree,
    /// `mount_setattr`: read-only/nosuid/nodev on a tree.
    MountSetattr,
    /// `fsopen` of a filesystem type.
    Fsopen { fstype: &'static str },
    /// `fsconfig(FSCONFIG_SET_STRING)`: one option of a new filesystem.
    Fsconfig { fstype: &'static str },
    /// `fsconfig(FSCONFIG_CMD_CREATE)`: the filesystem itself.
    FsconfigCreate { fstype: &'static str },
    /// `fsmount`: a detached mount of the new filesystem.
    Fsmount { fstype: &'static str },
    /// `move_mount`: attaching a detached tree in the cell.
    MoveMount,
    /// Classic `mount(2)` of a filesystem (`tmpfs`, `proc`, `devpts`).
    Mount { fstype: &'static str },
    /// `mount(MS_BIND)` of a host device node.
    BindMount,
    /// `mount(MS_REC|MS_PRIVATE)` of `/`: nothing propagates between the cell and the host.
    MakePrivate,
    /// `umount2(MNT_DETACH)` of the old root.
    Umount,
    /// `pivot_root` into the new root.
    PivotRoot,
    /// `sethostname` in the cell's UTS namespace.
    Sethostname,
}

/// First kernel with the new mount API (`open_tree`, `move_mount`, `fsopen`, ...).
const MOUNT_API_KERNEL: &str = "5.2";

impl Step {
    /// The system call as a reader would look it up.
    pub fn call(self) -> String {
        match self {
            Step::CloneNamespaces => "clone(CLONE_NEWUSER|CLONE_NEWNS|CLONE_NEWPID|...)".into(),
            Step::Unshare(ns) => format!("unshare({})", ns.flag()),
            Step::OpenTree => "open_tree(OPEN_TREE_CLONE)".into(),
            Step::MountSetattr => "mount_setattr".into(),
            Step::Fsopen { fstype } => format!("fsopen({fstype})"),
            Step::Fsconfig { fstype } => format!("fsconfig({fstype}, FSCONFIG_SET_STRING)"),
            Step::FsconfigCreate { fstype } => format!("fsconfig({fstype}, FSCONFIG_CMD_CREATE)"),
            Step::Fsmount { fstype } => format!("fsmount({fstype})"),
            Step::MoveMount => "move_mount".into(),
            Step::Mount { fstype } => format!("mount(-t {fstype})"),
            Step::BindMount => "mount(MS_BIND)".into(),
            Step::MakePrivate => "mount(MS_REC|MS_PRIVATE)".into(),
            Step::Umount => "umount2(MNT_DETACH)".into(),
            Step::PivotRoot => "pivot_root".into(),
            Step::Sethostname => "sethostname".into(),
        }
    }

    /// The kernel that introduced the call, when it is recent enough to matter.
    fn since(self) -> Option<&'static str> {
        match self {
            Step::OpenTree
            | Step::Fsopen { .. }
            | Step::Fsconfig { .. }
            | Step::FsconfigCreate { .. }
            | Step::Fsmount { .. }
            | Step::MoveMount => Some(MOUNT_API_KERNEL),
            Step::MountSetattr => Some("5.12"),
            _ => None,
        }
    }

    fn is_namespace(self) -> bool {
        matches!(self, Step::CloneNamespaces | Step::Unshare(_))
    }
}

/// `CAP_SYS_ADMIN` (linux/capability.h); libc does not export capability numbers.
const CAP_SYS_ADMIN: u32 = 21;

/// How this process is confined, read when a step is refused: it decides which cause is likely.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Confinement {
    /// A seccomp filter is installed on the calling thread (`Seccomp: 2`; filters are per
    /// thread, so this reads `/proc/thread-self/status`).
    pub seccomp_filtered: bool,
    /// The LSM label of this process when it is confined (an AppArmor profile, an SELinux
    /// domain); `None` when unconfined or unknown.
    pub lsm_label: Option<String>,
    /// `CAP_SYS_ADMIN` is in the calling thread's effective set (in its own user namespace).
    pub cap_sys_admin: bool,
}

impl Confinement {
    /// The confinement of the calling thread right now.
    pub fn of_self() -> Self {
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
        };
        let seccomp_filtered = field("Seccomp:") == Some("2");
        let cap_sys_admin = field("CapEff:")
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0);
        let lsm_label = [
            "/proc/thread-self/attr/apparmor/current",
            "/proc/thread-self/attr/current",
        ]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim_end_matches(['\n', '\0']).to_owned())
        .filter(|l| !l.is_empty() && l != "unconfined" && !l.starts_with("unconfined_u:"));
        Confinement {
            seccomp_filtered,
            lsm_label,
            cap_sys_admin,
        }
    }
}

/// A kernel step the kernel refused, with what it most likely means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub step: Step,
    /// What the step acted on, as it reads after the call (`of /usr for /usr`, `for /proc`).
    pub target: String,
    /// The raw errno.
    pub errno: i32,
    /// Lines of the filesystem context's log (`fsconfig`), e.g. `e overlay: failed to clone
    /// lowerpath`.
    pub kernel_log: Vec<String>,
    pub confinement: Confinement,
}

impl std::error::Error for Refusal {}

impl Refusal {
    /// A refusal of `step` on `target`, judged against how this process is confined now.
    pub fn new(step: Step, target: impl Into<String>, errno: i32) -> Self {
        Refusal {
            step,
            target: target.into(),
            errno,
            kernel_log: Vec::new(),
            confinement: Confinement::of_self(),
        }
    }

    /// A refused `fsconfig`/`fsmount` on the filesystem context `fs`, with the kernel's log.
    pub fn with_fs_log(step: Step, target: impl Into<String>, errno: i32, fs: BorrowedFd) -> Self {
        Refusal {
            kernel_log: fs_log(fs),
            ..Refusal::new(step, target, errno)
        }
    }

    /// [`Refusal::new`] from a `rustix` errno.
    pub fn from_errno(step: Step, target: impl Into<String>, e: rustix::io::Errno) -> Self {
        Refusal::new(step, target, e.raw_os_error())
    }

    /// The likely cause and the fix.
    pub fn diagnosis(&self) -> Diagnosis {
        diagnose(self.step, self.errno, &self.confinement, &self.kernel_log)
    }

    /// Whether this host cannot give the cell the feature: an old kernel, a missing module or
    /// namespace type, a seccomp or LSM policy that blocks it, a namespace limit. Anything else
    /// (a busy target, a missing path) is a plain I/O failure.
    pub fn is_missing_feature(&self) -> bool {
        match self.errno {
            libc::ENOSYS | libc::ENODEV | libc::EPERM | libc::EACCES => true,
            libc::ENOSPC | libc::EUSERS | libc::EINVAL => self.step.is_namespace(),
            _ => false,
        }
    }

    /// The call, errno, the kernel's message and the likely cause, without the fix (for
    /// reports that print the fix on its own).
    pub fn summary(&self) -> String {
        let mut text = format!(
            "{} {} refused with {} ({})",
            self.step.call(),
            self.target,
            errno_name(self.errno),
            std::io::Error::from_raw_os_error(self.errno)
                .to_string()
                .trim_end_matches(&format!(" (os error {})", self.errno)),
        );
        if !self.kernel_log.is_empty() {
            text.push_str(&format!("; kernel says: {}", self.kernel_log.join(" | ")));
        }
        text.push_str(&format!("; likely cause: {}", self.diagnosis().cause));
        text
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; fix: {}", self.summary(), self.diagnosis().fix)
    }
}

/// The likely cause of a refusal and what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    pub cause: String,
    pub fix: String,
}

fn diag(cause: impl Into<String>, fix: impl Into<String>) -> Diagnosis {
    Diagnosis {
        cause: cause.into(),
        fix: fix.into(),
    }
}

/// What it means when `step` fails with `errno` in a process confined as `conf`.
pub fn diagnose(step: Step, errno: i32, conf: &Confinement, kernel_log: &[String]) -> Diagnosis {
    let call = step.call();
    match errno {
        libc::EPERM if conf.seccomp_filtered => diag(
            format!(
                "this process runs under a seccomp filter (an outer container's profile: Docker's \
                 default profile refuses {call} and the rest of the mount API and namespace calls)"
            ),
            "run cellos outside that container or give it a seccomp profile that allows the \
             mount API (open_tree, fsopen, fsconfig, fsmount, move_mount, mount_setattr), mount, \
             pivot_root, unshare and clone with namespace flags (e.g. docker run --security-opt \
             seccomp=unconfined)",
        ),
        libc::EPERM | libc::EACCES if conf.lsm_label.is_some() => {
            let label = conf.lsm_label.as_deref().unwrap_or_default();
            diag(
                format!("the LSM profile '{label}' confining this process denies {call}"),
                lsm_fix(step),
            )
        }
        libc::EACCES => diag(
            format!("an LSM (AppArmor, SELinux) policy denies {call}"),
            lsm_fix(step),
        ),
        libc::EPERM => eperm(step, conf),
        libc::ENOSYS => match step.since() {
            Some(version) => diag(
                format!(
                    "the kernel does not implement {call} (added in Linux {version}), or a \
                     seccomp filter answers ENOSYS for it"
                ),
                format!("run on Linux {version} or newer, outside any filter that hides {call}"),
            ),
            None => diag(
                format!("the kernel or a seccomp filter reports {call} as not implemented"),
                format!("run cellos where {call} is available (no filter that hides it)"),
            ),
        },
        libc::ENODEV => match step {
            Step::Fsopen { fstype } | Step::Mount { fstype } => diag(
                format!("the kernel has no {fstype} filesystem"),
                format!(
                    "load its module (modprobe {fstype}) or use a kernel built with it{}",
                    if fstype == "overlay" {
                        " (CONFIG_OVERLAY_FS; the cell's /etc is an overlay)"
                    } else {
                        ""
                    }
                ),
            ),
            _ => diag(
                format!("the kernel lacks a device or filesystem {call} needs"),
                "use a kernel built with it, and run cellos doctor",
            ),
        },
        libc::ENOSPC | libc::EUSERS if step.is_namespace() => {
            let limit = match step {
                Step::Unshare(ns) => ns.limit(),
                _ => "user.max_user_namespaces (and the other user.max_*_namespaces)",
            };
            diag(
                format!("the namespace limit {limit} is reached (or 0)"),
                format!(
                    "raise it: sysctl -w {}=15000",
                    limit.split(' ').next().unwrap_or(limit)
                ),
            )
        }
        libc::EINVAL => einval(step, kernel_log),
        libc::EBUSY => diag(
            format!("the target of {call} is busy (already a mount of this kind, or in use)"),
            "remove the conflicting mount from the cell's paths (findmnt shows it)",
        ),
        libc::ENOENT => diag(
            format!("a path {call} needs does not exist"),
            "create it, or correct the path in the spec",
        ),
        _ => diag(
            format!("the kernel refused {call} for a reason CellOS does not know"),
            "check the kernel log (dmesg) around this time and run cellos doctor",
        ),
    }
}

/// `EPERM` without a seccomp filter or LSM label: a missing privilege or a sysctl.
fn eperm(step: Step, conf: &Confinement) -> Diagnosis {
    let call = step.call();
    match step {
        Step::CloneNamespaces | Step::Unshare(Namespace::User) => diag(
            "unprivileged user namespaces are disabled, or an LSM restricts them",
            "sysctl -w kernel.unprivileged_userns_clone=1 (Debian) and, on Ubuntu 24.04+, \
             kernel.apparmor_restrict_unprivileged_userns=0, or run cellos as real root",
        ),
        Step::Mount { fstype: "proc" } => diag(
            "the host's /proc has paths hidden by over-mounts (as in a container), which forbids a \
             new proc mount in a user namespace",
            "run cellos on a host (or container) whose /proc is not partly masked (e.g. docker \
             run --security-opt systempaths=unconfined)",
        ),
        _ if !conf.cap_sys_admin => diag(
            format!(
                "the caller lacks CAP_SYS_ADMIN, which {call} needs (cellos is not running as \
                 root, or an outer container dropped the capability)"
            ),
            "run cellos as root with CAP_SYS_ADMIN (in a container: --cap-add SYS_ADMIN or \
             --privileged)",
        ),
        _ => diag(
            format!(
                "{call} needs privilege over mounts that this user namespace does not own: cellos \
                 runs in a user namespace itself (a rootless or user-namespaced container), or \
                 the mount's flags are locked"
            ),
            "run cellos as root in the host's initial user namespace (on the host, or in a \
             rootful container)",
        ),
    }
}

fn lsm_fix(step: Step) -> String {
    format!(
        "allow {} in the policy that confines cellos (AppArmor: run it unconfined or add mount and \
         pivot_root rules to its profile; look for apparmor=\"DENIED\" or avc: denied in dmesg)",
        step.call()
    )
}

/// `EINVAL`: what the kernel did not accept depends on the step.
fn einval(step: Step, kernel_log: &[String]) -> Diagnosis {
    let said = kernel_log.join(" | ");
    match step {
        // Before overlayfs took the new mount API (6.5) it logged to dmesg, not to the context.
        Step::FsconfigCreate { fstype: "overlay" }
            if said.is_empty() || said.contains("failed to clone lowerpath") =>
        {
            diag(
                "this kernel accepts only attached mounts as overlay lower layers (Linux before \
                 6.15 refuses a detached one, logging 'overlayfs: failed to clone lowerpath' in \
                 dmesg)",
                "run on Linux 6.15 or newer, or give the cell an image (rootfs: image) so that \
                 /etc is not an overlay of the host's",
            )
        }
        Step::Fsconfig { .. } | Step::FsconfigCreate { .. } | Step::Fsmount { .. } => diag(
            "the kernel rejected the filesystem's configuration",
            "check the option the kernel names (dmesg when it says nothing here); an old kernel \
             may not know it",
        ),
        Step::OpenTree => diag(
            "the source is not a tree the kernel will copy (an unbindable mount, or a mount of \
             another mount namespace)",
            "check it with findmnt -o TARGET,PROPAGATION on the source; mount --make-private \
             makes an unbindable mount copyable",
        ),
        Step::MoveMount => diag(
            "the tree or the target is not what move_mount accepts (the tree is no longer \
             detached, or the target sits on a shared mount)",
            "make the cell's parent mounts private (the cell does mount --make-rprivate /), and \
             report it if it persists",
        ),
        Step::MountSetattr => diag(
            "the kernel does not know these mount attributes or the path is not a mount",
            "run on Linux 5.12 or newer",
        ),
        Step::PivotRoot => diag(
            "the new root is not a mount point, or the current root is the initramfs rootfs, \
             which pivot_root cannot move",
            "start cellos from a real root filesystem (after switch_root), not from an initramfs",
        ),
        Step::Unshare(ns) => diag(
            format!("the kernel is built without {} namespaces", ns.flag()),
            format!("use a kernel built with {}", ns.config()),
        ),
        Step::CloneNamespaces => diag(
            "the kernel is built without one of the namespaces a cell needs",
            "use a kernel built with CONFIG_USER_NS, CONFIG_PID_NS, CONFIG_NET_NS, CONFIG_IPC_NS \
             and CONFIG_UTS_NS",
        ),
        Step::Mount { fstype } => diag(
            format!("this kernel's {fstype} does not accept the options CellOS passes"),
            "run on a newer kernel, and report the options in the message",
        ),
        Step::Fsopen { .. }
        | Step::BindMount
        | Step::MakePrivate
        | Step::Umount
        | Step::Sethostname => diag(
            format!("the kernel rejected the arguments of {}", step.call()),
            "report it with the kernel version (uname -r)",
        ),
    }
}

/// The messages the kernel logged on a filesystem context (`read(2)` on the `fsopen` fd gives
/// one `e `/`w `/`i `-prefixed message per read until `ENODATA`).
pub fn fs_log(fs: BorrowedFd) -> Vec<String> {
    let mut lines = Vec::new();
    let mut buf = [0u8; 512];
    // The kernel keeps at most 8 messages per context.
    for _ in 0..8 {
        match rustix::io::read(fs, &mut buf) {
            Ok(n) if n > 0 => {
                lines.push(String::from_utf8_lossy(&buf[..n]).trim_end().to_owned());
            }
            _ => break,
        }
    }
    lines
}

/// The symbolic name of the errnos these steps produce (`EPERM`), else `errno N`.
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::ENOSYS => "ENOSYS",
        libc::ENODEV => "ENODEV",
        libc::EUSERS => "EUSERS",
        libc::ENOMEM => "ENOMEM",
        libc::EBADF => "EBADF",
        libc::ENOTDIR => "ENOTDIR",
        libc::ELOOP => "ELOOP",
        libc::EXDEV => "EXDEV",
        _ => return format!("errno {errno}"),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::LinuxError;
    use cellos_core::ports::PortErrorKind;

    const MOUNT_STEPS: &[Step] = &[
        Step::OpenTree,
        Step::MountSetattr,
        Step::Fsopen { fstype: "overlay" },
        Step::Fsconfig { fstype: "overlay" },
        Step::FsconfigCreate { fstype: "overlay" },
        Step::Fsmount { fstype: "tmpfs" },
        Step::MoveMount,
        Step::Mount { fstype: "tmpfs" },
        Step::BindMount,
        Step::MakePrivate,
        Step::Umount,
        Step::PivotRoot,
    ];
    const NAMESPACE_STEPS: &[Step] = &[
        Step::CloneNamespaces,
        Step::Unshare(Namespace::Cgroup),
        Step::Sethostname,
    ];

    fn refusal(step: Step, errno: i32, conf: Confinement) -> Refusal {
        Refusal {
            step,
            target: "of /usr for /usr".into(),
            errno,
            kernel_log: Vec::new(),
            confinement: conf,
        }
    }

    fn filtered() -> Confinement {
        Confinement {
            seccomp_filtered: true,
            ..root()
        }
    }

    /// Root with every capability, no filter, no LSM label: how the tests run here.
    fn root() -> Confinement {
        Confinement {
            cap_sys_admin: true,
            ..Confinement::default()
        }
    }

    fn all_steps() -> impl Iterator<Item = Step> {
        MOUNT_STEPS.iter().chain(NAMESPACE_STEPS).copied()
    }

    #[test]
    fn eperm_under_a_seccomp_filter_names_the_call_the_outer_profile_and_the_fix() {
        for step in all_steps() {
            let text = refusal(step, libc::EPERM, filtered()).to_string();
            assert!(text.starts_with(&step.call()), "{text}");
            assert!(
                text.contains("refused with EPERM (Operation not permitted)"),
                "{text}"
            );
            assert!(text.contains("likely cause: this process runs under a seccomp filter"));
            assert!(text.contains("Docker's default profile"), "{text}");
            assert!(
                text.contains("fix: run cellos outside that container"),
                "{text}"
            );
            assert!(text.contains("seccomp=unconfined"), "{text}");
            assert!(!text.contains('\n'), "one line: {text}");
        }
    }

    #[test]
    fn eperm_without_a_filter_names_the_missing_privilege() {
        for step in MOUNT_STEPS
            .iter()
            .copied()
            .filter(|s| *s != Step::Mount { fstype: "proc" })
        {
            let d = refusal(step, libc::EPERM, Confinement::default()).diagnosis();
            assert!(d.cause.contains("lacks CAP_SYS_ADMIN"), "{step:?}: {d:?}");
            assert!(d.cause.contains(&step.call()), "{step:?}: {d:?}");
            assert!(d.fix.contains("--cap-add SYS_ADMIN"), "{step:?}: {d:?}");
            let d = refusal(step, libc::EPERM, root()).diagnosis();
            assert!(d.cause.contains("does not own"), "{step:?}: {d:?}");
            assert!(d.cause.contains("rootless"), "{step:?}: {d:?}");
            assert!(d.fix.contains("initial user namespace"), "{step:?}: {d:?}");
        }
        let d = diagnose(
            Step::CloneNamespaces,
            libc::EPERM,
            &Confinement::default(),
            &[],
        );
        assert!(
            d.cause
                .contains("unprivileged user namespaces are disabled"),
            "{d:?}"
        );
        assert!(
            d.fix.contains("kernel.unprivileged_userns_clone=1"),
            "{d:?}"
        );
        assert!(
            d.fix.contains("apparmor_restrict_unprivileged_userns=0"),
            "{d:?}"
        );
        let d = diagnose(
            Step::Mount { fstype: "proc" },
            libc::EPERM,
            &Confinement::default(),
            &[],
        );
        assert!(
            d.cause.contains("/proc has paths hidden by over-mounts"),
            "{d:?}"
        );
        assert!(d.fix.contains("systempaths=unconfined"), "{d:?}");
    }

    #[test]
    fn lsm_denials_name_the_profile_and_how_to_allow_the_call() {
        let conf = Confinement {
            lsm_label: Some("docker-default (enforce)".into()),
            ..root()
        };
        for step in all_steps() {
            for errno in [libc::EPERM, libc::EACCES] {
                let d = diagnose(step, errno, &conf, &[]);
                assert!(d.cause.contains("'docker-default (enforce)'"), "{d:?}");
                assert!(d.cause.contains(&step.call()), "{d:?}");
                assert!(d.fix.contains("AppArmor"), "{d:?}");
                assert!(d.fix.contains(&format!("allow {}", step.call())), "{d:?}");
            }
        }
        let d = diagnose(Step::PivotRoot, libc::EACCES, &Confinement::default(), &[]);
        assert!(d
            .cause
            .contains("an LSM (AppArmor, SELinux) policy denies pivot_root"));
    }

    #[test]
    fn enosys_names_the_kernel_that_added_the_call() {
        for step in MOUNT_STEPS.iter().copied().filter(|s| s.since().is_some()) {
            let r = refusal(step, libc::ENOSYS, Confinement::default());
            let want = if step == Step::MountSetattr {
                "5.12"
            } else {
                "5.2"
            };
            let d = r.diagnosis();
            assert!(d.cause.contains(&format!("added in Linux {want}")), "{d:?}");
            assert!(d.fix.contains(&format!("Linux {want} or newer")), "{d:?}");
            assert!(r.is_missing_feature());
            assert_eq!(LinuxError::from(r).kind(), PortErrorKind::MissingFeature);
        }
        let d = diagnose(Step::PivotRoot, libc::ENOSYS, &filtered(), &[]);
        assert!(d.cause.contains("seccomp filter"), "{d:?}");
    }

    #[test]
    fn enodev_names_the_module_to_load() {
        let d = diagnose(
            Step::Fsopen { fstype: "overlay" },
            libc::ENODEV,
            &Confinement::default(),
            &[],
        );
        assert_eq!(d.cause, "the kernel has no overlay filesystem");
        assert!(
            d.fix.contains("modprobe overlay") && d.fix.contains("CONFIG_OVERLAY_FS"),
            "{d:?}"
        );
        let r = refusal(
            Step::Fsopen { fstype: "overlay" },
            libc::ENODEV,
            Confinement::default(),
        );
        assert_eq!(LinuxError::from(r).kind(), PortErrorKind::MissingFeature);
        let r = refusal(Step::PivotRoot, libc::EPERM, filtered());
        assert_eq!(LinuxError::from(r).kind(), PortErrorKind::MissingFeature);
        let r = refusal(Step::CloneNamespaces, libc::EINVAL, Confinement::default());
        assert_eq!(LinuxError::from(r).kind(), PortErrorKind::MissingFeature);
        let r = refusal(Step::MoveMount, libc::EBUSY, Confinement::default());
        assert_eq!(LinuxError::from(r).kind(), PortErrorKind::Io);
        let r = refusal(Step::OpenTree, libc::EINVAL, Confinement::default());
        assert_eq!(LinuxError::from(r).kind(), PortErrorKind::Io);
    }

    #[test]
    fn einval_is_explained_per_step() {
        let none = Confinement::default();
        let cases: &[(Step, &str, &str)] = &[
            (Step::OpenTree, "unbindable mount", "mount --make-private"),
            (Step::MoveMount, "no longer detached", "private"),
            (
                Step::MountSetattr,
                "does not know these mount attributes",
                "5.12",
            ),
            (Step::PivotRoot, "initramfs rootfs", "switch_root"),
            (
                Step::Unshare(Namespace::Cgroup),
                "without CLONE_NEWCGROUP",
                "CONFIG_CGROUPS",
            ),
            (
                Step::CloneNamespaces,
                "without one of the namespaces",
                "CONFIG_USER_NS",
            ),
            (
                Step::Mount { fstype: "devpts" },
                "devpts does not accept",
                "newer kernel",
            ),
        ];
        for (step, cause, fix) in cases {
            let d = diagnose(*step, libc::EINVAL, &none, &[]);
            assert!(d.cause.contains(cause), "{step:?}: {d:?}");
            assert!(d.fix.contains(fix), "{step:?}: {d:?}");
        }
    }

    #[test]
    fn overlay_einval_carries_the_kernel_log_and_names_detached_layers() {
        let mut r = refusal(
            Step::FsconfigCreate { fstype: "overlay" },
            libc::EINVAL,
            Confinement::default(),
        );
        r.target = "for the cell's /etc".into();
        r.kernel_log = vec!["e overlay: failed to clone lowerpath".into()];
        let text = r.to_string();
        assert!(
            text.starts_with(
                "fsconfig(overlay, FSCONFIG_CMD_CREATE) for the cell's /etc refused with EINVAL"
            ),
            "{text}"
        );
        assert!(
            text.contains("kernel says: e overlay: failed to clone lowerpath;"),
            "{text}"
        );
        assert!(
            text.contains("accepts only attached mounts as overlay lower layers"),
            "{text}"
        );
        assert!(text.contains("fix: run on Linux 6.15 or newer"), "{text}");

        r.kernel_log = vec!["e overlay: Unknown parameter 'bogus'".into()];
        let d = r.diagnosis();
        assert_eq!(
            d.cause,
            "the kernel rejected the filesystem's configuration"
        );
        assert!(
            d.fix.starts_with("check the option the kernel names"),
            "{d:?}"
        );
    }

    #[test]
    fn namespace_limits_name_the_sysctl_to_raise() {
        for errno in [libc::ENOSPC, libc::EUSERS] {
            let d = diagnose(
                Step::Unshare(Namespace::Cgroup),
                errno,
                &Confinement::default(),
                &[],
            );
            assert!(d.cause.contains("user.max_cgroup_namespaces"), "{d:?}");
            assert_eq!(
                d.fix,
                "raise it: sysctl -w user.max_cgroup_namespaces=15000"
            );
            let d = diagnose(Step::CloneNamespaces, errno, &Confinement::default(), &[]);
            assert_eq!(d.fix, "raise it: sysctl -w user.max_user_namespaces=15000");
        }
    }

    #[test]
    fn the_calling_thread_is_unconfined_here() {
        // The test host runs no filter or LSM profile on the test threads: the EPERM
        // diagnosis depends on telling that apart from a filtered thread.
        assert_eq!(Confinement::of_self(), root());
    }
}

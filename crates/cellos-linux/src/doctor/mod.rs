//! Host capability probe (`cellos doctor`): which kernel features the Linux backend can use here,
//! and how to enable the missing ones.
//!
//! Each check exercises the feature the way a cell would (a real `unshare`, a real `pidfd_open`,
//! a real `nft` call, the cell's own mount and namespace steps) rather than trusting
//! configuration files, so "ok" means usable. A check that could not run says so
//! ([`CheckStatus::Unverified`]); it is never reported as ok.

use std::process::{Command, Stdio};

use serde::Serialize;

use crate::cgroup::{CgroupVersion, Controller, Layout};
use crate::error::LinuxError;
use crate::landlock_rules;
use crate::trees::EtcBuild;

pub mod cell_steps;
pub mod forward;

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum CheckStatus {
    /// The feature works here.
    Ok,
    /// The feature is missing or refused; `fix` says what to change.
    Missing,
    /// The check itself could not run, so nothing is known; `fix` says what it needs.
    Unverified,
}

/// Result of probing one feature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FeatureCheck {
    pub feature: String,
    pub status: CheckStatus,
    /// What was found (version, location, error).
    pub detail: String,
    /// How to enable the feature when it is missing, or to let the check run.
    pub fix: Option<String>,
}

impl FeatureCheck {
    fn new(feature: &str, available: bool, detail: String, fix: &str) -> Self {
        FeatureCheck {
            feature: feature.into(),
            status: if available {
                CheckStatus::Ok
            } else {
                CheckStatus::Missing
            },
            detail,
            fix: (!available).then(|| fix.to_owned()),
        }
    }

    /// A check that could not run: never reported as available.
    fn unverified(feature: &str, why: String, fix: &str) -> Self {
        FeatureCheck {
            feature: feature.into(),
            status: CheckStatus::Unverified,
            detail: format!("could not check: {why}"),
            fix: Some(fix.to_owned()),
        }
    }

    /// Whether the feature was found to work.
    pub fn available(&self) -> bool {
        self.status == CheckStatus::Ok
    }
}

/// Probe every feature the backend uses.
pub fn probe() -> Vec<FeatureCheck> {
    let mut checks = vec![kernel_release(), user_namespaces(), cgroup_v2()];
    checks.extend(Controller::ALL.into_iter().map(cgroup_controller));
    checks.extend([
        seccomp_filter(),
        landlock(),
        overlayfs(),
        pidfd(),
        nftables(),
        egress_forwarding(),
        forward::check(None),
    ]);
    checks.extend(cell_setup());
    checks
}

/// Feature names of the two checks that take a cell's kernel steps.
pub const MOUNT_API: &str = "mount API (supervisor side)";
pub const CELL_STEPS: &str = "cell namespaces and root";

/// The supervisor's mount-API steps, then the cell's namespace and root steps, each reported
/// with the refusal a cell would print.
pub fn cell_setup() -> [FeatureCheck; 2] {
    match cell_steps::supervisor_side() {
        Err(e) => [
            refused(MOUNT_API, e),
            FeatureCheck::unverified(
                CELL_STEPS,
                "it attaches the detached trees that the mount API could not make".into(),
                "fix the mount API check first",
            ),
        ],
        Ok(trees) => [
            FeatureCheck::new(
                MOUNT_API,
                true,
                format!(
                    "open_tree(OPEN_TREE_CLONE), mount_setattr, fsopen/fsconfig/fsmount of tmpfs \
                     and of the /etc overlay work{}",
                    match trees.etc_build {
                        EtcBuild::Detached => "",
                        EtcBuild::AttachedFallback => {
                            " (this kernel refuses a detached overlay layer: /etc is built over \
                             attached layers instead)"
                        }
                    }
                ),
                "",
            ),
            match cell_steps::cell_side(trees) {
                Ok(()) => FeatureCheck::new(
                    CELL_STEPS,
                    true,
                    "clone into user/pid/mount/net/ipc/uts namespaces, unshare(CLONE_NEWCGROUP), \
                     move_mount, mount_setattr, mount of tmpfs and proc, sethostname, \
                     pivot_root work with the cell's id map"
                        .into(),
                    "",
                ),
                Err(e) => refused(CELL_STEPS, e),
            },
        ],
    }
}

/// A failed step: a kernel refusal's cause in the detail and its fix as the fix.
fn refused(feature: &str, err: LinuxError) -> FeatureCheck {
    match err {
        LinuxError::Kernel(r) => FeatureCheck::new(feature, false, r.summary(), &r.diagnosis().fix),
        other => FeatureCheck::new(
            feature,
            false,
            other.to_string(),
            "run cellos doctor as root on the host that runs cells",
        ),
    }
}

fn user_namespaces() -> FeatureCheck {
    let limit = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    let fix =
        "enable user namespaces: sysctl -w user.max_user_namespaces=15000 (and on Debian/Ubuntu \
         kernel.unprivileged_userns_clone=1; on Ubuntu 24.04+ also \
         kernel.apparmor_restrict_unprivileged_userns=0 or an AppArmor profile for cellos)";
    match try_unshare_user() {
        Ok(Ok(())) => FeatureCheck::new(
            "user namespaces",
            true,
            format!("unshare(CLONE_NEWUSER) works; user.max_user_namespaces={limit}"),
            fix,
        ),
        Ok(Err(e)) => FeatureCheck::new(
            "user namespaces",
            false,
            format!("unshare(CLONE_NEWUSER) failed: {e}; user.max_user_namespaces={limit}"),
            fix,
        ),
        Err(why) => FeatureCheck::unverified(
            "user namespaces",
            why,
            "run cellos doctor where it can fork",
        ),
    }
}

/// `unshare(CLONE_NEWUSER)` refuses multi-threaded callers, so it runs in a forked child that
/// only makes async-signal-safe calls and reports through its exit status. The outer error:
/// the probe itself could not run.
fn try_unshare_user() -> Result<Result<(), String>, String> {
    // SAFETY: the child calls only unshare and _exit, both async-signal-safe.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: plain syscalls in the child; _exit never returns.
        unsafe {
            let code = if libc::unshare(libc::CLONE_NEWUSER) == 0 {
                0
            } else {
                *libc::__errno_location()
            };
            libc::_exit(code);
        }
    }
    let mut status = 0;
    // SAFETY: waiting for the child we just forked; `status` is a valid out pointer.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    if waited != pid {
        return Err(format!("waitpid: {}", std::io::Error::last_os_error()));
    }
    match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
        Some(0) => Ok(Ok(())),
        Some(errno) => Ok(Err(std::io::Error::from_raw_os_error(errno).to_string())),
        None => Err(format!("probe child ended abnormally (status {status})")),
    }
}

fn cgroup_v2() -> FeatureCheck {
    let layout = Layout::host();
    let (available, detail) = match &layout.v2 {
        Some(root) => (
            true,
            format!(
                "cgroup2 at {} with controllers [{}]",
                root.display(),
                layout.v2_controllers.join(" ")
            ),
        ),
        None => (false, "no cgroup2 mount".into()),
    };
    FeatureCheck::new(
        "cgroup v2",
        available,
        detail,
        "mount the unified hierarchy (mount -t cgroup2 none /sys/fs/cgroup), or boot with \
         systemd.unified_cgroup_hierarchy=1",
    )
}

fn cgroup_controller(controller: Controller) -> FeatureCheck {
    let name = controller.name();
    let (available, detail) = match Layout::host().locate(controller) {
        Some((version, root)) => {
            let how = match version {
                CgroupVersion::V2 => format!("v2 ({}/cgroup.controllers)", root.display()),
                CgroupVersion::V1 => format!("v1 hierarchy at {}", root.display()),
            };
            (true, how)
        }
        None => (
            false,
            "in neither v2 cgroup.controllers nor a v1 hierarchy".into(),
        ),
    };
    FeatureCheck::new(
        &format!("cgroup {name}"),
        available,
        detail,
        &format!(
            "delegate '{name}' to CellOS in v2 (systemd Delegate=yes, or '+{name}' in the parent's \
             cgroup.subtree_control) or mount it as v1 (mount -t cgroup -o {name} cgroup \
             /sys/fs/cgroup/{name}); check the kernel is not booted with cgroup_disable={name}"
        ),
    )
}

/// Seccomp filter mode is supported when `PR_SET_SECCOMP(SECCOMP_MODE_FILTER, NULL)` fails with
/// `EFAULT` (the kernel got as far as reading the program); `EINVAL` means no filter mode.
fn seccomp_filter() -> FeatureCheck {
    // SAFETY: PR_GET_SECCOMP reads no memory.
    let mode = unsafe { libc::prctl(libc::PR_GET_SECCOMP) };
    // SAFETY: a null program pointer makes the kernel fail with EFAULT before installing anything.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            std::ptr::null::<libc::c_void>(),
        )
    };
    let errno = std::io::Error::last_os_error().raw_os_error();
    let available = rc < 0 && errno == Some(libc::EFAULT);
    let detail = match mode {
        0 => "filter mode supported; this process is not filtered".to_owned(),
        2 => "filter mode supported; this process is already filtered".to_owned(),
        m if m < 0 => format!("PR_GET_SECCOMP failed: {}", std::io::Error::last_os_error()),
        m => format!("this process is in seccomp mode {m}"),
    };
    let detail = if available {
        detail
    } else {
        format!("SECCOMP_MODE_FILTER probe returned {rc} ({errno:?})")
    };
    FeatureCheck::new(
        "seccomp filter",
        available,
        detail,
        "use a kernel built with CONFIG_SECCOMP=y and CONFIG_SECCOMP_FILTER=y",
    )
}

/// The oldest kernel CellOS supports (README "Supported kernels"): it has every call a cell
/// needs without a fallback (mount API and `mount_setattr`, pidfds, Landlock, cgroup v2 with
/// memory/pids/cpu); newer features are detected and have fallbacks.
pub const KERNEL_FLOOR: (u32, u32) = (5, 15);

fn kernel_release() -> FeatureCheck {
    let release = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    match major_minor(&release) {
        Some(version) => FeatureCheck::new(
            "kernel",
            version >= KERNEL_FLOOR,
            format!(
                "Linux {release} (supported from {}.{})",
                KERNEL_FLOOR.0, KERNEL_FLOOR.1
            ),
            "run CellOS on Linux 5.15 or newer (Debian 12, Ubuntu 22.04 and later ship one)",
        ),
        None => FeatureCheck::unverified(
            "kernel",
            format!("kernel release {release:?} is not MAJOR.MINOR..."),
            "compare the kernel version with the README's supported kernels by hand",
        ),
    }
}

/// `(major, minor)` of a kernel release such as `6.1.0-57-amd64`.
fn major_minor(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn landlock() -> FeatureCheck {
    let abi = landlock_rules::kernel_abi();
    FeatureCheck::new(
        "landlock",
        abi.is_some(),
        match abi {
            Some(v) => landlock_detail(v),
            None => "landlock_create_ruleset reports no Landlock".into(),
        },
        "use a kernel >= 5.13 with CONFIG_SECURITY_LANDLOCK=y and add landlock to the lsm= boot \
         parameter (e.g. lsm=landlock,lockdown,yama,integrity,apparmor)",
    )
}

/// The kernel's ABI and what it means for cells: the rights CellOS targets that it leaves
/// unenforced (as `isolation.v1.enforced` will record them).
fn landlock_detail(abi: u32) -> String {
    let unenforced = landlock_rules::unenforced_rights(Some(abi));
    if unenforced.is_empty() {
        format!("Landlock ABI {abi}; every right CellOS applies is enforced")
    } else {
        format!(
            "Landlock ABI {abi}; not enforced on this kernel: {} (cells with a higher \
             filesystem.landlock.minAbi are refused)",
            unenforced.join(", ")
        )
    }
}

fn overlayfs() -> FeatureCheck {
    let fix = "load the module (modprobe overlay) or build the kernel with CONFIG_OVERLAY_FS";
    match std::fs::read_to_string("/proc/filesystems") {
        Ok(list) => {
            let listed = list
                .lines()
                .any(|l| l.split_whitespace().last() == Some("overlay"));
            let detail = if listed {
                "overlay listed in /proc/filesystems"
            } else {
                "overlay not in /proc/filesystems"
            };
            FeatureCheck::new("overlayfs", listed, detail.into(), fix)
        }
        Err(e) => FeatureCheck::unverified(
            "overlayfs",
            format!("/proc/filesystems unreadable: {e}"),
            "run cellos doctor with /proc mounted",
        ),
    }
}

fn pidfd() -> FeatureCheck {
    let result = rustix::process::pidfd_open(
        rustix::process::getpid(),
        rustix::process::PidfdFlags::empty(),
    );
    FeatureCheck::new(
        "pidfd",
        result.is_ok(),
        match result {
            Ok(_) => "pidfd_open works".into(),
            Err(e) => format!("pidfd_open failed: {e}"),
        },
        "use a kernel >= 5.3 (pidfd_open)",
    )
}

fn nftables() -> FeatureCheck {
    let version = run("nft", &["--version"]);
    let tables = run("nft", &["list", "tables"]);
    let (available, detail) = match (&version, &tables) {
        (Ok(v), Ok(_)) => (true, format!("{v}; nft list tables works")),
        (Ok(v), Err(e)) => (false, format!("{v}; nft list tables failed: {e}")),
        (Err(e), _) => (false, format!("nft not runnable: {e}")),
    };
    FeatureCheck::new(
        "nftables",
        available,
        detail,
        "install nftables (apt-get install nftables) and use a kernel with CONFIG_NF_TABLES; \
         CellOS needs it for per-cell egress rules",
    )
}

/// What a networked cell's link needs besides nftables: iproute2 (veth pairs, addresses,
/// routes) and IPv4 forwarding, which the backend turns on itself when it can write the sysctl.
fn egress_forwarding() -> FeatureCheck {
    let path = "/proc/sys/net/ipv4/ip_forward";
    let value = std::fs::read_to_string(path)
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|e| format!("unreadable ({e})"));
    let writable = std::fs::OpenOptions::new().write(true).open(path).is_ok();
    let forwarding = match (value.as_str(), writable) {
        ("1", _) => Ok("net.ipv4.ip_forward=1".to_owned()),
        (v, true) => Ok(format!(
            "net.ipv4.ip_forward={v} (turned on with the first networked cell)"
        )),
        (v, false) => Err(format!(
            "net.ipv4.ip_forward={v} and {path} is not writable"
        )),
    };
    let (available, detail) = match (run("ip", &["-V"]), forwarding) {
        (Ok(v), Ok(f)) => (true, format!("{v}; {f}")),
        (Err(e), _) => (false, format!("ip (iproute2) not runnable: {e}")),
        (Ok(v), Err(f)) => (false, format!("{v}; {f}")),
    };
    FeatureCheck::new(
        "egress forwarding",
        available,
        detail,
        "install iproute2 (apt-get install iproute2) and allow IPv4 forwarding \
         (sysctl -w net.ipv4.ip_forward=1); cells that declare egress reach the network \
         through a veth pair and the host's forwarding",
    )
}

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_releases_are_compared_by_major_and_minor() {
        assert_eq!(major_minor("6.1.0-57-amd64"), Some((6, 1)));
        assert_eq!(major_minor("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(major_minor("5.14.0-362.el9.x86_64"), Some((5, 14)));
        assert_eq!(major_minor("6.18"), Some((6, 18)));
        assert_eq!(major_minor("weird"), None);
        assert!(major_minor("5.14.0").unwrap() < KERNEL_FLOOR);
        assert!(major_minor("5.15.0").unwrap() >= KERNEL_FLOOR);
        assert!(major_minor("6.1.0").unwrap() >= KERNEL_FLOOR);
    }

    #[test]
    fn this_hosts_kernel_is_supported() {
        let check = kernel_release();
        assert_eq!(check.status, CheckStatus::Ok, "{check:?}");
        assert!(check.detail.contains("supported from 5.15"), "{check:?}");
    }
}

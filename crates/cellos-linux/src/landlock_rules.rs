//! Landlock: path-based filesystem confinement of the workload, applied by the cell's init just
//! before exec.
//!
//! Mount namespaces decide what the cell can see; Landlock decides what it may do with it, and
//! keeps holding if a mount is misconfigured. Paths are resolved in the caller's current root
//! (after `pivot_root`). A path that does not exist is skipped: a rule only ever grants access,
//! so a missing path can only make the cell more restricted, never less.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use landlock::{
    Access, AccessFs, BitFlags, CompatLevel, Compatible, LandlockStatus, PathBeneath, PathFd,
    Ruleset, RulesetAttr, RulesetCreated, RulesetCreatedAttr, RulesetStatus, ABI,
};

use cellos_core::spec::{landlock_abi_kernel, HIGHEST_LANDLOCK_ABI};

use crate::error::LinuxError;

/// The newest Landlock ABI whose rights CellOS requests and has tested: file read/write/exec,
/// cross-directory rename (`Refer`, V2), truncate (V3) and device ioctl (V5). On older kernels the
/// rights they lack are dropped, and the evidence names them (see [`unenforced_rights`]).
const TARGET_ABI: ABI = ABI::V5;
const TARGET_ABI_NUMBER: u32 = HIGHEST_LANDLOCK_ABI;

/// Every right CellOS requests, with its stable evidence name and the ABI that brought it.
/// Network rules (ABI 4) are not used: egress is nftables' job.
const TARGETED_RIGHTS: [(AccessFs, &str, u32); 16] = [
    (AccessFs::Execute, "execute", 1),
    (AccessFs::WriteFile, "writeFile", 1),
    (AccessFs::ReadFile, "readFile", 1),
    (AccessFs::ReadDir, "readDir", 1),
    (AccessFs::RemoveDir, "removeDir", 1),
    (AccessFs::RemoveFile, "removeFile", 1),
    (AccessFs::MakeChar, "makeChar", 1),
    (AccessFs::MakeDir, "makeDir", 1),
    (AccessFs::MakeReg, "makeReg", 1),
    (AccessFs::MakeSock, "makeSock", 1),
    (AccessFs::MakeFifo, "makeFifo", 1),
    (AccessFs::MakeBlock, "makeBlock", 1),
    (AccessFs::MakeSym, "makeSym", 1),
    (AccessFs::Refer, "refer", 2),
    (AccessFs::Truncate, "truncate", 3),
    (AccessFs::IoctlDev, "ioctlDev", 5),
];

/// How to get Landlock on a host that lacks it entirely.
const ENABLE: &str = "use a kernel built with CONFIG_SECURITY_LANDLOCK=y and enable the LSM at \
                      boot (add landlock to lsm=, e.g. lsm=landlock,lockdown,yama,integrity,apparmor)";

/// The field that sets a cell's requirement, named in every refusal.
const MIN_ABI_FIELD: &str = "spec.filesystem.landlock.minAbi";

/// The rights CellOS targets that are not enforced when `applied` is the ABI in force
/// (`None`: Landlock not enforced at all, so none of them is), in a stable order.
pub fn unenforced_rights(applied: Option<u32>) -> Vec<&'static str> {
    let applied = applied.unwrap_or(0);
    TARGETED_RIGHTS
        .iter()
        .filter(|(_, _, since)| *since > applied)
        .map(|(_, name, _)| *name)
        .collect()
}

/// The Landlock ABI a cell requiring `min_abi` gets on a kernel offering `kernel` (`None`: no
/// Landlock): the kernel's best, capped at the level CellOS targets, or `None` when the cell
/// may and must run without Landlock. Refuses, failing closed, when the kernel is below
/// `min_abi`; the message names the ABI the kernel has, the release that brings the one
/// required and the two ways out.
pub fn abi_for(min_abi: u32, kernel: Option<u32>) -> Result<Option<u32>, LinuxError> {
    let has = kernel.unwrap_or(0);
    if has >= min_abi {
        return Ok(kernel.map(|abi| abi.min(TARGET_ABI_NUMBER)));
    }
    let release = landlock_abi_kernel(min_abi)
        .map(|r| format!("Linux {r}"))
        .unwrap_or_else(|| "a newer Linux".to_owned());
    let feature = format!("Landlock ABI {min_abi} (required by {MIN_ABI_FIELD}, 1 when unset)");
    let fix = match kernel {
        None => format!(
            "this kernel has no Landlock; ABI {min_abi} comes with {release}: {ENABLE}; or set \
             {MIN_ABI_FIELD}: 0 to run the cell without Landlock (its mount view, seccomp and \
             uid still apply, and the evidence records it)"
        ),
        Some(abi) => format!(
            "this kernel has Landlock ABI {abi}; ABI {min_abi} comes with {release}: boot \
             {release} or newer, or lower {MIN_ABI_FIELD} to {abi}"
        ),
    };
    Err(LinuxError::missing(feature, fix))
}

/// Which hierarchies the workload may use, and how.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LandlockPlan {
    /// Read and execute (programs and libraries: `/usr`, `/lib`, ...).
    pub read_exec: Vec<PathBuf>,
    /// Read only (`/etc`, inputs).
    pub read_only: Vec<PathBuf>,
    /// Read, write, create and remove, but not execute (write-xor-execute). List a path in
    /// `read_exec` as well to allow running what is written there.
    pub read_write: Vec<PathBuf>,
}

/// The Landlock ABI the running kernel supports, `None` when Landlock is not built in or not
/// enabled. The landlock crate deliberately hides this number (it wants callers to request
/// rights, not branch on versions); evidence and the doctor need it, so we ask the kernel.
pub fn kernel_abi() -> Option<u32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attribute pointer, size 0 and the VERSION flag the kernel only returns
    // the ABI number (or an error); no memory is read or written.
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    u32::try_from(version).ok().filter(|v| *v > 0)
}

/// Confine the calling thread (and what it execs) to `plan`; sets `no_new_privs`.
///
/// Fails closed with [`LinuxError::MissingFeature`] when the kernel has no Landlock or the
/// rights it supports could not all be enforced. Returns the ABI level applied (never `None`
/// on success; the `Option` matches [`restrict_self_best_effort`]).
pub fn restrict_self(plan: &LandlockPlan) -> Result<Option<u32>, LinuxError> {
    match kernel_abi() {
        Some(abi) => apply(plan, abi).map(Some),
        None => Err(LinuxError::missing("Landlock LSM", ENABLE)),
    }
}

/// Like [`restrict_self`], but returns `Ok(None)` without restricting anything when the kernel
/// has no Landlock: for a cell allowed to run without it, whose evidence records `None`.
pub fn restrict_self_best_effort(plan: &LandlockPlan) -> Result<Option<u32>, LinuxError> {
    match kernel_abi() {
        Some(abi) => apply(plan, abi).map(Some),
        None => Ok(None),
    }
}

fn apply(plan: &LandlockPlan, kernel_abi: u32) -> Result<u32, LinuxError> {
    let setup = |e: &dyn std::fmt::Display| LinuxError::Setup {
        what: "build Landlock ruleset".into(),
        detail: e.to_string(),
    };
    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    let read_exec = read | AccessFs::Execute;
    let read_write = AccessFs::from_all(TARGET_ABI) & !AccessFs::Execute;

    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(TARGET_ABI))
        .map_err(|e| setup(&e))?
        .create()
        .map_err(|e| setup(&e))?
        .no_new_privs(true);
    for (paths, access) in [
        (&plan.read_exec, read_exec),
        (&plan.read_only, read),
        (&plan.read_write, read_write),
    ] {
        for path in paths {
            ruleset = add_path(ruleset, path, access)?;
        }
    }
    let status = ruleset.restrict_self().map_err(|e| LinuxError::Setup {
        what: "landlock_restrict_self".into(),
        detail: e.to_string(),
    })?;

    let applied = kernel_abi.min(TARGET_ABI_NUMBER);
    let available = matches!(status.landlock, LandlockStatus::Available { .. });
    // Partial enforcement is expected only when the kernel predates TARGET_ABI (its missing
    // rights are reflected in `applied`); anything else means a requested right is not held.
    let enforced = match status.ruleset {
        RulesetStatus::FullyEnforced => true,
        RulesetStatus::PartiallyEnforced => kernel_abi < TARGET_ABI_NUMBER,
        RulesetStatus::NotEnforced => false,
    };
    if available && enforced {
        Ok(applied)
    } else {
        Err(LinuxError::missing(
            format!(
                "Landlock ABI {TARGET_ABI_NUMBER} filesystem rights (kernel ABI {kernel_abi}, \
                 ruleset {:?})",
                status.ruleset
            ),
            ENABLE,
        ))
    }
}

/// Add one hierarchy. Rights that only make sense on directories are dropped for files, as the
/// kernel would refuse them.
fn add_path(
    ruleset: RulesetCreated,
    path: &Path,
    access: BitFlags<AccessFs>,
) -> Result<RulesetCreated, LinuxError> {
    let fd = match PathFd::new(path) {
        Ok(fd) => fd,
        Err(err) => {
            let missing = std::fs::symlink_metadata(path)
                .err()
                .is_some_and(|e| e.kind() == ErrorKind::NotFound);
            if missing {
                return Ok(ruleset);
            }
            return Err(LinuxError::Setup {
                what: format!("open {} for a Landlock rule", path.display()),
                detail: err.to_string(),
            });
        }
    };
    let is_dir = std::fs::metadata(path).map(|m| m.is_dir()).unwrap_or(false);
    let access = if is_dir {
        access
    } else {
        access & AccessFs::from_file(TARGET_ABI)
    };
    ruleset
        .add_rule(PathBeneath::new(fd, access))
        .map_err(|e| LinuxError::Setup {
            what: format!("add Landlock rule for {}", path.display()),
            detail: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rights_table_is_exactly_what_the_target_abi_handles() {
        assert_eq!(ABI::from(TARGET_ABI_NUMBER as i32), TARGET_ABI);
        let all = TARGETED_RIGHTS
            .iter()
            .fold(BitFlags::empty(), |acc, (right, _, _)| acc | *right);
        assert_eq!(all, AccessFs::from_all(TARGET_ABI));
    }

    #[test]
    fn each_right_is_listed_with_the_abi_that_brought_it() {
        for (right, name, since) in TARGETED_RIGHTS {
            let at = ABI::from(since as i32);
            let before = ABI::from(since as i32 - 1);
            assert!(
                AccessFs::from_all(at).contains(right),
                "{name} in ABI {since}"
            );
            assert!(
                !AccessFs::from_all(before).contains(right),
                "{name} before ABI {since}"
            );
        }
    }

    #[test]
    fn unenforced_rights_by_abi() {
        assert_eq!(
            unenforced_rights(Some(1)),
            ["refer", "truncate", "ioctlDev"]
        );
        assert_eq!(unenforced_rights(Some(2)), ["truncate", "ioctlDev"]);
        assert_eq!(unenforced_rights(Some(3)), ["ioctlDev"]);
        assert_eq!(unenforced_rights(Some(4)), ["ioctlDev"]);
        assert!(unenforced_rights(Some(5)).is_empty());
        let none = unenforced_rights(None);
        assert_eq!(none.len(), TARGETED_RIGHTS.len());
        assert_eq!(none[..3], ["execute", "writeFile", "readFile"]);
    }

    #[test]
    fn the_kernels_best_abi_is_applied_capped_at_the_target() {
        assert_eq!(abi_for(1, Some(2)).unwrap(), Some(2));
        assert_eq!(abi_for(2, Some(2)).unwrap(), Some(2));
        assert_eq!(abi_for(1, Some(7)).unwrap(), Some(TARGET_ABI_NUMBER));
        assert_eq!(abi_for(0, Some(3)).unwrap(), Some(3));
        assert_eq!(abi_for(0, None).unwrap(), None);
    }

    fn refusal(min_abi: u32, kernel: Option<u32>) -> String {
        let err = abi_for(min_abi, kernel).expect_err("refused");
        assert!(matches!(err, LinuxError::MissingFeature { .. }), "{err:?}");
        err.to_string()
    }

    #[test]
    fn a_kernel_below_min_abi_is_refused_naming_abis_release_and_fix() {
        let msg = refusal(3, Some(2));
        for part in [
            "Landlock ABI 3",
            MIN_ABI_FIELD,
            "this kernel has Landlock ABI 2",
            "Linux 6.2",
            "lower spec.filesystem.landlock.minAbi to 2",
        ] {
            assert!(msg.contains(part), "{part:?} in {msg}");
        }
        assert!(refusal(5, Some(4)).contains("Linux 6.10"));
        assert!(refusal(4, Some(1)).contains("Linux 6.7"));
    }

    #[test]
    fn a_kernel_without_landlock_is_refused_unless_landlock_is_optional() {
        let msg = refusal(1, None);
        for part in [
            "Landlock ABI 1",
            "this kernel has no Landlock",
            "Linux 5.13",
            "CONFIG_SECURITY_LANDLOCK",
            "lsm=",
            "spec.filesystem.landlock.minAbi: 0",
        ] {
            assert!(msg.contains(part), "{part:?} in {msg}");
        }
    }
}

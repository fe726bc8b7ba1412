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

use crate::error::LinuxError;

/// The newest Landlock ABI whose rights CellOS requests and has tested: file read/write/exec,
/// cross-directory rename (`Refer`, V2), truncate (V3) and device ioctl (V5). On older kernels the
/// rights they lack are dropped and the returned ABI says which level was applied.
const TARGET_ABI: ABI = ABI::V5;
const TARGET_ABI_NUMBER: u32 = 5;

const FIX: &str = "use a kernel >= 5.13 built with CONFIG_SECURITY_LANDLOCK=y and enable the LSM \
                   at boot (add landlock to lsm=, e.g. lsm=landlock,lockdown,yama,integrity,apparmor)";

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

/// The ABI level [`restrict_self`] applies on this kernel (the kernel's, capped at the level
/// this build targets), or `MissingFeature` when the kernel has no Landlock. Asks the kernel
/// only; restricts nothing, so it is cheap enough for every cell's create.
pub fn required_abi() -> Result<u32, LinuxError> {
    kernel_abi()
        .map(|abi| abi.min(TARGET_ABI_NUMBER))
        .ok_or_else(|| LinuxError::missing("Landlock LSM", FIX))
}

/// Confine the calling thread (and what it execs) to `plan`; sets `no_new_privs`.
///
/// Fails closed with [`LinuxError::MissingFeature`] when the kernel has no Landlock or the
/// rights it supports could not all be enforced. Returns the ABI level applied (never `None`
/// on success; the `Option` matches [`restrict_self_best_effort`]).
pub fn restrict_self(plan: &LandlockPlan) -> Result<Option<u32>, LinuxError> {
    match kernel_abi() {
        Some(abi) => apply(plan, abi).map(Some),
        None => Err(LinuxError::missing("Landlock LSM", FIX)),
    }
}

/// Like [`restrict_self`], but returns `Ok(None)` without restricting anything when the kernel
/// has no Landlock. For specs that do not require Landlock; the evidence then records `None`.
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
            FIX,
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

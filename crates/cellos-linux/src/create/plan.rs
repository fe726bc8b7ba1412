//! Plan stage: everything decided from the request before anything exists on the host.

use std::path::{Path, PathBuf};

use cellos_core::ports::CellRequest;
use cellos_core::spec::RootfsSpec;

use crate::backend::LinuxBackend;
use crate::cgroup;
use crate::error::LinuxError;
use crate::etc_mask;
use crate::plan::{self as cell_plan, InitConfig, PlanContext, ResolvedRootfs};
use crate::telemetry;

/// Where init mounts the new root, in its own private mount namespace (the host's `/tmp` is
/// only covered there). Every host path the cell gets arrives as a descriptor, so nothing
/// init needs is hidden by this mount, and `/tmp` is searchable by the cell's (unprivileged)
/// root on every distribution.
const BUILD_DIR: &str = "/tmp";

stage_error! {
    /// A request refused or unplannable before anything exists.
    PlanError {
        CellId,
        Landlock,
        Rootfs,
        EtcMask,
        Seccomp,
        Telemetry,
        Build,
    }
}

/// The plan, and what the isolation report states about it.
pub(crate) struct Planned {
    /// Init's configuration, its trees numbered.
    pub config: InitConfig,
    /// `spec.telemetry.enabled`: the host stage starts the cell's telemetry runner.
    pub telemetry: bool,
    pub report: PlanFacts,
}

/// The isolation report's facts that come from the plan.
pub(crate) struct PlanFacts {
    pub rootfs: String,
    pub landlock_abi: Option<u32>,
    pub landlock_min_abi: u32,
    pub writable_exec: bool,
    pub seccomp_profile: String,
    pub seccomp_profile_sha256: String,
}

pub(crate) fn stage(
    backend: &LinuxBackend,
    request: &CellRequest<'_>,
) -> Result<Planned, PlanError> {
    let spec = request.spec;
    let state_dir = &backend.config.state_dir;
    cgroup::validate_cell_id(&spec.id).map_err(PlanError::CellId)?;
    // Before anything exists: a kernel below the spec's Landlock requirement refuses it.
    let landlock_min_abi = spec.landlock_min_abi();
    let landlock_abi = backend
        .landlock_abi(landlock_min_abi)
        .map_err(PlanError::Landlock)?;
    let fs = spec.filesystem.clone().unwrap_or_default();
    let (rootfs, rootfs_label) =
        resolve_rootfs(state_dir, &fs.rootfs).map_err(PlanError::Rootfs)?;
    let etc_mask = etc_mask(state_dir, &rootfs).map_err(PlanError::EtcMask)?;
    let (profile, program) = backend.seccomp().map_err(PlanError::Seccomp)?;
    let secret_keys: Vec<String> = request.secrets.iter().map(|s| s.key.clone()).collect();
    let telemetry = spec.telemetry.as_ref().is_some_and(|t| t.enabled);
    let telemetry_plan = telemetry
        .then(|| telemetry::plan_parts(&backend.config.telemetry, state_dir, &spec.id))
        .transpose()
        .map_err(PlanError::Telemetry)?;
    let mut config = cell_plan::build(
        spec,
        PlanContext {
            build_dir: Path::new(BUILD_DIR),
            rootfs: &rootfs,
            etc_mask: etc_mask.as_deref(),
            secret_delivery: request.secret_delivery,
            secret_keys: &secret_keys,
            expected_landlock_abi: landlock_abi,
            seccomp: program.clone(),
            telemetry: telemetry_plan,
        },
    )
    .map_err(PlanError::Build)?;
    config.number_trees();
    let report = PlanFacts {
        rootfs: rootfs_label,
        landlock_abi,
        landlock_min_abi,
        writable_exec: config.landlock.writable_exec(),
        seccomp_profile: profile.name.clone(),
        seccomp_profile_sha256: profile.sha256.clone(),
    };
    Ok(Planned {
        config,
        telemetry,
        report,
    })
}

/// The masked `/etc` a cell on the host's root gets (see [`crate::etc_mask`]).
fn etc_mask(state_dir: &Path, rootfs: &ResolvedRootfs) -> Result<Option<PathBuf>, LinuxError> {
    match rootfs {
        ResolvedRootfs::Host => Ok(Some(etc_mask::ensure_mask(
            &state_dir.join("etc-mask"),
            Path::new("/etc"),
        )?)),
        ResolvedRootfs::Dir(_) => Ok(None),
    }
}

/// The root the cell gets, and its label in the isolation report. An OCI image is unpacked
/// into the state directory's store (once per digest).
fn resolve_rootfs(
    state_dir: &Path,
    spec: &RootfsSpec,
) -> Result<(ResolvedRootfs, String), LinuxError> {
    match spec {
        RootfsSpec::Host => Ok((ResolvedRootfs::Host, "host".into())),
        RootfsSpec::Path(p) => Ok((
            ResolvedRootfs::Dir(PathBuf::from(&p.path)),
            format!("path:{}", p.path),
        )),
        RootfsSpec::Oci(oci) => {
            let store = state_dir.join("oci");
            let image = crate::oci::materialize(Path::new(&oci.oci_layout), &oci.reference, &store)
                .map_err(|e| match e {
                    crate::oci::OciError::UnknownReference { .. } => LinuxError::NotFound {
                        what: format!("filesystem.rootfs: {e}"),
                    },
                    other => LinuxError::Refused {
                        what: format!("filesystem.rootfs: {other}"),
                    },
                })?;
            Ok((
                ResolvedRootfs::Dir(image.path),
                format!("oci:{}", image.digest),
            ))
        }
    }
}

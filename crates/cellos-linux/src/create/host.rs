//! Host stage: the host resources of a cell, made in an order that lets a failure undo
//! exactly what exists ([`CreateGuard`]).

use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use cellos_core::ports::{CellRequest, DeliveredSecret};
use cellos_core::spec::ExecutionCellSpec;
use zeroize::Zeroizing;

use crate::backend::LinuxBackend;
use crate::cgroup::{CellCgroup, CgroupLimits};
use crate::clone::reap;
use crate::error::LinuxError;
use crate::netscope::{self, NetRecord};
use crate::pidfd;
use crate::plan::InitConfig;
use crate::protocol::{Handoff, SecretFrame};
use crate::record::{self, RunRecord};
use crate::telemetry::{RunnerContext, TelemetryRunner};
use crate::trees;

stage_error! {
    /// A host resource that could not be made; what was made before is undone.
    HostError {
        Record,
        NetworkLease,
        Cgroup,
        Telemetry,
        Trees,
    }
}

/// What the spawn stage hands to init, and what the cell keeps.
pub(crate) struct Host<'a> {
    /// Fields drop in order: on failure the trees close first and the guard acts last, after
    /// the telemetry runner and the cgroup are gone.
    pub trees: Vec<OwnedFd>,
    pub handoff: Handoff,
    pub held: Held<'a>,
}

/// The host resources a created cell keeps.
pub(crate) struct Held<'a> {
    pub telemetry: Option<TelemetryRunner>,
    pub cgroup: CellCgroup,
    pub guard: CreateGuard<'a>,
    pub rec: RunRecord,
}

/// `config` is the plan (`telemetry`: whether the cell has a telemetry runner); `secrets` are
/// copied into the handoff and dropped at once.
pub(crate) fn stage<'a>(
    backend: &'a LinuxBackend,
    request: &CellRequest<'a>,
    mut config: InitConfig,
    telemetry: bool,
    secrets: Vec<DeliveredSecret>,
) -> Result<Host<'a>, HostError> {
    let spec = request.spec;
    let state_dir = &backend.config.state_dir;
    let mut rec = run_record(&spec.id, request.run_id);
    // Fails when the cell id is taken; nothing of that other cell is touched.
    record::create(state_dir, &rec).map_err(HostError::Record)?;
    // From here on, `guard` removes what exists if we fail.
    let mut guard = CreateGuard {
        state_dir,
        cell_id: &spec.id,
        init: None,
        network: None,
        armed: true,
    };
    if let Some(net) = lease_network(backend, spec, &mut config).map_err(HostError::NetworkLease)? {
        guard.network = Some(net.clone());
        rec.network = Some(net);
    }
    let secrets = secret_frames(secrets);
    let cgroup = create_cgroup(spec).map_err(HostError::Cgroup)?;
    rec.cgroup_paths = cgroup.paths().to_vec();
    // The socket exists and the probe listens before anything of the cell runs: the
    // cell's first exec (its init) is already observed.
    let telemetry = if telemetry {
        Some(start_telemetry(backend, request, &cgroup).map_err(HostError::Telemetry)?)
    } else {
        None
    };
    // Opened before the clone (after the telemetry socket they bind exists), so init finds
    // its config and trees waiting once released.
    let trees = trees::open_all(&config).map_err(HostError::Trees)?;
    Ok(Host {
        trees,
        handoff: Handoff { config, secrets },
        held: Held {
            telemetry,
            cgroup,
            guard,
            rec,
        },
    })
}

/// The record of a cell supervised by this process, before its init exists.
fn run_record(cell_id: &str, run_id: &str) -> RunRecord {
    let me = std::process::id() as i32;
    RunRecord {
        cell_id: cell_id.to_owned(),
        run_id: run_id.to_owned(),
        created_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        supervisor_pid: me,
        supervisor_start: record::process_start_time(me).unwrap_or(0),
        init_pid: None,
        init_start: None,
        cgroup_paths: Vec::new(),
        network: None,
    }
}

/// A networked cell's link is leased now: its resolv.conf names the host end. The lease file
/// names the cell (reclaim finds it by that); the veth and host table are named in the
/// record (written with init's pid) before they are created.
fn lease_network(
    backend: &LinuxBackend,
    spec: &ExecutionCellSpec,
    config: &mut InitConfig,
) -> Result<Option<NetRecord>, LinuxError> {
    if !netscope::wants_network(spec) {
        return Ok(None);
    }
    let state_dir = &backend.config.state_dir;
    let network = &backend.config.network;
    let lease = netscope::pool::lease(state_dir, &network.pool, &network.pool6, &spec.id)?;
    let net = NetRecord::new(state_dir, &spec.id, lease.link, lease.path).with_link6(lease.link6);
    config.resolv_conf = Some(net.resolv_conf());
    Ok(Some(net))
}

fn create_cgroup(spec: &ExecutionCellSpec) -> Result<CellCgroup, LinuxError> {
    let limits = spec.cell_limits();
    CellCgroup::create(
        &spec.id,
        &CgroupLimits {
            memory_max_bytes: limits.memory_max_bytes,
            pids_max: limits.pids_max,
            cpu_millis: limits.cpu_millis,
        },
    )
}

/// The secrets as init receives them; the request's copies are dropped (and zeroised) here,
/// so each value exists once from now on.
fn secret_frames(secrets: Vec<DeliveredSecret>) -> Vec<SecretFrame> {
    secrets
        .iter()
        .map(|s| SecretFrame {
            key: s.key.clone(),
            value: Zeroizing::new(s.value.expose().to_vec()),
        })
        .collect()
}

fn start_telemetry(
    backend: &LinuxBackend,
    request: &CellRequest<'_>,
    cgroup: &CellCgroup,
) -> Result<TelemetryRunner, LinuxError> {
    TelemetryRunner::start(
        &backend.config.telemetry,
        RunnerContext {
            state_dir: &backend.config.state_dir,
            spec: request.spec,
            spec_hash: request.spec_hash,
            run_id: request.run_id,
            cgroup_dirs: cgroup.paths().to_vec(),
            factory: request.factory.clone(),
            evidence: request.evidence.clone(),
        },
    )
}

/// Undoes a half-made cell: kills and reaps init, removes the network scope and the record
/// (the cgroup cleans itself up when its `CellCgroup` drops).
pub(crate) struct CreateGuard<'a> {
    state_dir: &'a Path,
    cell_id: &'a str,
    /// The cloned child's pid and pidfd.
    pub init: Option<(i32, OwnedFd)>,
    network: Option<NetRecord>,
    armed: bool,
}

impl CreateGuard<'_> {
    /// The cell is complete: nothing is undone, and init goes to the cell.
    pub fn disarm(&mut self) -> Option<(i32, OwnedFd)> {
        self.armed = false;
        self.init.take()
    }
}

impl Drop for CreateGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some((pid, fd)) = &self.init {
            let _ = pidfd::signal(fd, libc::SIGKILL);
            let _ = reap(*pid);
        }
        let _ = netscope::remove(self.state_dir, self.cell_id, self.network.as_ref());
        let _ = record::remove(self.state_dir, self.cell_id);
    }
}

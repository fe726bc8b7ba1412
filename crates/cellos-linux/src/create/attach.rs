//! Attach stage: connect the spawned cell to the host (network, output) and assemble it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use cellos_core::events::EventFactory;
use cellos_core::ports::{CellRequest, IsolationReport, LimitEnforcement, RuntimeEvidence};
use cellos_core::spec::ExecutionCellSpec;

use crate::backend::{CellParts, LinuxBackend, LinuxCell};
use crate::cgroup::CellCgroup;
use crate::error::LinuxError;
use crate::landlock_rules;
use crate::netscope::egress::{Egress, EgressSetup};
use crate::netscope::{self, NetRecord};
use crate::plan::WORKLOAD_ID;
use crate::record;

use super::plan::PlanFacts;
use super::spawn::Spawned;

stage_error! {
    /// The cell's network scope could not be set up; the cell is undone.
    AttachError {
        Record,
        Network,
    }
}

pub(crate) fn stage(
    backend: &LinuxBackend,
    request: CellRequest<'_>,
    facts: PlanFacts,
    mut spawned: Spawned<'_>,
) -> Result<LinuxCell, AttachError> {
    let CellRequest {
        spec,
        stdout,
        stderr,
        factory,
        evidence,
        ..
    } = request;
    let egress = network(backend, spec, &mut spawned, factory, evidence)?;
    // Init builds the root while the caller goes on (typically recording evidence); a setup
    // failure surfaces from `start`, before anything of the workload runs.
    let outputs = vec![copy_outputs(spawned.out, stdout, spawned.err, stderr)];
    let held = spawned.held;
    let network = match (&egress, &held.rec.network) {
        (Some(egress), Some(net)) => egress.describe(net),
        _ => "loopback-only".into(),
    };
    let isolation = isolation_report(backend, spec, facts, &held.cgroup, network);
    let mut guard = held.guard;
    Ok(LinuxCell::new(
        backend,
        spec,
        CellParts {
            init: guard.disarm(),
            control: spawned.control,
            status: spawned.status,
            reader: spawned.reader,
            cgroup: held.cgroup,
            isolation,
            outputs,
            telemetry: held.telemetry,
            network: held.rec.network,
            egress,
        },
    ))
}

/// The network scope is built while init builds the root; the workload cannot exec before
/// `start`, by which time the ruleset, DNS authority and gate are in place.
fn network(
    backend: &LinuxBackend,
    spec: &ExecutionCellSpec,
    spawned: &mut Spawned<'_>,
    factory: EventFactory,
    evidence: Arc<dyn RuntimeEvidence>,
) -> Result<Option<Egress>, AttachError> {
    let pid = spawned.pid;
    let rec = &mut spawned.held.rec;
    let Some(net) = &mut rec.network else {
        return Ok(None);
    };
    net.netns_inode = netscope::residue::netns_inode(Path::new(&format!("/proc/{pid}/ns/net")));
    let net = net.clone();
    record::update(&backend.config.state_dir, rec).map_err(AttachError::Record)?;
    start_network(backend, &net, pid, spec, factory, evidence)
        .map(Some)
        .map_err(AttachError::Network)
}

/// Links the cell's namespace (init `pid`) to the host and starts its egress dataplane.
fn start_network(
    backend: &LinuxBackend,
    net: &NetRecord,
    pid: i32,
    spec: &ExecutionCellSpec,
    factory: EventFactory,
    evidence: Arc<dyn RuntimeEvidence>,
) -> Result<Egress, LinuxError> {
    let path = format!("/proc/{pid}/ns/net");
    let netns: OwnedFd = File::open(&path)
        .map_err(|e| LinuxError::io(format!("open {path}"), e))?
        .into();
    netscope::link::create_host_side(net, pid)?;
    netscope::link::configure_cell_side(net, netns.as_fd())?;
    let upstream = match backend.config.network.dns_upstream {
        Some(addr) => addr,
        None => cellos_dataplane::dns::system_upstream().map_err(|e| LinuxError::Refused {
            what: format!("{e} (--dns-upstream IP:PORT or CELLOS_DNS_UPSTREAM)"),
        })?,
    };
    Egress::start(EgressSetup {
        spec,
        rec: net,
        netns,
        upstream,
        factory,
        evidence,
    })
}

fn isolation_report(
    backend: &LinuxBackend,
    spec: &ExecutionCellSpec,
    facts: PlanFacts,
    cgroup: &CellCgroup,
    network: String,
) -> IsolationReport {
    IsolationReport {
        backend: "linux".into(),
        namespaces: ["user", "pid", "mnt", "net", "ipc", "uts", "cgroup"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        uid_map: backend.id_map.line(),
        workload_uid: WORKLOAD_ID,
        workload_gid: WORKLOAD_ID,
        rootfs: facts.rootfs,
        seccomp_profile: facts.seccomp_profile,
        seccomp_profile_sha256: facts.seccomp_profile_sha256,
        landlock_abi: facts.landlock_abi,
        landlock_enforced: facts.landlock_abi.is_some(),
        landlock_min_abi: facts.landlock_min_abi,
        landlock_unenforced: landlock_rules::unenforced_rights(facts.landlock_abi)
            .into_iter()
            .map(str::to_owned)
            .collect(),
        writable_exec: facts.writable_exec,
        capabilities: Vec::new(),
        no_new_privs: true,
        cgroup_version: cgroup.version_summary(),
        limits: limits(spec, cgroup),
        network,
    }
}

/// How each limit is enforced: the cgroup's, then the supervisor's deadlines.
fn limits(spec: &ExecutionCellSpec, cgroup: &CellCgroup) -> Vec<LimitEnforcement> {
    let mut limits = cgroup.enforcement();
    if let Some(ms) = spec.timeout_ms() {
        limits.push(LimitEnforcement {
            limit: "timeoutMs".into(),
            value: ms,
            mechanism: "SIGKILL of every process in the cell's pid namespace at the deadline"
                .into(),
        });
    }
    if let Some(ttl) = spec.lifetime.as_ref().and_then(|l| l.ttl_seconds) {
        limits.push(LimitEnforcement {
            limit: "ttlSeconds".into(),
            value: ttl,
            mechanism: "supervisor deadline; SIGKILL of the cell's pid namespace".into(),
        });
    }
    limits
}

/// Copy the workload's stdout and stderr pipes into the request's writers as bytes arrive,
/// from one thread (poll on both) until both reach EOF.
fn copy_outputs(
    out: OwnedFd,
    out_w: Box<dyn Write + Send>,
    err: OwnedFd,
    err_w: Box<dyn Write + Send>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut streams = [
            (Some(File::from(out)), out_w),
            (Some(File::from(err)), err_w),
        ];
        let mut buf = [0u8; 16 * 1024];
        loop {
            let mut fds: Vec<libc::pollfd> = Vec::with_capacity(2);
            let mut which = Vec::with_capacity(2);
            for (i, (pipe, _)) in streams.iter().enumerate() {
                if let Some(p) = pipe {
                    fds.push(libc::pollfd {
                        fd: std::os::fd::AsRawFd::as_raw_fd(p),
                        events: libc::POLLIN,
                        revents: 0,
                    });
                    which.push(i);
                }
            }
            if fds.is_empty() {
                break;
            }
            // SAFETY: valid pollfd array for the duration of the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
            if n < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
            for (pfd, i) in fds.iter().zip(which) {
                if pfd.revents == 0 {
                    continue;
                }
                let (pipe, writer) = &mut streams[i];
                let Some(p) = pipe.as_mut() else { continue };
                match p.read(&mut buf) {
                    Ok(0) => *pipe = None,
                    // A failing writer must not stall the workload: keep draining.
                    Ok(n) => {
                        let _ = writer.write_all(&buf[..n]).and_then(|_| writer.flush());
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => *pipe = None,
                }
            }
        }
        for (_, writer) in &mut streams {
            let _ = writer.flush();
        }
    })
}

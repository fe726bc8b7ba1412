//! Spawn stage: clone the cell's init and hand it everything it needs to build the cell.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

use crate::backend::{LinuxBackend, KILL_GRACE};
use crate::cgroup::CellCgroup;
use crate::clone::{InitCommand, Spawned as Cloned};
use crate::error::LinuxError;
use crate::idmap;
use crate::pidfd;
use crate::plan::WORKLOAD_ID;
use crate::protocol::{
    send_fds, Handoff, StatusEvent, StatusMsg, StatusReader, CONTROL_FD, RELEASE, STATUS_FD,
};
use crate::record;

use super::host::{CreateGuard, Held, Host};

stage_error! {
    /// Init could not be started or handed the cell; what exists is undone.
    SpawnError {
        Channels,
        Clone,
        HandOver,
        Record,
    }
}

/// A released init, building the cell's root from its plan.
pub(crate) struct Spawned<'a> {
    pub pid: i32,
    /// Fields drop in this order on failure (init sees its control socket close first).
    pub reader: StatusReader,
    pub control: File,
    pub err: OwnedFd,
    pub out: OwnedFd,
    pub status: OwnedFd,
    pub held: Held<'a>,
}

/// The pipes and socket between the supervisor and init, each as (the supervisor's end,
/// init's end); init inherits its ends as fds 0 to 2, [`CONTROL_FD`] and [`STATUS_FD`].
struct Channels {
    control: (OwnedFd, OwnedFd),
    status: (OwnedFd, OwnedFd),
    out: (OwnedFd, OwnedFd),
    err: (OwnedFd, OwnedFd),
    devnull: File,
}

pub(crate) fn stage<'a>(
    backend: &LinuxBackend,
    mut host: Host<'a>,
) -> Result<Spawned<'a>, SpawnError> {
    let channels = channels(backend).map_err(SpawnError::Channels)?;
    let Cloned {
        pid,
        pidfd,
        in_v2_leaf,
        handoff,
    } = clone_init(backend, &channels, &host.held.cgroup, host.handoff)
        .map_err(SpawnError::Clone)?;
    host.held.guard.init = Some((pid, pidfd));
    let Channels {
        control,
        status,
        out,
        err,
        devnull,
    } = channels;
    drop((control.1, status.1, out.1, err.1, devnull));

    let mut control = File::from(control.0);
    let mut reader = StatusReader::new();
    let held = &host.held;
    hand_over(
        backend,
        pid,
        in_v2_leaf,
        &held.cgroup,
        &mut control,
        handoff,
        &host.trees,
    )
    .map_err(|e| explain(backend, &held.guard, &mut reader, &status.0, e))
    .map_err(SpawnError::HandOver)?;
    drop(host.trees);
    // Until this record names init, a crash of ours kills it (PDEATHSIG) and `gc` finds
    // its cgroups by the cell's id.
    let rec = &mut host.held.rec;
    rec.init_pid = Some(pid);
    rec.init_start = record::process_start_time(pid);
    record::update(&backend.config.state_dir, rec).map_err(SpawnError::Record)?;
    Ok(Spawned {
        pid,
        reader,
        control,
        err: err.0,
        out: out.0,
        status: status.0,
        held: host.held,
    })
}

/// Clone the child that becomes init, with its inherited descriptors and the plan.
fn clone_init(
    backend: &LinuxBackend,
    channels: &Channels,
    cgroup: &CellCgroup,
    handoff: Handoff,
) -> Result<Cloned, LinuxError> {
    let command = InitCommand::new(
        &backend.init_exe,
        backend.config.init_mode,
        &backend.config.init_args,
        &[
            (channels.devnull.as_fd(), 0),
            (channels.out.1.as_fd(), 1),
            (channels.err.1.as_fd(), 2),
            (channels.control.1.as_fd(), CONTROL_FD),
            (channels.status.1.as_fd(), STATUS_FD),
        ],
        cgroup.join_handles()?,
        handoff,
    )?;
    command.spawn()
}

/// The error of a failed hand-over: a child that could not become init said why before it
/// exited; one still alive is killed first, so its status pipe closes at once.
fn explain(
    backend: &LinuxBackend,
    guard: &CreateGuard<'_>,
    reader: &mut StatusReader,
    status: &OwnedFd,
    err: LinuxError,
) -> LinuxError {
    if let Some((_, fd)) = &guard.init {
        let _ = pidfd::signal(fd, libc::SIGKILL);
    }
    match reader.next(status.as_fd(), Some(Instant::now() + KILL_GRACE)) {
        Ok(StatusEvent::Msg(StatusMsg::StartFailed { step, errno })) => {
            let host_root = backend.host_root();
            crate::clone::start_failure(step, errno, backend.init_exe.path(), host_root)
        }
        _ => err,
    }
}

/// Every channel to init, its output pipes owned by the workload.
fn channels(backend: &LinuxBackend) -> Result<Channels, LinuxError> {
    let pipe = || {
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| LinuxError::errno("pipe", e.raw_os_error()))
    };
    // A socket, not a pipe: the mount trees travel over it as SCM_RIGHTS.
    let control = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Stream,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| LinuxError::errno("control socketpair", e as i32))?;
    let status = pipe()?;
    let out = pipe()?;
    let err = pipe()?;
    // Pipes belong to their creator (host root, unmapped in the cell) with mode 0600, so
    // the workload could not reopen its own stdout (`echo > /dev/stdout`): give them to the
    // workload's host ids.
    let host_id = backend.id_map.to_host(WORKLOAD_ID);
    for p in [&out.1, &err.1] {
        std::os::unix::fs::fchown(p, host_id, host_id)
            .map_err(|e| LinuxError::io("chown the workload's output pipes", e))?;
    }
    let devnull = File::open("/dev/null").map_err(|e| LinuxError::io("open /dev/null", e))?;
    Ok(Channels {
        control,
        status,
        out,
        err,
        devnull,
    })
}

/// Give the cloned child `pid` what it needs to become init: its id maps, the release
/// byte, its cgroup (if it was not born there), the plan (an exec'd init reads it from the
/// socket; one in the clone already has it) and the mount trees. The maps must exist
/// before the child becomes the namespace's root (exec'd without them, it would lose its
/// capabilities). The child joined the cell's cgroups before it waits for release (or is
/// moved into the v2 leaf here before it reads its config), so nothing it starts runs
/// outside the cell's cgroup.
fn hand_over(
    backend: &LinuxBackend,
    pid: i32,
    in_v2_leaf: bool,
    cgroup: &CellCgroup,
    control: &mut File,
    handoff: Option<Handoff>,
    trees: &[OwnedFd],
) -> Result<(), LinuxError> {
    idmap::write_maps(pid, &backend.id_map)?;
    control
        .write_all(&[RELEASE])
        .map_err(|e| LinuxError::io("release cell init", e))?;
    if !in_v2_leaf {
        cgroup.add_process_v2(pid)?;
    }
    if let Some(handoff) = handoff {
        let frame = handoff
            .frame()
            .map_err(|e| LinuxError::io("encode cell config", e))?;
        control
            .write_all(&frame)
            .map_err(|e| LinuxError::io("send config to cell init", e))?;
    }
    let tree_fds: Vec<_> = trees.iter().map(|t| t.as_fd()).collect();
    send_fds(control.as_fd(), &tree_fds)
        .map_err(|e| LinuxError::io("send mount trees to cell init", e))
}

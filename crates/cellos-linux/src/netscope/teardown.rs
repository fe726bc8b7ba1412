//! A networked cell's teardown with the veth's deletion off the critical path.
//!
//! Deleting a veth returns only after an RCU grace period (20-30 ms), longer than everything
//! else of a cell's teardown together; so does closing the netlink socket that deleted the
//! host table (the kernel's nf_tables waits there for the deferred destruction of the table). What the caller of destroy needs is that the cell can no
//! longer send or receive; the deletion itself can finish later, as long as nothing is ever
//! lost and every claim made about it stays true. So destroy (in [`LinkTeardown::Thread`] and
//! [`LinkTeardown::Detached`] mode) does, on the critical path:
//!
//! 1. take the host end down ([`cut_off`]) while the cell's namespace is still held: a down
//!    interface neither sends nor receives, and taking it down costs a fraction of a
//!    millisecond. (Once the namespace is released the kernel deletes the pair by itself, and
//!    any link request, even this one, waits for that deletion.)
//! 2. stop the dataplane (which releases the namespace);
//! 3. check what it can vouch for already (the host end is down or gone, the DNS authority's
//!    sockets, the namespace) and report it;
//!
//! and hands the rest to a finisher: delete the host table (inert once the host end is down:
//! it only forwards for that veth) and the veth (or wait for the kernel's deletion of it),
//! check that the table, the host end, its routes and addresses are gone, release the lease,
//! and only then remove the run record. The destroyed
//! report says exactly that (the veth "cut off", its deletion finishing in the background), and
//! does not count the record and lease as removed, since they are not yet.
//!
//! The run record is the handover's guarantee: it stays until the finisher has verified the
//! deletion. [`LinkTeardown::Detached`] (one-shot `cellos run`, whose process exits with the
//! workload's status at once) finishes in a process forked from this one, without exec; it
//! first makes itself the record's supervisor, so `cellos gc` leaves it alone while it runs and
//! reclaims the cell (deleting, verifying, removing) if it dies. [`LinkTeardown::Thread`]
//! (`cellos serve`) finishes on a thread of the serving process. A finisher that finds residue
//! leaves the record with no supervisor: the cell is then an orphan, and `cellos gc` deletes
//! what is left and reports it.
//!
//! The forked finisher runs in a copy of a multi-threaded process, so it restricts itself to
//! what is safe there: system calls, file I/O and allocation (glibc's allocator is reset
//! across `fork`); no locks of other threads (no stdio, no logging, no environment, no child
//! processes; the host table goes over a netlink socket of its own, like the veth).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cellos_core::ports::Residue;

use crate::netscope::{link, pool, residue, NetRecord};
use crate::record;
use crate::residue::{CheckError, Findings, HostSources};

/// Where the veth's deletion of a destroyed cell finishes (the run record stays until it has).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LinkTeardown {
    /// Inside destroy, which returns once the deletion is verified.
    #[default]
    Inline,
    /// On a thread of this process (a long-lived supervisor such as `cellos serve`).
    Thread,
    /// In a detached process forked from this one (one-shot `cellos run`).
    Detached,
}

/// What destroy did to a networked cell's scope.
#[derive(Debug, Default)]
pub struct NetTeardown {
    pub removed: Vec<Residue>,
    pub failed: Vec<Residue>,
    pub findings: Findings,
    /// The run record (and lease) are left to a finisher: they are neither removed nor
    /// residue yet.
    pub handed_over: bool,
}

/// The host end taken down (see [`cut_off`]), and whether it was verified down.
#[derive(Debug)]
pub struct CutOff {
    down: Result<Option<String>, CheckError>,
}

/// Takes the host end down, in a background `mode`, before the cell's namespace is released
/// (after that the kernel deletes the veth itself, and every route netlink request waits for
/// that). `None`: nothing was cut off (inline mode, or the veth is gone or cannot be taken
/// down), so destroy does everything inline.
pub fn cut_off(mode: LinkTeardown, rec: &NetRecord) -> Option<CutOff> {
    if mode == LinkTeardown::Inline || !matches!(link::cut_off(&rec.veth), Ok(true)) {
        return None;
    }
    Some(CutOff {
        down: still_up(&rec.veth),
    })
}

/// Tears down `rec` of `cell_id` in `mode`, once its dataplane is stopped. Whatever was not
/// cut off, or cannot go to the background (no finisher can be started), is done inline, which
/// reports its own failures.
pub fn destroy(
    cut: Option<CutOff>,
    mode: LinkTeardown,
    state_dir: &Path,
    cell_id: &str,
    rec: &NetRecord,
    sources: &HostSources,
) -> NetTeardown {
    let Some(cut) = cut else {
        return inline(state_dir, cell_id, rec, sources);
    };
    let mut out = NetTeardown::default();
    out.findings.check("veth", cut.down);
    // The host table only forwards for the veth, which is down: deleting it (whose commit
    // leaves work that waits for an RCU grace period) is the finisher's, like the veth.
    out.findings.extend(residue::check_sockets(rec, sources));
    let finisher = Finisher {
        state_dir: state_dir.to_owned(),
        cell_id: cell_id.to_owned(),
        rec: rec.clone(),
        sources: sources.clone(),
    };
    let started = match mode {
        LinkTeardown::Thread => finisher.spawn_thread(),
        _ => finisher.spawn_detached(),
    };
    let Ok(how) = started else {
        let rest = inline(state_dir, cell_id, rec, sources);
        out.removed.extend(rest.removed);
        out.failed.extend(rest.failed);
        out.findings.extend(rest.findings);
        return out;
    };
    out.removed.push(note(
        "veth",
        format!(
            "{} cut off (host end down); its deletion and that of the host table {} finish in \
             the background ({how}), which verifies both before removing the run record and \
             the address lease (`cellos gc` finishes them if it dies)",
            rec.veth, rec.host_table
        ),
    ));
    out.handed_over = true;
    out
}

/// Everything now: remove, then check.
fn inline(state_dir: &Path, cell_id: &str, rec: &NetRecord, sources: &HostSources) -> NetTeardown {
    let (removed, failed) = super::remove(state_dir, cell_id, Some(rec));
    NetTeardown {
        removed,
        failed,
        findings: super::residue(state_dir, cell_id, Some(rec), sources),
        handed_over: false,
    }
}

fn note(class: &str, detail: String) -> Residue {
    Residue {
        class: class.into(),
        detail,
    }
}

/// The host end, if it still exists, must be down: the cell is cut off.
fn still_up(veth: &str) -> Result<Option<String>, CheckError> {
    link::veth_state(veth)
        .map(|state| (state == Some(true)).then(|| format!("host end {veth} is still up")))
        .map_err(CheckError::Host)
}

/// The part of a teardown that waits for the kernel.
struct Finisher {
    state_dir: PathBuf,
    cell_id: String,
    rec: NetRecord,
    sources: HostSources,
}

impl Finisher {
    fn spawn_thread(self) -> std::io::Result<&'static str> {
        std::thread::Builder::new()
            .name("cellos-net-finish".into())
            .spawn(move || self.run())
            .map(|_| "a thread of this supervisor")
    }

    /// Forks twice (the intermediate child is reaped here), so the finisher is nobody's child
    /// to wait for and outlives this process. The intermediate child exits once the finisher
    /// has adopted the record, so when this returns `cellos gc` can never take the cell for an
    /// orphan while it is being finished.
    fn spawn_detached(self) -> std::io::Result<&'static str> {
        // SAFETY: the child only makes system calls, file I/O and allocations (see the module
        // doc) and leaves with `_exit`, never returning into the caller's code.
        match unsafe { nix::unistd::fork() }.map_err(std::io::Error::from)? {
            nix::unistd::ForkResult::Parent { child } => match nix::sys::wait::waitpid(child, None)
            {
                Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => Ok("a detached process"),
                _ => Err(std::io::Error::other(
                    "the finisher process could not be started",
                )),
            },
            nix::unistd::ForkResult::Child => {
                detach();
                let started = self.fork_finisher();
                // SAFETY: `_exit` skips atexit handlers and destructors of the parent's state.
                unsafe { libc::_exit(if started { 0 } else { 1 }) }
            }
        }
    }

    /// In the intermediate child: forks the finisher and waits until it has adopted the
    /// record (it closes its end of the pipe then). Whether the finisher runs.
    fn fork_finisher(self) -> bool {
        let Ok((adopted_r, adopted_w)) = nix::unistd::pipe() else {
            return false;
        };
        // SAFETY: as in `spawn_detached`; the grandchild is the finisher.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                drop(adopted_r);
                self.adopt_record();
                drop(adopted_w);
                self.run();
                true
            }
            Ok(nix::unistd::ForkResult::Parent { .. }) => {
                drop(adopted_w);
                let mut byte = [0u8; 1];
                let fd = std::os::fd::AsRawFd::as_raw_fd(&adopted_r);
                while let Err(nix::errno::Errno::EINTR) = nix::unistd::read(fd, &mut byte) {}
                true
            }
            Err(_) => false,
        }
    }

    /// Makes this process the record's supervisor: `cellos gc` leaves the cell alone while it
    /// runs, and reclaims it if it dies.
    fn adopt_record(&self) {
        let me = std::process::id() as i32;
        if let (Ok(Some(mut rec)), Some(start)) = (
            record::read(&self.state_dir, &self.cell_id),
            record::process_start_time(me),
        ) {
            rec.supervisor_pid = me;
            rec.supervisor_start = start;
            let _ = record::update(&self.state_dir, &rec);
        }
    }

    /// Whether the link's check comes out clean within [`LINK_GONE_WAIT`]: a device the
    /// kernel is unregistering can still be listed for a moment after its deletion returned.
    fn link_gone(&self) -> bool {
        let deadline = Instant::now() + LINK_GONE_WAIT;
        loop {
            let clean = residue::check_link(&self.rec, &self.sources).is_clean();
            if clean || Instant::now() >= deadline {
                return clean;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Deletes the host table and the veth, verifies both, releases the lease and removes the
    /// record; on residue
    /// the record (and lease) are left to `cellos gc`, without a supervisor.
    fn run(self) {
        let table = link::delete_host_table(&self.rec);
        // The kernel may be deleting the pair already (the cell's namespace was released):
        // then this waits for it, or finds nothing to delete.
        let deleted = link::delete_veth(&self.rec.veth);
        // The lease goes only once the link and the table are verified gone: until then no
        // other cell may take its addresses.
        let mut clean = table.is_ok()
            && deleted.is_ok()
            && self.link_gone()
            && residue::check_host_table(&self.rec, &self.sources).is_clean();
        if clean {
            let _ = pool::release_all(&self.state_dir, &self.cell_id);
            clean = residue::check_lease(&self.rec).is_clean();
        }
        if clean {
            let _ = record::remove(&self.state_dir, &self.cell_id);
        } else if let Ok(Some(mut rec)) = record::read(&self.state_dir, &self.cell_id) {
            rec.supervisor_pid = 0;
            rec.supervisor_start = 0;
            let _ = record::update(&self.state_dir, &rec);
        }
    }
}

/// How long the finisher waits for a deleted link to disappear before it leaves the cell to
/// `cellos gc`.
const LINK_GONE_WAIT: Duration = Duration::from_secs(5);

/// The finisher's own session, with no terminal and none of the caller's descriptors: it must
/// not hold the caller's output pipes open, nor count as a holder of anything the residue
/// checks look for.
fn detach() {
    let _ = nix::unistd::setsid();
    // SAFETY: closes descriptors this process owns and will never use again.
    unsafe {
        libc::close_range(0, u32::MAX, 0);
    }
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        use std::os::fd::IntoRawFd;
        let fd = null.into_raw_fd();
        // SAFETY: dup2 onto the standard descriptors, which were closed above.
        unsafe {
            libc::dup2(fd, 1);
            libc::dup2(fd, 2);
        }
    }
}

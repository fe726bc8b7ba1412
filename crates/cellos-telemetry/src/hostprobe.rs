//! Host probes: what the host itself sees of a cell, which the cell cannot influence.
//!
//! * [`ProcessProbe`] listens to the kernel's process events connector (netlink,
//!   `NETLINK_CONNECTOR` / `CN_IDX_PROC`) for exec, fork and exit of every process on the host,
//!   keeps those whose `/proc/<pid>/cgroup` puts them in the cell's cgroup, and reads argv0 at
//!   exec time. cgroup membership and proc events come from the kernel, not from the cell.
//! * [`CgroupSampler`] reads the cell's memory, pids and pressure counters.
//!
//! The netlink code is written here by hand: the one crate for the proc connector (`cnproc`)
//! binds its socket to the process id (a second probe in the same process fails to bind), has
//! no receive timeout (a probe thread could never be stopped), loops forever on an
//! `NLMSG_ERROR` message, and drops the exit status. The socket comes from `socket2`, `bind`
//! from `nix`; message parsing below is plain, bounds-checked byte reading, no `unsafe`.
//!
//! Needs `CAP_NET_ADMIN` in the initial user namespace (the supervisor runs as root).

use std::collections::HashMap;
use std::fs;
use std::io::{self, ErrorKind, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::socket::{bind, NetlinkAddr};
use socket2::{Domain, Protocol, Socket, Type};
use time::OffsetDateTime;

/// Probe counters, observation payloads and cgroup samples are event payloads, defined in core.
pub use cellos_core::events::{CgroupSample, ProbeCounters, ProcessObservedData};

const NETLINK_CONNECTOR: i32 = 11;
const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
const PROC_EVENT_FORK: u32 = 0x0000_0001;
const PROC_EVENT_EXEC: u32 = 0x0000_0002;
const PROC_EVENT_EXIT: u32 = 0x8000_0000;
const NLMSG_HDR_LEN: usize = 16;
const CN_MSG_LEN: usize = 20;
/// `proc_event` header: what (u32), cpu (u32), timestamp_ns (u64).
const PROC_EVENT_HDR_LEN: usize = 16;
/// How long a probe thread blocks in `recv` before checking whether it should stop.
const RECV_TIMEOUT: Duration = Duration::from_millis(100);
/// Observations buffered for the supervisor before new ones are dropped (and counted).
const QUEUE_CAPACITY: usize = 4096;
/// Socket receive buffer: the connector multicasts every exec on the host.
const RCVBUF_BYTES: usize = 4 * 1024 * 1024;

/// Which processes belong to the cell: those whose cgroup (in any hierarchy) is one of the
/// cell's cgroup directories or below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellCgroupFilter {
    /// Cgroup paths relative to their hierarchy root, as `/proc/<pid>/cgroup` prints them.
    relative: Vec<String>,
    /// The absolute directories, for `cgroup.procs`.
    dirs: Vec<PathBuf>,
}

impl CellCgroupFilter {
    /// From the cell's absolute cgroup directories (e.g. `/sys/fs/cgroup/pids/cellos/<cell>`);
    /// each is made relative to the cgroup mount it lives on, read from `/proc/self/mountinfo`.
    pub fn from_dirs(dirs: &[PathBuf]) -> io::Result<Self> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
        let mounts: Vec<PathBuf> = mountinfo
            .lines()
            .filter_map(|line| {
                let (left, right) = line.split_once(" - ")?;
                let fstype = right.split_whitespace().next()?;
                if fstype != "cgroup" && fstype != "cgroup2" {
                    return None;
                }
                left.split_whitespace().nth(4).map(PathBuf::from)
            })
            .collect();
        let mut relative = Vec::new();
        for dir in dirs {
            let mount = mounts
                .iter()
                .filter(|m| dir.starts_with(m))
                .max_by_key(|m| m.components().count())
                .ok_or_else(|| {
                    io::Error::new(
                        ErrorKind::NotFound,
                        format!("{} is not on a mounted cgroup hierarchy", dir.display()),
                    )
                })?;
            let rel = dir.strip_prefix(mount).unwrap_or(dir);
            relative.push(format!("/{}", rel.display()));
        }
        Ok(CellCgroupFilter {
            relative,
            dirs: dirs.to_vec(),
        })
    }

    /// Whether `/proc/<pid>/cgroup` puts `pid` in the cell; `None` when the process is gone.
    pub fn contains_pid(&self, pid: u32) -> Option<bool> {
        let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        Some(text.lines().any(|line| {
            // hierarchy-id:controllers:path
            line.splitn(3, ':')
                .nth(2)
                .is_some_and(|path| self.relative.iter().any(|rel| within(rel, path)))
        }))
    }

    /// Pids in the cell's cgroups right now.
    pub fn current_pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .dirs
            .iter()
            .filter_map(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|t| {
                t.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<u32>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }
}

/// `path` is `root` or below it, component-wise.
fn within(root: &str, path: &str) -> bool {
    let root = root.trim_end_matches('/');
    path == root || root.is_empty() || path.strip_prefix(root).is_some_and(|r| r.starts_with('/'))
}

/// A process of the cell called exec, as the host saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedExec {
    /// Host pid.
    pub pid: u32,
    /// The pid inside the cell's pid namespace (innermost `NSpid`), to match declarations.
    pub ns_pid: Option<u32>,
    pub argv0: String,
    pub comm: String,
    pub at: Instant,
    pub observed_at: OffsetDateTime,
}

/// A process of the cell exited, as the host saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedExit {
    pub pid: u32,
    pub ns_pid: Option<u32>,
    /// argv0 of its last exec (or its parent's, if it never called exec).
    pub argv0: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub at: Instant,
    pub observed_at: OffsetDateTime,
}

/// What the process probe reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    Exec(ObservedExec),
    Exit(ObservedExit),
}

/// The mechanism recorded on every process observation.
pub const PROCESS_MECHANISM: &str = "netlink proc connector, cgroup-filtered";

impl Observation {
    /// The `process.v1.spawned` / `process.v1.exited` payload (authority `Observed`).
    pub fn event_data(&self) -> ProcessObservedData {
        let mechanism = PROCESS_MECHANISM.to_owned();
        let authority = cellos_core::authority::AuthorityKind::Observed;
        match self {
            Observation::Exec(e) => ProcessObservedData {
                pid: e.pid,
                ns_pid: e.ns_pid,
                argv0: e.argv0.clone(),
                exit_code: None,
                signal: None,
                mechanism,
                authority,
            },
            Observation::Exit(e) => ProcessObservedData {
                pid: e.pid,
                ns_pid: e.ns_pid,
                argv0: e.argv0.clone(),
                exit_code: e.exit_code,
                signal: e.signal,
                mechanism,
                authority,
            },
        }
    }
}

#[derive(Default)]
struct AtomicProbeCounters {
    execs: AtomicU64,
    exits: AtomicU64,
    unattributable: AtomicU64,
    queue_full: AtomicU64,
    overruns: AtomicU64,
}

/// A running proc-connector listener for one cell.
pub struct ProcessProbe {
    stop: Arc<AtomicBool>,
    counters: Arc<AtomicProbeCounters>,
    rx: Receiver<Observation>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ProcessProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessProbe").finish_non_exhaustive()
    }
}

impl ProcessProbe {
    /// Subscribe to proc events and start filtering for the cell. Start it before the
    /// workload's first exec; processes already in the cell are tracked for their exits.
    pub fn start(filter: CellCgroupFilter) -> io::Result<Self> {
        let socket = subscribe()?;
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(AtomicProbeCounters::default());
        let (tx, rx) = mpsc::sync_channel(QUEUE_CAPACITY);
        let mut worker = ProbeWorker {
            socket,
            filter,
            tracked: HashMap::new(),
            tx,
            counters: Arc::clone(&counters),
        };
        for pid in worker.filter.current_pids() {
            let argv0 = read_argv0(pid).unwrap_or_default();
            worker.tracked.insert(pid, (ns_pid(pid), argv0));
        }
        let thread_stop = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("telemetry-procprobe".into())
            .spawn(move || worker.run(&thread_stop))?;
        Ok(ProcessProbe {
            stop,
            counters,
            rx,
            thread: Some(thread),
        })
    }

    pub fn try_next(&self) -> Option<Observation> {
        self.rx.try_recv().ok()
    }

    pub fn next_timeout(&self, timeout: Duration) -> Option<Observation> {
        self.rx.recv_timeout(timeout).ok()
    }

    pub fn drain(&self) -> Vec<Observation> {
        self.rx.try_iter().collect()
    }

    pub fn counters(&self) -> ProbeCounters {
        let g = |c: &AtomicU64| c.load(Ordering::SeqCst);
        let c = &self.counters;
        ProbeCounters {
            execs: g(&c.execs),
            exits: g(&c.exits),
            unattributable: g(&c.unattributable),
            queue_full: g(&c.queue_full),
            overruns: g(&c.overruns),
        }
    }

    /// Stop listening; returns what was still queued.
    pub fn stop(mut self) -> Vec<Observation> {
        self.halt();
        self.drain()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ProcessProbe {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Open a proc-connector socket and ask the kernel to multicast proc events to it.
fn subscribe() -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::from(nix::libc::AF_NETLINK),
        Type::DGRAM,
        Some(Protocol::from(NETLINK_CONNECTOR)),
    )?;
    // Port id 0: the kernel assigns a unique one, so any number of probes can coexist.
    bind(socket.as_raw_fd(), &NetlinkAddr::new(0, CN_IDX_PROC)).map_err(io::Error::from)?;
    socket.set_read_timeout(Some(RECV_TIMEOUT))?;
    // Best effort: a smaller buffer only means overruns are likelier (and they are counted).
    let _ = socket.set_recv_buffer_size(RCVBUF_BYTES);
    let mut msg = Vec::with_capacity(NLMSG_HDR_LEN + CN_MSG_LEN + 4);
    let total = (NLMSG_HDR_LEN + CN_MSG_LEN + 4) as u32;
    msg.extend(total.to_ne_bytes()); // nlmsg_len
    msg.extend(NLMSG_DONE.to_ne_bytes()); // nlmsg_type
    msg.extend(0u16.to_ne_bytes()); // nlmsg_flags
    msg.extend(0u32.to_ne_bytes()); // nlmsg_seq
    msg.extend(0u32.to_ne_bytes()); // nlmsg_pid
    msg.extend(CN_IDX_PROC.to_ne_bytes()); // cn_msg.id.idx
    msg.extend(CN_VAL_PROC.to_ne_bytes()); // cn_msg.id.val
    msg.extend(0u32.to_ne_bytes()); // seq
    msg.extend(0u32.to_ne_bytes()); // ack
    msg.extend(4u16.to_ne_bytes()); // len
    msg.extend(0u16.to_ne_bytes()); // flags
    msg.extend(PROC_CN_MCAST_LISTEN.to_ne_bytes());
    socket.send(&msg)?;
    Ok(socket)
}

/// One proc event, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProcEvent {
    Fork {
        parent_tgid: u32,
        child_pid: u32,
        child_tgid: u32,
    },
    Exec {
        pid: u32,
        tgid: u32,
    },
    Exit {
        pid: u32,
        tgid: u32,
        exit_code: u32,
    },
}

/// Parse every proc event in one datagram; `overrun` is set when the kernel reported loss.
fn parse_datagram(mut buf: &[u8], overrun: &mut bool) -> Vec<ProcEvent> {
    let mut events = Vec::new();
    while let Some(len) = read_u32(buf, 0) {
        let len = len as usize;
        if len < NLMSG_HDR_LEN || len > buf.len() {
            break;
        }
        let msg_type = read_u16(buf, 4).unwrap_or(0);
        match msg_type {
            NLMSG_ERROR | NLMSG_OVERRUN => *overrun = msg_type == NLMSG_OVERRUN || *overrun,
            _ => {
                if let Some(event) = parse_cn_msg(&buf[NLMSG_HDR_LEN..len]) {
                    events.push(event);
                }
            }
        }
        let aligned = (len + 3) & !3;
        buf = buf.get(aligned..).unwrap_or(&[]);
    }
    events
}

fn parse_cn_msg(msg: &[u8]) -> Option<ProcEvent> {
    if read_u32(msg, 0)? != CN_IDX_PROC || read_u32(msg, 4)? != CN_VAL_PROC {
        return None;
    }
    let data_len = usize::from(read_u16(msg, 16)?);
    let ev = msg.get(CN_MSG_LEN..CN_MSG_LEN + data_len)?;
    let what = read_u32(ev, 0)?;
    let d = PROC_EVENT_HDR_LEN;
    match what {
        PROC_EVENT_FORK => Some(ProcEvent::Fork {
            parent_tgid: read_u32(ev, d + 4)?,
            child_pid: read_u32(ev, d + 8)?,
            child_tgid: read_u32(ev, d + 12)?,
        }),
        PROC_EVENT_EXEC => Some(ProcEvent::Exec {
            pid: read_u32(ev, d)?,
            tgid: read_u32(ev, d + 4)?,
        }),
        PROC_EVENT_EXIT => Some(ProcEvent::Exit {
            pid: read_u32(ev, d)?,
            tgid: read_u32(ev, d + 4)?,
            exit_code: read_u32(ev, d + 8)?,
        }),
        _ => None,
    }
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(*buf.get(at..)?.first_chunk::<4>()?))
}

fn read_u16(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(*buf.get(at..)?.first_chunk::<2>()?))
}

fn read_argv0(pid: u32) -> Option<String> {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let first = cmdline.split(|b| *b == 0).next().filter(|a| !a.is_empty());
    match first {
        Some(a) => Some(String::from_utf8_lossy(a).into_owned()),
        None => read_comm(pid),
    }
}

fn read_comm(pid: u32) -> Option<String> {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim_end_matches('\n').to_owned())
}

/// The innermost pid of `pid` (its pid inside the cell's pid namespace).
fn ns_pid(pid: u32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
    line.split_whitespace().last()?.parse().ok()
}

struct ProbeWorker {
    socket: Socket,
    filter: CellCgroupFilter,
    /// Tracked processes of the cell: host pid → (ns pid, argv0 of the current image).
    tracked: HashMap<u32, (Option<u32>, String)>,
    tx: SyncSender<Observation>,
    counters: Arc<AtomicProbeCounters>,
}

impl ProbeWorker {
    fn run(&mut self, stop: &AtomicBool) {
        let mut buf = vec![0u8; 64 * 1024];
        while !stop.load(Ordering::SeqCst) {
            let n = match (&self.socket).read(&mut buf) {
                Ok(n) => n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    continue
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                    self.counters.overruns.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                Err(_) => {
                    std::thread::sleep(RECV_TIMEOUT);
                    continue;
                }
            };
            let mut overrun = false;
            for event in parse_datagram(&buf[..n], &mut overrun) {
                self.handle(event);
            }
            if overrun {
                self.counters.overruns.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    fn handle(&mut self, event: ProcEvent) {
        match event {
            ProcEvent::Fork {
                parent_tgid,
                child_pid,
                child_tgid,
            } => {
                // A new process (not a thread) forked by a tracked one is the cell's too.
                if child_pid == child_tgid {
                    if let Some((_, argv0)) = self.tracked.get(&parent_tgid) {
                        let argv0 = argv0.clone();
                        self.tracked.insert(child_tgid, (ns_pid(child_tgid), argv0));
                    }
                }
            }
            ProcEvent::Exec { tgid, .. } => {
                let at = Instant::now();
                match self.filter.contains_pid(tgid) {
                    Some(true) => {}
                    Some(false) => return,
                    None => {
                        self.counters.unattributable.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
                let argv0 = read_argv0(tgid).unwrap_or_default();
                let ns = ns_pid(tgid);
                self.tracked.insert(tgid, (ns, argv0.clone()));
                self.counters.execs.fetch_add(1, Ordering::SeqCst);
                self.deliver(Observation::Exec(ObservedExec {
                    pid: tgid,
                    ns_pid: ns,
                    comm: read_comm(tgid).unwrap_or_default(),
                    argv0,
                    at,
                    observed_at: OffsetDateTime::now_utc(),
                }));
            }
            ProcEvent::Exit {
                pid,
                tgid,
                exit_code,
            } => {
                if pid != tgid {
                    return; // a thread, not the process
                }
                let Some((ns, argv0)) = self.tracked.remove(&tgid) else {
                    return;
                };
                // exit_code is a wait(2) status: signal in the low 7 bits, code above.
                let signal = (exit_code & 0x7f) as i32;
                self.counters.exits.fetch_add(1, Ordering::SeqCst);
                self.deliver(Observation::Exit(ObservedExit {
                    pid: tgid,
                    ns_pid: ns,
                    argv0,
                    exit_code: (signal == 0).then_some(((exit_code >> 8) & 0xff) as i32),
                    signal: (signal != 0).then_some(signal),
                    at: Instant::now(),
                    observed_at: OffsetDateTime::now_utc(),
                }));
            }
        }
    }

    fn deliver(&self, observation: Observation) {
        if self.tx.try_send(observation).is_err() {
            self.counters.queue_full.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Reads a cell's cgroup counters from its directories (v1 per-controller dirs and/or a v2 dir).
#[derive(Debug, Clone)]
pub struct CgroupSampler {
    dirs: Vec<PathBuf>,
}

impl CgroupSampler {
    pub fn new(dirs: &[PathBuf]) -> Self {
        CgroupSampler {
            dirs: dirs.to_vec(),
        }
    }

    /// Read every counter once; the first directory that has a file wins.
    pub fn sample(&self) -> CgroupSample {
        let first = |f: &dyn Fn(&Path) -> Option<u64>| self.dirs.iter().find_map(|d| f(d));
        CgroupSample {
            memory_bytes: first(&|d| {
                read_number(&d.join("memory.current"))
                    .or_else(|| read_number(&d.join("memory.usage_in_bytes")))
            }),
            memory_peak_bytes: first(&|d| {
                read_number(&d.join("memory.peak"))
                    .or_else(|| read_number(&d.join("memory.max_usage_in_bytes")))
            }),
            oom_kills: first(&|d| {
                read_keyed(&d.join("memory.events"), "oom_kill")
                    .or_else(|| read_keyed(&d.join("memory.oom_control"), "oom_kill"))
            }),
            pids: first(&|d| read_number(&d.join("pids.current"))),
            pids_max_hits: first(&|d| read_keyed(&d.join("pids.events"), "max")),
            memory_pressure_some_avg10_centi: first(&|d| read_pressure(&d.join("memory.pressure"))),
            cpu_pressure_some_avg10_centi: first(&|d| read_pressure(&d.join("cpu.pressure"))),
        }
    }
}

fn read_number(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `key value` lines (`memory.events`, `pids.events`, `memory.oom_control`).
fn read_keyed(path: &Path, key: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// `some avg10=1.23 ...` → 123.
fn read_pressure(path: &Path) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    let some = text.lines().find(|l| l.starts_with("some "))?;
    let avg10 = some
        .split_whitespace()
        .find_map(|f| f.strip_prefix("avg10="))?;
    let (int, frac) = avg10.split_once('.').unwrap_or((avg10, "0"));
    let frac: String = frac.chars().chain("00".chars()).take(2).collect();
    Some(int.parse::<u64>().ok()? * 100 + frac.parse::<u64>().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nlmsg(cn_payload: &[u8], msg_type: u16) -> Vec<u8> {
        let mut m = Vec::new();
        let len = (NLMSG_HDR_LEN + cn_payload.len()) as u32;
        m.extend(len.to_ne_bytes());
        m.extend(msg_type.to_ne_bytes());
        m.extend([0u8; 10]);
        m.extend(cn_payload);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    fn cn(what: u32, fields: &[u32]) -> Vec<u8> {
        let mut ev = Vec::new();
        ev.extend(what.to_ne_bytes());
        ev.extend([0u8; 12]); // cpu, timestamp
        for f in fields {
            ev.extend(f.to_ne_bytes());
        }
        let mut m = Vec::new();
        m.extend(CN_IDX_PROC.to_ne_bytes());
        m.extend(CN_VAL_PROC.to_ne_bytes());
        m.extend([0u8; 8]);
        m.extend((ev.len() as u16).to_ne_bytes());
        m.extend([0u8; 2]);
        m.extend(ev);
        m
    }

    #[test]
    fn datagrams_with_several_messages_parse_and_errors_do_not_loop() {
        let mut d = nlmsg(&cn(PROC_EVENT_EXEC, &[10, 10]), NLMSG_DONE);
        d.extend(nlmsg(&[], NLMSG_ERROR));
        d.extend(nlmsg(
            &cn(PROC_EVENT_EXIT, &[11, 10, 0x0900, 0]),
            NLMSG_DONE,
        ));
        d.extend(nlmsg(&cn(PROC_EVENT_FORK, &[1, 1, 12, 12]), NLMSG_DONE));
        d.extend(nlmsg(&[], NLMSG_OVERRUN));
        let mut overrun = false;
        let events = parse_datagram(&d, &mut overrun);
        assert_eq!(
            events,
            vec![
                ProcEvent::Exec { pid: 10, tgid: 10 },
                ProcEvent::Exit {
                    pid: 11,
                    tgid: 10,
                    exit_code: 0x0900
                },
                ProcEvent::Fork {
                    parent_tgid: 1,
                    child_pid: 12,
                    child_tgid: 12
                },
            ]
        );
        assert!(overrun);
        // Truncated and garbage input yields nothing and never panics.
        for cut in 0..d.len() {
            parse_datagram(&d[..cut], &mut overrun);
        }
        parse_datagram(&[0xff; 64], &mut overrun);
    }

    #[test]
    fn cgroup_paths_match_component_wise() {
        assert!(within("/cellos/c1", "/cellos/c1"));
        assert!(within("/cellos/c1", "/cellos/c1/sub"));
        assert!(!within("/cellos/c1", "/cellos/c10"));
        assert!(!within("/cellos/c1", "/"));
    }

    #[test]
    fn pressure_lines_parse_to_hundredths() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("memory.pressure");
        fs::write(
            &p,
            "some avg10=1.5 avg60=0.00 avg300=0.00 total=1\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        )
        .unwrap();
        assert_eq!(read_pressure(&p), Some(150));
    }
}

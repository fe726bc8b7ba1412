//! The host side of a running cell's exec surface ([`CellSession`]).
//!
//! An exec is one command byte plus a frame on the cell's control channel, with four
//! descriptors passed along: stdin, stdout, stderr (or one terminal three times) and the write
//! end of the exec's report pipe (see [`crate::init_exec`] for init's side). The pipes belong
//! to the workload's host ids, like the workload's own, so the command can reopen
//! `/dev/stdout`. A terminal is allocated in the cell's own devpts instance (opened through
//! init's root), so `tty` inside the cell names it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use cellos_core::ports::{
    CellSession, ExecControl, ExecProcess, LimitHit, PortError, PortErrorKind,
};
use cellos_core::session::{
    env_entries, ExecExit, ExecRequest, FileEntry, FileStat, FileWritten, PtySize,
};

use crate::cell_fs::CellFs;
use crate::cgroup::LimitProbe;
use crate::error::LinuxError;
use crate::protocol::{send_fds, ExecFrame, ExecReport, CMD_EXEC_KILL};

/// The control channel to the cell's init, shared by the cell and its session; `None` once
/// the cell is destroyed (closing it tells init to end the cell).
pub(crate) type Control = Arc<Mutex<Option<File>>>;

/// Lock the control channel (a poisoned lock still guards a valid descriptor).
pub(crate) fn lock(control: &Control) -> MutexGuard<'_, Option<File>> {
    control.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running cell's exec and file surface.
pub struct LinuxSession {
    cell_id: String,
    init_pid: i32,
    control: Control,
    /// Host uid and gid the workload runs as (the exec's pipes and terminal are given to it).
    workload_host: u32,
    next_exec: AtomicU64,
    /// The cgroup counters of the cell's enforced limits.
    limits: LimitProbe,
}

impl LinuxSession {
    pub(crate) fn new(
        cell_id: &str,
        init_pid: i32,
        control: Control,
        workload_host: u32,
        limits: LimitProbe,
    ) -> Self {
        Self {
            cell_id: cell_id.to_owned(),
            init_pid,
            control,
            workload_host,
            limits,
            next_exec: AtomicU64::new(1),
        }
    }

    fn gone(&self) -> PortError {
        PortError::new(
            PortErrorKind::NotFound,
            format!("cell '{}' is destroyed", self.cell_id),
        )
    }

    /// Send `bytes` (and then `fds`) to init as one uninterrupted message.
    fn send(&self, bytes: &[u8], fds: &[std::os::fd::BorrowedFd<'_>]) -> Result<(), PortError> {
        let mut guard = lock(&self.control);
        let control = guard.as_mut().ok_or_else(|| self.gone())?;
        control
            .write_all(bytes)
            .map_err(|e| LinuxError::io("send exec to cell init", e))?;
        if !fds.is_empty() {
            send_fds(control.as_fd(), fds)
                .map_err(|e| LinuxError::io("send exec descriptors to cell init", e))?;
        }
        Ok(())
    }

    fn chown(&self, fd: &OwnedFd, what: &str) -> Result<(), LinuxError> {
        std::os::unix::fs::fchown(fd, Some(self.workload_host), Some(self.workload_host))
            .map_err(|e| LinuxError::io(format!("give the exec's {what} to the workload"), e))
    }

    /// A terminal pair in the cell's devpts instance: (host end, cell end).
    fn open_terminal(&self, size: PtySize) -> Result<(OwnedFd, OwnedFd), LinuxError> {
        let ptmx = format!("/proc/{}/root/dev/pts/ptmx", self.init_pid);
        let master = rustix::fs::open(
            ptmx.as_str(),
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| LinuxError::errno(format!("open {ptmx}"), e.raw_os_error()))?;
        rustix::pty::unlockpt(&master)
            .map_err(|e| LinuxError::errno("unlock the exec's terminal", e.raw_os_error()))?;
        set_size(&master, size)?;
        let peer = rustix::pty::ioctl_tiocgptpeer(
            &master,
            rustix::pty::OpenptFlags::RDWR | rustix::pty::OpenptFlags::NOCTTY,
        )
        .map_err(|e| LinuxError::errno("open the exec's terminal", e.raw_os_error()))?;
        self.chown(&peer, "terminal")?;
        Ok((master, peer))
    }

    fn start(&self, request: &ExecRequest) -> Result<ExecProcess, LinuxError> {
        let id = self.next_exec.fetch_add(1, Ordering::Relaxed);
        let frame = ExecFrame {
            id,
            argv: request.argv.clone(),
            env: env_entries(&request.env),
            cwd: request.cwd.clone(),
            tty: request.pty.is_some(),
        };
        let bytes = frame
            .encode()
            .map_err(|e| LinuxError::io("encode exec request", e))?;
        let (report_r, report_w) = pipe()?;
        let (process, cell_ends) = match request.pty {
            Some(size) => self.terminal_streams(size)?,
            None => self.pipe_streams(request.stdin)?,
        };
        let [a, b, c] = &cell_ends;
        self.send(&bytes, &[a.as_fd(), b.as_fd(), c.as_fd(), report_w.as_fd()])
            .map_err(|e| LinuxError::Setup {
                what: "start exec".into(),
                detail: e.message,
            })?;
        drop((cell_ends, report_w));
        let (stdin, stdout, stderr, terminal) = process;
        Ok(ExecProcess {
            stdin,
            stdout,
            stderr,
            control: Box::new(LinuxExec {
                id,
                control: self.control.clone(),
                report: Mutex::new(ReportReader::new(report_r)),
                terminal,
            }),
        })
    }

    /// Streams over a terminal: one host end for input and output, the cell end three times.
    fn terminal_streams(&self, size: PtySize) -> Result<(Streams, [OwnedFd; 3]), LinuxError> {
        let (master, peer) = self.open_terminal(size)?;
        let dup = |fd: &OwnedFd| {
            fd.try_clone()
                .map_err(|e| LinuxError::io("duplicate the exec's terminal", e))
        };
        let input = File::from(dup(&master)?);
        let resize = dup(&master)?;
        let cell = [dup(&peer)?, dup(&peer)?, peer];
        let streams: Streams = (
            Some(Box::new(input)),
            Box::new(TerminalReader(File::from(master))),
            None,
            Some(resize),
        );
        Ok((streams, cell))
    }

    /// Streams over pipes: stdin (or `/dev/null`), stdout and stderr.
    fn pipe_streams(&self, with_stdin: bool) -> Result<(Streams, [OwnedFd; 3]), LinuxError> {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        self.chown(&out_w, "stdout")?;
        self.chown(&err_w, "stderr")?;
        let (stdin, stdin_cell): (Option<Box<dyn Write + Send>>, OwnedFd) = if with_stdin {
            let (in_r, in_w) = pipe()?;
            self.chown(&in_r, "stdin")?;
            (Some(Box::new(File::from(in_w))), in_r)
        } else {
            let null = File::open("/dev/null").map_err(|e| LinuxError::io("open /dev/null", e))?;
            (None, null.into())
        };
        let streams: Streams = (
            stdin,
            Box::new(File::from(out_r)),
            Some(Box::new(File::from(err_r))),
            None,
        );
        Ok((streams, [stdin_cell, out_w, err_w]))
    }
}

type Streams = (
    Option<Box<dyn Write + Send>>,
    Box<dyn Read + Send>,
    Option<Box<dyn Read + Send>>,
    Option<OwnedFd>,
);

fn pipe() -> Result<(OwnedFd, OwnedFd), LinuxError> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| LinuxError::errno("pipe", e.raw_os_error()))
}

fn set_size(terminal: &OwnedFd, size: PtySize) -> Result<(), LinuxError> {
    rustix::termios::tcsetwinsize(
        terminal,
        rustix::termios::Winsize {
            ws_row: size.rows,
            ws_col: size.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )
    .map_err(|e| LinuxError::errno("set the exec's terminal size", e.raw_os_error()))
}

/// A terminal's host end reads EIO once the last process holding the cell end has exited:
/// that is its end of output, not an error.
struct TerminalReader(File);

impl Read for TerminalReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.0.read(buf) {
            Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(0),
            other => other,
        }
    }
}

impl CellSession for LinuxSession {
    fn limit_hits(&self) -> Vec<LimitHit> {
        self.limits.read()
    }

    fn exec(&self, request: &ExecRequest) -> Result<ExecProcess, PortError> {
        // The request was checked by the caller (`ExecRequest::problems`); what still cannot
        // run (a NUL, a program not found) comes back from init as a failed start.
        Ok(self.start(request)?)
    }

    fn read_file(
        &self,
        path: &str,
        max_bytes: u64,
    ) -> Result<(FileStat, Box<dyn Read + Send>), PortError> {
        let (stat, file) = self.fs()?.read(path, max_bytes)?;
        Ok((stat, Box::new(file.take(max_bytes))))
    }

    fn write_file(
        &self,
        path: &str,
        content: &mut dyn Read,
        mode: Option<u32>,
        max_bytes: u64,
    ) -> Result<FileWritten, PortError> {
        Ok(self.fs()?.write(path, content, mode, max_bytes)?)
    }

    fn stat(&self, path: &str) -> Result<FileStat, PortError> {
        Ok(self.fs()?.stat(path)?)
    }

    fn list(&self, path: &str) -> Result<Vec<FileEntry>, PortError> {
        Ok(self.fs()?.list(path)?)
    }

    fn mkdir(&self, path: &str, parents: bool) -> Result<(), PortError> {
        Ok(self.fs()?.mkdir(path, parents)?)
    }

    fn remove(&self, path: &str, recursive: bool) -> Result<(), PortError> {
        Ok(self.fs()?.remove(path, recursive)?)
    }
}

impl LinuxSession {
    /// The cell's filesystem view, from a descriptor of init's root opened now. Opened per
    /// operation, never kept: a held descriptor would pin the cell's root mount after destroy.
    /// The control lock orders the open before destroy (which empties the control first), so
    /// the pid still names the cell's init.
    fn fs(&self) -> Result<CellFs, PortError> {
        let guard = lock(&self.control);
        if guard.is_none() {
            return Err(self.gone());
        }
        let path = format!("/proc/{}/root", self.init_pid);
        let root = rustix::fs::open(
            path.as_str(),
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| {
            LinuxError::errno(
                format!("open the root of cell '{}'", self.cell_id),
                e.raw_os_error(),
            )
        })?;
        drop(guard);
        Ok(CellFs::new(root, self.workload_host, self.workload_host))
    }
}

/// One exec's control: its report pipe, its id for kills, its terminal for resizes.
struct LinuxExec {
    id: u64,
    control: Control,
    report: Mutex<ReportReader>,
    terminal: Option<OwnedFd>,
}

impl ExecControl for LinuxExec {
    fn wait(&self, deadline: Option<Instant>) -> Result<Option<ExecExit>, PortError> {
        let mut report = self.report.lock().unwrap_or_else(|p| p.into_inner());
        Ok(report.exit(deadline)?)
    }

    fn kill(&self) -> Result<(), PortError> {
        let mut bytes = vec![CMD_EXEC_KILL];
        bytes.extend_from_slice(&self.id.to_le_bytes());
        let mut guard = lock(&self.control);
        match guard.as_mut() {
            Some(control) => control
                .write_all(&bytes)
                .map_err(|e| LinuxError::io("send exec kill to cell init", e).into()),
            // The cell is gone, and every exec with it.
            None => Ok(()),
        }
    }

    fn resize(&self, size: PtySize) -> Result<(), PortError> {
        match &self.terminal {
            Some(terminal) => Ok(set_size(terminal, size)?),
            None => Err(PortError::new(
                PortErrorKind::Refused,
                "the exec has no terminal to resize (start it with pty)",
            )),
        }
    }
}

/// Reads an exec's report pipe: the start, then the exit.
struct ReportReader {
    file: File,
    buf: Vec<u8>,
    started: bool,
    exit: Option<ExecExit>,
}

impl ReportReader {
    fn new(fd: OwnedFd) -> Self {
        Self {
            file: File::from(fd),
            buf: Vec::new(),
            started: false,
            exit: None,
        }
    }

    /// The exec's exit, waiting until `deadline`. The pipe closing without an exit means the
    /// exec's tree was killed (`SIGKILL`), or it never started.
    fn exit(&mut self, deadline: Option<Instant>) -> Result<Option<ExecExit>, LinuxError> {
        while self.exit.is_none() {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                self.apply(serde_json::from_slice(&line[..line.len() - 1]).ok());
                continue;
            }
            if !wait_readable(&self.file, deadline)? {
                return Ok(None);
            }
            let mut chunk = [0u8; 512];
            match self.file.read(&mut chunk) {
                Ok(0) => self.apply(None),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(LinuxError::io("read exec report", e)),
            }
        }
        Ok(self.exit.clone())
    }

    fn apply(&mut self, report: Option<ExecReport>) {
        self.exit = match report {
            Some(ExecReport::Started) => {
                self.started = true;
                None
            }
            Some(ExecReport::SpawnFailed { reason }) => Some(ExecExit::SpawnFailed { reason }),
            Some(ExecReport::Exited { code }) => Some(ExecExit::Exited { code }),
            Some(ExecReport::Signaled { signal }) => Some(ExecExit::Signaled { signal }),
            None if self.started => Some(ExecExit::Signaled {
                signal: libc::SIGKILL,
            }),
            None => Some(ExecExit::SpawnFailed {
                reason: "the cell could not start the exec (its init refused or ran out of \
                         processes)"
                    .into(),
            }),
        };
    }
}

/// Wait until `file` is readable or `deadline` passes (`false`).
fn wait_readable(file: &File, deadline: Option<Instant>) -> Result<bool, LinuxError> {
    loop {
        let timeout = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(false);
                }
                left.as_millis().clamp(1, i32::MAX as u128) as i32
            }
        };
        let mut fd = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(file),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut fd, 1, timeout) };
        if n > 0 {
            return Ok(true);
        }
        if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return Err(LinuxError::io(
                "wait for exec report",
                std::io::Error::last_os_error(),
            ));
        }
    }
}

/// `Arc` so the cell and every caller share one session.
pub(crate) type SharedSession = Arc<LinuxSession>;

//! The wire between the supervisor and the cell's init: two inherited pipes.
//!
//! Control (supervisor → init, fd [`CONTROL_FD`], a unix stream socket): one release byte read
//! before exec, then (for an exec'd init only) one config frame (length-prefixed JSON plus
//! length-prefixed secret frames, so secret bytes never pass through serde or a log line),
//! then the detached mount trees as `SCM_RIGHTS` (see [`send_fds`]), then single command
//! bytes. EOF means "exit now". An init run in the clone has the plan already: the
//! [`Handoff`] in its copy of the supervisor's memory.
//! Status (init → supervisor, fd [`STATUS_FD`]): newline-delimited JSON [`StatusMsg`]s, each
//! written with one `write` (init is the only writer).

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::LinuxError;
use crate::plan::InitConfig;

/// argv[1] that turns the re-executed binary into the cell's init.
pub const INIT_ARG: &str = "__cell-init";
/// Control pipe (read end) inside init.
pub const CONTROL_FD: i32 = 3;
/// Status pipe (write end) inside init.
pub const STATUS_FD: i32 = 4;

/// Sent once the uid/gid maps and the cgroup are in place: the child may exec init.
pub const RELEASE: u8 = b'G';
/// Fork and exec the workload.
pub const CMD_START: u8 = b'S';
/// Kill every process of the cell but keep the mount namespace for export.
pub const CMD_KILL: u8 = b'K';
/// Start an exec: followed by one [`ExecFrame`] chunk, then its [`EXEC_FDS`] descriptors.
pub const CMD_EXEC: u8 = b'E';
/// Kill an exec's whole process tree: followed by its id (u64, little-endian).
pub const CMD_EXEC_KILL: u8 = b'X';
/// Descriptors sent with each exec: stdin, stdout, stderr and the report pipe's write end.
pub const EXEC_FDS: usize = 4;
/// Largest exec frame init accepts.
pub const MAX_EXEC_FRAME_BYTES: u32 = 1 << 20;

/// One command to run inside a running cell, as init receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecFrame {
    pub id: u64,
    pub argv: Vec<String>,
    /// `KEY=value` entries added to (and overriding) the workload's environment.
    pub env: Vec<String>,
    pub cwd: Option<String>,
    /// stdin, stdout and stderr are one terminal: become its session leader and controller.
    pub tty: bool,
}

impl ExecFrame {
    /// The bytes after [`CMD_EXEC`]: the frame as one length-prefixed JSON chunk.
    pub fn encode(&self) -> io::Result<Vec<u8>> {
        let json = serde_json::to_vec(self).map_err(io::Error::other)?;
        let mut buf = Vec::with_capacity(5 + json.len());
        buf.push(CMD_EXEC);
        push_chunk(&mut buf, &json);
        Ok(buf)
    }

    /// Read the chunk that follows [`CMD_EXEC`].
    pub fn read(input: &mut impl Read) -> io::Result<ExecFrame> {
        let json = read_chunk(input, MAX_EXEC_FRAME_BYTES)?;
        serde_json::from_slice(&json).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// What an exec's reaper reports on the exec's own report pipe, one JSON line each: `Started`
/// or `SpawnFailed`, then (after a start) `Exited` or `Signaled`. EOF without an exit means
/// the exec's process tree was killed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "msg")]
pub enum ExecReport {
    Started,
    SpawnFailed { reason: String },
    Exited { code: i32 },
    Signaled { signal: i32 },
}

impl ExecReport {
    pub fn send(&self, out: &mut impl Write) -> io::Result<()> {
        let mut line = serde_json::to_vec(self).map_err(io::Error::other)?;
        line.push(b'\n');
        out.write_all(&line)
    }
}

/// Largest config frame init accepts (the plan is small; secrets travel separately).
pub const MAX_CONFIG_BYTES: u32 = 4 << 20;
/// Largest single secret init accepts.
pub const MAX_SECRET_BYTES: u32 = 16 << 20;
/// Most secrets one cell may receive.
pub const MAX_SECRETS: u32 = 1024;

/// Messages from init.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "msg")]
pub enum StatusMsg {
    /// The root is built and pivoted; waiting for [`CMD_START`].
    Ready,
    /// Setting the cell up failed; init exits after sending this.
    Failed {
        message: String,
        /// The host lacks a kernel feature (as opposed to a refusal or an I/O error), so the
        /// supervisor keeps the error's kind across the pipe.
        #[serde(default)]
        missing_feature: bool,
    },
    /// The workload's execve succeeded.
    Started,
    /// The workload could not be started.
    SpawnFailed {
        reason: String,
    },
    /// The workload ended; every other process of the cell is dead too.
    Exited {
        code: i32,
    },
    Signaled {
        signal: i32,
    },
    /// The cloned child could not become init; it exits after sending this (see
    /// [`StartStep`]). Written by hand in the child ([`start_failure_line`]), which may not
    /// allocate.
    StartFailed {
        step: StartStep,
        errno: i32,
    },
}

/// The child's steps from the clone to init, in order. Each failure exits with its own code
/// ([`StartStep::exit_code`]), so a wait status alone still names the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StartStep {
    /// Writing `0` to the cell's cgroup v1 `tasks` files.
    JoinCgroupV1,
    /// `dup2` of the inherited descriptors onto their numbers.
    InheritFds,
    /// Reading the release byte (EOF: the supervisor gave up on the cell).
    AwaitRelease,
    /// `setresgid`/`setgroups`/`setresuid` to the namespace's root.
    BecomeRoot,
    /// `execveat` of the init binary's descriptor.
    ExecInit,
}

impl StartStep {
    pub const ALL: [StartStep; 5] = [
        StartStep::JoinCgroupV1,
        StartStep::InheritFds,
        StartStep::AwaitRelease,
        StartStep::BecomeRoot,
        StartStep::ExecInit,
    ];

    /// The child's exit code when this step fails.
    pub const fn exit_code(self) -> i32 {
        match self {
            StartStep::JoinCgroupV1 => 123,
            StartStep::BecomeRoot => 124,
            StartStep::AwaitRelease => 125,
            StartStep::InheritFds => 126,
            StartStep::ExecInit => 127,
        }
    }

    /// The step a child's exit code names, if any.
    pub fn from_exit_code(code: i32) -> Option<StartStep> {
        StartStep::ALL.into_iter().find(|s| s.exit_code() == code)
    }

    /// Its name on the wire (serde's, spelled out for [`start_failure_line`]).
    const fn wire_name(self) -> &'static [u8] {
        match self {
            StartStep::JoinCgroupV1 => b"joinCgroupV1",
            StartStep::InheritFds => b"inheritFds",
            StartStep::AwaitRelease => b"awaitRelease",
            StartStep::BecomeRoot => b"becomeRoot",
            StartStep::ExecInit => b"execInit",
        }
    }
}

/// Room for the longest [`start_failure_line`].
pub const START_FAILURE_LINE_MAX: usize = 80;

/// The [`StatusMsg::StartFailed`] line for `step` and `errno`, formatted into `buf` without
/// allocating (the cloned child of a multi-threaded process may not); returns its length.
pub fn start_failure_line(
    step: StartStep,
    errno: i32,
    buf: &mut [u8; START_FAILURE_LINE_MAX],
) -> usize {
    let mut digits = [0u8; 10];
    let mut n = 0;
    let mut value = errno.unsigned_abs();
    loop {
        digits[n] = b'0' + (value % 10) as u8;
        n += 1;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    let mut len = 0;
    let mut put = |bytes: &[u8]| {
        buf[len..len + bytes.len()].copy_from_slice(bytes);
        len += bytes.len();
    };
    put(b"{\"msg\":\"startFailed\",\"step\":\"");
    put(step.wire_name());
    put(b"\",\"errno\":");
    if errno < 0 {
        put(b"-");
    }
    for d in digits[..n].iter().rev() {
        put(std::slice::from_ref(d));
    }
    put(b"}\n");
    len
}

impl StatusMsg {
    /// Write as one line.
    pub fn send(&self, out: &mut impl Write) -> io::Result<()> {
        let mut line = serde_json::to_vec(self).map_err(io::Error::other)?;
        line.push(b'\n');
        out.write_all(&line)
    }
}

/// The plan and secrets for init, as the supervisor built them. An init run in the clone finds
/// them in its copy of the supervisor's memory; an exec'd init reads them as the config frame
/// ([`Handoff::frame`], [`Handoff::read_frame`]). Either way the mount trees follow over the
/// control socket.
pub struct Handoff {
    pub config: InitConfig,
    pub secrets: Vec<SecretFrame>,
}

impl Handoff {
    /// The config frame for an exec'd init.
    pub fn frame(&self) -> io::Result<Zeroizing<Vec<u8>>> {
        let json = serde_json::to_vec(&self.config).map_err(io::Error::other)?;
        let secrets: Vec<(&str, &[u8])> = self
            .secrets
            .iter()
            .map(|s| (s.key.as_str(), s.value.as_slice()))
            .collect();
        Ok(encode_config(&json, &secrets))
    }

    /// Read the config frame the supervisor sent (see [`Handoff::frame`]).
    pub fn read_frame(input: &mut impl Read) -> Result<Handoff, LinuxError> {
        let (json, secrets) = decode_config(input)
            .map_err(|e| LinuxError::io("read cell config from supervisor", e))?;
        let config = serde_json::from_slice(&json).map_err(|e| LinuxError::Setup {
            what: "parse cell config".into(),
            detail: e.to_string(),
        })?;
        Ok(Handoff { config, secrets })
    }
}

/// One secret as delivered to init; zeroised on drop.
pub struct SecretFrame {
    pub key: String,
    pub value: Zeroizing<Vec<u8>>,
}

/// Encode the config frame: `u32 len, json, u32 count, (u32 len, key, u32 len, value)*`.
fn encode_config(json: &[u8], secrets: &[(&str, &[u8])]) -> Zeroizing<Vec<u8>> {
    let total = 8
        + json.len()
        + secrets
            .iter()
            .map(|(k, v)| 8 + k.len() + v.len())
            .sum::<usize>();
    let mut buf = Zeroizing::new(Vec::with_capacity(total));
    push_chunk(&mut buf, json);
    buf.extend_from_slice(&(secrets.len() as u32).to_le_bytes());
    for (key, value) in secrets {
        push_chunk(&mut buf, key.as_bytes());
        push_chunk(&mut buf, value);
    }
    buf
}

fn push_chunk(buf: &mut Vec<u8>, chunk: &[u8]) {
    buf.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
    buf.extend_from_slice(chunk);
}

/// Decode what [`encode_config`] wrote, with bounds on every length.
fn decode_config(input: &mut impl Read) -> io::Result<(Vec<u8>, Vec<SecretFrame>)> {
    let json = read_chunk(input, MAX_CONFIG_BYTES)?;
    let count = read_u32(input)?;
    if count > MAX_SECRETS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "too many secrets",
        ));
    }
    let mut secrets = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let key = read_chunk(input, 255)?;
        let key = String::from_utf8(key)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "secret key not UTF-8"))?;
        let value = Zeroizing::new(read_chunk(input, MAX_SECRET_BYTES)?);
        secrets.push(SecretFrame { key, value });
    }
    Ok((json, secrets))
}

fn read_u32(input: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    input.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_chunk(input: &mut impl Read, max: u32) -> io::Result<Vec<u8>> {
    let len = read_u32(input)?;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    let mut buf = vec![0u8; len as usize];
    input.read_exact(&mut buf)?;
    Ok(buf)
}

/// Descriptors per `SCM_RIGHTS` message (the kernel caps one message at 253).
const FDS_PER_MESSAGE: usize = 200;

/// Send `fds` over the control socket, each batch attached to one marker byte.
pub fn send_fds(sock: BorrowedFd<'_>, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    for chunk in fds.chunks(FDS_PER_MESSAGE) {
        let raw: Vec<i32> = chunk.iter().map(|f| f.as_raw_fd()).collect();
        let marker = [b'F'];
        let iov = [io::IoSlice::new(&marker)];
        sendmsg::<()>(
            sock.as_raw_fd(),
            &iov,
            &[ControlMessage::ScmRights(&raw)],
            MsgFlags::empty(),
            None,
        )
        .map_err(io::Error::from)?;
    }
    Ok(())
}

/// Receive exactly `count` descriptors sent by [`send_fds`] (close-on-exec).
pub fn recv_fds(sock: BorrowedFd<'_>, count: usize) -> io::Result<Vec<std::os::fd::OwnedFd>> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::FromRawFd;
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let mut marker = [0u8; 1];
        let mut iov = [io::IoSliceMut::new(&mut marker)];
        let mut space = nix::cmsg_space!([i32; FDS_PER_MESSAGE]);
        let msg = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        if msg.bytes == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "control socket closed",
            ));
        }
        for cmsg in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                // SAFETY: the kernel just installed these descriptors for us.
                out.extend(
                    fds.into_iter()
                        .map(|fd| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
    }
    if out.len() != count {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "unexpected number of descriptors",
        ));
    }
    Ok(out)
}

/// Reads [`StatusMsg`] lines from the status pipe with a deadline.
pub struct StatusReader {
    buf: Vec<u8>,
}

/// What [`StatusReader::next`] saw.
#[derive(Debug, PartialEq, Eq)]
pub enum StatusEvent {
    Msg(StatusMsg),
    /// Init closed the pipe (it exited or died).
    Closed,
    TimedOut,
}

impl Default for StatusReader {
    fn default() -> Self {
        Self::new()
    }
}

impl StatusReader {
    pub fn new() -> Self {
        Self { buf: Vec::new() }
    }

    /// Next message, or `Closed`/`TimedOut`. An unparsable line is reported as `Failed`.
    pub fn next(
        &mut self,
        fd: BorrowedFd<'_>,
        deadline: Option<Instant>,
    ) -> io::Result<StatusEvent> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                let msg = serde_json::from_slice(&line[..line.len() - 1]).unwrap_or_else(|e| {
                    StatusMsg::Failed {
                        message: format!("unreadable status message from cell init: {e}"),
                        missing_feature: false,
                    }
                });
                return Ok(StatusEvent::Msg(msg));
            }
            let timeout_ms = match deadline {
                None => -1,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(StatusEvent::TimedOut);
                    }
                    // Round up so we never wake just before the deadline and spin.
                    i32::try_from(left.as_millis() + 1).unwrap_or(i32::MAX)
                }
            };
            let mut pfd = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the duration of the call.
            let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            if n == 0 {
                continue;
            }
            let mut chunk = [0u8; 4096];
            let got = rustix::io::read(fd, &mut chunk).map_err(io::Error::from)?;
            if got == 0 {
                return Ok(StatusEvent::Closed);
            }
            self.buf.extend_from_slice(&chunk[..got]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_frame_round_trips_with_secrets() {
        let frame = encode_config(b"{\"a\":1}", &[("K", b"v1"), ("L", b"")]);
        let (json, secrets) = decode_config(&mut &frame[..]).unwrap();
        assert_eq!(json, b"{\"a\":1}");
        assert_eq!(secrets.len(), 2);
        assert_eq!(secrets[0].key, "K");
        assert_eq!(&secrets[0].value[..], b"v1");
        assert!(secrets[1].value.is_empty());
    }

    #[test]
    fn oversized_frames_are_rejected() {
        let mut bad = Vec::new();
        bad.extend_from_slice(&(MAX_CONFIG_BYTES + 1).to_le_bytes());
        assert!(decode_config(&mut &bad[..]).is_err());
    }

    #[test]
    fn status_lines_are_read_back() {
        let (r, mut w) = std::io::pipe().unwrap();
        StatusMsg::Exited { code: 7 }.send(&mut w).unwrap();
        StatusMsg::Ready.send(&mut w).unwrap();
        drop(w);
        let mut reader = StatusReader::new();
        use std::os::fd::AsFd;
        assert_eq!(
            reader.next(r.as_fd(), None).unwrap(),
            StatusEvent::Msg(StatusMsg::Exited { code: 7 })
        );
        assert_eq!(
            reader.next(r.as_fd(), None).unwrap(),
            StatusEvent::Msg(StatusMsg::Ready)
        );
        assert_eq!(reader.next(r.as_fd(), None).unwrap(), StatusEvent::Closed);
    }

    #[test]
    fn every_hand_written_start_failure_line_parses_as_its_step_and_errno() {
        for step in StartStep::ALL {
            for errno in [0, 1, 13, 133, i32::MAX, -7] {
                let mut buf = [0u8; START_FAILURE_LINE_MAX];
                let len = start_failure_line(step, errno, &mut buf);
                assert_eq!(buf[len - 1], b'\n');
                let msg: StatusMsg = serde_json::from_slice(&buf[..len - 1]).unwrap();
                assert_eq!(msg, StatusMsg::StartFailed { step, errno });
                let mut serde_line = serde_json::to_vec(&msg).unwrap();
                serde_line.push(b'\n');
                assert_eq!(&buf[..len], &serde_line[..]);
            }
        }
    }

    #[test]
    fn each_step_has_its_own_exit_code() {
        for step in StartStep::ALL {
            assert_eq!(StartStep::from_exit_code(step.exit_code()), Some(step));
        }
        assert_eq!(StartStep::from_exit_code(0), None);
        assert_eq!(StartStep::from_exit_code(1), None);
    }
}

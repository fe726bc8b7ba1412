//! The in-cell telemetry agent: what `cellos-telemetry-agent` sends, built only on the wire
//! format (`cellos-telemetry-wire`) and `/proc`, so the agent links nothing host-side (no keys,
//! no signing code). The crate depends on nothing else that could bring such code in; the
//! `dependency_graph` test checks that.
//!
//! The agent sees processes by polling `/proc` of its pid namespace: a process that lives
//! shorter than the poll interval can be missed. That is a limit of what a guest can see, and
//! why the host's own probe (`hostprobe`) is the observed record and the agent's reports are
//! only declarations.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use cellos_telemetry_wire::{
    GuestFrame, ProbeSource, WireError, MAX_COMM_BYTES, MAX_DETAIL_VALUE_BYTES,
};

/// Environment variable overriding the socket path inside the cell.
pub const SOCKET_ENV: &str = "CELLOS_TELEMETRY_SOCK";

/// Why a declaration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DeclareError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("{0} is reported by the agent itself; declare net.intent, fs.intent, secret.intent or custom.<name>")]
    NotDeclarable(String),
    #[error("declared value is empty: give a host, path, secret name or value")]
    EmptyValue,
}

/// `CLOCK_MONOTONIC` in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// The frame for `cellos-telemetry-agent declare <probe_source> <value> [k=v ...]`, about
/// process `pid` (the declaring workload) named `comm`.
pub fn declaration(
    probe_source: &str,
    value: &str,
    extra: &[(String, String)],
    pid: u32,
    comm: &str,
) -> Result<GuestFrame, DeclareError> {
    let source = ProbeSource::parse(probe_source)?;
    let key = match &source {
        ProbeSource::NetIntent => "destination",
        ProbeSource::FsIntent => "path",
        ProbeSource::SecretIntent => "name",
        ProbeSource::Custom(_) => "value",
        ProbeSource::ProcessSpawned | ProbeSource::ProcessExited | ProbeSource::Keepalive => {
            return Err(DeclareError::NotDeclarable(probe_source.to_owned()))
        }
    };
    if value.is_empty() {
        return Err(DeclareError::EmptyValue);
    }
    let mut frame = GuestFrame::new(source, pid, clip(comm, MAX_COMM_BYTES), monotonic_ns());
    for (k, v) in extra {
        frame.detail.insert(k.clone(), v.clone());
    }
    frame.detail.insert(key.to_owned(), value.to_owned());
    // Validate now so the caller gets the bound that was exceeded, not a closed socket.
    frame.encode()?;
    Ok(frame)
}

/// Send already-built frames over one connection.
pub fn send(stream: &mut UnixStream, frames: &[GuestFrame]) -> Result<(), SendError> {
    let mut bytes = Vec::new();
    for frame in frames {
        bytes.extend(frame.encode()?);
    }
    stream.write_all(&bytes)?;
    Ok(())
}

/// Why frames could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("telemetry socket write failed: {0}")]
    Io(#[from] io::Error),
}

/// One process as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: u32,
    pub ppid: Option<u32>,
    pub comm: String,
    /// First element of the command line; the comm when the command line is empty.
    pub argv0: String,
}

impl ProcInfo {
    /// Read `/proc/<pid>` under `proc_root`; `None` when the process is gone.
    pub fn read(proc_root: &Path, pid: u32) -> Option<ProcInfo> {
        let dir = proc_root.join(pid.to_string());
        let comm = fs::read_to_string(dir.join("comm")).ok()?;
        let comm = comm.trim_end_matches('\n').to_owned();
        let cmdline = fs::read(dir.join("cmdline")).unwrap_or_default();
        let argv0 = cmdline
            .split(|b| *b == 0)
            .next()
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .unwrap_or_else(|| comm.clone());
        let ppid = fs::read_to_string(dir.join("stat"))
            .ok()
            .and_then(|stat| parse_ppid(&stat));
        Some(ProcInfo {
            pid,
            ppid,
            comm,
            argv0,
        })
    }

    /// The `process.spawned` frame for this process.
    pub fn spawned_frame(&self) -> GuestFrame {
        let mut frame = GuestFrame::new(
            ProbeSource::ProcessSpawned,
            self.pid,
            clip(&self.comm, MAX_COMM_BYTES),
            monotonic_ns(),
        )
        .with_detail("argv0", clip(&self.argv0, MAX_DETAIL_VALUE_BYTES));
        if let Some(ppid) = self.ppid {
            frame = frame.with_detail("ppid", ppid.to_string());
        }
        frame
    }

    /// The `process.exited` frame for this process.
    pub fn exited_frame(&self) -> GuestFrame {
        GuestFrame::new(
            ProbeSource::ProcessExited,
            self.pid,
            clip(&self.comm, MAX_COMM_BYTES),
            monotonic_ns(),
        )
        .with_detail("argv0", clip(&self.argv0, MAX_DETAIL_VALUE_BYTES))
    }
}

/// The parent pid from `/proc/<pid>/stat`. The comm field may contain spaces and parentheses,
/// so parsing starts after the last `)`.
fn parse_ppid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// What changed between two scans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcChange {
    /// A new pid, or a known pid whose argv0 changed (it called exec).
    Spawned(ProcInfo),
    Exited(ProcInfo),
}

/// Diffs successive views of `/proc`.
#[derive(Debug)]
pub struct ProcScanner {
    proc_root: std::path::PathBuf,
    known: BTreeMap<u32, ProcInfo>,
}

impl ProcScanner {
    /// A scanner over `proc_root` (normally `/proc`) that has seen nothing yet: the first scan
    /// reports every existing process as spawned.
    pub fn new(proc_root: impl Into<std::path::PathBuf>) -> Self {
        ProcScanner {
            proc_root: proc_root.into(),
            known: BTreeMap::new(),
        }
    }

    /// Scan once and report what changed since the last scan.
    pub fn scan(&mut self) -> io::Result<Vec<ProcChange>> {
        let mut current = BTreeMap::new();
        for entry in fs::read_dir(&self.proc_root)? {
            let Ok(entry) = entry else { continue };
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(info) = ProcInfo::read(&self.proc_root, pid) {
                current.insert(pid, info);
            }
        }
        let mut changes = Vec::new();
        for (pid, old) in &self.known {
            if !current.contains_key(pid) {
                changes.push(ProcChange::Exited(old.clone()));
            }
        }
        for (pid, info) in &current {
            match self.known.get(pid) {
                Some(old) if old.argv0 == info.argv0 => {}
                _ => changes.push(ProcChange::Spawned(info.clone())),
            }
        }
        self.known = current;
        Ok(changes)
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppid_is_read_after_a_comm_with_spaces_and_parens() {
        assert_eq!(parse_ppid("42 (a b) c) S 7 42 42 0"), Some(7));
        assert_eq!(parse_ppid("garbage"), None);
    }

    #[test]
    fn declarations_put_the_value_under_the_probe_sources_key() {
        let f = declaration("net.intent", "api.example.com:443", &[], 9, "curl").unwrap();
        assert_eq!(f.detail["destination"], "api.example.com:443");
        assert_eq!(f.guest_pid, 9);
        let f = declaration("fs.intent", "/work/out", &[], 9, "sh").unwrap();
        assert_eq!(f.detail["path"], "/work/out");
        let f = declaration("custom.phase", "build", &[], 9, "sh").unwrap();
        assert_eq!(f.detail["value"], "build");
        assert!(matches!(
            declaration("keepalive", "x", &[], 9, "sh"),
            Err(DeclareError::NotDeclarable(_))
        ));
        assert!(matches!(
            declaration("net.connect", "x", &[], 9, "sh"),
            Err(DeclareError::Wire(WireError::UnknownProbeSource(_)))
        ));
        assert!(matches!(
            declaration("net.intent", "", &[], 9, "sh"),
            Err(DeclareError::EmptyValue)
        ));
    }

    #[test]
    fn the_scanner_reports_a_real_child_spawned_then_exited() {
        let mut scanner = ProcScanner::new("/proc");
        scanner.scan().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let spawned = scanner.scan().unwrap();
        assert!(
            spawned
                .iter()
                .any(|c| matches!(c, ProcChange::Spawned(p) if p.pid == pid && p.argv0 == "sleep")),
            "{spawned:?}"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        let exited = scanner.scan().unwrap();
        assert!(
            exited
                .iter()
                .any(|c| matches!(c, ProcChange::Exited(p) if p.pid == pid)),
            "{exited:?}"
        );
    }
}

//! Per-cell run records: `<state_dir>/run/<cell-id>.json`.
//!
//! Written before anything that could outlive a crash (cgroup, init process) and removed last
//! by destroy, so `gc` can always find what a dead supervisor left. Pids are recorded with
//! their start time (field 22 of `/proc/<pid>/stat`) so a recycled pid is never mistaken for
//! ours. Records are not fsync'd: what they describe (processes, cgroups) does not survive a
//! reboot either.
//!
//! A record is a file of JSON lines, each a whole record, and the last complete line is the
//! current one. Updates append rather than replace: on ext4, replacing a file by rename (or
//! truncating it) forces its blocks out to disk at once, and unlinking it at destroy then
//! waits for that write (about 0.1 ms per cell); an append does neither. An append that a
//! crash cut short leaves a line without its newline, which readers ignore.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::LinuxError;

/// One cell's host-side state, as `gc` and `ps` need it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    pub cell_id: String,
    pub run_id: String,
    pub created_unix: u64,
    /// The process that created the cell, and its start time.
    pub supervisor_pid: i32,
    pub supervisor_start: u64,
    /// The cell's init (host pid), once cloned.
    pub init_pid: Option<i32>,
    pub init_start: Option<u64>,
    pub cgroup_paths: Vec<PathBuf>,
    /// The cell's network scope (veth, host table, address lease), written before any of it
    /// exists; absent for loopback-only cells.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::netscope::NetRecord>,
}

impl RunRecord {
    /// Whether the creating process still runs (same pid and start time).
    pub fn supervised(&self) -> bool {
        process_start_time(self.supervisor_pid) == Some(self.supervisor_start)
    }

    /// Whether the cell is being torn down: its init was started and is gone, while its
    /// supervisor (or the finisher of its teardown) still runs.
    pub fn tearing_down(&self) -> bool {
        self.init_pid.is_some() && !self.init_alive() && self.supervised()
    }

    /// Whether the recorded init still runs (same pid and start time). For display only:
    /// to signal it, use [`RunRecord::open_init`].
    pub fn init_alive(&self) -> bool {
        match (self.init_pid, self.init_start) {
            (Some(pid), Some(start)) => process_start_time(pid) == Some(start),
            _ => false,
        }
    }

    /// A pidfd for the recorded init if that very process still runs (see
    /// [`crate::pidfd::open_verified`]); the only handle through which it is signalled.
    pub fn open_init(&self) -> Result<Option<OwnedFd>, LinuxError> {
        match (self.init_pid, self.init_start) {
            (Some(pid), Some(start)) => crate::pidfd::open_verified(pid, start),
            _ => Ok(None),
        }
    }
}

/// Directory holding the records.
pub fn run_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("run")
}

/// Path of `cell_id`'s record (the id was validated as a file-name-safe token).
pub fn record_path(state_dir: &Path, cell_id: &str) -> PathBuf {
    run_dir(state_dir).join(format!("{cell_id}.json"))
}

/// How long [`create`] waits for a previous cell of the same id whose teardown is finishing.
const FINISHING_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Create the record; fails with `Refused` when one already exists for this cell id. A record
/// of a cell being torn down ([`RunRecord::tearing_down`]; its veth's deletion may be
/// finishing in the background, see `netscope::teardown`) is waited for, briefly.
pub fn create(state_dir: &Path, record: &RunRecord) -> Result<(), LinuxError> {
    let deadline = std::time::Instant::now() + FINISHING_WAIT;
    loop {
        match create_once(state_dir, record) {
            Err(LinuxError::Refused { .. })
                if std::time::Instant::now() < deadline
                    && read(state_dir, &record.cell_id)
                        .ok()
                        .flatten()
                        .is_some_and(|old| old.tearing_down()) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            other => return other,
        }
    }
}

fn create_once(state_dir: &Path, record: &RunRecord) -> Result<(), LinuxError> {
    let path = record_path(state_dir, &record.cell_id);
    let bytes = encode(record)?;
    let mut f = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(LinuxError::Refused {
                what: format!(
                    "cell id '{}' already has a run record ({}): it is running or was left by a \
                     crashed supervisor (run `cellos gc`)",
                    record.cell_id,
                    path.display()
                ),
            })
        }
        Err(e) => return Err(LinuxError::io(format!("create {}", path.display()), e)),
    };
    f.write_all(&bytes)
        .map_err(|e| LinuxError::io(format!("write {}", path.display()), e))
}

/// Supersede the record: append it whole as the new last line (one `write`).
pub fn update(state_dir: &Path, record: &RunRecord) -> Result<(), LinuxError> {
    let path = record_path(state_dir, &record.cell_id);
    let bytes = encode(record)?;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(&bytes))
        .map_err(|e| LinuxError::io(format!("append to {}", path.display()), e))
}

/// One record as a JSON line.
fn encode(record: &RunRecord) -> Result<Vec<u8>, LinuxError> {
    let mut bytes = serde_json::to_vec(record).map_err(|e| LinuxError::Setup {
        what: "encode run record".into(),
        detail: e.to_string(),
    })?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// The record of `cell_id`, if any: the last complete line of its file.
pub fn read(state_dir: &Path, cell_id: &str) -> Result<Option<RunRecord>, LinuxError> {
    let path = record_path(state_dir, cell_id);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LinuxError::io(format!("read {}", path.display()), e)),
    };
    // Records written before they were appended to are one object without a newline (and
    // were always whole, being replaced by rename): read those as they are.
    let last = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(end) => bytes[..end].rsplit(|&b| b == b'\n').next().unwrap_or(&[]),
        None => &bytes[..],
    };
    serde_json::from_slice(last)
        .map(Some)
        .map_err(|e| LinuxError::Setup {
            what: format!("parse {}", path.display()),
            detail: format!("{e} (a record cut short while being created is not usable)"),
        })
}

/// Remove the record of `cell_id` (absent is fine).
pub fn remove(state_dir: &Path, cell_id: &str) -> Result<(), LinuxError> {
    let path = record_path(state_dir, cell_id);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LinuxError::io(format!("remove {}", path.display()), e)),
    }
}

/// Every readable record in `<state_dir>/run`, sorted by cell id. Unparsable files are skipped
/// (a record being created has no complete line yet; updates append, see [`update`]).
pub fn list_records(state_dir: &Path) -> Result<Vec<RunRecord>, LinuxError> {
    let dir = run_dir(state_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(LinuxError::io(format!("read {}", dir.display()), e)),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(id) = name.strip_suffix(".json") else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        if let Ok(Some(record)) = read(state_dir, id) {
            out.push(record);
        }
    }
    out.sort_by(|a, b| a.cell_id.cmp(&b.cell_id));
    Ok(out)
}

/// Start time of `pid` in clock ticks since boot (field 22 of `/proc/<pid>/stat`); `None` when
/// the process does not exist (or is a zombie being reaped).
pub fn process_start_time(pid: i32) -> Option<u64> {
    start_time_of_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Start time (field 22) of a `/proc/<pid>/stat` line; `None` for a zombie or dead process.
pub fn start_time_of_stat(stat: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces and parentheses: fields after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // `rest` starts at field 3 (state); field 22 is 19 further.
    fields.nth(18)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: &str) -> RunRecord {
        RunRecord {
            cell_id: id.into(),
            run_id: "r1".into(),
            created_unix: 1,
            supervisor_pid: std::process::id() as i32,
            supervisor_start: process_start_time(std::process::id() as i32).unwrap(),
            init_pid: None,
            init_start: None,
            cgroup_paths: vec![],
            network: None,
        }
    }

    #[test]
    fn records_round_trip_and_refuse_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(run_dir(dir.path())).unwrap();
        let mut rec = sample("c1");
        create(dir.path(), &rec).unwrap();
        assert!(create(dir.path(), &rec).is_err());
        rec.init_pid = Some(5);
        update(dir.path(), &rec).unwrap();
        assert_eq!(read(dir.path(), "c1").unwrap(), Some(rec.clone()));
        rec.init_start = Some(7);
        update(dir.path(), &rec).unwrap();
        assert_eq!(read(dir.path(), "c1").unwrap(), Some(rec.clone()));
        assert_eq!(list_records(dir.path()).unwrap(), vec![rec.clone()]);
        assert!(rec.supervised());
        remove(dir.path(), "c1").unwrap();
        remove(dir.path(), "c1").unwrap();
        assert!(list_records(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn a_record_being_torn_down_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(run_dir(dir.path())).unwrap();
        let mut old = sample("c4");
        // An init that was started and is gone, under a live supervisor.
        old.init_pid = Some(i32::MAX);
        old.init_start = Some(1);
        create(dir.path(), &old).unwrap();
        assert!(old.tearing_down());
        let path = record_path(dir.path(), "c4");
        let finisher = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            std::fs::remove_file(path).unwrap();
        });
        let new = sample("c4");
        create(dir.path(), &new).unwrap();
        finisher.join().unwrap();
        assert_eq!(read(dir.path(), "c4").unwrap(), Some(new));
    }

    #[test]
    fn an_update_cut_short_leaves_the_previous_record() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(run_dir(dir.path())).unwrap();
        let rec = sample("c2");
        create(dir.path(), &rec).unwrap();
        let path = record_path(dir.path(), "c2");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(br#"{"cellId":"c2","runId":"r1","initPid":9"#)
            .unwrap();
        assert_eq!(read(dir.path(), "c2").unwrap(), Some(rec));

        std::fs::write(&path, br#"{"cellId":"c2""#).unwrap();
        let err = read(dir.path(), "c2").unwrap_err().to_string();
        assert!(err.contains("cut short while being created"), "{err}");
        assert!(list_records(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn a_record_from_before_appends_is_still_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(run_dir(dir.path())).unwrap();
        let mut rec = sample("c3");
        rec.init_pid = Some(11);
        let path = record_path(dir.path(), "c3");
        std::fs::write(&path, serde_json::to_vec(&rec).unwrap()).unwrap();
        assert_eq!(read(dir.path(), "c3").unwrap(), Some(rec.clone()));
        assert_eq!(list_records(dir.path()).unwrap(), vec![rec]);
    }

    #[test]
    fn start_time_identifies_our_process() {
        let me = std::process::id() as i32;
        assert!(process_start_time(me).is_some());
        assert_eq!(process_start_time(me), process_start_time(me));
        assert_eq!(process_start_time(i32::MAX), None);
    }
}

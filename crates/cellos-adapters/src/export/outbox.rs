//! The outbox: artifacts bound for a remote destination wait here, on the host, until they
//! have arrived.
//!
//! An artifact is copied out of the cell into `<outbox>/<export-id>/data` (with
//! [`LocalExportSink`], so the copy is hashed, `0600`, fsync'd and renamed into place) and
//! described by `<outbox>/<export-id>/meta.json`. The entry is removed only after the
//! destination has acknowledged the whole artifact; an export that fails after its retries
//! stays, and `cellos export retry <export-id>` pushes it again. Nothing is lost when a
//! destination is down, and the cell may be gone by then: the outbox copy is what is sent.

use std::fs::File;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use cellos_core::ports::ExportSink as _;
use cellos_core::ports::{PortError, PortErrorKind};
use cellos_core::spec::ExportTarget;
use serde::{Deserialize, Serialize};

use super::LocalExportSink;

const DATA: &str = "data";
const META: &str = "meta.json";

/// What an outbox entry is, written beside its data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StagedExport {
    /// The entry's id (a UUID), which `cellos export retry` takes.
    pub id: String,
    pub cell_id: String,
    /// The artifact's name in the spec.
    pub name: String,
    /// The spec's target, as declared (secret names only, never values).
    pub target: ExportTarget,
    pub sha256: String,
    pub size_bytes: u64,
}

/// The outbox directory (`$CELLOS_HOME/exports/outbox` by default).
#[derive(Debug, Clone)]
pub struct Outbox {
    root: PathBuf,
}

impl Outbox {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Copies `content` into a new entry and describes it.
    pub fn stage(
        &self,
        cell_id: &str,
        name: &str,
        target: &ExportTarget,
        content: &mut dyn std::io::Read,
    ) -> Result<StagedExport, PortError> {
        let id = uuid::Uuid::new_v4().to_string();
        let sink = LocalExportSink::new(&self.root)?;
        let copied = sink.push(&id, DATA, content)?;
        let staged = StagedExport {
            id: id.clone(),
            cell_id: cell_id.to_owned(),
            name: name.to_owned(),
            target: target.clone(),
            sha256: copied.sha256,
            size_bytes: copied.size_bytes,
        };
        let meta = serde_json::to_vec_pretty(&staged).map_err(|e| {
            PortError::new(PortErrorKind::Io, format!("encode the outbox entry: {e}"))
        })?;
        sink.push(&id, META, &mut meta.as_slice())?;
        Ok(staged)
    }

    /// The entry `id`, or a `NotFound` error naming the fix.
    pub fn get(&self, id: &str) -> Result<StagedExport, PortError> {
        let not_found = || {
            PortError::new(
                PortErrorKind::NotFound,
                format!("no export {id:?} waits in the outbox; `cellos export ls` lists them"),
            )
        };
        if id.is_empty() || id.contains('/') || id.starts_with('.') {
            return Err(not_found());
        }
        let path = self.root.join(id).join(META);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(not_found()),
            Err(e) => return Err(io(&path, e)),
        };
        serde_json::from_slice(&text).map_err(|e| {
            PortError::new(
                PortErrorKind::Io,
                format!("outbox entry {} is not readable: {e}", path.display()),
            )
        })
    }

    /// Every waiting entry, sorted by id.
    pub fn list(&self) -> Result<Vec<StagedExport>, PortError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&self.root, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io(&self.root, e))?;
            let id = entry.file_name().to_string_lossy().into_owned();
            // An entry whose description is not written yet is a stage in progress.
            match self.get(&id) {
                Ok(staged) => out.push(staged),
                Err(e) if e.kind == PortErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// The staged bytes of `staged`, for sending.
    pub fn data_path(&self, staged: &StagedExport) -> PathBuf {
        self.root.join(&staged.id).join(DATA)
    }

    /// Opens the staged bytes.
    pub fn open(&self, staged: &StagedExport) -> Result<File, PortError> {
        let path = self.data_path(staged);
        File::open(&path).map_err(|e| io(&path, e))
    }

    /// Removes an entry once its destination has it.
    pub fn remove(&self, staged: &StagedExport) -> Result<(), PortError> {
        let dir = self.root.join(&staged.id);
        std::fs::remove_dir_all(&dir).map_err(|e| io(&dir, e))
    }
}

fn io(path: &Path, e: std::io::Error) -> PortError {
    PortError::new(PortErrorKind::Io, format!("{}: {e}", path.display()))
}

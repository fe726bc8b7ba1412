//! File operations on a registry cell, each write, read and removal recorded with its caller,
//! path, size and SHA-256.

use std::io::Read;

use cellos_core::events::{EventKind, FileRemovedData, FileTransferData};
use cellos_core::session::{FileStat, FileWritten};
use sha2::{Digest, Sha256};

use super::cell::SessionCell;
use super::exec::{port_error, record_action};
use super::{Caller, SessionError};

pub(crate) fn read(
    cell: &SessionCell,
    caller: &Caller,
    path: &str,
    max_bytes: u64,
) -> Result<(FileStat, Vec<u8>), SessionError> {
    cell.touch();
    let (stat, mut content) = cell
        .surface()?
        .read_file(path, max_bytes)
        .map_err(port_error)?;
    let mut bytes = Vec::with_capacity(stat.size.min(max_bytes) as usize);
    content.read_to_end(&mut bytes).map_err(|e| {
        SessionError::Backend(cellos_core::ports::PortError::new(
            cellos_core::ports::PortErrorKind::Io,
            format!("read {path}: {e}"),
        ))
    })?;
    let data = FileTransferData {
        path: path.to_owned(),
        size: bytes.len() as u64,
        sha256: hex_sha256(&bytes),
        caller: caller.subject.clone(),
    };
    record_action(&cell.recorder, caller, EventKind::FileRead, &data)?;
    Ok((stat, bytes))
}

pub(crate) fn write(
    cell: &SessionCell,
    caller: &Caller,
    path: &str,
    content: &[u8],
    mode: Option<u32>,
    max_bytes: u64,
) -> Result<FileWritten, SessionError> {
    cell.touch();
    let mut reader = content;
    let written = cell
        .surface()?
        .write_file(path, &mut reader, mode, max_bytes)
        .map_err(port_error)?;
    let data = FileTransferData {
        path: written.path.clone(),
        size: written.size,
        sha256: written.sha256.clone(),
        caller: caller.subject.clone(),
    };
    record_action(&cell.recorder, caller, EventKind::FileWritten, &data)?;
    Ok(written)
}

pub(crate) fn mkdir(
    cell: &SessionCell,
    caller: &Caller,
    path: &str,
    parents: bool,
) -> Result<(), SessionError> {
    let _ = caller;
    cell.touch();
    cell.surface()?.mkdir(path, parents).map_err(port_error)
}

pub(crate) fn remove(
    cell: &SessionCell,
    caller: &Caller,
    path: &str,
    recursive: bool,
) -> Result<(), SessionError> {
    cell.touch();
    cell.surface()?
        .remove(path, recursive)
        .map_err(port_error)?;
    let data = FileRemovedData {
        path: path.to_owned(),
        recursive,
        caller: caller.subject.clone(),
    };
    record_action(&cell.recorder, caller, EventKind::FileRemoved, &data)
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

//! `keygen`, `verify`, `events`, `project`: the signed event log, read and checked offline.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cellos_adapters::event_log::{read_log, read_log_lines, LIVE_SEGMENT};
use cellos_adapters::keys::{KeyError, KeyStore};
use cellos_core::events::CloudEvent;
use cellos_core::integrity::{SignatureCheck, Verifier};
use cellos_core::projection::project as project_events;

use crate::exit::Failure;
use crate::SignatureMode;

const TYPE_PREFIX: &str = "dev.cellos.events.cell.";

pub fn keygen(home: &Path, force: bool) -> Result<u8, Failure> {
    let store = KeyStore::new(home);
    if store.ed25519_path().exists() && !force {
        let signer = store
            .load_signer()
            .map_err(|e| Failure::other(e.to_string()))?;
        println!(
            "{} (existing key {})",
            signer.kid(),
            store.ed25519_path().display()
        );
        return Ok(0);
    }
    if force {
        // The old public key stays in the trusted directory, so old logs still verify.
        let _ = std::fs::remove_file(store.ed25519_path());
    }
    let key = store
        .generate()
        .map_err(|e| Failure::other(e.to_string()))?;
    let kid = store
        .trust(&key)
        .map_err(|e| Failure::other(e.to_string()))?;
    println!("{kid} (new key {})", store.ed25519_path().display());
    Ok(0)
}

fn log_path(home: &Path, log: Option<PathBuf>) -> PathBuf {
    log.unwrap_or_else(|| home.to_path_buf())
}

/// Verify chain and signatures; name the first bad line and exit 1.
pub fn verify(home: &Path, log: Option<PathBuf>, mode: SignatureMode) -> Result<u8, Failure> {
    let path = log_path(home, log);
    let keyring = KeyStore::new(home).keyring().map_err(|e| match e {
        KeyError::Io { .. } => Failure::other(format!(
            "{e}; run `cellos keygen` or copy the signer's public key into {}",
            KeyStore::new(home).trusted_dir().display()
        )),
        other => Failure::other(other.to_string()),
    })?;
    let lines = read_log_lines(&path)
        .map_err(|e| Failure::other(format!("cannot read {}: {e}", path.display())))?;
    let check = match mode {
        SignatureMode::Every => SignatureCheck::Every,
        SignatureMode::Anchors => SignatureCheck::Anchors,
    };
    let mut verifier = Verifier::with_check(&keyring, check);
    for line in lines {
        let line = line.map_err(|e| Failure::other(format!("{}: {e}", path.display())))?;
        verifier.push(&line);
    }
    let report = verifier.finish();
    match &report.failure {
        None => {
            println!(
                "ok: {} events verified (chain intact, every signature valid; keys: {})",
                report.verified,
                report.kids.iter().cloned().collect::<Vec<_>>().join(", ")
            );
            Ok(0)
        }
        Some(failure) => Err(Failure::other(format!(
            "verification FAILED at {failure} ({} events verified before it)",
            report.verified
        ))),
    }
}

fn matches(event: &CloudEvent, cell: Option<&str>, type_prefix: Option<&str>) -> bool {
    if let Some(cell) = cell {
        if event.cell_id() != Some(cell) {
            return false;
        }
    }
    if let Some(prefix) = type_prefix {
        let short = event.ty.strip_prefix(TYPE_PREFIX).unwrap_or(&event.ty);
        if !event.ty.starts_with(prefix) && !short.starts_with(prefix) {
            return false;
        }
    }
    true
}

fn human(event: &CloudEvent) -> String {
    let short = event.ty.strip_prefix(TYPE_PREFIX).unwrap_or(&event.ty);
    let seq = event
        .cellosseq
        .map(|s| format!("#{s}"))
        .unwrap_or_else(|| "#-".into());
    let mut data = serde_json::to_string(&event.data).unwrap_or_default();
    if data.len() > 160 {
        let mut cut = 157;
        while !data.is_char_boundary(cut) {
            cut -= 1;
        }
        data.truncate(cut);
        data.push_str("...");
    }
    format!(
        "{} {seq:>6} {:<20} {:<38} {data}",
        event.time,
        event.cell_id().unwrap_or("-"),
        short
    )
}

fn print_line(line: &str, cell: Option<&str>, type_prefix: Option<&str>, json: bool) {
    match serde_json::from_str::<CloudEvent>(line) {
        Ok(event) if matches(&event, cell, type_prefix) => {
            if json {
                println!("{line}");
            } else {
                println!("{}", human(&event));
            }
        }
        Ok(_) => {}
        Err(e) => eprintln!("cellos: skipping a line that is not a CloudEvent: {e}"),
    }
}

pub fn events(
    home: &Path,
    cell: Option<String>,
    type_prefix: Option<String>,
    follow: bool,
    json: bool,
) -> Result<u8, Failure> {
    let (cell, type_prefix) = (cell.as_deref(), type_prefix.as_deref());
    if home.join(LIVE_SEGMENT).exists() || !follow {
        let lines = read_log_lines(home)
            .map_err(|e| Failure::other(format!("cannot read {}: {e}", home.display())))?;
        for line in lines {
            let line = line.map_err(|e| Failure::other(e.to_string()))?;
            print_line(&line, cell, type_prefix, json);
        }
    }
    if follow {
        follow_live(&home.join(LIVE_SEGMENT), cell, type_prefix, json)?;
    }
    Ok(0)
}

/// Print lines appended to the live segment from now on, reopening it after a rotation.
fn follow_live(
    live: &Path,
    cell: Option<&str>,
    type_prefix: Option<&str>,
    json: bool,
) -> Result<u8, Failure> {
    let open = |at_end: bool| -> Option<(BufReader<File>, u64)> {
        let mut file = File::open(live).ok()?;
        let ino = file.metadata().ok()?.ino();
        if at_end {
            file.seek(SeekFrom::End(0)).ok()?;
        }
        Some((BufReader::new(file), ino))
    };
    let mut current = open(true);
    let mut line = String::new();
    loop {
        let Some((reader, ino)) = current.as_mut() else {
            std::thread::sleep(Duration::from_millis(200));
            current = open(false);
            continue;
        };
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => {
                let rotated = std::fs::metadata(live)
                    .map(|m| m.ino() != *ino)
                    .unwrap_or(true);
                if rotated {
                    current = open(false);
                } else {
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            Ok(_) if line.ends_with('\n') => print_line(line.trim_end(), cell, type_prefix, json),
            Ok(_) => {
                // A partial line: the writer is mid-append; wait for the rest.
                let back = line.len() as i64;
                let _ = reader.seek_relative(-back);
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(Failure::other(format!("{}: {e}", live.display()))),
        }
    }
}

pub fn project(home: &Path, log: Option<PathBuf>) -> Result<u8, Failure> {
    let path = log_path(home, log);
    let events = read_log(&path).map_err(|e| Failure::other(e.to_string()))?;
    let cells = project_events(&events);
    let text = serde_json::to_string_pretty(&cells)
        .map_err(|e| Failure::other(format!("cannot print projection: {e}")))?;
    println!("{text}");
    Ok(0)
}

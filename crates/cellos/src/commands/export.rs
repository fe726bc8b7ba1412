//! `export ls`, `export retry`: artifacts that did not reach their `http` or `s3` destination
//! wait in the host's outbox until they are sent again.

use std::path::{Path, PathBuf};

use cellos_adapters::export::{deliver, destination, ExportSecrets};
use cellos_core::events::ExportFailedData;
use cellos_core::ports::EventSink;
use time::OffsetDateTime;

use crate::compose;
use crate::exit::Failure;

/// Lists the waiting exports.
pub fn ls(home: &Path, json: bool) -> Result<u8, Failure> {
    let waiting = compose::outbox(home)
        .list()
        .map_err(|e| Failure::cellos(e.to_string()))?;
    if json {
        let text = serde_json::to_string_pretty(&waiting)
            .map_err(|e| Failure::cellos(format!("encode the outbox: {e}")))?;
        println!("{text}");
        return Ok(0);
    }
    if waiting.is_empty() {
        println!("no exports wait in the outbox");
    }
    for staged in &waiting {
        println!(
            "{}  {}  {}  {} bytes  -> {}",
            staged.id,
            staged.cell_id,
            staged.name,
            staged.size_bytes,
            destination(&staged.target, &staged.cell_id, &staged.name)
        );
    }
    Ok(0)
}

/// Sends export `id` again with its target's retries, and records the outcome as the cell's
/// `export.v1.completed` or `export.v1.failed`. Exit 0 when it arrived, 1 when it is still
/// waiting.
pub fn retry(home: &Path, id: &str, secrets_dir: Option<PathBuf>) -> Result<u8, Failure> {
    let outbox = compose::outbox(home);
    let staged = outbox.get(id).map_err(|e| Failure::cellos(e.to_string()))?;
    let brokers = compose::secret_brokers(home, secrets_dir);
    let result = deliver(&outbox, &staged, &ExportSecrets::new(brokers.clone()));
    for broker in &brokers {
        let _ = broker.revoke_for_cell(&staged.cell_id);
    }
    let (log, factory) = compose::event_log(home, "export")?;
    let now = OffsetDateTime::now_utc();
    let (event, code) = match &result {
        Ok(receipt) => {
            println!(
                "export {id}: {} ({} bytes, sha256 {}) after {} attempt(s)",
                receipt.destination, receipt.size_bytes, receipt.sha256, receipt.attempts
            );
            (factory.export_completed(now, &staged.cell_id, receipt), 0)
        }
        Err(err) => {
            eprintln!("cellos: export {id}: {err}");
            let data = ExportFailedData {
                artifact: staged.name.clone(),
                target_kind: staged.target.kind,
                target_name: Some(staged.target.name.clone()),
                destination: destination(&staged.target, &staged.cell_id, &staged.name),
                reason: err.to_string(),
            };
            (factory.export_failed(now, &staged.cell_id, &data), 1)
        }
    };
    log.emit(event)
        .map_err(|e| Failure::cellos(format!("record the export: {e}")))?;
    Ok(code)
}

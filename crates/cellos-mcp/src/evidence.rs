//! `sandbox_evidence`: what one cell did and was refused, read back from the signed log and
//! verified whole (chain and every signature) on each call, so what an agent is shown is what
//! `cellos verify` would vouch for.

use std::path::Path;

use cellos_adapters::event_log::read_log_lines;
use cellos_adapters::keys::KeyStore;
use cellos_core::events::{CloudEvent, EventKind};
use cellos_core::integrity::Verifier;
use serde::Serialize;
use serde_json::Value;

/// Why the log could not be read (a verification failure is not an error: it is reported).
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("the host's trusted keys: {0}")]
    Keys(#[from] cellos_adapters::keys::KeyError),
    #[error("reading the event log {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

/// One event of the cell, as recorded.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub seq: Option<u64>,
    pub time: String,
    /// Who asked (`uid:0`, `token:api`); absent for what the cell did on its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    pub data: Value,
}

/// What the log says about one cell.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    pub id: String,
    /// Whether the whole log verified: hash chain intact and every signature valid.
    pub chain_verified: bool,
    pub events_verified: u64,
    /// The first bad line, when the log did not verify.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_failure: Option<String>,
    /// Events of this cell in the log.
    pub events: usize,
    pub admission: Vec<Entry>,
    pub execs: Vec<Entry>,
    pub files: Vec<Entry>,
    pub dns_permitted: Vec<Entry>,
    pub dns_refused: Vec<Entry>,
    pub flows_allowed: Vec<Entry>,
    pub flows_denied: Vec<Entry>,
    /// `limit.v1.hit` events, and execs killed at their `timeoutMs`.
    pub limits_hit: Vec<Entry>,
    pub violations: Vec<Entry>,
    pub isolation: Vec<Entry>,
    pub network: Vec<Entry>,
    pub lifecycle: Vec<Entry>,
}

/// The evidence of cell `id` in the log under `home`.
pub fn collect(home: &Path, id: &str) -> Result<Evidence, EvidenceError> {
    let keyring = KeyStore::new(home).keyring()?;
    let read_error = |source| EvidenceError::Read {
        path: home.display().to_string(),
        source,
    };
    let mut verifier = Verifier::new(&keyring);
    let mut evidence = Evidence {
        id: id.to_owned(),
        ..Evidence::default()
    };
    for line in read_log_lines(home).map_err(read_error)? {
        let line = line.map_err(read_error)?;
        verifier.push(&line);
        let Ok(event) = serde_json::from_str::<CloudEvent>(&line) else {
            continue;
        };
        if event.cell_id() == Some(id) {
            evidence.add(event);
        }
    }
    let report = verifier.finish();
    evidence.chain_verified = report.failure.is_none();
    evidence.events_verified = report.verified;
    evidence.verify_failure = report.failure.map(|f| f.to_string());
    Ok(evidence)
}

impl Evidence {
    fn add(&mut self, event: CloudEvent) {
        self.events += 1;
        let Some(kind) = event.kind() else { return };
        let flow_denied = event.data.get("decision").and_then(Value::as_str) == Some("deny");
        // An exec killed at its timeoutMs hit a limit the supervisor enforces: listed under
        // both, so `limitsHit` is every limit the cell ran into.
        let timed_out = kind == EventKind::ExecCompleted
            && event.data.get("timedOut").and_then(Value::as_bool) == Some(true);
        let entry = Entry {
            seq: event.cellosseq,
            time: event.time,
            actor: event.cellosactor,
            data: with_kind(
                event.data,
                event
                    .ty
                    .trim_start_matches(cellos_core::events::TYPE_PREFIX),
            ),
        };
        let bucket = match kind {
            EventKind::AdmissionDecided => &mut self.admission,
            EventKind::ExecStarted | EventKind::ExecCompleted | EventKind::CommandCompleted => {
                &mut self.execs
            }
            EventKind::FileWritten | EventKind::FileRead | EventKind::FileRemoved => {
                &mut self.files
            }
            EventKind::DnsQueryPermitted => &mut self.dns_permitted,
            EventKind::DnsQueryRefused => &mut self.dns_refused,
            EventKind::FlowDecided if flow_denied => &mut self.flows_denied,
            EventKind::FlowDecided => &mut self.flows_allowed,
            EventKind::LimitHit => &mut self.limits_hit,
            EventKind::ViolationDetected => &mut self.violations,
            EventKind::IsolationEnforced => &mut self.isolation,
            EventKind::NetworkEnforced | EventKind::NetworkSummary => &mut self.network,
            _ => &mut self.lifecycle,
        };
        let limit = timed_out.then(|| entry.clone());
        bucket.push(entry);
        self.limits_hit.extend(limit);
    }
}

/// The event's data with its type (`exec.v1.completed`) added, so a mixed list reads alone.
fn with_kind(data: Value, kind: &str) -> Value {
    match data {
        Value::Object(mut map) => {
            map.insert("event".into(), Value::String(kind.to_owned()));
            Value::Object(map)
        }
        other => serde_json::json!({ "event": kind, "value": other }),
    }
}

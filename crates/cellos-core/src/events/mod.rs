//! Event catalogue: the CloudEvents 1.0 envelope, the typed payload of every event family, and
//! a factory that builds them.
//!
//! Every line of the event log is one [`CloudEvent`] in structured JSON mode. The integrity
//! attributes (`cellosseq`, `cellosprev`, `celloskid`, `cellossig`) are CloudEvents extension
//! attributes serialized flat at the top level, so any CloudEvents SDK reads the log as-is.

mod compliance;
mod data;
mod factory;
mod kind;
mod telemetry;

use serde::{Deserialize, Serialize};

pub use compliance::ComplianceCounts;
pub use data::*;
pub use factory::{EventFactory, IdGenerator};
pub use kind::{EventKind, TYPE_PREFIX};
pub use telemetry::*;

/// CloudEvents specification version this catalogue speaks.
pub const SPEC_VERSION: &str = "1.0";
/// `datacontenttype` of every CellOS event.
pub const DATA_CONTENT_TYPE: &str = "application/json";
/// Prefix of a cell's subject URN.
pub const CELL_URN_PREFIX: &str = "urn:cellos:cell:";

/// A CloudEvents 1.0 structured-mode event, as written to and read from the event log.
///
/// `time` is kept as the RFC 3339 text it was written with: integrity is computed over the
/// exact serialized form, and re-formatting a parsed timestamp could change it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent {
    pub specversion: String,
    /// Unique per `source` (a UUID in practice; assigned by [`EventFactory`]'s id generator).
    pub id: String,
    /// `//cellos/<hostname>/<component>`.
    pub source: String,
    /// `dev.cellos.events.cell.<family>.v1.<name>`; see [`EventKind`].
    #[serde(rename = "type")]
    pub ty: String,
    /// `urn:cellos:cell:<cell-id>`; see [`cell_subject_urn`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// RFC 3339 timestamp of the occurrence.
    pub time: String,
    pub datacontenttype: String,
    pub data: serde_json::Value,
    /// Who asked for what this event records (`uid:0`, `token:<subject>`), when an API
    /// caller did; absent for what a cell did on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cellosactor: Option<String>,
    /// Position in the stream, starting at 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cellosseq: Option<u64>,
    /// Hex SHA-256 of the previous event's canonical bytes ("0" × 64 for the first event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cellosprev: Option<String>,
    /// Id of the key that produced `cellossig`, e.g. `ed25519:<16 hex>` or `hmac:<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub celloskid: Option<String>,
    /// Hex signature over the canonical bytes of the event without `cellossig`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cellossig: Option<String>,
}

impl CloudEvent {
    /// The catalogued kind of this event, or `None` for a type this catalogue does not know.
    pub fn kind(&self) -> Option<EventKind> {
        EventKind::from_type(&self.ty)
    }

    /// The cell this event is about, taken from its subject URN.
    pub fn cell_id(&self) -> Option<&str> {
        self.subject.as_deref().and_then(cell_id_from_subject)
    }

    /// Whether the integrity attributes have been filled in by a sealer.
    pub fn is_sealed(&self) -> bool {
        self.cellosseq.is_some()
            && self.cellosprev.is_some()
            && self.celloskid.is_some()
            && self.cellossig.is_some()
    }
}

/// Subject URN of a cell: `urn:cellos:cell:<cell-id>`.
pub fn cell_subject_urn(cell_id: &str) -> String {
    format!("{CELL_URN_PREFIX}{cell_id}")
}

/// The cell id inside a subject URN made by [`cell_subject_urn`].
pub fn cell_id_from_subject(subject: &str) -> Option<&str> {
    subject
        .strip_prefix(CELL_URN_PREFIX)
        .filter(|id| !id.is_empty())
}

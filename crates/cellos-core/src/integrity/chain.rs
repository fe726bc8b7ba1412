//! The hash chain: sealing events one after another.

use serde::{Deserialize, Serialize};

use crate::events::CloudEvent;

use super::canonical::{canonical_bytes, canonical_value_bytes, sha256_hex, GENESIS_PREV};
use super::{IntegrityError, Signer};

/// Where a stream stands: the last sequence number and the hash of the last event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    pub seq: u64,
    /// Hex SHA-256 of the last event's full canonical bytes.
    pub hash: String,
}

impl Default for ChainHead {
    fn default() -> Self {
        Self::genesis()
    }
}

impl ChainHead {
    /// The head of an empty stream: the next event gets seq 1 and `cellosprev` = "0" × 64.
    pub fn genesis() -> Self {
        Self {
            seq: 0,
            hash: GENESIS_PREV.to_owned(),
        }
    }

    /// The head after `line`, the last line of a stream. Only the sequence number is trusted
    /// here; whether the line is authentic is `verify`'s job.
    pub fn after_line(line: &str) -> Result<Self, IntegrityError> {
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| IntegrityError::BadHead(format!("not JSON ({e})")))?;
        let seq = value
            .get("cellosseq")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| IntegrityError::BadHead("no numeric cellosseq".to_owned()))?;
        let canonical = canonical_value_bytes(&value)?;
        Ok(Self {
            seq,
            hash: sha256_hex(&canonical),
        })
    }
}

/// An event with its integrity attributes, and the exact line to store.
#[derive(Debug, Clone, PartialEq)]
pub struct SealedEvent {
    pub event: CloudEvent,
    /// The event's full canonical JSON (no trailing newline). Storing the canonical form makes
    /// every line byte-for-byte reproducible by a verifier.
    pub line: String,
}

/// Seal `event` as the successor of `head`: returns the sealed event and the new head.
/// Pure: `head` is not modified, so a caller whose write fails simply keeps the old head.
pub fn seal(
    mut event: CloudEvent,
    head: &ChainHead,
    signer: &Signer,
) -> Result<(SealedEvent, ChainHead), IntegrityError> {
    let seq = head.seq.saturating_add(1);
    event.cellosseq = Some(seq);
    event.cellosprev = Some(head.hash.clone());
    event.celloskid = Some(signer.kid().to_owned());
    event.cellossig = None;
    let signed_bytes = canonical_bytes(&event)?;
    event.cellossig = Some(signer.sign(&signed_bytes));
    let bytes = canonical_value_bytes(&serde_json::to_value(&event)?)?;
    // Both canonical serializers write UTF-8, so this is an exact copy.
    let line = String::from_utf8_lossy(&bytes).into_owned();
    let next = ChainHead {
        seq,
        hash: sha256_hex(line.as_bytes()),
    };
    Ok((SealedEvent { event, line }, next))
}

/// A signer plus the head of the stream it extends.
#[derive(Debug)]
pub struct Sealer {
    signer: Signer,
    head: ChainHead,
}

impl Sealer {
    /// Continue the stream at `head` (use [`ChainHead::genesis`] for a new stream).
    pub fn new(signer: Signer, head: ChainHead) -> Self {
        Self { signer, head }
    }

    /// Seal the next event and advance the head.
    pub fn seal(&mut self, event: CloudEvent) -> Result<SealedEvent, IntegrityError> {
        let (sealed, next) = seal(event, &self.head, &self.signer)?;
        self.head = next;
        Ok(sealed)
    }

    pub fn head(&self) -> &ChainHead {
        &self.head
    }

    /// Move to `head`, e.g. after learning that another writer extended the stream.
    pub fn set_head(&mut self, head: ChainHead) {
        self.head = head;
    }

    pub fn signer(&self) -> &Signer {
        &self.signer
    }
}

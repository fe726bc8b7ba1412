//! Verifying a whole stream: every chain link and every signature, naming the first bad event.
//!
//! Speed matters because `verify` runs over whole logs. Lines are processed in chunks: parsing,
//! canonicalization and hashing of a chunk run on all cores, the chain links are then checked
//! in order, and the chunk's Ed25519 signatures are checked with batch verification (again
//! split across cores). Only when a batch fails are its signatures checked one by one, to find
//! the first bad one.

use std::borrow::Cow;
use std::collections::BTreeSet;

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::canonical::{canonical_value_bytes, sha256_hex};
use super::keys::TrustedKey;
use super::{ChainHead, Keyring};
use crate::events::SPEC_VERSION;

/// Lines per chunk: large enough to amortize thread start-up, small enough to bound memory.
const CHUNK_LINES: usize = 4096;
/// Below this many lines a chunk is processed on the calling thread.
const PARALLEL_MIN_LINES: usize = 256;
/// More threads than this do not pay off for a single log.
const MAX_THREADS: usize = 8;

/// What is wrong with the first bad line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FailureKind {
    /// The content does not match its signature, or the chain hash does not match the content
    /// of the previous event.
    Tampered,
    /// The sequence goes backwards, or the expected event appears later in the stream.
    Reordered,
    /// The expected event is nowhere in the stream (deleted, or the stream was truncated at
    /// its start).
    Missing,
    /// The signature is not a well-formed signature for its key type.
    BadSignature,
    /// The event names a key id that is not in the keyring.
    UnknownKey,
    /// The line is not JSON, not a CloudEvent, or has no integrity attributes.
    Unparseable,
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FailureKind::Tampered => "tampered",
            FailureKind::Reordered => "reordered",
            FailureKind::Missing => "missing",
            FailureKind::BadSignature => "bad signature",
            FailureKind::UnknownKey => "unknown key",
            FailureKind::Unparseable => "unparseable",
        })
    }
}

/// The first bad event of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyFailure {
    /// 1-based line number (across the whole stream) where the problem shows.
    pub line: u64,
    /// The sequence number that is bad: for `missing` and `reordered` the one that was expected
    /// at this line; otherwise the line's own (absent when it could not be read).
    pub seq: Option<u64>,
    pub kind: FailureKind,
    pub detail: String,
}

impl std::fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}", self.line)?;
        if let Some(seq) = self.seq {
            write!(f, " (seq {seq})")?;
        }
        write!(f, ": {}: {}", self.kind, self.detail)
    }
}

/// Result of verifying a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    /// Lines read.
    pub lines: u64,
    /// Events verified before the first failure (all of them when `failure` is `None`).
    pub verified: u64,
    /// Head after the last verified event.
    pub head: ChainHead,
    /// Key ids that signed the verified events.
    pub kids: BTreeSet<String>,
    pub failure: Option<VerifyFailure>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.failure.is_none()
    }
}

/// Which signatures a verifier checks. Both modes check every line's form, sequence number,
/// chain link and key id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SignatureCheck {
    /// Every signature (batched). Also catches a writer that produced an invalid signature.
    #[default]
    Every,
    /// Only anchor signatures: the last event of each run of one key id within a chunk of
    /// lines. Each signature covers `cellosprev`, which fixes (through SHA-256) every earlier
    /// event's full bytes, so a valid anchor authenticates all events before it exactly as
    /// well as checking each of them would. What it does not check is that the writer signed
    /// the events in between correctly. When an anchor fails, every signature up to it is
    /// checked to name the first bad event. Several times faster than [`Self::Every`].
    Anchors,
}

/// Verify a whole stream that starts at the genesis event, checking every signature.
pub fn verify_stream<'a>(lines: impl Iterator<Item = &'a str>, keys: &Keyring) -> VerifyReport {
    verify_stream_with(lines, keys, SignatureCheck::Every)
}

/// [`verify_stream`] with a choice of which signatures to check.
pub fn verify_stream_with<'a>(
    lines: impl Iterator<Item = &'a str>,
    keys: &Keyring,
    check: SignatureCheck,
) -> VerifyReport {
    let mut verifier = Verifier::with_check(keys, check);
    for line in lines {
        verifier.push(line);
    }
    verifier.finish()
}

/// One line, parsed and hashed, before its links and signature are checked.
struct Parsed {
    seq: u64,
    prev: String,
    kid: String,
    signature: Vec<u8>,
    /// What the signature covers: the event without `cellossig`.
    signed: Signed,
    /// Hash of the full canonical bytes: what the next event's `cellosprev` must be.
    hash: String,
}

/// A broken link, and the sequence number a gap leaves awaited.
struct LinkFailure {
    failure: VerifyFailure,
    awaiting: Option<u64>,
}

/// The signed content of an event: canonical bytes, or (when only anchor signatures are
/// checked) the parsed event, canonicalized only if its signature is checked after all.
enum Signed {
    Bytes(Vec<u8>),
    Deferred(Value),
}

impl Parsed {
    fn signed_bytes(&self) -> Cow<'_, [u8]> {
        match &self.signed {
            Signed::Bytes(bytes) => Cow::Borrowed(bytes),
            // This value was canonicalized once already (for the chain hash), with one more
            // member, so it cannot fail now; empty bytes would fail verification anyway.
            Signed::Deferred(value) => Cow::Owned(canonical_value_bytes(value).unwrap_or_default()),
        }
    }
}

struct LineError {
    seq: Option<u64>,
    kind: FailureKind,
    detail: String,
}

impl LineError {
    fn unparseable(detail: impl Into<String>) -> Self {
        Self {
            seq: None,
            kind: FailureKind::Unparseable,
            detail: detail.into(),
        }
    }
}

fn string_attr<'v>(object: &'v serde_json::Map<String, Value>, name: &str) -> Option<&'v str> {
    object.get(name).and_then(Value::as_str)
}

fn parse_line(line: &str, check: SignatureCheck) -> Result<Parsed, LineError> {
    let mut value: Value =
        serde_json::from_str(line).map_err(|e| LineError::unparseable(format!("not JSON: {e}")))?;
    let object = value
        .as_object()
        .ok_or_else(|| LineError::unparseable("not a JSON object"))?;
    if string_attr(object, "specversion") != Some(SPEC_VERSION) {
        return Err(LineError::unparseable(
            "not a CloudEvent: specversion is not \"1.0\"",
        ));
    }
    for attribute in ["id", "source", "type"] {
        if string_attr(object, attribute).is_none_or(str::is_empty) {
            return Err(LineError::unparseable(format!(
                "not a CloudEvent: no `{attribute}` attribute"
            )));
        }
    }
    let seq = object
        .get("cellosseq")
        .and_then(Value::as_u64)
        .ok_or_else(|| {
            LineError::unparseable("no numeric `cellosseq`: the event was never sealed")
        })?;
    let attr = |name: &'static str| {
        string_attr(object, name)
            .map(str::to_owned)
            .ok_or_else(|| LineError {
                seq: Some(seq),
                kind: FailureKind::Unparseable,
                detail: format!("no `{name}` attribute: the event was never sealed"),
            })
    };
    let prev = attr("cellosprev")?;
    let kid = attr("celloskid")?;
    let signature_hex = attr("cellossig")?;
    let signature = hex::decode(&signature_hex).map_err(|e| LineError {
        seq: Some(seq),
        kind: FailureKind::BadSignature,
        detail: format!("`cellossig` is not hex: {e}"),
    })?;
    let canonical = |value: &Value| {
        canonical_value_bytes(value).map_err(|e| LineError {
            seq: Some(seq),
            kind: FailureKind::Unparseable,
            detail: format!("cannot canonicalize (RFC 8785): {e}"),
        })
    };
    let hash = sha256_hex(&canonical(&value)?);
    if let Some(object) = value.as_object_mut() {
        object.remove("cellossig");
    }
    let signed = match check {
        SignatureCheck::Every => Signed::Bytes(canonical(&value)?),
        SignatureCheck::Anchors => Signed::Deferred(value),
    };
    Ok(Parsed {
        seq,
        prev,
        kid,
        signature,
        signed,
        hash,
    })
}

/// Run `work` over `items` split into one part per thread, keeping the order of results.
fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    work: impl Fn(usize, &[T]) -> Vec<R> + Sync,
) -> Vec<R> {
    if threads <= 1 || items.len() < PARALLEL_MIN_LINES {
        return work(0, items);
    }
    let part = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(part)
            .enumerate()
            .map(|(i, chunk)| {
                let work = &work;
                scope.spawn(move || work(i * part, chunk))
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(results) => results,
                // A worker only panics if `work` does; surface that on this thread.
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

/// An Ed25519 signature waiting for batch verification.
#[derive(Clone)]
struct PendingSig {
    index: usize,
    signature: Signature,
    key: VerifyingKey,
}

/// Index (within the chunk) of the first pending signature that does not verify.
fn first_bad_signature(
    pending: &[PendingSig],
    parsed: &[Result<Parsed, LineError>],
    threads: usize,
) -> Option<usize> {
    let found = parallel_map(pending, threads, |_, part| {
        let owned: Vec<Cow<'_, [u8]>> = part
            .iter()
            .map(|p| {
                parsed[p.index]
                    .as_ref()
                    .map_or(Cow::Borrowed(&[][..]), Parsed::signed_bytes)
            })
            .collect();
        let messages: Vec<&[u8]> = owned.iter().map(|m| m.as_ref()).collect();
        let signatures: Vec<Signature> = part.iter().map(|p| p.signature).collect();
        let keys: Vec<VerifyingKey> = part.iter().map(|p| p.key).collect();
        if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok() {
            return Vec::new();
        }
        part.iter()
            .zip(&messages)
            .find(|(p, message)| p.key.verify_strict(message, &p.signature).is_err())
            .map(|(p, _)| p.index)
            .into_iter()
            .collect()
    });
    found.into_iter().min()
}

/// Incremental verifier: push lines in order, then [`Verifier::finish`].
pub struct Verifier<'k> {
    keys: &'k Keyring,
    threads: usize,
    check: SignatureCheck,
    pending: Vec<String>,
    lines: u64,
    head: ChainHead,
    verified: u64,
    kids: BTreeSet<String>,
    failure: Option<VerifyFailure>,
    /// Sequence number missing at the failure line, while later lines may still show it
    /// (which makes it a reordering rather than a gap).
    awaiting: Option<u64>,
}

impl<'k> Verifier<'k> {
    /// Verifier for a stream starting at the genesis event.
    pub fn new(keys: &'k Keyring) -> Self {
        Self::with_check(keys, SignatureCheck::Every)
    }

    /// Verifier for a stream starting at the genesis event, checking `check` signatures.
    pub fn with_check(keys: &'k Keyring, check: SignatureCheck) -> Self {
        let threads = std::thread::available_parallelism()
            .map_or(1, std::num::NonZeroUsize::get)
            .min(MAX_THREADS);
        Self {
            keys,
            threads,
            check,
            pending: Vec::with_capacity(CHUNK_LINES),
            lines: 0,
            head: ChainHead::genesis(),
            verified: 0,
            kids: BTreeSet::new(),
            failure: None,
            awaiting: None,
        }
    }

    /// Feed the next line (without its newline).
    pub fn push(&mut self, line: &str) {
        self.lines += 1;
        if self.failure.is_some() {
            self.look_for_awaited(line, self.lines);
            return;
        }
        self.pending.push(line.to_owned());
        if self.pending.len() >= CHUNK_LINES {
            self.process_pending();
        }
    }

    /// Verify what is left and report.
    pub fn finish(mut self) -> VerifyReport {
        self.process_pending();
        VerifyReport {
            lines: self.lines,
            verified: self.verified,
            head: self.head,
            kids: self.kids,
            failure: self.failure,
        }
    }

    /// After a gap: if `line` (number `line_no`) carries the missing sequence number, the
    /// events were reordered rather than lost.
    fn look_for_awaited(&mut self, line: &str, line_no: u64) {
        let Some(expected) = self.awaiting else {
            return;
        };
        let seq = serde_json::from_str::<Value>(line)
            .ok()
            .and_then(|v| v.get("cellosseq").and_then(Value::as_u64));
        if seq == Some(expected) {
            self.awaiting = None;
            if let Some(failure) = &mut self.failure {
                failure.kind = FailureKind::Reordered;
                failure.detail = format!(
                    "{}; seq {expected} appears later, at line {line_no}",
                    failure.detail
                );
            }
        }
    }

    fn process_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let lines = std::mem::take(&mut self.pending);
        let first_line = self.lines - lines.len() as u64 + 1;
        let check = self.check;
        let parsed = parallel_map(&lines, self.threads, |_, part| {
            part.iter().map(|line| parse_line(line, check)).collect()
        });

        // Chain links, keys and HMAC signatures, in order, up to the first broken one.
        let start_head = self.head.clone();
        let mut head = start_head.clone();
        let mut structural: Option<(usize, LinkFailure)> = None;
        let mut pending_sigs = Vec::new();
        for (index, result) in parsed.iter().enumerate() {
            let line = first_line + index as u64;
            match self.check_link(&head, result) {
                Ok(Some(sig)) => pending_sigs.push(PendingSig { index, ..sig }),
                Ok(None) => {}
                Err(mut link) => {
                    link.failure.line = line;
                    structural = Some((index, link));
                    break;
                }
            }
            if let Ok(p) = result {
                head = ChainHead {
                    seq: p.seq,
                    hash: p.hash.clone(),
                };
            }
        }

        // Ed25519 signatures of everything before the structural failure, in batches.
        let bad_sig = match self.check {
            SignatureCheck::Every => first_bad_signature(&pending_sigs, &parsed, self.threads),
            SignatureCheck::Anchors => {
                let anchors: Vec<PendingSig> = pending_sigs
                    .iter()
                    .enumerate()
                    .filter(|(i, sig)| {
                        pending_sigs
                            .get(i + 1)
                            .is_none_or(|next| next.key != sig.key)
                    })
                    .map(|(_, sig)| sig.clone())
                    .collect();
                first_bad_signature(&anchors, &parsed, self.threads)
                    .and_then(|_| first_bad_signature(&pending_sigs, &parsed, self.threads))
            }
        };
        let ok_until = match (bad_sig, &structural) {
            (Some(index), _) => {
                let seq = parsed[index].as_ref().ok().map(|p| p.seq);
                self.failure = Some(VerifyFailure {
                    line: first_line + index as u64,
                    seq,
                    kind: FailureKind::Tampered,
                    detail: "the signature does not match the content".to_owned(),
                });
                index
            }
            (None, Some((index, link))) => {
                self.failure = Some(link.failure.clone());
                self.awaiting = link.awaiting;
                *index
            }
            (None, None) => parsed.len(),
        };

        // Record the verified prefix.
        self.head = start_head;
        for p in parsed[..ok_until].iter().flatten() {
            self.head = ChainHead {
                seq: p.seq,
                hash: p.hash.clone(),
            };
            self.kids.insert(p.kid.clone());
            self.verified += 1;
        }

        for (offset, line) in lines.iter().enumerate().skip(ok_until + 1) {
            if self.awaiting.is_none() {
                break;
            }
            self.look_for_awaited(line, first_line + offset as u64);
        }
    }

    /// Check one parsed line against the head before it. Returns the Ed25519 signature to
    /// batch-verify, or the failure (with the sequence number a gap leaves awaited).
    fn check_link(
        &self,
        head: &ChainHead,
        result: &Result<Parsed, LineError>,
    ) -> Result<Option<PendingSig>, LinkFailure> {
        let fail = |seq: Option<u64>, kind: FailureKind, detail: String| LinkFailure {
            failure: VerifyFailure {
                line: 0,
                seq,
                kind,
                detail,
            },
            awaiting: None,
        };
        let p = match result {
            Ok(p) => p,
            Err(e) => return Err(fail(e.seq, e.kind, e.detail.clone())),
        };
        let expected = head.seq.saturating_add(1);
        if p.seq < expected {
            let detail = format!(
                "expected seq {expected}, found {} (sequence goes backwards)",
                p.seq
            );
            return Err(fail(Some(expected), FailureKind::Reordered, detail));
        }
        if p.seq > expected {
            let detail = format!("expected seq {expected}, found {}", p.seq);
            return Err(LinkFailure {
                awaiting: Some(expected),
                ..fail(Some(expected), FailureKind::Missing, detail)
            });
        }
        if p.prev != head.hash {
            let detail = format!(
                "`cellosprev` {} does not match the hash of the previous event {}",
                p.prev, head.hash
            );
            return Err(fail(Some(p.seq), FailureKind::Tampered, detail));
        }
        let Some(key) = self.keys.get(&p.kid) else {
            let detail = format!(
                "key `{}` is not in the keyring; add its public key to the trusted keys",
                p.kid
            );
            return Err(fail(Some(p.seq), FailureKind::UnknownKey, detail));
        };
        if p.signature.len() != key.signature_len() {
            let detail = format!(
                "`cellossig` has {} bytes; a signature by `{}` has {}",
                p.signature.len(),
                p.kid,
                key.signature_len()
            );
            return Err(fail(Some(p.seq), FailureKind::BadSignature, detail));
        }
        match key {
            TrustedKey::Ed25519(vk) => match Signature::from_slice(&p.signature) {
                Ok(signature) => Ok(Some(PendingSig {
                    index: 0,
                    signature,
                    key: *vk,
                })),
                Err(e) => Err(fail(Some(p.seq), FailureKind::BadSignature, e.to_string())),
            },
            TrustedKey::Hmac(_) if key.verify(&p.signed_bytes(), &p.signature) => Ok(None),
            TrustedKey::Hmac(_) => Err(fail(
                Some(p.seq),
                FailureKind::Tampered,
                "the signature does not match the content".to_owned(),
            )),
        }
    }
}

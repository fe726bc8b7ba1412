//! The guest-to-host wire format.
//!
//! A frame is a `u32` little-endian payload length followed by that many bytes of one CBOR map:
//!
//! | key | CBOR type | meaning |
//! | --- | --- | --- |
//! | `content_version` | uint ≤ u16 | major in the high byte, minor in the low byte |
//! | `probe_source` | text | one of [`ProbeSource`] |
//! | `guest_pid` | uint ≤ u32 | pid (in the cell's pid namespace) the frame is about |
//! | `guest_comm` | text | that process's command name |
//! | `guest_monotonic_ns` | uint | guest `CLOCK_MONOTONIC` when the probe fired |
//! | `detail` | map text → text, optional | bounded free-form detail |
//!
//! The guest cannot attribute its own frames: [`GuestFrame`] has no field for a cell, run, spec
//! or receive time, and the decoder drops any such key (and any other unknown key) wherever it
//! appears, counting what it dropped. Attribution comes only from which socket the bytes arrived
//! on (the host receiver in `cellos-telemetry`).
//!
//! Everything the decoder accepts is bounded: the payload ([`MAX_FRAME_BYTES`]), each text, the
//! detail map, and CBOR nesting (ciborium's recursion limit). Unknown major versions and unknown
//! probe sources are rejected, never guessed at.

use std::collections::BTreeMap;

use ciborium::value::{Integer, Value};

/// Path of the telemetry socket inside the cell: where the host bind-mounts the cell's socket
/// and where the agent connects unless told otherwise. Both sides read it from here.
pub const IN_CELL_SOCKET_PATH: &str = "/run/cellos/telemetry.sock";
/// Wire major version this build speaks. A frame with any other major is rejected.
pub const WIRE_MAJOR: u8 = 1;
/// Wire minor version this build writes. Minors are additive and never rejected.
pub const WIRE_MINOR: u8 = 0;
/// `content_version` this build writes.
pub const CONTENT_VERSION: u16 = ((WIRE_MAJOR as u16) << 8) | WIRE_MINOR as u16;
/// Bytes of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;
/// Largest accepted payload (the CBOR map, without the prefix).
pub const MAX_FRAME_BYTES: usize = 8 * 1024;
/// Most entries accepted in `detail`.
pub const MAX_DETAIL_ENTRIES: usize = 16;
/// Longest accepted `detail` key.
pub const MAX_DETAIL_KEY_BYTES: usize = 64;
/// Longest accepted `detail` value.
pub const MAX_DETAIL_VALUE_BYTES: usize = 1024;
/// Longest accepted `guest_comm` (the kernel's is 15 bytes; leave room for a full argv0 name).
pub const MAX_COMM_BYTES: usize = 64;
/// Longest accepted name after `custom.`.
pub const MAX_CUSTOM_NAME_BYTES: usize = 64;

/// Keys a guest might use to claim attribution. They are dropped from the top-level map and from
/// `detail`; the host stamps attribution itself.
pub const ATTRIBUTION_KEYS: &[&str] = &[
    "cell_id",
    "cellId",
    "run_id",
    "runId",
    "spec_hash",
    "specHash",
    "spec_signature_hash",
    "specSignatureHash",
    "host_received_at",
    "hostReceivedAt",
    "authority",
];

const KEY_CONTENT_VERSION: &str = "content_version";
const KEY_PROBE_SOURCE: &str = "probe_source";
const KEY_GUEST_PID: &str = "guest_pid";
const KEY_GUEST_COMM: &str = "guest_comm";
const KEY_GUEST_MONOTONIC_NS: &str = "guest_monotonic_ns";
const KEY_DETAIL: &str = "detail";

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("frame length {len} exceeds the {max}-byte cap: send smaller frames (trim `detail`)")]
    Oversized { len: usize, max: usize },
    #[error("frame length is 0: every frame carries a CBOR map")]
    Empty,
    #[error("frame truncated: {missing} more byte(s) were announced than arrived")]
    Truncated { missing: usize },
    #[error("payload is not one well-formed CBOR value: {0}")]
    Cbor(String),
    #[error("payload has {0} byte(s) after the CBOR map: send exactly one map per frame")]
    TrailingBytes(usize),
    #[error("payload is not a CBOR map: encode the frame as a map with text keys")]
    NotAMap,
    #[error("map key is not text: every key of the frame and of `detail` is a text string")]
    NonTextKey,
    #[error("key `{0}` appears more than once")]
    DuplicateKey(String),
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    #[error("field `{field}` must be {expected}")]
    FieldType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("unsupported wire major version {major} (content_version {content_version:#06x}); this host speaks major {supported}")]
    UnsupportedMajor {
        content_version: u16,
        major: u8,
        supported: u8,
    },
    #[error("unknown probe_source {0:?}: use one of process.spawned, process.exited, keepalive, net.intent, fs.intent, secret.intent, custom.<name>")]
    UnknownProbeSource(String),
    #[error("field `{field}` is longer than {max} bytes")]
    TooLong { field: &'static str, max: usize },
    #[error("`detail` has more than {max} entries")]
    TooManyDetailEntries { max: usize },
}

/// What a frame is about. The set is closed: the host rejects anything else, so a guest cannot
/// invent event families. `custom.<name>` is the one open door, with a bounded, plain name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbeSource {
    /// A process appeared in the cell (detail: `argv0`, `ppid`).
    ProcessSpawned,
    /// A process left the cell.
    ProcessExited,
    /// The agent is alive; carries nothing else.
    Keepalive,
    /// The workload intends to reach a host (detail: `destination` = `host` or `host:port`,
    /// optional `protocol`).
    NetIntent,
    /// The workload intends to use a path (detail: `path`, optional `access` = `write`|`read`).
    FsIntent,
    /// The workload intends to read a secret (detail: `name`).
    SecretIntent,
    /// Anything else the workload wants on the record; the name is `[a-z0-9._-]`, bounded.
    Custom(String),
}

impl ProbeSource {
    /// The wire name.
    pub fn as_str(&self) -> &str {
        match self {
            ProbeSource::ProcessSpawned => "process.spawned",
            ProbeSource::ProcessExited => "process.exited",
            ProbeSource::Keepalive => "keepalive",
            ProbeSource::NetIntent => "net.intent",
            ProbeSource::FsIntent => "fs.intent",
            ProbeSource::SecretIntent => "secret.intent",
            ProbeSource::Custom(full) => full,
        }
    }

    /// Parse a wire name; unknown names and malformed custom names are errors.
    pub fn parse(name: &str) -> Result<ProbeSource, WireError> {
        Ok(match name {
            "process.spawned" => ProbeSource::ProcessSpawned,
            "process.exited" => ProbeSource::ProcessExited,
            "keepalive" => ProbeSource::Keepalive,
            "net.intent" => ProbeSource::NetIntent,
            "fs.intent" => ProbeSource::FsIntent,
            "secret.intent" => ProbeSource::SecretIntent,
            other => match other.strip_prefix("custom.") {
                Some(rest) if custom_name_ok(rest) => ProbeSource::Custom(other.to_owned()),
                _ => return Err(WireError::UnknownProbeSource(clip(other, 80))),
            },
        })
    }
}

impl std::fmt::Display for ProbeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn custom_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CUSTOM_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// A guest frame. Deliberately has no attribution fields: nothing a guest sends can say which
/// cell, run or spec it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestFrame {
    /// Major in the high byte, minor in the low byte. [`GuestFrame::new`] sets [`CONTENT_VERSION`].
    pub content_version: u16,
    pub probe_source: ProbeSource,
    pub guest_pid: u32,
    pub guest_comm: String,
    pub guest_monotonic_ns: u64,
    pub detail: BTreeMap<String, String>,
}

/// A decoded frame and how many guest-supplied keys were dropped on the way (attribution
/// claims and unknown keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub frame: GuestFrame,
    pub dropped_keys: u32,
}

impl GuestFrame {
    /// A frame of this build's version with an empty `detail`.
    pub fn new(
        probe_source: ProbeSource,
        guest_pid: u32,
        guest_comm: impl Into<String>,
        guest_monotonic_ns: u64,
    ) -> Self {
        GuestFrame {
            content_version: CONTENT_VERSION,
            probe_source,
            guest_pid,
            guest_comm: guest_comm.into(),
            guest_monotonic_ns,
            detail: BTreeMap::new(),
        }
    }

    /// Add one `detail` entry (builder style).
    pub fn with_detail(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.detail.insert(key.into(), value.into());
        self
    }

    /// The wire bytes of this frame: length prefix and CBOR map. Refuses a frame the host would
    /// refuse for its size or bounds, so an honest sender never produces a malformed frame.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        self.check_bounds()?;
        let detail = self
            .detail
            .iter()
            .map(|(k, v)| (Value::Text(k.clone()), Value::Text(v.clone())))
            .collect();
        let map = Value::Map(vec![
            (
                Value::Text(KEY_CONTENT_VERSION.into()),
                Value::Integer(self.content_version.into()),
            ),
            (
                Value::Text(KEY_PROBE_SOURCE.into()),
                Value::Text(self.probe_source.as_str().into()),
            ),
            (
                Value::Text(KEY_GUEST_PID.into()),
                Value::Integer(self.guest_pid.into()),
            ),
            (
                Value::Text(KEY_GUEST_COMM.into()),
                Value::Text(self.guest_comm.clone()),
            ),
            (
                Value::Text(KEY_GUEST_MONOTONIC_NS.into()),
                Value::Integer(self.guest_monotonic_ns.into()),
            ),
            (Value::Text(KEY_DETAIL.into()), Value::Map(detail)),
        ]);
        encode_value(&map)
    }

    fn check_bounds(&self) -> Result<(), WireError> {
        if let ProbeSource::Custom(name) = &self.probe_source {
            ProbeSource::parse(name)?;
        }
        check_len(KEY_GUEST_COMM, &self.guest_comm, MAX_COMM_BYTES)?;
        if self.detail.len() > MAX_DETAIL_ENTRIES {
            return Err(WireError::TooManyDetailEntries {
                max: MAX_DETAIL_ENTRIES,
            });
        }
        for (key, value) in &self.detail {
            check_len("detail key", key, MAX_DETAIL_KEY_BYTES)?;
            check_len("detail value", value, MAX_DETAIL_VALUE_BYTES)?;
        }
        Ok(())
    }
}

/// Length-prefix and serialise any CBOR value (also used by tests and tools to build hostile
/// frames). Refuses payloads over [`MAX_FRAME_BYTES`].
pub fn encode_value(value: &Value) -> Result<Vec<u8>, WireError> {
    let mut out = vec![0u8; LENGTH_PREFIX_BYTES];
    ciborium::ser::into_writer(value, &mut out).map_err(|e| WireError::Cbor(e.to_string()))?;
    let len = out.len() - LENGTH_PREFIX_BYTES;
    if len > MAX_FRAME_BYTES {
        return Err(WireError::Oversized {
            len,
            max: MAX_FRAME_BYTES,
        });
    }
    // `len` ≤ MAX_FRAME_BYTES, which fits in u32.
    out[..LENGTH_PREFIX_BYTES].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(out)
}

/// Result of looking for one frame at the start of a byte buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split<'a> {
    /// More bytes are needed; `needed` is the total the buffer must hold.
    Incomplete { needed: usize },
    /// One frame: its payload and how many bytes of the buffer it used (prefix included).
    Frame { payload: &'a [u8], consumed: usize },
}

/// Find the first frame in `buf`. The length prefix is checked before any payload is awaited,
/// so an oversized announcement is refused without buffering it.
pub fn split_frame(buf: &[u8]) -> Result<Split<'_>, WireError> {
    let Some(prefix) = buf.first_chunk::<LENGTH_PREFIX_BYTES>() else {
        return Ok(Split::Incomplete {
            needed: LENGTH_PREFIX_BYTES,
        });
    };
    let len = usize::try_from(u32::from_le_bytes(*prefix)).unwrap_or(usize::MAX);
    if len == 0 {
        return Err(WireError::Empty);
    }
    if len > MAX_FRAME_BYTES {
        return Err(WireError::Oversized {
            len,
            max: MAX_FRAME_BYTES,
        });
    }
    let total = LENGTH_PREFIX_BYTES + len;
    match buf.get(LENGTH_PREFIX_BYTES..total) {
        Some(payload) => Ok(Split::Frame {
            payload,
            consumed: total,
        }),
        None => Ok(Split::Incomplete { needed: total }),
    }
}

/// Decode one payload (without its length prefix): parse the CBOR, gate the version, then read
/// the typed fields. Attribution and unknown keys are dropped and counted.
pub fn decode_payload(payload: &[u8]) -> Result<Decoded, WireError> {
    if payload.is_empty() {
        return Err(WireError::Empty);
    }
    if payload.len() > MAX_FRAME_BYTES {
        return Err(WireError::Oversized {
            len: payload.len(),
            max: MAX_FRAME_BYTES,
        });
    }
    let mut rest = payload;
    let value: Value =
        ciborium::de::from_reader(&mut rest).map_err(|e| WireError::Cbor(e.to_string()))?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes(rest.len()));
    }
    let Value::Map(entries) = value else {
        return Err(WireError::NotAMap);
    };

    let mut slots = Slots::default();
    let mut dropped_keys = 0u32;
    for (key, value) in entries {
        let Value::Text(key) = key else {
            return Err(WireError::NonTextKey);
        };
        let slot = match key.as_str() {
            KEY_CONTENT_VERSION => &mut slots.content_version,
            KEY_PROBE_SOURCE => &mut slots.probe_source,
            KEY_GUEST_PID => &mut slots.guest_pid,
            KEY_GUEST_COMM => &mut slots.guest_comm,
            KEY_GUEST_MONOTONIC_NS => &mut slots.guest_monotonic_ns,
            KEY_DETAIL => &mut slots.detail,
            _ => {
                dropped_keys = dropped_keys.saturating_add(1);
                continue;
            }
        };
        if slot.replace(value).is_some() {
            return Err(WireError::DuplicateKey(key));
        }
    }

    // The version gate comes first: a frame of another major may mean anything by its other
    // fields, so none of them is interpreted.
    let content_version: u16 = uint(
        slots
            .content_version
            .ok_or(WireError::MissingField(KEY_CONTENT_VERSION))?,
        KEY_CONTENT_VERSION,
        "an unsigned integer ≤ 65535",
    )?;
    let major = content_version.to_be_bytes()[0];
    if major != WIRE_MAJOR {
        return Err(WireError::UnsupportedMajor {
            content_version,
            major,
            supported: WIRE_MAJOR,
        });
    }

    let probe_source = text(
        slots
            .probe_source
            .ok_or(WireError::MissingField(KEY_PROBE_SOURCE))?,
        KEY_PROBE_SOURCE,
        MAX_CUSTOM_NAME_BYTES + "custom.".len(),
    )
    .map_err(|e| match e {
        WireError::TooLong { .. } => WireError::UnknownProbeSource("<overlong>".into()),
        other => other,
    })?;
    let probe_source = ProbeSource::parse(&probe_source)?;
    let guest_pid: u32 = uint(
        slots
            .guest_pid
            .ok_or(WireError::MissingField(KEY_GUEST_PID))?,
        KEY_GUEST_PID,
        "an unsigned integer ≤ 4294967295",
    )?;
    let guest_comm = text(
        slots
            .guest_comm
            .ok_or(WireError::MissingField(KEY_GUEST_COMM))?,
        KEY_GUEST_COMM,
        MAX_COMM_BYTES,
    )?;
    let guest_monotonic_ns: u64 = uint(
        slots
            .guest_monotonic_ns
            .ok_or(WireError::MissingField(KEY_GUEST_MONOTONIC_NS))?,
        KEY_GUEST_MONOTONIC_NS,
        "an unsigned 64-bit integer",
    )?;
    let detail = match slots.detail {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Map(entries)) => detail_map(entries, &mut dropped_keys)?,
        Some(_) => {
            return Err(WireError::FieldType {
                field: KEY_DETAIL,
                expected: "a map of text to text",
            })
        }
    };

    Ok(Decoded {
        frame: GuestFrame {
            content_version,
            probe_source,
            guest_pid,
            guest_comm,
            guest_monotonic_ns,
            detail,
        },
        dropped_keys,
    })
}

/// The known top-level fields, each at most once.
#[derive(Default)]
struct Slots {
    content_version: Option<Value>,
    probe_source: Option<Value>,
    guest_pid: Option<Value>,
    guest_comm: Option<Value>,
    guest_monotonic_ns: Option<Value>,
    detail: Option<Value>,
}

fn detail_map(
    entries: Vec<(Value, Value)>,
    dropped_keys: &mut u32,
) -> Result<BTreeMap<String, String>, WireError> {
    if entries.len() > MAX_DETAIL_ENTRIES {
        return Err(WireError::TooManyDetailEntries {
            max: MAX_DETAIL_ENTRIES,
        });
    }
    let mut detail = BTreeMap::new();
    for (key, value) in entries {
        let Value::Text(key) = key else {
            return Err(WireError::NonTextKey);
        };
        check_len("detail key", &key, MAX_DETAIL_KEY_BYTES)?;
        let value = text(value, "detail value", MAX_DETAIL_VALUE_BYTES)?;
        if ATTRIBUTION_KEYS.contains(&key.as_str()) {
            *dropped_keys = dropped_keys.saturating_add(1);
            continue;
        }
        if detail.contains_key(&key) {
            return Err(WireError::DuplicateKey(clip(&key, 80)));
        }
        detail.insert(key, value);
    }
    Ok(detail)
}

fn uint<T: TryFrom<Integer>>(
    value: Value,
    field: &'static str,
    expected: &'static str,
) -> Result<T, WireError> {
    match value {
        Value::Integer(i) => T::try_from(i).map_err(|_| WireError::FieldType { field, expected }),
        _ => Err(WireError::FieldType { field, expected }),
    }
}

fn text(value: Value, field: &'static str, max: usize) -> Result<String, WireError> {
    match value {
        Value::Text(s) => {
            check_len(field, &s, max)?;
            Ok(s)
        }
        _ => Err(WireError::FieldType {
            field,
            expected: "a text string",
        }),
    }
}

fn check_len(field: &'static str, s: &str, max: usize) -> Result<(), WireError> {
    if s.len() > max {
        Err(WireError::TooLong { field, max })
    } else {
        Ok(())
    }
}

/// At most `max` bytes of `s`, cut at a character boundary, for error messages.
fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(bytes: &[u8]) -> &[u8] {
        &bytes[LENGTH_PREFIX_BYTES..]
    }

    #[test]
    fn a_frame_round_trips_through_encode_and_decode() {
        let frame = GuestFrame::new(ProbeSource::NetIntent, 7, "curl", 42)
            .with_detail("destination", "api.example.com:443");
        let bytes = frame.encode().unwrap();
        let len = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
        assert_eq!(len, bytes.len() - 4);
        let decoded = decode_payload(payload(&bytes)).unwrap();
        assert_eq!(decoded.frame, frame);
        assert_eq!(decoded.dropped_keys, 0);
    }

    #[test]
    fn probe_sources_parse_their_own_names_and_reject_others() {
        for source in [
            ProbeSource::ProcessSpawned,
            ProbeSource::ProcessExited,
            ProbeSource::Keepalive,
            ProbeSource::NetIntent,
            ProbeSource::FsIntent,
            ProbeSource::SecretIntent,
            ProbeSource::Custom("custom.build.step".into()),
        ] {
            assert_eq!(ProbeSource::parse(source.as_str()).unwrap(), source);
        }
        for bad in [
            "",
            "process",
            "net.connect",
            "custom.",
            "custom.UPPER",
            "custom.a b",
        ] {
            assert!(
                matches!(
                    ProbeSource::parse(bad),
                    Err(WireError::UnknownProbeSource(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn encode_refuses_frames_the_host_would_refuse() {
        let long = GuestFrame::new(ProbeSource::Keepalive, 1, "x".repeat(MAX_COMM_BYTES + 1), 0);
        assert!(matches!(long.encode(), Err(WireError::TooLong { .. })));
        let mut many = GuestFrame::new(ProbeSource::Keepalive, 1, "x", 0);
        for i in 0..=MAX_DETAIL_ENTRIES {
            many.detail.insert(format!("k{i}"), "v".into());
        }
        assert!(matches!(
            many.encode(),
            Err(WireError::TooManyDetailEntries { .. })
        ));
        let custom = GuestFrame::new(ProbeSource::Custom("custom.Bad".into()), 1, "x", 0);
        assert!(matches!(
            custom.encode(),
            Err(WireError::UnknownProbeSource(_))
        ));
    }

    #[test]
    fn split_frame_waits_for_the_whole_payload_and_refuses_bad_lengths() {
        let bytes = GuestFrame::new(ProbeSource::Keepalive, 1, "a", 0)
            .encode()
            .unwrap();
        assert_eq!(
            split_frame(&bytes[..2]).unwrap(),
            Split::Incomplete { needed: 4 }
        );
        assert_eq!(
            split_frame(&bytes[..bytes.len() - 1]).unwrap(),
            Split::Incomplete {
                needed: bytes.len()
            }
        );
        match split_frame(&bytes).unwrap() {
            Split::Frame { payload, consumed } => {
                assert_eq!(consumed, bytes.len());
                assert_eq!(payload.len(), bytes.len() - 4);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(split_frame(&[0, 0, 0, 0]), Err(WireError::Empty));
        let huge = ((MAX_FRAME_BYTES + 1) as u32).to_le_bytes();
        assert!(matches!(
            split_frame(&huge),
            Err(WireError::Oversized { .. })
        ));
    }

    fn map(entries: Vec<(&str, Value)>) -> Value {
        Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (Value::Text(k.into()), v))
                .collect(),
        )
    }

    fn base(extra: Vec<(&str, Value)>) -> Value {
        let mut entries = vec![
            ("content_version", Value::Integer(CONTENT_VERSION.into())),
            ("probe_source", Value::Text("keepalive".into())),
            ("guest_pid", Value::Integer(1u32.into())),
            ("guest_comm", Value::Text("agent".into())),
            ("guest_monotonic_ns", Value::Integer(5u64.into())),
        ];
        entries.extend(extra);
        map(entries)
    }

    fn decode_value(value: &Value) -> Result<Decoded, WireError> {
        let bytes = encode_value(value).unwrap();
        decode_payload(payload(&bytes))
    }

    #[test]
    fn attribution_keys_are_dropped_at_top_level_and_in_detail() {
        let value = base(vec![
            ("cell_id", Value::Text("someone-else".into())),
            ("run_id", Value::Text("r".into())),
            (
                "detail",
                map(vec![
                    ("cellId", Value::Text("someone-else".into())),
                    ("argv0", Value::Text("sh".into())),
                ]),
            ),
        ]);
        let decoded = decode_value(&value).unwrap();
        assert_eq!(decoded.dropped_keys, 3);
        assert_eq!(decoded.frame.detail.len(), 1);
        assert_eq!(decoded.frame.detail["argv0"], "sh");
    }

    #[test]
    fn unknown_majors_are_rejected_before_other_fields_are_read() {
        for version in [0x0000u16, 0x0200, 0xff01] {
            // Only a version: the gate must fire before the missing fields are noticed.
            let value = map(vec![("content_version", Value::Integer(version.into()))]);
            assert!(matches!(
                decode_value(&value),
                Err(WireError::UnsupportedMajor { major, .. }) if major == version.to_be_bytes()[0]
            ));
        }
        let minor = base(vec![]);
        let Value::Map(mut entries) = minor else {
            unreachable!()
        };
        entries[0].1 = Value::Integer(0x01ffu16.into());
        assert_eq!(
            decode_value(&Value::Map(entries))
                .unwrap()
                .frame
                .content_version,
            0x01ff
        );
    }

    #[test]
    fn malformed_payloads_are_typed_errors() {
        type Expect = fn(&WireError) -> bool;
        let cases: Vec<(Value, Expect)> = vec![
            (Value::Array(vec![]), |e| matches!(e, WireError::NotAMap)),
            (
                Value::Map(vec![(Value::Integer(1.into()), Value::Null)]),
                |e| matches!(e, WireError::NonTextKey),
            ),
            (map(vec![]), |e| {
                matches!(e, WireError::MissingField("content_version"))
            }),
            (
                base(vec![("guest_pid", Value::Integer(2u32.into()))]),
                |e| matches!(e, WireError::DuplicateKey(_)),
            ),
            (
                map(vec![("content_version", Value::Integer(70_000u32.into()))]),
                |e| matches!(e, WireError::FieldType { .. }),
            ),
            (base(vec![("detail", Value::Text("x".into()))]), |e| {
                matches!(
                    e,
                    WireError::FieldType {
                        field: "detail",
                        ..
                    }
                )
            }),
            (
                base(vec![(
                    "detail",
                    map(vec![(
                        "k",
                        Value::Text("v".repeat(MAX_DETAIL_VALUE_BYTES + 1)),
                    )]),
                )]),
                |e| matches!(e, WireError::TooLong { .. }),
            ),
        ];
        for (value, expected) in cases {
            let err = decode_value(&value).unwrap_err();
            assert!(expected(&err), "{value:?} gave {err:?}");
        }
        let mut bad_probe = base(vec![]);
        if let Value::Map(entries) = &mut bad_probe {
            entries[1].1 = Value::Text("net.connect_attempted".into());
        }
        assert!(matches!(
            decode_value(&bad_probe),
            Err(WireError::UnknownProbeSource(_))
        ));
        assert!(matches!(decode_payload(&[0xff]), Err(WireError::Cbor(_))));
        let mut trailing = encode_value(&base(vec![])).unwrap();
        trailing.push(0);
        assert_eq!(
            decode_payload(payload(&trailing)),
            Err(WireError::TrailingBytes(1))
        );
    }
}

//! Property tests of the wire format (the cargo-fuzz target in /fuzz goes further).

use cellos_telemetry_wire::{
    decode_payload, split_frame, GuestFrame, ProbeSource, Split, MAX_FRAME_BYTES,
};
use proptest::prelude::*;

fn probe_source() -> impl Strategy<Value = ProbeSource> {
    prop_oneof![
        Just(ProbeSource::ProcessSpawned),
        Just(ProbeSource::ProcessExited),
        Just(ProbeSource::Keepalive),
        Just(ProbeSource::NetIntent),
        Just(ProbeSource::FsIntent),
        Just(ProbeSource::SecretIntent),
        "[a-z0-9._-]{1,64}".prop_map(|n| ProbeSource::Custom(format!("custom.{n}"))),
    ]
}

fn frame() -> impl Strategy<Value = GuestFrame> {
    (
        probe_source(),
        any::<u32>(),
        "\\PC{0,15}",
        any::<u64>(),
        prop::collection::btree_map("[a-z_]{1,12}", "\\PC{0,40}", 0..8),
    )
        .prop_map(|(source, pid, comm, ns, detail)| {
            let mut f = GuestFrame::new(source, pid, comm, ns);
            // Attribution keys would be dropped on decode; keep the round trip exact.
            f.detail = detail
                .into_iter()
                .filter(|(k, _)| !cellos_telemetry_wire::ATTRIBUTION_KEYS.contains(&k.as_str()))
                .collect();
            f
        })
}

proptest! {
    #[test]
    fn every_valid_frame_round_trips(f in frame()) {
        let bytes = f.encode().unwrap();
        match split_frame(&bytes).unwrap() {
            Split::Frame { payload, consumed } => {
                prop_assert_eq!(consumed, bytes.len());
                let decoded = decode_payload(payload).unwrap();
                prop_assert_eq!(decoded.frame, f);
                prop_assert_eq!(decoded.dropped_keys, 0);
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_never_exceed_the_cap(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let mut rest = &bytes[..];
        while let Ok(Split::Frame { payload, consumed }) = split_frame(rest) {
            prop_assert!(payload.len() <= MAX_FRAME_BYTES);
            let _ = decode_payload(payload);
            rest = &rest[consumed..];
        }
        let _ = decode_payload(&bytes);
    }

    #[test]
    fn mutated_valid_frames_never_panic(f in frame(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes = f.encode().unwrap();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if let Ok(Split::Frame { payload, .. }) = split_frame(&bytes) {
            if let Ok(decoded) = decode_payload(payload) {
                // Whatever is accepted is within bounds, so it re-encodes.
                prop_assert!(decoded.frame.encode().is_ok());
            }
        }
    }
}

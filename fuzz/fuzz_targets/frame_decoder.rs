//! Fuzz the guest frame decoder the way the receiver drives it: arbitrary bytes as a stream of
//! length-prefixed frames. It must never panic, never accept a frame over the caps, and every
//! frame it accepts must re-encode and decode to the same frame.
#![no_main]

use cellos_telemetry_wire::{decode_payload, split_frame, Split, MAX_FRAME_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    loop {
        match split_frame(rest) {
            Ok(Split::Frame { payload, consumed }) => {
                assert!(payload.len() <= MAX_FRAME_BYTES);
                if let Ok(decoded) = decode_payload(payload) {
                    if let Ok(bytes) = decoded.frame.encode() {
                        let again = decode_payload(&bytes[4..]).expect("re-encoded frame decodes");
                        assert_eq!(again.frame, decoded.frame);
                        assert_eq!(again.dropped_keys, 0);
                    }
                }
                rest = &rest[consumed..];
            }
            Ok(Split::Incomplete { .. }) | Err(_) => break,
        }
    }
    // The whole input as one payload, too (no prefix).
    let _ = decode_payload(data);
});

//! Hash chain and signatures: a sealed stream verifies, and each kind of tampering is reported
//! at the right sequence number with the right reason.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cellos_core::events::{CloudEvent, EventFactory};
use cellos_core::integrity::{
    verify_stream, verify_stream_with, ChainHead, FailureKind, Keyring, Sealer, SignatureCheck,
    Signer, GENESIS_PREV,
};
use ed25519_dalek::SigningKey;
use time::macros::datetime;

fn factory() -> EventFactory {
    let counter = Arc::new(AtomicU64::new(0));
    EventFactory::new(
        "host-a",
        "supervisor",
        Arc::new(move || format!("id-{}", counter.fetch_add(1, Ordering::Relaxed))),
    )
}

fn event(factory: &EventFactory, n: u64) -> CloudEvent {
    let hit = cellos_core::ports::LimitHit {
        limit: "pidsMax".to_owned(),
        mechanism: format!("cgroup v2 pids.events max={n}"),
        count: n,
    };
    factory.limit_hit(
        datetime!(2025-01-02 03:04:05 UTC),
        &format!("cell-{}", n % 3),
        &hit,
    )
}

fn ed_signer(seed: u8) -> Signer {
    Signer::ed25519(SigningKey::from_bytes(&[seed; 32]))
}

fn keyring_for(signer: &Signer) -> Keyring {
    let mut keys = Keyring::new();
    if let Some(vk) = signer.verifying_key() {
        keys.add_ed25519(vk);
    }
    keys
}

/// `count` sealed lines by the Ed25519 key with seed 7.
fn sealed_lines(count: u64) -> Vec<String> {
    let factory = factory();
    let mut sealer = Sealer::new(ed_signer(7), ChainHead::genesis());
    (1..=count)
        .map(|n| sealer.seal(event(&factory, n)).map(|s| s.line))
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Verify with every signature checked, and check that checking only anchor signatures
/// reaches the same verdict at the same place.
fn verify(lines: &[String]) -> cellos_core::integrity::VerifyReport {
    let keys = keyring_for(&ed_signer(7));
    let every = verify_stream(lines.iter().map(String::as_str), &keys);
    let anchors = verify_stream_with(
        lines.iter().map(String::as_str),
        &keys,
        SignatureCheck::Anchors,
    );
    assert_eq!(every, anchors);
    every
}

#[test]
fn sealed_stream_verifies_and_links_to_genesis() {
    let lines = sealed_lines(600);
    let report = verify(&lines);
    assert_eq!(report.failure, None);
    assert_eq!(report.verified, 600);
    assert_eq!(report.head.seq, 600);
    let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first["cellosseq"], 1);
    assert_eq!(first["cellosprev"], GENESIS_PREV);
    assert!(first["celloskid"].as_str().unwrap().starts_with("ed25519:"));
    // The chain head recomputed from the last line is the verifier's head.
    assert_eq!(ChainHead::after_line(&lines[599]).unwrap(), report.head);
}

#[test]
fn lines_are_their_own_canonical_form() {
    for line in sealed_lines(3) {
        assert_eq!(serde_json_canonicalizer::pipe(&line).unwrap(), line);
    }
}

#[test]
fn flipped_byte_in_content_is_tampering_at_that_seq() {
    let mut lines = sealed_lines(500);
    lines[299] = lines[299].replace("max=300", "max=301");
    let failure = verify(&lines).failure.unwrap();
    assert_eq!(failure.kind, FailureKind::Tampered);
    assert_eq!(failure.seq, Some(300));
    assert_eq!(failure.line, 300);
}

#[test]
fn flipped_byte_in_signature_is_tampering_at_that_seq() {
    let mut lines = sealed_lines(20);
    let value: serde_json::Value = serde_json::from_str(&lines[9]).unwrap();
    let sig = value["cellossig"].as_str().unwrap();
    let flipped = format!(
        "{}{}",
        if sig.starts_with('0') { "1" } else { "0" },
        &sig[1..]
    );
    lines[9] = lines[9].replace(sig, &flipped);
    let failure = verify(&lines).failure.unwrap();
    assert_eq!(failure.kind, FailureKind::Tampered);
    assert_eq!(failure.seq, Some(10));
}

#[test]
fn deleted_line_is_missing_at_its_seq() {
    let mut lines = sealed_lines(50);
    lines.remove(24);
    let failure = verify(&lines).failure.unwrap();
    assert_eq!(failure.kind, FailureKind::Missing);
    assert_eq!(failure.seq, Some(25));
    assert_eq!(failure.line, 25);
}

#[test]
fn swapped_lines_are_reordered_at_the_first_displaced_seq() {
    let mut lines = sealed_lines(50);
    lines.swap(30, 31);
    let failure = verify(&lines).failure.unwrap();
    assert_eq!(failure.kind, FailureKind::Reordered);
    assert_eq!(failure.seq, Some(31));
}

#[test]
fn swap_across_chunk_boundary_is_still_reordered() {
    let mut lines = sealed_lines(4100);
    lines.swap(4095, 4096);
    let failure = verify(&lines).failure.unwrap();
    assert_eq!(failure.kind, FailureKind::Reordered);
    assert_eq!(failure.seq, Some(4096));
}

#[test]
fn duplicated_line_is_reordered() {
    let mut lines = sealed_lines(10);
    let copy = lines[4].clone();
    lines.insert(5, copy);
    let failure = verify(&lines).failure.unwrap();
    assert_eq!(failure.kind, FailureKind::Reordered);
    assert_eq!(failure.seq, Some(6));
}

#[test]
fn unknown_key_is_named() {
    let lines = sealed_lines(5);
    let report = verify_stream(
        lines.iter().map(String::as_str),
        &keyring_for(&ed_signer(8)),
    );
    let failure = report.failure.unwrap();
    assert_eq!(failure.kind, FailureKind::UnknownKey);
    assert_eq!(failure.seq, Some(1));
    assert!(failure.detail.contains(ed_signer(7).kid()));
}

#[test]
fn malformed_signature_is_bad_signature() {
    let mut lines = sealed_lines(5);
    let value: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
    let sig = value["cellossig"].as_str().unwrap();
    lines[2] = lines[2].replace(sig, &sig[..64]);
    let failure = verify(&lines).failure.unwrap();
    assert_eq!(failure.kind, FailureKind::BadSignature);
    assert_eq!(failure.seq, Some(3));
}

#[test]
fn garbage_line_is_unparseable_with_its_line_number() {
    let mut lines = sealed_lines(5);
    lines[3].truncate(40);
    let failure = verify(&lines).failure.unwrap();
    assert_eq!(failure.kind, FailureKind::Unparseable);
    assert_eq!(failure.line, 4);
    assert_eq!(failure.seq, None);
}

#[test]
fn hmac_signed_stream_verifies_and_detects_tampering() {
    let key = vec![42u8; 32];
    let factory = factory();
    let mut sealer = Sealer::new(
        Signer::hmac("ops", key.clone()).unwrap(),
        ChainHead::genesis(),
    );
    let mut lines: Vec<String> = (1..=10)
        .map(|n| sealer.seal(event(&factory, n)).unwrap().line)
        .collect();
    let mut keys = Keyring::new();
    assert_eq!(keys.add_hmac("ops", key).unwrap(), "hmac:ops");
    assert!(verify_stream(lines.iter().map(String::as_str), &keys).is_ok());
    lines[6] = lines[6].replace("max=7", "max=8");
    let failure = verify_stream(lines.iter().map(String::as_str), &keys)
        .failure
        .unwrap();
    assert_eq!(failure.kind, FailureKind::Tampered);
    assert_eq!(failure.seq, Some(7));
}

#[test]
fn short_hmac_key_is_refused() {
    assert!(Signer::hmac("ops", vec![1; 8]).is_err());
}

#[test]
fn rewritten_chain_after_tampering_is_caught_by_anchor_signatures() {
    // An attacker without the key edits seq 40 and recomputes every later `cellosprev`, so
    // all links hold; only signatures can tell.
    let mut lines = sealed_lines(100);
    let mut prev: Option<String> = None;
    for line in lines.iter_mut().skip(39) {
        let mut value: serde_json::Value = serde_json::from_str(line).unwrap();
        if value["cellosseq"] == 40 {
            value["data"]["count"] = 4000.into();
        }
        if let Some(prev) = &prev {
            value["cellosprev"] = prev.clone().into();
        }
        *line = serde_json_canonicalizer::to_string(&value).unwrap();
        prev = Some(cellos_core::integrity::sha256_hex(line.as_bytes()));
    }
    let failure = verify(&lines).failure.unwrap();
    assert_eq!(failure.kind, FailureKind::Tampered);
    assert_eq!(failure.seq, Some(40));
}

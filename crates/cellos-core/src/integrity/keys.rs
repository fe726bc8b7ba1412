//! Signing keys and the keyring of trusted verification keys.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::IntegrityError;

type HmacSha256 = Hmac<Sha256>;

/// Shortest HMAC key accepted: the SHA-256 block of security it is meant to give.
const HMAC_MIN_KEY_BYTES: usize = 32;

/// Set once this process has held private key material; never cleared.
static KEY_MATERIAL_HELD: AtomicBool = AtomicBool::new(false);

/// Whether this process has ever held a private signing or HMAC key. A copy of the process
/// made without exec (a fork or clone) may carry such a key in its memory, so code that would
/// hand such a copy to a cell (a Linux cell's init run in its clone) checks this first: the
/// guest holds no signing key.
pub fn key_material_held() -> bool {
    KEY_MATERIAL_HELD.load(Ordering::SeqCst)
}

/// Record that this process now holds private key material (see [`key_material_held`]).
/// Constructing a [`Signer`] or trusting an HMAC key records it; key generation outside this
/// module calls it before it creates the key.
pub fn note_key_material_held() {
    KEY_MATERIAL_HELD.store(true, Ordering::SeqCst);
}

/// Key id of an Ed25519 public key: `ed25519:` + first 16 hex digits of SHA-256 of its bytes.
pub fn ed25519_kid(key: &VerifyingKey) -> String {
    let digest = hex::encode(Sha256::digest(key.as_bytes()));
    format!("ed25519:{}", &digest[..16])
}

/// Key id of a named HMAC key: `hmac:<name>`.
pub fn hmac_kid(name: &str) -> String {
    format!("hmac:{name}")
}

fn hmac_mac(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length (long keys are hashed), so this cannot fail.
    <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!())
}

fn check_hmac_key(name: &str, key: &[u8]) -> Result<(), IntegrityError> {
    let bad = |reason: &str| IntegrityError::BadHmacKey {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("the name must be non-empty and without whitespace"));
    }
    if key.len() < HMAC_MIN_KEY_BYTES {
        return Err(bad("the key must be at least 32 random bytes"));
    }
    Ok(())
}

enum SignerKey {
    Ed25519(SigningKey),
    Hmac(Zeroizing<Vec<u8>>),
}

/// Produces `cellossig` values. Holds private key material: not `Clone`, not printable.
pub struct Signer {
    kid: String,
    key: SignerKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Ed25519 signer (the default).
    pub fn ed25519(key: SigningKey) -> Self {
        note_key_material_held();
        Self {
            kid: ed25519_kid(&key.verifying_key()),
            key: SignerKey::Ed25519(key),
        }
    }

    /// HMAC-SHA256 signer named `name` (verifiers need the same secret key).
    pub fn hmac(name: &str, key: Vec<u8>) -> Result<Self, IntegrityError> {
        note_key_material_held();
        check_hmac_key(name, &key)?;
        Ok(Self {
            kid: hmac_kid(name),
            key: SignerKey::Hmac(Zeroizing::new(key)),
        })
    }

    /// The `celloskid` this signer stamps.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Public key, for Ed25519 signers.
    pub fn verifying_key(&self) -> Option<VerifyingKey> {
        match &self.key {
            SignerKey::Ed25519(key) => Some(key.verifying_key()),
            SignerKey::Hmac(_) => None,
        }
    }

    /// Hex signature of `message`.
    pub fn sign(&self, message: &[u8]) -> String {
        match &self.key {
            SignerKey::Ed25519(key) => hex::encode(key.sign(message).to_bytes()),
            SignerKey::Hmac(key) => {
                let mut mac = hmac_mac(key);
                mac.update(message);
                hex::encode(mac.finalize().into_bytes())
            }
        }
    }
}

/// A verification key found in a [`Keyring`].
pub(crate) enum TrustedKey<'a> {
    Ed25519(&'a VerifyingKey),
    Hmac(&'a [u8]),
}

impl TrustedKey<'_> {
    /// Check one signature now (HMAC, or Ed25519 outside a batch).
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            TrustedKey::Ed25519(key) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|sig| key.verify_strict(message, &sig).is_ok()),
            TrustedKey::Hmac(key) => {
                let mut mac = hmac_mac(key);
                mac.update(message);
                mac.verify_slice(signature).is_ok()
            }
        }
    }

    /// Byte length a well-formed signature of this kind has.
    pub(crate) fn signature_len(&self) -> usize {
        match self {
            TrustedKey::Ed25519(_) => ed25519_dalek::SIGNATURE_LENGTH,
            TrustedKey::Hmac(_) => 32,
        }
    }
}

/// The keys a verifier trusts, by key id. Ed25519 needs only public keys, so `verify` runs
/// offline on any machine that has the host's `.pub` file.
#[derive(Default, Clone)]
pub struct Keyring {
    ed25519: HashMap<String, VerifyingKey>,
    hmac: HashMap<String, Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("kids", &self.kids())
            .finish()
    }
}

impl Keyring {
    pub fn new() -> Self {
        Self::default()
    }

    /// Trust an Ed25519 public key; returns its key id.
    pub fn add_ed25519(&mut self, key: VerifyingKey) -> String {
        let kid = ed25519_kid(&key);
        self.ed25519.insert(kid.clone(), key);
        kid
    }

    /// Trust a named HMAC key; returns its key id.
    pub fn add_hmac(&mut self, name: &str, key: Vec<u8>) -> Result<String, IntegrityError> {
        note_key_material_held();
        check_hmac_key(name, &key)?;
        let kid = hmac_kid(name);
        self.hmac.insert(kid.clone(), Zeroizing::new(key));
        Ok(kid)
    }

    /// Every trusted key id, sorted.
    pub fn kids(&self) -> Vec<String> {
        let mut kids: Vec<String> = self
            .ed25519
            .keys()
            .chain(self.hmac.keys())
            .cloned()
            .collect();
        kids.sort();
        kids
    }

    pub fn is_empty(&self) -> bool {
        self.ed25519.is_empty() && self.hmac.is_empty()
    }

    pub(crate) fn get(&self, kid: &str) -> Option<TrustedKey<'_>> {
        if let Some(key) = self.ed25519.get(kid) {
            return Some(TrustedKey::Ed25519(key));
        }
        self.hmac.get(kid).map(|key| TrustedKey::Hmac(key))
    }
}

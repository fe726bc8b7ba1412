//! Host keys: created private (0600 in a 0700 directory), loaded back, trusted for offline
//! verification, and refused when exposed.

use std::os::unix::fs::PermissionsExt;

use cellos_adapters::keys::{KeyError, KeyStore};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn generated_key_is_private_and_trusted() {
    let home = tempfile::tempdir().unwrap();
    let store = KeyStore::new(home.path());
    let public = store.generate().unwrap();
    assert_eq!(mode(&store.ed25519_path()), 0o600);
    assert_eq!(mode(store.dir()), 0o700);

    let signer = store.load_signer().unwrap();
    assert_eq!(signer.verifying_key(), Some(public));
    let keyring = store.keyring().unwrap();
    assert_eq!(keyring.kids(), vec![signer.kid().to_owned()]);
    assert!(matches!(store.generate(), Err(KeyError::Exists { .. })));
}

#[test]
fn first_use_creates_one_key_and_later_uses_reuse_it() {
    let home = tempfile::tempdir().unwrap();
    let store = KeyStore::new(home.path());
    let first = store.load_or_create_signer().unwrap();
    let second = store.load_or_create_signer().unwrap();
    assert_eq!(first.kid(), second.kid());
    assert_eq!(mode(&store.ed25519_path()), 0o600);
}

#[test]
fn exposed_private_key_is_refused() {
    let home = tempfile::tempdir().unwrap();
    let store = KeyStore::new(home.path());
    store.generate().unwrap();
    std::fs::set_permissions(store.ed25519_path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = store.load_signer().unwrap_err();
    assert!(
        matches!(err, KeyError::Exposed { mode: 0o644, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("chmod 600"));
}

#[test]
fn hmac_keys_sign_and_are_trusted_by_name() {
    let home = tempfile::tempdir().unwrap();
    let store = KeyStore::new(home.path());
    store.generate_hmac("ops").unwrap();
    assert_eq!(mode(&store.dir().join("hmac/ops.key")), 0o600);
    let signer = store.load_hmac_signer("ops").unwrap();
    assert_eq!(signer.kid(), "hmac:ops");
    assert!(store
        .keyring()
        .unwrap()
        .kids()
        .contains(&"hmac:ops".to_owned()));
}

//! The API token store: shown once, stored as a hash, checked in constant time, revoked and
//! expired tokens refused, a store readable by others or corrupt refused with the fix.

use std::os::unix::fs::PermissionsExt;

use cellos_adapters::tokens::{Rejection, TokenError, TokenStore};
use cellos_core::spec::Scope;
use time::{Duration, OffsetDateTime};

#[test]
fn a_token_is_stored_only_as_its_hash_and_authenticates_its_subject() {
    let home = tempfile::tempdir().unwrap();
    let store = TokenStore::new(home.path());
    let (token, record) = store
        .create("team-a", Some(vec![Scope::CellsRead]), None)
        .unwrap();
    assert!(token.starts_with(&format!("cellos_{}_", record.id)));
    let text = std::fs::read_to_string(store.path()).unwrap();
    assert!(!text.contains(token.as_str()), "the secret is in the store");
    assert!(
        !text.contains(&token[16..]),
        "part of the secret is in the store"
    );
    let mode = std::fs::metadata(store.path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let records = store.list().unwrap();
    let now = OffsetDateTime::now_utc();
    let found = TokenStore::check(&records, &token, now).unwrap();
    assert_eq!(found.subject, "team-a");
    assert_eq!(found.scopes.as_deref(), Some(&[Scope::CellsRead][..]));
}

#[test]
fn wrong_malformed_revoked_and_expired_tokens_are_refused() {
    let home = tempfile::tempdir().unwrap();
    let store = TokenStore::new(home.path());
    let (token, record) = store.create("team-a", None, None).unwrap();
    let past = OffsetDateTime::now_utc() - Duration::minutes(1);
    let (old, _) = store.create("team-b", None, Some(past)).unwrap();
    let now = OffsetDateTime::now_utc();
    let records = store.list().unwrap();

    let mut forged = token.to_string();
    forged.pop();
    forged.push(if token.ends_with('0') { '1' } else { '0' });
    assert_eq!(
        TokenStore::check(&records, &forged, now).err(),
        Some(Rejection::Unknown)
    );
    assert_eq!(
        TokenStore::check(&records, "nope", now).err(),
        Some(Rejection::Malformed)
    );
    assert_eq!(
        TokenStore::check(&records, "cellos_ffffffff_00", now).err(),
        Some(Rejection::Unknown)
    );
    assert_eq!(
        TokenStore::check(&records, &old, now).err(),
        Some(Rejection::Expired)
    );

    store.revoke(&record.id).unwrap();
    let records = store.list().unwrap();
    assert_eq!(
        TokenStore::check(&records, &token, now).err(),
        Some(Rejection::Revoked)
    );
    assert!(records
        .iter()
        .any(|r| r.id == record.id && r.revoked.is_some()));
    assert!(matches!(
        store.revoke("absent00"),
        Err(TokenError::NotFound(_))
    ));
}

#[test]
fn an_exposed_or_corrupt_store_is_refused_with_the_fix() {
    let home = tempfile::tempdir().unwrap();
    let store = TokenStore::new(home.path());
    store.create("team-a", None, None).unwrap();
    std::fs::set_permissions(store.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = store.list().unwrap_err().to_string();
    assert!(err.contains("chmod 600"), "{err}");
    std::fs::write(store.path(), "{not json").unwrap();
    std::fs::set_permissions(store.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = store.create("team-b", None, None).unwrap_err().to_string();
    assert!(err.contains("is not valid"), "{err}");
}

#[test]
fn concurrent_creates_lose_no_token() {
    let home = tempfile::tempdir().unwrap();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let store = TokenStore::new(home.path());
            std::thread::spawn(move || {
                for j in 0..5 {
                    store.create(&format!("s{i}-{j}"), None, None).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(TokenStore::new(home.path()).list().unwrap().len(), 40);
}

#[test]
fn bad_subjects_are_refused_naming_the_flag() {
    let home = tempfile::tempdir().unwrap();
    let err = TokenStore::new(home.path())
        .create("a b", None, None)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("--subject:"), "{err}");
}

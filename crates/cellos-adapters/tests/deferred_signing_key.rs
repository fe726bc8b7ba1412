//! A log opened with a deferred signer: checking the host key holds none of it, the first
//! append loads it (and from then on the process has held key material), and a key that
//! cannot load fails every append with the reason. One test per process: whether a process
//! has held key material is process-wide.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use cellos_adapters::event_log::{read_log_lines, JsonlEventLog, LogConfig};
use cellos_adapters::keys::{KeyError, KeyStore};
use cellos_core::events::EventFactory;
use cellos_core::integrity::{key_material_held, verify_stream};
use cellos_core::ports::{EventSink, LimitHit};
use time::OffsetDateTime;

fn event() -> cellos_core::events::CloudEvent {
    let hit = LimitHit {
        limit: "pidsMax".to_owned(),
        mechanism: "cgroup v2 pids.events".to_owned(),
        count: 1,
    };
    EventFactory::new("test-host", "supervisor", Arc::new(String::new)).limit_hit(
        OffsetDateTime::now_utc(),
        "cell-1",
        &hit,
    )
}

fn write_key(store: &KeyStore, text: &str, mode: u32) {
    std::fs::create_dir_all(store.dir()).unwrap();
    std::fs::write(store.ed25519_path(), text).unwrap();
    std::fs::set_permissions(store.ed25519_path(), std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn the_key_is_checked_without_being_held_and_loaded_at_the_first_append() {
    let home = tempfile::tempdir().unwrap();
    let store = KeyStore::new(home.path());

    // Malformed and exposed keys are refused by the check, naming the file and the fix.
    write_key(&store, "abc\n", 0o600);
    let err = store.check_signer().unwrap_err();
    assert!(matches!(err, KeyError::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("64 hex digits"), "{err}");
    write_key(&store, &format!("{}\n", "ab".repeat(32)), 0o644);
    assert!(matches!(
        store.check_signer(),
        Err(KeyError::Exposed { .. })
    ));

    // A well-formed key passes the check, and the process still holds no key material.
    write_key(&store, &format!("{}\n", "5a".repeat(32)), 0o600);
    store.check_signer().unwrap();
    assert!(!key_material_held());

    // A loader that fails reports why, on this append and the next.
    let broken = JsonlEventLog::open_deferred(
        home.path().join("broken"),
        Box::new(|| Err("no key here".to_owned())),
        LogConfig::default(),
    )
    .unwrap();
    for _ in 0..2 {
        let err = broken.emit(event()).unwrap_err();
        assert!(err.to_string().contains("no key here"), "{err}");
    }
    assert!(!key_material_held());

    // The first append loads the key; the log verifies with the host's public key.
    let loader_store = KeyStore::new(home.path());
    let log = JsonlEventLog::open_deferred(
        home.path(),
        Box::new(move || {
            loader_store
                .load_or_create_signer()
                .map_err(|e| e.to_string())
        }),
        LogConfig::default(),
    )
    .unwrap();
    log.emit_batch(vec![event(), event()]).unwrap();
    assert!(key_material_held());
    let lines: Vec<String> = read_log_lines(home.path())
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let report = verify_stream(lines.iter().map(String::as_str), &store.keyring().unwrap());
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.verified, 2);
}

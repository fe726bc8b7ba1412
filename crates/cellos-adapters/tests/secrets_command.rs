//! `CommandSecretBroker` with real programs (shell scripts in a temporary directory): values,
//! "not found", failures, time limits, size caps and revocation.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cellos_adapters::secrets::CommandSecretBroker;
use cellos_core::ports::{PortErrorKind, SecretBroker};

/// The error of a resolve that must fail (values have no `Debug`, by design).
fn failure(
    result: Result<cellos_core::ports::SecretValue, cellos_core::ports::PortError>,
) -> cellos_core::ports::PortError {
    match result {
        Ok(_) => panic!("resolve succeeded"),
        Err(e) => e,
    }
}

fn script(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("helper");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
    path
}

/// A helper that holds `API_TOKEN` (per cell), logs revocations to `revoked`, and fails for
/// `BROKEN`.
fn vault(dir: &Path) -> CommandSecretBroker {
    let log = dir.join("revoked");
    CommandSecretBroker::new(script(
        dir,
        &format!(
            r#"case "$1 $2" in
  "get API_TOKEN") echo "token-for-$CELLOS_CELL_ID" ;;
  "get BROKEN") echo "vault sealed" >&2; exit 1 ;;
  "get "*) exit 2 ;;
  "revoke ") echo "$CELLOS_CELL_ID" >> {log} ;;
esac"#,
            log = log.display()
        ),
    ))
}

#[test]
fn a_value_comes_from_the_program_for_that_cell() {
    let dir = tempfile::tempdir().unwrap();
    let broker = vault(dir.path());
    let value = broker.resolve("API_TOKEN", "cell-a").unwrap();
    assert_eq!(
        value.expose(),
        b"token-for-cell-a",
        "one trailing newline is dropped"
    );
    assert_eq!(broker.name(), "command");
}

#[test]
fn exit_2_is_not_found_and_other_failures_quote_stderr_not_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let broker = vault(dir.path());
    let missing = failure(broker.resolve("OTHER", "c"));
    assert_eq!(missing.kind, PortErrorKind::NotFound);
    let broken = failure(broker.resolve("BROKEN", "c"));
    assert_eq!(broken.kind, PortErrorKind::Io);
    assert!(broken.message.contains("vault sealed"), "{broken}");
    assert!(broken.message.contains("exit 1"), "{broken}");
}

#[test]
fn revocation_runs_the_program_for_the_cell() {
    let dir = tempfile::tempdir().unwrap();
    let broker = vault(dir.path());
    broker.revoke_for_cell("cell-b").unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("revoked")).unwrap(),
        "cell-b\n"
    );
}

#[test]
fn a_hanging_program_is_killed_at_its_time_limit() {
    let dir = tempfile::tempdir().unwrap();
    let broker = CommandSecretBroker::new(script(dir.path(), "exec sleep 30"))
        .with_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let err = failure(broker.resolve("API_TOKEN", "c"));
    assert!(err.message.contains("did not finish"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn oversized_output_and_bad_keys_are_refused_and_values_never_appear_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let big =
        CommandSecretBroker::new(script(dir.path(), "head -c 2000000 /dev/zero | tr '\\0' x"));
    let err = failure(big.resolve("API_TOKEN", "c"));
    assert_eq!(err.kind, PortErrorKind::TooLarge, "{err}");
    assert!(!err.message.contains("xxxx"));
    assert!(vault(dir.path()).resolve("../etc/passwd", "c").is_err());
    let missing = CommandSecretBroker::new(dir.path().join("absent"));
    let err = failure(missing.resolve("API_TOKEN", "c"));
    assert!(
        err.message.contains("--secret-command") || err.message.contains("CELLOS_SECRET_COMMAND"),
        "{err}"
    );
}

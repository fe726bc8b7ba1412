//! File, env and chained secret brokers against real files, FIFOs, symlinks and the process
//! environment.

use std::os::unix::fs::symlink;

use cellos_adapters::secrets::{validate_secret_key, EnvSecretBroker, FileSecretBroker};
use cellos_core::ports::{PortErrorKind, SecretBroker};
use rustix::fs::{FileType, Mode};

const CELL: &str = "cell-1";

fn dir_with(key: &str, value: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(key), value).unwrap();
    dir
}

#[test]
fn file_broker_returns_the_exact_bytes_of_the_file() {
    let value = b"s3cr3t\n\x00\xffbinary";
    let dir = dir_with("API_TOKEN", value);
    let broker = FileSecretBroker::new(dir.path());
    assert_eq!(broker.name(), "file");
    let secret = broker.resolve("API_TOKEN", CELL).unwrap();
    assert_eq!(secret.expose(), value);
}

#[test]
fn file_broker_reports_a_missing_secret_as_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let err = FileSecretBroker::new(dir.path())
        .resolve("MISSING", CELL)
        .err()
        .unwrap();
    assert_eq!(err.kind, PortErrorKind::NotFound);
    assert!(err.message.contains("MISSING"), "{}", err.message);
}

#[test]
fn file_broker_refuses_a_symlinked_secret_file() {
    let dir = dir_with("REAL", b"target-value");
    symlink(dir.path().join("REAL"), dir.path().join("LINKED")).unwrap();
    let err = FileSecretBroker::new(dir.path())
        .resolve("LINKED", CELL)
        .err()
        .unwrap();
    assert_eq!(err.kind, PortErrorKind::Refused);
    assert!(err.message.contains("symlink"), "{}", err.message);
    assert!(!err.message.contains("target-value"));
}

#[test]
fn file_broker_refuses_a_symlinked_secret_directory() {
    let real = dir_with("API_TOKEN", b"v");
    let holder = tempfile::tempdir().unwrap();
    let link = holder.path().join("secrets");
    symlink(real.path(), &link).unwrap();
    let err = FileSecretBroker::new(&link)
        .resolve("API_TOKEN", CELL)
        .err()
        .unwrap();
    assert_eq!(err.kind, PortErrorKind::Refused);
}

#[test]
fn file_broker_refuses_a_fifo_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        dir.path().join("PIPE"),
        FileType::Fifo,
        Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    // No writer ever opens the FIFO: a blocking open would hang this test forever.
    let err = FileSecretBroker::new(dir.path())
        .resolve("PIPE", CELL)
        .err()
        .unwrap();
    assert_eq!(err.kind, PortErrorKind::Refused);
    assert!(err.message.contains("Fifo"), "{}", err.message);
}

#[test]
fn file_broker_refuses_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("NESTED")).unwrap();
    let err = FileSecretBroker::new(dir.path())
        .resolve("NESTED", CELL)
        .err()
        .unwrap();
    assert_eq!(err.kind, PortErrorKind::Refused);
    assert!(err.message.contains("Directory"), "{}", err.message);
}

#[test]
fn file_broker_refuses_an_oversize_file_without_echoing_it() {
    let dir = dir_with("BIG", &[b'x'; 101]);
    std::fs::write(dir.path().join("EXACT"), [b'y'; 100]).unwrap();
    let broker = FileSecretBroker::new(dir.path()).with_max_bytes(100);
    let err = broker.resolve("BIG", CELL).err().unwrap();
    assert_eq!(err.kind, PortErrorKind::TooLarge);
    assert!(err.message.contains("101 bytes"), "{}", err.message);
    assert!(!err.message.contains("xxxx"));
    assert_eq!(broker.resolve("EXACT", CELL).unwrap().expose().len(), 100);
}

#[test]
fn default_size_cap_is_one_mebibyte() {
    let dir = dir_with("AT_CAP", &vec![1u8; 1 << 20]);
    std::fs::write(dir.path().join("OVER_CAP"), vec![1u8; (1 << 20) + 1]).unwrap();
    let broker = FileSecretBroker::new(dir.path());
    assert_eq!(
        broker.resolve("AT_CAP", CELL).unwrap().expose().len(),
        1 << 20
    );
    assert_eq!(
        broker.resolve("OVER_CAP", CELL).err().unwrap().kind,
        PortErrorKind::TooLarge
    );
}

#[test]
fn invalid_keys_are_refused_before_touching_the_filesystem() {
    let dir = dir_with("lower", b"v");
    std::fs::write(dir.path().join("OK"), b"v").unwrap();
    let broker = FileSecretBroker::new(dir.path());
    let too_long = "A".repeat(129);
    for key in [
        "",
        "lower",
        "../OK",
        "A/B",
        "1ABC",
        "A-B",
        "A B",
        "A\0",
        ".",
        too_long.as_str(),
    ] {
        let err = broker.resolve(key, CELL).err().unwrap();
        assert_eq!(err.kind, PortErrorKind::Refused, "key {key:?}");
        assert!(err.message.contains("^[A-Z_][A-Z0-9_]{0,127}$"));
    }
    assert!(validate_secret_key(&"A".repeat(128)).is_ok());
    assert!(validate_secret_key("_").is_ok());
    assert!(validate_secret_key("A1_B2").is_ok());
}

#[test]
fn revoke_is_idempotent_and_later_resolves_still_read_the_source() {
    let dir = dir_with("KEY", b"v1");
    let broker = FileSecretBroker::new(dir.path());
    assert_eq!(broker.resolve("KEY", CELL).unwrap().expose(), b"v1");
    broker.revoke_for_cell(CELL).unwrap();
    broker.revoke_for_cell(CELL).unwrap();
    // Nothing was cached: a rotated file is seen by the next resolve.
    std::fs::write(dir.path().join("KEY"), b"v2").unwrap();
    assert_eq!(broker.resolve("KEY", CELL).unwrap().expose(), b"v2");
}

#[test]
fn env_broker_reads_cellos_secret_prefixed_variables() {
    std::env::set_var("CELLOS_SECRET_ENV_BROKER_HAPPY_PATH", "from-env");
    let broker = EnvSecretBroker::new();
    assert_eq!(broker.name(), "env");
    assert_eq!(
        broker
            .resolve("ENV_BROKER_HAPPY_PATH", CELL)
            .unwrap()
            .expose(),
        b"from-env"
    );
    broker.revoke_for_cell(CELL).unwrap();
}

#[test]
fn env_broker_reports_the_variable_to_set_when_missing() {
    let err = EnvSecretBroker::new()
        .resolve("ENV_BROKER_NEVER_SET_XYZ", CELL)
        .err()
        .unwrap();
    assert_eq!(err.kind, PortErrorKind::NotFound);
    assert!(err
        .message
        .contains("CELLOS_SECRET_ENV_BROKER_NEVER_SET_XYZ"));
}

#[test]
fn env_broker_refuses_invalid_keys() {
    std::env::set_var("CELLOS_SECRET_lower_env_key", "v");
    let err = EnvSecretBroker::new()
        .resolve("lower_env_key", CELL)
        .err()
        .unwrap();
    assert_eq!(err.kind, PortErrorKind::Refused);
}

//! LocalExportSink against real directories: digests, atomic placement, traversal and symlink
//! refusals, streaming of large artifacts.

use std::io::Read;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

use cellos_adapters::export::LocalExportSink;
use cellos_core::ports::{ExportSink, PortErrorKind};
use cellos_core::spec::ExportTargetKind;
use sha2::{Digest, Sha256};

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[test]
fn push_writes_the_file_and_the_receipt_matches_its_content() {
    let root = tempfile::tempdir().unwrap();
    let sink = LocalExportSink::new(root.path())
        .unwrap()
        .with_target_name("local");
    let content = b"{\"result\": 42}\n";
    let receipt = sink
        .push("cell-a", "result.json", &mut &content[..])
        .unwrap();

    let dest = root.path().join("cell-a").join("result.json");
    assert_eq!(std::fs::read(&dest).unwrap(), content);
    assert_eq!(receipt.name, "result.json");
    assert_eq!(receipt.target_kind, ExportTargetKind::LocalPath);
    assert_eq!(receipt.target_name.as_deref(), Some("local"));
    assert_eq!(receipt.destination, dest.display().to_string());
    assert!(std::path::Path::new(&receipt.destination).is_absolute());
    assert_eq!(receipt.sha256, sha256_hex(content));
    assert_eq!(receipt.size_bytes, content.len() as u64);
    assert_eq!(
        sink.destination_hint("cell-a", "result.json"),
        receipt.destination
    );
    assert_eq!(sink.target_kind(), ExportTargetKind::LocalPath);
}

#[test]
fn exported_files_are_0600_in_0700_directories_and_no_temp_file_remains() {
    let root = tempfile::tempdir().unwrap();
    let sink = LocalExportSink::new(root.path().join("exports")).unwrap();
    sink.push("cell-b", "out.txt", &mut &b"x"[..]).unwrap();
    let cell_dir = root.path().join("exports").join("cell-b");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&cell_dir.join("out.txt")), 0o600);
    assert_eq!(mode(&cell_dir), 0o700);
    let names: Vec<_> = std::fs::read_dir(&cell_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["out.txt"]);
}

#[test]
fn pushing_again_replaces_the_file_atomically_with_a_new_inode() {
    let root = tempfile::tempdir().unwrap();
    let sink = LocalExportSink::new(root.path()).unwrap();
    sink.push("cell-c", "log", &mut &b"first"[..]).unwrap();
    let dest = root.path().join("cell-c").join("log");
    let before = std::fs::metadata(&dest).unwrap().ino();
    let receipt = sink.push("cell-c", "log", &mut &b"second"[..]).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"second");
    assert_eq!(receipt.sha256, sha256_hex(b"second"));
    // Rename-into-place, not an in-place rewrite: the old inode was replaced.
    assert_ne!(std::fs::metadata(&dest).unwrap().ino(), before);
}

#[test]
fn traversal_and_malformed_names_are_refused_and_nothing_is_written() {
    let root = tempfile::tempdir().unwrap();
    let sink = LocalExportSink::new(root.path().join("exports")).unwrap();
    let long = "n".repeat(256);
    for name in [
        "",
        ".",
        "..",
        "../escape",
        "a/b",
        "/etc/passwd",
        "nul\0byte",
        "line\nbreak",
        long.as_str(),
    ] {
        let err = sink.push("cell-d", name, &mut &b"x"[..]).err().unwrap();
        assert_eq!(err.kind, PortErrorKind::Refused, "name {name:?}");
    }
    let long_id = "c".repeat(129);
    for cell_id in ["", ".", "..", "../x", "a/b", long_id.as_str()] {
        let err = sink.push(cell_id, "ok", &mut &b"x"[..]).err().unwrap();
        assert_eq!(err.kind, PortErrorKind::Refused, "cell id {cell_id:?}");
    }
    assert!(!root.path().join("escape").exists());
    assert!(
        !root.path().join("exports").exists(),
        "refusals must not create the root"
    );
    assert!(sink
        .push(&"c".repeat(128), &"n".repeat(255), &mut &b"x"[..])
        .is_ok());
}

#[test]
fn a_symlinked_cell_directory_is_refused_and_its_target_untouched() {
    let root = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    symlink(elsewhere.path(), root.path().join("cell-e")).unwrap();
    let sink = LocalExportSink::new(root.path()).unwrap();
    let err = sink.push("cell-e", "out", &mut &b"x"[..]).err().unwrap();
    assert_eq!(err.kind, PortErrorKind::Refused);
    assert!(err.message.contains("symlink"), "{}", err.message);
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
}

#[test]
fn a_cell_path_that_is_a_regular_file_is_refused() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("cell-f"), b"not a dir").unwrap();
    let sink = LocalExportSink::new(root.path()).unwrap();
    let err = sink.push("cell-f", "out", &mut &b"x"[..]).err().unwrap();
    assert_eq!(err.kind, PortErrorKind::Refused);
}

#[test]
fn an_existing_symlink_destination_is_refused_and_not_written_through() {
    let root = tempfile::tempdir().unwrap();
    let victim_dir = tempfile::tempdir().unwrap();
    let victim = victim_dir.path().join("victim");
    std::fs::write(&victim, b"original").unwrap();
    std::fs::create_dir(root.path().join("cell-g")).unwrap();
    symlink(&victim, root.path().join("cell-g").join("out")).unwrap();
    let sink = LocalExportSink::new(root.path()).unwrap();
    let err = sink.push("cell-g", "out", &mut &b"evil"[..]).err().unwrap();
    assert_eq!(err.kind, PortErrorKind::Refused);
    assert_eq!(std::fs::read(&victim).unwrap(), b"original");
    assert!(std::fs::symlink_metadata(root.path().join("cell-g/out"))
        .unwrap()
        .file_type()
        .is_symlink());
    // The refused push left no temporary file behind.
    assert_eq!(
        std::fs::read_dir(root.path().join("cell-g"))
            .unwrap()
            .count(),
        1
    );
}

#[test]
fn an_existing_directory_destination_is_refused() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("cell-h").join("out")).unwrap();
    let sink = LocalExportSink::new(root.path()).unwrap();
    let err = sink.push("cell-h", "out", &mut &b"x"[..]).err().unwrap();
    assert_eq!(err.kind, PortErrorKind::Refused);
}

/// A deterministic byte stream that is never held in memory whole, and remembers the largest
/// read it was asked for.
struct Generated {
    remaining: u64,
    state: u64,
    largest_read: usize,
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.largest_read = self.largest_read.max(buf.len());
        let n = buf.len().min(self.remaining as usize);
        for b in &mut buf[..n] {
            self.state = self
                .state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *b = (self.state >> 56) as u8;
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[test]
fn a_large_artifact_is_streamed_in_bounded_chunks_with_a_correct_digest() {
    const SIZE: u64 = 24 * 1024 * 1024 + 17;
    let root = tempfile::tempdir().unwrap();
    let sink = LocalExportSink::new(root.path()).unwrap();
    let mut source = Generated {
        remaining: SIZE,
        state: 7,
        largest_read: 0,
    };
    let receipt = sink.push("cell-i", "big.bin", &mut source).unwrap();

    // Bounded reads: the sink never asked for more than a small buffer at a time.
    assert!(
        source.largest_read <= 1024 * 1024,
        "read of {} bytes",
        source.largest_read
    );
    assert_eq!(receipt.size_bytes, SIZE);
    let mut expected = Generated {
        remaining: SIZE,
        state: 7,
        largest_read: 0,
    };
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = expected.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    assert_eq!(receipt.sha256, hex::encode(hasher.finalize()));
    let on_disk = std::fs::read(root.path().join("cell-i/big.bin")).unwrap();
    assert_eq!(on_disk.len() as u64, SIZE);
    assert_eq!(sha256_hex(&on_disk), receipt.sha256);
}

#[test]
fn a_failing_source_leaves_no_partial_file() {
    struct Broken(u32);
    impl Read for Broken {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.0 += 1;
            if self.0 > 3 {
                return Err(std::io::Error::other("cell vanished"));
            }
            buf[0] = b'x';
            Ok(1)
        }
    }
    let root = tempfile::tempdir().unwrap();
    let sink = LocalExportSink::new(root.path()).unwrap();
    let err = sink.push("cell-j", "out", &mut Broken(0)).err().unwrap();
    assert_eq!(err.kind, PortErrorKind::Io);
    assert!(err.message.contains("cell vanished"));
    assert_eq!(
        std::fs::read_dir(root.path().join("cell-j"))
            .unwrap()
            .count(),
        0
    );
}

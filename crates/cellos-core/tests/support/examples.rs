//! The shipped example documents under `examples/`, shared by every test that walks them.

use std::path::{Path, PathBuf};

/// The `.yaml` files of `examples/<sub>`, sorted; panics when there are none, so that a moved
/// directory cannot make a corpus test pass vacuously.
pub fn yaml_files(sub: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(sub);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no examples in {}", dir.display());
    files
}

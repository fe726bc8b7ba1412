//! The content-addressed store of materialized root filesystems.
//!
//! Layout: `<store>/<manifest-hex>/rootfs` plus `<store>/<manifest-hex>/complete.json`.
//! An entry is built in `<store>/.tmp-<manifest-hex>-<random>`, flushed to disk, and renamed
//! into place whole with the marker already inside, so a reader sees either no entry or a
//! complete one, even after a power loss. Builders of the same image serialize on
//! `<store>/.lock-<manifest-hex>` (flock), so the second waits and then finds the first one's
//! entry instead of unpacking again; the lock holder also removes build directories of its
//! image left by a builder that was killed. Lock files are left in place: deleting a lock
//! file another process is waiting on would let a third take a different one.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;
use serde::{Deserialize, Serialize};

use super::OciError;

const MARKER: &str = "complete.json";
const ROOTFS: &str = "rootfs";

/// Written last into a finished entry: proves completeness and carries what the build
/// reported, so a cache hit returns the same answer as the build did.
#[derive(Serialize, Deserialize)]
struct Marker {
    manifest: String,
    skipped: Vec<String>,
}

/// A finished store entry.
pub(crate) struct StoreEntry {
    pub(crate) rootfs: PathBuf,
    pub(crate) skipped: Vec<String>,
}

/// Returns the store entry of manifest `digest` (whose hex part is `hex`), running `build`
/// on an empty rootfs directory when the store does not have it yet. `build` returns the
/// special files it did not create.
pub(crate) fn get_or_build(
    store: &Path,
    hex: &str,
    digest: &str,
    build: impl FnOnce(&Path) -> Result<Vec<String>, OciError>,
) -> Result<StoreEntry, OciError> {
    let entry = store.join(hex);
    if let Some(done) = finished(&entry, digest) {
        return Ok(done);
    }
    fs::create_dir_all(store)
        .map_err(|e| OciError::io(format!("creating image store {}", store.display()), e))?;
    let _lock = lock(store, hex)?;
    if let Some(done) = finished(&entry, digest) {
        return Ok(done);
    }
    if entry.exists() {
        // No valid marker: left by something other than this code (entries appear whole).
        fs::remove_dir_all(&entry).map_err(|e| {
            OciError::io(
                format!("removing incomplete store entry {}", entry.display()),
                e,
            )
        })?;
    }
    remove_stale_builds(store, hex)?;
    let tmp = tempfile::Builder::new()
        .prefix(&build_prefix(hex))
        .tempdir_in(store)
        .map_err(|e| {
            OciError::io(
                format!("creating a build directory in {}", store.display()),
                e,
            )
        })?;
    let rootfs = tmp.path().join(ROOTFS);
    let io = |what: &str, path: &Path| {
        let what = format!("{what} {}", path.display());
        move |e| OciError::io(what, e)
    };
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755))
        .map_err(io("setting mode of", tmp.path()))?;
    fs::create_dir(&rootfs).map_err(io("creating", &rootfs))?;
    fs::set_permissions(&rootfs, fs::Permissions::from_mode(0o755))
        .map_err(io("setting mode of", &rootfs))?;
    let skipped = build(&rootfs)?;
    let marker = Marker {
        manifest: digest.to_string(),
        skipped,
    };
    let marker_path = tmp.path().join(MARKER);
    let bytes = serde_json::to_vec_pretty(&marker).map_err(|source| OciError::Json {
        what: marker_path.display().to_string(),
        source,
    })?;
    fs::write(&marker_path, bytes).map_err(io("writing", &marker_path))?;
    // Without this, a crash soon after the rename could leave a marked entry whose files
    // never reached the disk.
    let dir = File::open(tmp.path()).map_err(io("opening", tmp.path()))?;
    rustix::fs::syncfs(&dir).map_err(|e| io("flushing", tmp.path())(e.into()))?;
    match fs::rename(tmp.path(), &entry) {
        Ok(()) => {
            // The directory now lives at `entry`; nothing is left for the guard to delete.
            let _ = tmp.keep();
            Ok(StoreEntry {
                rootfs: entry.join(ROOTFS),
                skipped: marker.skipped,
            })
        }
        // Someone published the entry without our lock (rename wins): use theirs.
        Err(e) => finished(&entry, digest)
            .ok_or_else(|| OciError::io(format!("publishing store entry {}", entry.display()), e)),
    }
}

fn build_prefix(hex: &str) -> String {
    format!(".tmp-{hex}-")
}

/// Removes build directories of this image. Only the lock holder builds, so any found while
/// holding the lock belong to a builder that died.
fn remove_stale_builds(store: &Path, hex: &str) -> Result<(), OciError> {
    let prefix = build_prefix(hex);
    let listing =
        fs::read_dir(store).map_err(|e| OciError::io(format!("listing {}", store.display()), e))?;
    for dirent in listing {
        let dirent = dirent.map_err(|e| OciError::io(format!("listing {}", store.display()), e))?;
        if dirent.file_name().to_string_lossy().starts_with(&prefix) {
            let path = dirent.path();
            fs::remove_dir_all(&path).map_err(|e| {
                OciError::io(
                    format!("removing stale build directory {}", path.display()),
                    e,
                )
            })?;
        }
    }
    Ok(())
}

/// The entry at `entry` if it is complete and belongs to `digest`.
fn finished(entry: &Path, digest: &str) -> Option<StoreEntry> {
    let bytes = fs::read(entry.join(MARKER)).ok()?;
    let marker: Marker = serde_json::from_slice(&bytes).ok()?;
    let rootfs = entry.join(ROOTFS);
    (marker.manifest == digest && rootfs.is_dir()).then_some(StoreEntry {
        rootfs,
        skipped: marker.skipped,
    })
}

/// Takes the per-image build lock; released when the returned file is dropped.
fn lock(store: &Path, hex: &str) -> Result<File, OciError> {
    let path = store.join(format!(".lock-{hex}"));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| OciError::io(format!("opening lock file {}", path.display()), e))?;
    rustix::fs::flock(&file, FlockOperation::LockExclusive)
        .map_err(|e| OciError::io(format!("locking {}", path.display()), e.into()))?;
    Ok(file)
}

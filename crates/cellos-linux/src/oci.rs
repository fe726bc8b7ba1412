//! Root filesystems for cells from OCI image layouts.
//!
//! [`materialize`] turns an image in an OCI image layout directory (`oci-layout`,
//! `index.json`, `blobs/sha256/...`) into a directory tree a cell can bind read-only as its
//! root. Every blob is checked against its descriptor's SHA-256 and size before use, layers
//! are extracted without ever writing outside the rootfs (see the `unpack` module), and results are
//! kept in a content-addressed store keyed by the manifest digest, so an image is unpacked
//! once however many cells use it.

mod blobs;
mod error;
mod resolve;
mod store;
mod unpack;
mod zstd;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

pub use error::OciError;

/// A materialized image root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaterializedRootfs {
    /// `<store>/<manifest-hex>/rootfs`; shared by every cell using this image, so bind it
    /// read-only.
    pub path: PathBuf,
    /// `sha256:<hex>` of the image manifest the rootfs was built from.
    pub digest: String,
    /// Special files (device nodes, FIFOs) the image contains but that were not created,
    /// as `<path> (<kind> in layer <digest>)`.
    pub skipped: Vec<String>,
}

/// Materializes image `reference` of the OCI image layout at `layout` into `store`.
///
/// `reference` is an `org.opencontainers.image.ref.name` annotation value from `index.json`
/// or a `sha256:<hex>` manifest (or index) digest. Image indexes are followed to this host's
/// platform (linux/amd64 on x86_64). A second call for the same manifest returns the stored
/// rootfs without unpacking; concurrent calls, across processes too, build it once.
pub fn materialize(
    layout: &Path,
    reference: &str,
    store: &Path,
) -> Result<MaterializedRootfs, OciError> {
    let layout = blobs::Layout::open(layout)?;
    let resolved = resolve::resolve(&layout, reference)?;
    let digest = resolved.descriptor.digest().to_string();
    let hex = blobs::sha256_hex("image manifest", &resolved.descriptor)?.to_string();
    let manifest = resolved.manifest;
    let entry = store::get_or_build(store, &hex, &digest, |rootfs| {
        // The config is not needed to build the rootfs, but it is part of the image: a
        // tampered one means the layout cannot be trusted.
        layout.read_json_blob("image config", manifest.config())?;
        let root = open_root(rootfs)?;
        let mut skipped = Vec::new();
        for layer in manifest.layers() {
            unpack::apply_layer(&layout, layer, &root, &mut skipped)?;
        }
        Ok(skipped)
    })?;
    Ok(MaterializedRootfs {
        path: entry.rootfs,
        digest,
        skipped: entry.skipped,
    })
}

fn open_root(rootfs: &Path) -> Result<OwnedFd, OciError> {
    rustix::fs::open(
        rootfs,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| OciError::io(format!("opening {}", rootfs.display()), e.into()))
}

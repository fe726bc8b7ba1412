//! Builds OCI image layouts on disk for tests: tar layers (plain, gzip or zstd), config,
//! manifests, image indexes and `index.json`, each blob named by its real SHA-256.
//!
//! Include it from an integration test with
//! `#[path = "support/oci_builder.rs"] mod oci_builder;` and call [`build_test_layout`] for a
//! one-layer image of plain files. Everything else here is reachable from that function, so a
//! test crate using only it compiles without dead-code warnings.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::{Digest, Sha256};

/// One tar entry of a test layer. `path` and `link` are written into the header as raw
/// bytes, so tests can produce names a well-behaved tar writer would refuse (`../evil`).
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: String,
    pub kind: tar::EntryType,
    pub data: Vec<u8>,
    pub mode: u32,
    /// Target of a symlink or hardlink.
    pub link: String,
}

/// An empty regular file with mode 0644.
impl Default for Entry {
    fn default() -> Self {
        Entry {
            path: String::new(),
            kind: tar::EntryType::Regular,
            data: Vec::new(),
            mode: 0o644,
            link: String::new(),
        }
    }
}

/// A regular file entry from `(path, bytes, mode)`.
impl From<(&str, &[u8], u32)> for Entry {
    fn from((path, data, mode): (&str, &[u8], u32)) -> Self {
        Entry {
            path: path.to_string(),
            data: data.to_vec(),
            mode,
            ..Entry::default()
        }
    }
}

/// A blob written into the layout, described as an OCI descriptor needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

impl Blob {
    /// The descriptor JSON of this blob, with extra fields (annotations, platform) merged in.
    pub fn descriptor(&self, extra: serde_json::Value) -> serde_json::Value {
        let mut desc = json!({
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        });
        if let (Some(desc), Some(extra)) = (desc.as_object_mut(), extra.as_object()) {
            desc.extend(extra.clone());
        }
        desc
    }
}

/// Writes an OCI image layout into a directory.
pub struct LayoutBuilder {
    dir: PathBuf,
}

impl LayoutBuilder {
    /// Creates `dir/oci-layout` and `dir/blobs/sha256`.
    pub fn new(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir.join("blobs").join("sha256"))?;
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        Ok(LayoutBuilder {
            dir: dir.to_path_buf(),
        })
    }

    /// Path of the blob with `digest` (`sha256:<hex>`).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir.join("blobs").join("sha256").join(hex)
    }

    /// Stores `bytes` as a blob and describes it.
    pub fn blob(&self, media_type: &str, bytes: &[u8]) -> io::Result<Blob> {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        fs::write(self.blob_path(&digest), bytes)?;
        Ok(Blob {
            media_type: media_type.to_string(),
            digest,
            size: bytes.len() as u64,
        })
    }

    /// Writes a layer of `entries`, in order, as `format`: "tar", "tar+gzip" or "tar+zstd"
    /// (zstd frames of raw blocks: valid zstd that needs no encoder).
    pub fn layer(&self, entries: &[Entry], format: &str) -> io::Result<Blob> {
        let tar = tar_bytes(entries)?;
        let bytes = match format {
            "tar" => tar,
            "tar+gzip" => {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(&tar)?;
                gz.finish()?
            }
            "tar+zstd" => zstd_stored(&tar),
            other => return Err(io::Error::other(format!("unknown layer format {other}"))),
        };
        self.blob(
            &format!("application/vnd.oci.image.layer.v1.{format}"),
            &bytes,
        )
    }

    /// Writes a config and a manifest over `layers`; returns the manifest blob.
    pub fn manifest(&self, layers: &[Blob]) -> io::Result<Blob> {
        let diff_ids: Vec<String> = layers.iter().map(|l| l.digest.clone()).collect();
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "config": {}
        });
        let config = self.blob(
            "application/vnd.oci.image.config.v1+json",
            &serde_json::to_vec(&config)?,
        )?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config.descriptor(json!({})),
            "layers": layers.iter().map(|l| l.descriptor(json!({}))).collect::<Vec<_>>(),
        });
        self.blob(
            "application/vnd.oci.image.manifest.v1+json",
            &serde_json::to_vec(&manifest)?,
        )
    }

    /// Writes `index.json` listing `refs`: an optional ref name and the blob it names.
    pub fn write_index(&self, refs: &[(Option<&str>, &Blob)]) -> io::Result<()> {
        let manifests: Vec<serde_json::Value> = refs
            .iter()
            .map(|(name, blob)| match name {
                Some(name) => blob.descriptor(json!({
                    "annotations": { "org.opencontainers.image.ref.name": name }
                })),
                None => blob.descriptor(json!({})),
            })
            .collect();
        let index = json!({ "schemaVersion": 2, "manifests": manifests });
        fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec_pretty(&index)?,
        )
    }
}

/// A one-layer (gzip) image of plain files `(path, bytes, mode)` at `dir`, named "test";
/// returns the reference to pass to `materialize`.
pub fn build_test_layout(dir: &Path, files: &[(&str, &[u8], u32)]) -> io::Result<String> {
    let builder = LayoutBuilder::new(dir)?;
    let entries: Vec<Entry> = files.iter().map(|&f| Entry::from(f)).collect();
    let layer = builder.layer(&entries, "tar+gzip")?;
    let manifest = builder.manifest(&[layer])?;
    builder.write_index(&[(Some("test"), &manifest)])?;
    Ok("test".to_string())
}

/// Serializes entries into a tar archive, writing names as raw header bytes.
fn tar_bytes(entries: &[Entry]) -> io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        put_raw(&mut header.as_old_mut().name, &entry.path)?;
        put_raw(&mut header.as_old_mut().linkname, &entry.link)?;
        header.set_entry_type(entry.kind);
        header.set_size(entry.data.len() as u64);
        header.set_mode(entry.mode);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        tar.append(&header, entry.data.as_slice())?;
    }
    tar.into_inner()
}

/// Writes a name into a fixed header field unchecked (the tar crate's setters refuse `..`).
fn put_raw(field: &mut [u8; 100], value: &str) -> io::Result<()> {
    let bytes = value.as_bytes();
    if bytes.len() > field.len() {
        return Err(io::Error::other("test entry name longer than 100 bytes"));
    }
    field[..bytes.len()].copy_from_slice(bytes);
    Ok(())
}

/// Wraps `data` in zstd frames made of raw blocks, two frames when there is enough data
/// (so readers must handle concatenated frames), followed by a skippable frame.
fn zstd_stored(data: &[u8]) -> Vec<u8> {
    let (first, second) = data.split_at(data.len() / 2);
    let mut out = Vec::new();
    for part in [first, second] {
        out.extend_from_slice(&0xFD2F_B528u32.to_le_bytes());
        // Frame header descriptor: single segment, 8-byte content size, no checksum.
        out.push(0b1110_0000);
        out.extend_from_slice(&(part.len() as u64).to_le_bytes());
        let mut chunks = part.chunks(64 * 1024).peekable();
        if chunks.peek().is_none() {
            out.extend_from_slice(&[1, 0, 0]); // last, raw, empty
        }
        while let Some(chunk) = chunks.next() {
            let last = u32::from(chunks.peek().is_none());
            let header = last | ((chunk.len() as u32) << 3);
            out.extend_from_slice(&header.to_le_bytes()[..3]);
            out.extend_from_slice(chunk);
        }
    }
    out.extend_from_slice(&0x184D_2A50u32.to_le_bytes());
    out.extend_from_slice(&4u32.to_le_bytes());
    out.extend_from_slice(b"skip");
    out
}

//! Reading an OCI image layout's files with content addressing enforced.
//!
//! A blob is only ever reached through its descriptor: the digest must be a well-formed
//! SHA-256 (so the blob path cannot leave `blobs/sha256`), and the bytes must hash to it with
//! exactly the descriptor's size before anything parses them.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, DigestAlgorithm, OciLayout};
use sha2::{Digest as _, Sha256};

use super::OciError;

/// Largest JSON document (index, manifest, config) read into memory.
pub(crate) const JSON_LIMIT: u64 = 4 * 1024 * 1024;

/// An opened OCI image layout directory.
pub(crate) struct Layout {
    root: PathBuf,
}

impl Layout {
    /// Opens `root`, checking its `oci-layout` marker file.
    pub(crate) fn open(root: &Path) -> Result<Self, OciError> {
        let marker = root.join("oci-layout");
        let bytes = read_capped(&marker, JSON_LIMIT).map_err(|source| OciError::NotALayout {
            path: root.to_path_buf(),
            detail: format!("cannot read {}: {source}", marker.display()),
        })?;
        let header: OciLayout =
            serde_json::from_slice(&bytes).map_err(|source| OciError::Json {
                what: marker.display().to_string(),
                source,
            })?;
        let version = header.image_layout_version();
        if version.split('.').next() != Some("1") {
            return Err(OciError::NotALayout {
                path: root.to_path_buf(),
                detail: format!(
                    "imageLayoutVersion is '{version}', only 1.x layouts are understood"
                ),
            });
        }
        Ok(Layout {
            root: root.to_path_buf(),
        })
    }

    /// Path of the layout's `index.json`.
    pub(crate) fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    /// The raw bytes of `index.json` (the one file that is not content-addressed).
    pub(crate) fn read_index(&self) -> Result<Vec<u8>, OciError> {
        let path = self.index_path();
        read_capped(&path, JSON_LIMIT)
            .map_err(|source| OciError::io(format!("reading {}", path.display()), source))
    }

    /// Reads a JSON blob into memory after checking its size and digest.
    pub(crate) fn read_json_blob(
        &self,
        what: &str,
        desc: &Descriptor,
    ) -> Result<Vec<u8>, OciError> {
        let digest = desc.digest().to_string();
        if desc.size() > JSON_LIMIT {
            return Err(OciError::BlobTooLarge {
                what: what.to_string(),
                digest,
                size: desc.size(),
                limit: JSON_LIMIT,
            });
        }
        let mut file = self.open_sized(what, desc)?;
        let mut bytes = Vec::new();
        // Read one byte past the expected size so a file that grew since fstat is noticed.
        (&mut file)
            .take(desc.size() + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| OciError::io(format!("reading {what} {digest}"), source))?;
        check_size(&digest, desc.size(), bytes.len() as u64)?;
        check_digest(&digest, desc, &hex::encode(Sha256::digest(&bytes)))?;
        Ok(bytes)
    }

    /// Opens a (layer) blob whose whole content has been hashed and found to match its
    /// descriptor; the returned file is positioned at its start.
    pub(crate) fn open_verified_blob(
        &self,
        what: &str,
        desc: &Descriptor,
    ) -> Result<File, OciError> {
        let digest = desc.digest().to_string();
        let mut file = self.open_sized(what, desc)?;
        let mut verifier = VerifyingReader::new(&mut file);
        io::copy(&mut verifier, &mut io::sink())
            .map_err(|source| OciError::io(format!("reading {what} {digest}"), source))?;
        verifier.verify(desc)?;
        file.seek(SeekFrom::Start(0))
            .map_err(|source| OciError::io(format!("rewinding {what} {digest}"), source))?;
        Ok(file)
    }

    /// Opens the blob of `desc`, refusing anything but a regular file of the right size.
    fn open_sized(&self, what: &str, desc: &Descriptor) -> Result<File, OciError> {
        let hex = sha256_hex(what, desc)?;
        let path = self.root.join("blobs").join("sha256").join(hex);
        let file = File::open(&path).map_err(|source| {
            OciError::io(
                format!(
                    "opening {what} blob {} (is the layout complete?)",
                    path.display()
                ),
                source,
            )
        })?;
        let meta = file
            .metadata()
            .map_err(|source| OciError::io(format!("inspecting {}", path.display()), source))?;
        if !meta.is_file() {
            return Err(OciError::InvalidDocument {
                what: path.display().to_string(),
                detail: "blob is not a regular file; re-export the image layout".to_string(),
            });
        }
        check_size(desc.digest().as_ref(), desc.size(), meta.len())?;
        Ok(file)
    }
}

/// The 64-hex SHA-256 of a descriptor, validated so it can be used as a file name.
pub(crate) fn sha256_hex<'d>(what: &str, desc: &'d Descriptor) -> Result<&'d str, OciError> {
    let digest = desc.digest();
    let hex = digest.digest();
    let well_formed =
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if *digest.algorithm() != DigestAlgorithm::Sha256 || !well_formed {
        return Err(OciError::InvalidDigest {
            what: what.to_string(),
            digest: digest.to_string(),
        });
    }
    Ok(hex)
}

fn check_size(digest: &str, expected: u64, actual: u64) -> Result<(), OciError> {
    if expected != actual {
        return Err(OciError::SizeMismatch {
            digest: digest.to_string(),
            expected,
            actual,
        });
    }
    Ok(())
}

fn check_digest(digest: &str, desc: &Descriptor, actual_hex: &str) -> Result<(), OciError> {
    if desc.digest().digest() != actual_hex {
        return Err(OciError::DigestMismatch {
            digest: digest.to_string(),
            actual: actual_hex.to_string(),
        });
    }
    Ok(())
}

/// Reads at most `limit` bytes of a small file; larger files are an error.
fn read_capped(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("file is larger than {limit} bytes"),
        ));
    }
    Ok(bytes)
}

/// Hashes and counts every byte read through it, so a blob can be checked against its
/// descriptor while it streams into the tar reader.
pub(crate) struct VerifyingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> VerifyingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        VerifyingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Checks what was read so far (the caller drains the reader first) against `desc`.
    pub(crate) fn verify(self, desc: &Descriptor) -> Result<(), OciError> {
        let digest = desc.digest().to_string();
        check_size(&digest, desc.size(), self.count)?;
        check_digest(&digest, desc, &hex::encode(self.hasher.finalize()))
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

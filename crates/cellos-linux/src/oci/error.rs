//! The error type of OCI rootfs materialization.
//!
//! Each variant names the file, blob or layer entry at fault and says what to do about it,
//! so an operator can act on the message alone.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// A file or directory operation on the layout or the store failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    /// The directory is not a usable OCI image layout.
    #[error(
        "{} is not a usable OCI image layout: {detail}; point the rootfs at a directory made \
         by `skopeo copy ... oci:DIR` or `oras`/`buildah push oci:DIR`",
        path.display()
    )]
    NotALayout { path: PathBuf, detail: String },

    /// A JSON document (oci-layout, index.json, manifest, config) does not parse.
    #[error("{what} is not valid OCI JSON: {source}; re-export the image layout")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },

    /// A document parsed but violates the OCI image spec.
    #[error("{what}: {detail}")]
    InvalidDocument { what: String, detail: String },

    /// The reference matches no `org.opencontainers.image.ref.name` annotation or digest.
    #[error(
        "image reference '{reference}' not found in {}; available references: {}; \
         use one of these names or a sha256:<64 hex> manifest digest",
        index.display(),
        if available.is_empty() { "(none)".to_string() } else { available.join(", ") }
    )]
    UnknownReference {
        reference: String,
        index: PathBuf,
        available: Vec<String>,
    },

    /// A digest is not `sha256:` followed by 64 lowercase hex digits.
    #[error(
        "digest '{digest}' in {what} is not supported: only sha256:<64 lowercase hex> digests \
         are accepted (other forms could name paths outside blobs/sha256)"
    )]
    InvalidDigest { what: String, digest: String },

    /// A blob's size on disk differs from its descriptor.
    #[error(
        "blob {digest} has {actual} bytes but its descriptor says {expected}; the layout is \
         corrupt or was tampered with: re-pull the image"
    )]
    SizeMismatch {
        digest: String,
        expected: u64,
        actual: u64,
    },

    /// A blob's SHA-256 differs from its descriptor.
    #[error(
        "blob {digest} hashes to sha256:{actual}; the layout is corrupt or was tampered with: \
         re-pull the image"
    )]
    DigestMismatch { digest: String, actual: String },

    /// A JSON blob is larger than we are willing to read into memory.
    #[error(
        "{what} {digest} is {size} bytes, above the {limit}-byte limit for JSON documents; \
         a real manifest or config is far smaller: check the descriptor's mediaType"
    )]
    BlobTooLarge {
        what: String,
        digest: String,
        size: u64,
        limit: u64,
    },

    /// A descriptor's media type is not one we can use in its position.
    #[error("{what} has media type '{media_type}', which is not supported: {fix}")]
    UnsupportedMediaType {
        what: String,
        media_type: String,
        fix: String,
    },

    /// An image index has no manifest for this host's platform.
    #[error(
        "image index {digest} has no manifest for {wanted}; it offers: {}; pull the image \
         for {wanted} or reference a platform manifest by digest",
        if available.is_empty() { "(no platforms listed)".to_string() } else { available.join(", ") }
    )]
    NoMatchingPlatform {
        digest: String,
        wanted: String,
        available: Vec<String>,
    },

    /// Image indexes nest deeper than we follow.
    #[error(
        "image indexes nest more than {limit} levels below '{reference}'; reference a \
         platform manifest by digest instead"
    )]
    NestingTooDeep { reference: String, limit: usize },

    /// A layer entry would escape the rootfs or is otherwise unsafe to extract.
    #[error("layer {layer}: entry '{entry}' refused: {reason}")]
    UnsafeEntry {
        layer: String,
        entry: String,
        reason: String,
    },

    /// A layer entry uses a tar feature we do not extract.
    #[error("layer {layer}: entry '{entry}' is a {kind}, which is not supported: {fix}")]
    UnsupportedEntry {
        layer: String,
        entry: String,
        kind: String,
        fix: String,
    },
}

impl OciError {
    /// Shorthand for [`OciError::Io`].
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        OciError::Io {
            what: what.into(),
            source,
        }
    }
}

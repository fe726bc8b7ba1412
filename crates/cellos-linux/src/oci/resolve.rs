//! Resolving an image reference to one platform manifest.
//!
//! A reference is either an `org.opencontainers.image.ref.name` annotation in `index.json` or
//! a `sha256:` digest. Image indexes (multi-platform images) are followed down to the manifest
//! for this host's platform.

use oci_spec::image::{Arch, Descriptor, ImageIndex, ImageManifest, MediaType, Os};

use super::blobs::{sha256_hex, Layout};
use super::OciError;

/// Annotation naming an image inside a layout's `index.json`.
const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// How many image indexes deep we follow before giving up.
const MAX_NESTING: usize = 4;
/// Docker's media types for the same documents; common in layouts written by docker tooling.
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// A manifest, verified against its descriptor, and that descriptor.
pub(crate) struct ResolvedManifest {
    pub(crate) descriptor: Descriptor,
    pub(crate) manifest: ImageManifest,
}

/// What a descriptor points at.
enum Target {
    Manifest,
    Index,
}

fn target_of(what: &str, desc: &Descriptor) -> Result<Target, OciError> {
    match desc.media_type() {
        MediaType::ImageManifest => Ok(Target::Manifest),
        MediaType::ImageIndex => Ok(Target::Index),
        MediaType::Other(m) if m == DOCKER_MANIFEST => Ok(Target::Manifest),
        MediaType::Other(m) if m == DOCKER_MANIFEST_LIST => Ok(Target::Index),
        other => Err(OciError::UnsupportedMediaType {
            what: what.to_string(),
            media_type: other.to_string(),
            fix: "a reference must name an image manifest or image index".to_string(),
        }),
    }
}

/// Finds the manifest `reference` names in the layout, following image indexes.
pub(crate) fn resolve(layout: &Layout, reference: &str) -> Result<ResolvedManifest, OciError> {
    let index_what = layout.index_path().display().to_string();
    let top = parse_index(&index_what, &layout.read_index()?)?;
    let mut desc = match find_reference(layout, &top, reference, 0)? {
        Some(desc) => desc,
        None => {
            return Err(OciError::UnknownReference {
                reference: reference.to_string(),
                index: layout.index_path(),
                available: available_refs(&top),
            })
        }
    };
    for _ in 0..=MAX_NESTING {
        let what = format!("descriptor {}", desc.digest());
        match target_of(&what, &desc)? {
            Target::Manifest => {
                let manifest = parse_manifest(layout, &desc)?;
                return Ok(ResolvedManifest {
                    descriptor: desc,
                    manifest,
                });
            }
            Target::Index => {
                let bytes = layout.read_json_blob("image index", &desc)?;
                let index = parse_index(&format!("image index {}", desc.digest()), &bytes)?;
                desc = pick_platform(&desc, &index)?;
            }
        }
    }
    Err(OciError::NestingTooDeep {
        reference: reference.to_string(),
        limit: MAX_NESTING,
    })
}

/// Looks `reference` up by name among `index`'s entries, or by digest in it and the image
/// indexes below it.
fn find_reference(
    layout: &Layout,
    index: &ImageIndex,
    reference: &str,
    depth: usize,
) -> Result<Option<Descriptor>, OciError> {
    let by_digest = reference.starts_with("sha256:");
    for desc in index.manifests() {
        let named = desc
            .annotations()
            .as_ref()
            .and_then(|a| a.get(REF_NAME))
            .is_some_and(|name| name == reference);
        if named || (by_digest && desc.digest().to_string() == reference) {
            return Ok(Some(desc.clone()));
        }
    }
    if !by_digest || depth >= MAX_NESTING {
        return Ok(None);
    }
    for desc in index.manifests() {
        let what = format!("descriptor {}", desc.digest());
        if let Ok(Target::Index) = target_of(&what, desc) {
            let bytes = layout.read_json_blob("image index", desc)?;
            let nested = parse_index(&format!("image index {}", desc.digest()), &bytes)?;
            if let Some(found) = find_reference(layout, &nested, reference, depth + 1)? {
                return Ok(Some(found));
            }
        }
    }
    Ok(None)
}

/// Every name and digest a caller could use, for the "not found" message.
fn available_refs(index: &ImageIndex) -> Vec<String> {
    index
        .manifests()
        .iter()
        .map(
            |desc| match desc.annotations().as_ref().and_then(|a| a.get(REF_NAME)) {
                Some(name) => format!("'{name}' ({})", desc.digest()),
                None => desc.digest().to_string(),
            },
        )
        .collect()
}

/// The platform this host runs, in OCI (Go) terms: linux/amd64 on x86_64.
fn host_platform() -> (Os, Arch) {
    (Os::Linux, Arch::default())
}

/// Picks this host's manifest from an image index. An index without platform fields is
/// accepted only when it has exactly one entry, so we never guess between images.
fn pick_platform(index_desc: &Descriptor, index: &ImageIndex) -> Result<Descriptor, OciError> {
    let (os, arch) = host_platform();
    let entries = index.manifests();
    if let Some(found) = entries.iter().find(|d| {
        d.platform()
            .as_ref()
            .is_some_and(|p| *p.os() == os && *p.architecture() == arch)
    }) {
        return Ok(found.clone());
    }
    if let [only] = entries.as_slice() {
        if only.platform().is_none() {
            return Ok(only.clone());
        }
    }
    Err(OciError::NoMatchingPlatform {
        digest: index_desc.digest().to_string(),
        wanted: format!("{os}/{arch}"),
        available: entries
            .iter()
            .map(|d| match d.platform() {
                Some(p) => format!("{}/{} ({})", p.os(), p.architecture(), d.digest()),
                None => format!("unspecified ({})", d.digest()),
            })
            .collect(),
    })
}

fn parse_index(what: &str, bytes: &[u8]) -> Result<ImageIndex, OciError> {
    let index: ImageIndex = serde_json::from_slice(bytes).map_err(|source| OciError::Json {
        what: what.to_string(),
        source,
    })?;
    check_schema_version(what, index.schema_version())?;
    Ok(index)
}

fn parse_manifest(layout: &Layout, desc: &Descriptor) -> Result<ImageManifest, OciError> {
    let what = format!("image manifest {}", desc.digest());
    sha256_hex(&what, desc)?;
    let bytes = layout.read_json_blob("image manifest", desc)?;
    let manifest: ImageManifest =
        serde_json::from_slice(&bytes).map_err(|source| OciError::Json {
            what: what.clone(),
            source,
        })?;
    check_schema_version(&what, manifest.schema_version())?;
    Ok(manifest)
}

fn check_schema_version(what: &str, version: u32) -> Result<(), OciError> {
    if version != 2 {
        return Err(OciError::InvalidDocument {
            what: what.to_string(),
            detail: format!("schemaVersion is {version}, the OCI image spec requires 2"),
        });
    }
    Ok(())
}

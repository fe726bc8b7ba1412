//! `s3` targets through `object_store`: SigV4-signed requests, one PUT for small artifacts and
//! a multipart upload in [`PART_BYTES`] parts for large ones, read from the outbox copy part by
//! part (never the whole artifact in memory).
//!
//! The store's own retries are turned off: [`super::remote::deliver`] retries whole uploads
//! and counts the attempts it reports. Without declared credentials requests are unsigned;
//! no ambient credentials (environment, instance metadata) are ever looked up.

use std::path::Path;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart};
use tokio::io::AsyncReadExt;

use cellos_core::spec::ExportTarget;

use super::outbox::StagedExport;
use super::remote::{AttemptError, ExportSecrets, UploadError};

/// Size of one multipart part, and the size from which a multipart upload is used (S3's
/// minimum part is 5 MiB).
pub const PART_BYTES: usize = 8 << 20;
/// Parts in flight at once.
const PARTS_IN_FLIGHT: usize = 2;

/// `<prefix>/<cell-id>/<name>` (the prefix's slashes trimmed).
pub fn object_key(target: &ExportTarget, cell_id: &str, name: &str) -> String {
    match target.prefix.as_deref().map(|p| p.trim_matches('/')) {
        Some(prefix) if !prefix.is_empty() => format!("{prefix}/{cell_id}/{name}"),
        _ => format!("{cell_id}/{name}"),
    }
}

fn store(staged: &StagedExport, secrets: &ExportSecrets) -> Result<impl ObjectStore, AttemptError> {
    let target = &staged.target;
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(target.bucket.as_deref().unwrap_or_default())
        .with_region(target.region.as_deref().unwrap_or("us-east-1"))
        .with_retry(RetryConfig {
            max_retries: 0,
            ..RetryConfig::default()
        });
    if let Some(endpoint) = &target.endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"));
    }
    let credentials = target.credentials.clone().unwrap_or_default();
    match (
        &credentials.access_key_id_ref,
        &credentials.secret_access_key_ref,
    ) {
        (Some(id), Some(key)) => {
            builder = builder
                .with_access_key_id(secrets.text(id, &staged.cell_id)?)
                .with_secret_access_key(secrets.text(key, &staged.cell_id)?);
            if let Some(token) = &credentials.session_token_ref {
                builder = builder.with_token(secrets.text(token, &staged.cell_id)?);
            }
        }
        _ => builder = builder.with_skip_signature(true),
    }
    builder.build().map_err(|e| {
        AttemptError::Upload(UploadError::Refused(format!(
            "the S3 target {:?} cannot be used: {e}",
            target.name
        )))
    })
}

/// Uploads the outbox copy at `data` to its object.
pub(super) async fn upload(
    staged: &StagedExport,
    data: &Path,
    secrets: &ExportSecrets,
) -> Result<(), AttemptError> {
    let store = store(staged, secrets)?;
    let key = ObjectPath::from(object_key(&staged.target, &staged.cell_id, &staged.name));
    let mut file = tokio::fs::File::open(data)
        .await
        .map_err(|e| local(data, e))?;
    if staged.size_bytes < PART_BYTES as u64 {
        let mut bytes = Vec::with_capacity(staged.size_bytes as usize);
        file.read_to_end(&mut bytes)
            .await
            .map_err(|e| local(data, e))?;
        store
            .put(&key, PutPayload::from(bytes))
            .await
            .map_err(classify)?;
        return Ok(());
    }
    let upload = store.put_multipart(&key).await.map_err(classify)?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
    let mut buf = vec![0u8; PART_BYTES];
    loop {
        let n = match file.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(local(data, e));
            }
        };
        if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
            let _ = writer.abort().await;
            return Err(classify(e));
        }
        writer.write(&buf[..n]);
    }
    writer.finish().await.map(drop).map_err(classify)
}

fn local(path: &Path, e: std::io::Error) -> AttemptError {
    AttemptError::Port(cellos_core::ports::PortError::new(
        cellos_core::ports::PortErrorKind::Io,
        format!("read the outbox copy {}: {e}", path.display()),
    ))
}

/// Refusals that another attempt would meet again, and everything else.
fn classify(e: object_store::Error) -> AttemptError {
    use object_store::Error as E;
    let why = e.to_string();
    AttemptError::Upload(match e {
        E::NotFound { .. }
        | E::PermissionDenied { .. }
        | E::Unauthenticated { .. }
        | E::NotSupported { .. }
        | E::NotImplemented { .. }
        | E::Precondition { .. }
        | E::InvalidPath { .. } => UploadError::Refused(why),
        _ => UploadError::Transient(why),
    })
}

//! Pushing artifacts to `http` and `s3` targets: staged in the [`Outbox`] first, then sent
//! with a time limit per attempt and retries with backoff, and removed from the outbox only
//! once the destination has the whole artifact.
//!
//! Uploads run on one small tokio runtime of this process (created by the first remote
//! export), reached from the caller's thread through a channel, so a push works from any
//! thread, inside an async runtime or not.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cellos_core::ports::{ExportReceipt, ExportSink, PortError, PortErrorKind, SecretBroker};
use cellos_core::spec::{ExportTarget, ExportTargetKind};

use super::outbox::{Outbox, StagedExport};
use super::{http, s3};

/// Attempts after the first when a target does not say (`retries`).
pub const DEFAULT_RETRIES: u32 = 3;
/// Time limit of one attempt when a target does not say (`timeoutSeconds`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Wait before the second attempt; doubled for each further one, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Why one attempt failed, and whether another could succeed.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The destination or the way to it failed (connection, time limit, 5xx, 429).
    #[error("{0}")]
    Transient(String),
    /// The request itself was refused (4xx, bad credentials); retrying would not help.
    #[error("{0}")]
    Refused(String),
}

/// Host secrets for export credentials, from the host's brokers (never the cell's).
#[derive(Clone)]
pub struct ExportSecrets {
    brokers: Arc<[Arc<dyn SecretBroker>]>,
}

impl ExportSecrets {
    pub fn new(brokers: Vec<Arc<dyn SecretBroker>>) -> Self {
        Self {
            brokers: brokers.into(),
        }
    }

    /// The value of secret `name`, resolved on behalf of `cell_id`, as text.
    pub fn text(&self, name: &str, cell_id: &str) -> Result<String, PortError> {
        let mut last = None;
        for broker in self.brokers.iter() {
            match broker.resolve(name, cell_id) {
                Ok(value) => {
                    return String::from_utf8(value.expose().to_vec()).map_err(|_| {
                        PortError::new(
                            PortErrorKind::Refused,
                            format!("export credential {name} is not UTF-8 text"),
                        )
                    })
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            PortError::new(
                PortErrorKind::NotFound,
                format!("no secret broker holds export credential {name}"),
            )
        }))
    }
}

/// An `http` or `s3` export target.
pub struct RemoteExportSink {
    target: ExportTarget,
    outbox: Outbox,
    secrets: ExportSecrets,
}

impl RemoteExportSink {
    /// A sink for `target`, staging through `outbox`.
    pub fn new(
        target: ExportTarget,
        outbox: Outbox,
        secrets: ExportSecrets,
    ) -> Result<Self, PortError> {
        if target.kind == ExportTargetKind::LocalPath {
            return Err(PortError::new(
                PortErrorKind::Refused,
                format!(
                    "export target {:?} is local; use LocalExportSink",
                    target.name
                ),
            ));
        }
        Ok(Self {
            target,
            outbox,
            secrets,
        })
    }
}

impl ExportSink for RemoteExportSink {
    fn target_kind(&self) -> ExportTargetKind {
        self.target.kind
    }

    fn destination_hint(&self, cell_id: &str, name: &str) -> String {
        destination(&self.target, cell_id, name)
    }

    fn push(
        &self,
        cell_id: &str,
        name: &str,
        content: &mut dyn std::io::Read,
    ) -> Result<ExportReceipt, PortError> {
        let staged = self.outbox.stage(cell_id, name, &self.target, content)?;
        deliver(&self.outbox, &staged, &self.secrets)
    }
}

/// Where an artifact of `target` lands, with no credentials in it.
pub fn destination(target: &ExportTarget, cell_id: &str, name: &str) -> String {
    match target.kind {
        ExportTargetKind::S3 => format!(
            "s3://{}/{}{}",
            target.bucket.as_deref().unwrap_or_default(),
            s3::object_key(target, cell_id, name),
            target
                .endpoint
                .as_deref()
                .map(|e| format!(" at {}", http::redact(e)))
                .unwrap_or_default()
        ),
        _ => http::redact(&http::object_url(target, cell_id, name)),
    }
}

/// Sends a staged export with the retries of its target; removes it from the outbox when it
/// has arrived. On failure it stays in the outbox, and the error says how to retry it.
pub fn deliver(
    outbox: &Outbox,
    staged: &StagedExport,
    secrets: &ExportSecrets,
) -> Result<ExportReceipt, PortError> {
    let target = &staged.target;
    let retries = target.retries.unwrap_or(DEFAULT_RETRIES);
    let timeout = target
        .timeout_seconds
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    let mut backoff = FIRST_BACKOFF;
    let mut failures = Vec::new();
    for attempt in 1..=retries.saturating_add(1) {
        match attempt_once(outbox, staged, secrets, timeout) {
            Ok(()) => {
                outbox.remove(staged)?;
                return Ok(receipt(staged, attempt));
            }
            Err(AttemptError::Port(e)) => return Err(kept(staged, &[e.to_string()])),
            Err(AttemptError::Upload(UploadError::Refused(why))) => {
                failures.push(format!("attempt {attempt}: {why}"));
                break;
            }
            Err(AttemptError::Upload(UploadError::Transient(why))) => {
                failures.push(format!("attempt {attempt}: {why}"));
                if attempt <= retries {
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
    Err(kept(staged, &failures))
}

pub(super) enum AttemptError {
    Port(PortError),
    Upload(UploadError),
}

fn attempt_once(
    outbox: &Outbox,
    staged: &StagedExport,
    secrets: &ExportSecrets,
    timeout: Duration,
) -> Result<(), AttemptError> {
    let data = outbox.data_path(staged);
    let staged = staged.clone();
    let secrets = secrets.clone();
    let upload = async move {
        let send = async {
            match staged.target.kind {
                ExportTargetKind::S3 => s3::upload(&staged, &data, &secrets).await,
                _ => http::upload(&staged, &data, &secrets).await,
            }
        };
        match tokio::time::timeout(timeout, send).await {
            Ok(result) => result,
            Err(_) => Err(AttemptError::Upload(UploadError::Transient(format!(
                "no answer within {} s (timeoutSeconds)",
                timeout.as_secs()
            )))),
        }
    };
    run(upload)
}

/// Runs `future` on the export runtime and waits for it on this thread.
fn run(
    future: impl std::future::Future<Output = Result<(), AttemptError>> + Send + 'static,
) -> Result<(), AttemptError> {
    let runtime = runtime().map_err(AttemptError::Port)?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = tx.send(future.await);
    });
    rx.recv().unwrap_or_else(|_| {
        Err(AttemptError::Port(PortError::new(
            PortErrorKind::Io,
            "the export runtime stopped during an upload",
        )))
    })
}

fn runtime() -> Result<&'static tokio::runtime::Runtime, PortError> {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    // Both HTTP clients here use rustls with the process's default crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("cellos-export")
        .enable_all()
        .build()
        .map_err(|e| PortError::new(PortErrorKind::Io, format!("start the export runtime: {e}")))?;
    Ok(RUNTIME.get_or_init(|| rt))
}

impl From<PortError> for AttemptError {
    fn from(e: PortError) -> Self {
        AttemptError::Port(e)
    }
}

impl From<UploadError> for AttemptError {
    fn from(e: UploadError) -> Self {
        AttemptError::Upload(e)
    }
}

fn receipt(staged: &StagedExport, attempts: u32) -> ExportReceipt {
    ExportReceipt {
        name: staged.name.clone(),
        target_kind: staged.target.kind,
        target_name: Some(staged.target.name.clone()),
        destination: destination(&staged.target, &staged.cell_id, &staged.name),
        sha256: staged.sha256.clone(),
        size_bytes: staged.size_bytes,
        attempts,
    }
}

/// The error of an export that stays in the outbox.
fn kept(staged: &StagedExport, failures: &[String]) -> PortError {
    PortError::new(
        PortErrorKind::Io,
        format!(
            "{}; the artifact is kept on the host as export {id}: `cellos export retry {id}` \
             sends it again",
            failures.join("; "),
            id = staged.id
        ),
    )
}

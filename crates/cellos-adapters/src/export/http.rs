//! `http` targets: `PUT <url>/<cell-id>/<name>` of the outbox copy, streamed from the file with
//! its length, an optional `Authorization` header from a host secret, and TLS verified against
//! the host's trust store.

use std::path::Path;
use std::sync::OnceLock;

use cellos_core::ports::{PortError, PortErrorKind};
use cellos_core::spec::ExportTarget;

use super::outbox::StagedExport;
use super::remote::{AttemptError, ExportSecrets, UploadError};

/// `<url>/<cell-id>/<name>`.
pub fn object_url(target: &ExportTarget, cell_id: &str, name: &str) -> String {
    let base = target
        .url
        .as_deref()
        .unwrap_or_default()
        .trim_end_matches('/');
    format!("{base}/{cell_id}/{name}")
}

/// `url` without user information or query (either may carry credentials).
pub fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let redacted = url.len() != scheme.len() + 3 + rest.len() || host.len() != authority.len();
    format!(
        "{scheme}://{host}{path}{}",
        if redacted {
            " (credentials redacted)"
        } else {
            ""
        }
    )
}

fn client() -> Result<&'static reqwest::Client, AttemptError> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    if let Some(client) = CLIENT.get() {
        return Ok(client);
    }
    let client = reqwest::Client::builder().build().map_err(|e| {
        AttemptError::Port(PortError::new(
            PortErrorKind::Io,
            format!("build the HTTP export client: {e}"),
        ))
    })?;
    Ok(CLIENT.get_or_init(|| client))
}

/// PUTs the outbox copy at `data`.
pub(super) async fn upload(
    staged: &StagedExport,
    data: &Path,
    secrets: &ExportSecrets,
) -> Result<(), AttemptError> {
    let url = object_url(&staged.target, &staged.cell_id, &staged.name);
    let file = tokio::fs::File::open(data).await.map_err(|e| {
        AttemptError::Port(PortError::new(
            PortErrorKind::Io,
            format!("read the outbox copy {}: {e}", data.display()),
        ))
    })?;
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
    let mut request = client()?
        .put(&url)
        .header(reqwest::header::CONTENT_LENGTH, staged.size_bytes)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .header("x-cellos-sha256", &staged.sha256)
        .body(body);
    let authorization = staged
        .target
        .credentials
        .as_ref()
        .and_then(|c| c.authorization_ref.as_deref());
    if let Some(name) = authorization {
        request = request.header(
            reqwest::header::AUTHORIZATION,
            secrets.text(name, &staged.cell_id)?,
        );
    }
    let shown = redact(&url);
    let response = request
        .send()
        .await
        .map_err(|e| UploadError::Transient(format!("PUT {shown}: {e}")))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let why = format!("PUT {shown}: the server answered {status}");
    Err(AttemptError::Upload(
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            UploadError::Transient(why)
        } else {
            UploadError::Refused(why)
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn credentials_never_show_in_destinations() {
        assert_eq!(redact("https://h.example/a/b"), "https://h.example/a/b");
        assert_eq!(
            redact("https://u:p@h.example:8443/a?sig=s3cret"),
            "https://h.example:8443/a (credentials redacted)"
        );
        assert!(!redact("http://tok@h/x").contains("tok"));
    }
}

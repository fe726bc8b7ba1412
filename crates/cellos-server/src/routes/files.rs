//! Files inside a cell: read (raw bytes with their digest), write atomically, make
//! directories, remove, list and stat. Paths are the cell's own; the cell refuses escapes.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};

use super::{blocking, body, ApiPath, ApiQuery, Shared};
use crate::auth::Authed;
use crate::dto::{FileEntryDto, FileList, FileStatDto, FileWrittenDto};
use crate::problem::{ApiProblem, ApiResult};

/// Hex SHA-256 of a file's bytes, on `GET .../files`.
pub const SHA256_HEADER: &str = "x-cellos-sha256";
/// Size in bytes of a file, on `GET .../files`.
pub const SIZE_HEADER: &str = "x-cellos-size";

/// The path a file route acts on.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PathQuery {
    /// Absolute path inside the cell.
    path: String,
}

/// `PUT .../files`: what to create at `path`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WriteQuery {
    /// Absolute path inside the cell.
    path: String,
    /// Permission bits as an octal string, e.g. `0644` (files only; at most `07777`).
    #[param(pattern = r"^(0o)?0*[0-7]{1,4}$")]
    mode: Option<String>,
    /// `file` (default; the body is the content) or `directory`.
    #[param(inline)]
    kind: Option<WriteKind>,
    /// With `kind=directory`: create missing parents too.
    parents: Option<bool>,
}

/// What `PUT .../files` creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WriteKind {
    File,
    Directory,
}

/// `DELETE .../files`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RemoveQuery {
    /// Absolute path inside the cell.
    path: String,
    /// Remove a directory with everything in it.
    recursive: Option<bool>,
}

/// `0644` or `644` as permission bits; anything else is a bad request.
pub fn parse_mode(text: &str) -> ApiResult<u32> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    // Octal digits only: `from_str_radix` alone would also take a leading `+`.
    let octal = !digits.is_empty() && digits.bytes().all(|b| matches!(b, b'0'..=b'7'));
    octal
        .then(|| u32::from_str_radix(digits, 8).ok())
        .flatten()
        .filter(|mode| *mode <= 0o7777)
        .ok_or_else(|| {
            ApiProblem::bad_request(format!(
                "mode: {text:?} is not octal permission bits such as 0644"
            ))
        })
}

fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// Read a file; the body is its bytes.
#[utoipa::path(get, path = "/v1/cells/{id}/files", operation_id = "readFile", tag = "files",
    params(("id" = String, Path), PathQuery),
    responses(
        (status = 200, description = "The file's bytes", body = Vec<u8>, content_type = "application/octet-stream",
            headers(("X-Cellos-Sha256" = String, description = "Hex SHA-256 of the bytes"),
                    ("X-Cellos-Size" = u64, description = "Size in bytes"))),
        (status = 400, body = ApiProblem, content_type = "application/problem+json"),
        (status = 403, description = "refused", body = ApiProblem, content_type = "application/problem+json"),
        (status = 404, body = ApiProblem, content_type = "application/problem+json"),
        (status = 413, body = ApiProblem, content_type = "application/problem+json")))]
pub async fn read(
    State(state): State<Shared>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<PathQuery>,
) -> ApiResult<Response> {
    let sessions = state.sessions.clone();
    let (_, content) = blocking(move || sessions.read_file(&caller, &id, &query.path)).await?;
    let digest = hex::encode(Sha256::digest(&content));
    let size = content.len().to_string();
    let mut response = content.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(
        HeaderName::from_static(SHA256_HEADER),
        header_value(&digest),
    );
    headers.insert(HeaderName::from_static(SIZE_HEADER), header_value(&size));
    Ok(response)
}

/// Write a file atomically (the body is its content), or create a directory.
#[utoipa::path(put, path = "/v1/cells/{id}/files", operation_id = "writeFile", tag = "files",
    params(("id" = String, Path), WriteQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "The file was written", body = FileWrittenDto),
        (status = 201, description = "The directory was created (kind=directory)", body = FileStatDto),
        (status = 400, body = ApiProblem, content_type = "application/problem+json"),
        (status = 403, description = "refused", body = ApiProblem, content_type = "application/problem+json"),
        (status = 404, description = "no such cell, or a missing parent directory", body = ApiProblem, content_type = "application/problem+json"),
        (status = 409, body = ApiProblem, content_type = "application/problem+json"),
        (status = 413, body = ApiProblem, content_type = "application/problem+json")))]
pub async fn write(
    State(state): State<Shared>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<WriteQuery>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let sessions = state.sessions.clone();
    match query.kind.unwrap_or(WriteKind::File) {
        WriteKind::File => {
            let content = body(raw)?;
            let mode = query.mode.as_deref().map(parse_mode).transpose()?;
            let written =
                blocking(move || sessions.write_file(&caller, &id, &query.path, &content, mode))
                    .await?;
            Ok(Json(FileWrittenDto::from(written)).into_response())
        }
        WriteKind::Directory => {
            let parents = query.parents.unwrap_or(false);
            let stat = blocking(move || {
                sessions.mkdir(&caller, &id, &query.path, parents)?;
                sessions.stat(&id, &query.path)
            })
            .await?;
            Ok((StatusCode::CREATED, Json(FileStatDto::from(stat))).into_response())
        }
    }
}

/// Remove a file, or a directory (`recursive=true` for one that is not empty).
#[utoipa::path(delete, path = "/v1/cells/{id}/files", operation_id = "removeFile", tag = "files",
    params(("id" = String, Path), RemoveQuery),
    responses((status = 204, description = "Removed"),
        (status = 400, body = ApiProblem, content_type = "application/problem+json"),
        (status = 403, description = "refused", body = ApiProblem, content_type = "application/problem+json"),
        (status = 404, body = ApiProblem, content_type = "application/problem+json"),
        (status = 409, body = ApiProblem, content_type = "application/problem+json")))]
pub async fn remove(
    State(state): State<Shared>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<RemoveQuery>,
) -> ApiResult<StatusCode> {
    let sessions = state.sessions.clone();
    let recursive = query.recursive.unwrap_or(false);
    blocking(move || sessions.remove(&caller, &id, &query.path, recursive)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List a directory.
#[utoipa::path(get, path = "/v1/cells/{id}/files/list", operation_id = "listFiles", tag = "files",
    params(("id" = String, Path), PathQuery),
    responses((status = 200, body = FileList),
        (status = 400, body = ApiProblem, content_type = "application/problem+json"),
        (status = 403, description = "refused", body = ApiProblem, content_type = "application/problem+json"),
        (status = 404, body = ApiProblem, content_type = "application/problem+json"),
        (status = 409, body = ApiProblem, content_type = "application/problem+json")))]
pub async fn list(
    State(state): State<Shared>,
    _: Authed,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<PathQuery>,
) -> ApiResult<Json<FileList>> {
    let sessions = state.sessions.clone();
    let entries = blocking(move || sessions.list_dir(&id, &query.path)).await?;
    Ok(Json(FileList {
        entries: entries.into_iter().map(FileEntryDto::from).collect(),
    }))
}

/// `stat` a path (symlinks are not followed).
#[utoipa::path(get, path = "/v1/cells/{id}/files/stat", operation_id = "statFile", tag = "files",
    params(("id" = String, Path), PathQuery),
    responses((status = 200, body = FileStatDto),
        (status = 400, body = ApiProblem, content_type = "application/problem+json"),
        (status = 403, description = "refused", body = ApiProblem, content_type = "application/problem+json"),
        (status = 404, body = ApiProblem, content_type = "application/problem+json"),
        (status = 409, body = ApiProblem, content_type = "application/problem+json")))]
pub async fn stat(
    State(state): State<Shared>,
    _: Authed,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<PathQuery>,
) -> ApiResult<Json<FileStatDto>> {
    let sessions = state.sessions.clone();
    let stat = blocking(move || sessions.stat(&id, &query.path)).await?;
    Ok(Json(stat.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_octal_permission_bits() {
        assert_eq!(parse_mode("0644").ok(), Some(0o644));
        assert_eq!(parse_mode("755").ok(), Some(0o755));
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("17777").is_err());
        assert!(parse_mode("").is_err());
        assert!(parse_mode("+644").is_err());
        assert!(parse_mode("0o").is_err());
        assert_eq!(parse_mode("0o0007777").ok(), Some(0o7777));
    }
}

//! `/v1/cells`: create (from a spec document), list, get, destroy, pause and resume.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cellos_core::spec::{parse_execution_cell, validate_execution_cell, ExecutionCellDocument};
use cellos_supervisor::CellState;
use serde::Deserialize;
use utoipa::IntoParams;

use super::{blocking, body, media_type, ApiPath, ApiQuery, Shared};
use crate::auth::Authed;
use crate::dto::{CellInfoDto, CellPage, CellStateDto};
use crate::problem::{ApiProblem, ApiResult, Kind};

/// Media types a spec may be sent as.
const SPEC_MEDIA_TYPES: [&str; 4] = [
    "application/json",
    "application/yaml",
    "text/yaml",
    "application/x-yaml",
];
/// Default and largest page of `GET /v1/cells`.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// Read a spec document the way `cellos validate` does, so the API refuses a spec with the
/// same located problems: structure first (parse), then every semantic problem.
pub fn read_spec(headers: &HeaderMap, body: &[u8]) -> ApiResult<ExecutionCellDocument> {
    let media = media_type(headers);
    if !media
        .as_deref()
        .is_some_and(|m| SPEC_MEDIA_TYPES.contains(&m))
    {
        return Err(ApiProblem::new(
            Kind::UnsupportedMediaType,
            format!(
                "send the spec as application/json, application/yaml or text/yaml (got {})",
                media.as_deref().unwrap_or("no Content-Type")
            ),
        ));
    }
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiProblem::bad_request(format!("the spec is not UTF-8 text: {e}")))?;
    let document = parse_execution_cell(text)?;
    validate_execution_cell(&document).map_err(ApiProblem::invalid_spec)?;
    Ok(document)
}

/// Create a cell from a spec document (JSON or YAML).
#[utoipa::path(post, path = "/v1/cells", operation_id = "createCell", tag = "cells",
    request_body(description = "An ExecutionCell spec document", content(
        (String = "application/yaml"), (String = "text/yaml"), (Object = "application/json"))),
    responses(
        (status = 201, description = "Created; a session cell is running, a cell with run runs its workload", body = CellInfoDto),
        (status = 400, body = ApiProblem, content_type = "application/problem+json"),
        (status = 403, description = "admission-denied, or refused by the cell backend (an id another cell's record holds)", body = ApiProblem, content_type = "application/problem+json"),
        (status = 404, description = "not-found: something the spec names (a rootfs, an image reference, a secret) does not exist", body = ApiProblem, content_type = "application/problem+json"),
        (status = 409, description = "conflict: a cell with the spec's id exists", body = ApiProblem, content_type = "application/problem+json"),
        (status = 413, body = ApiProblem, content_type = "application/problem+json"),
        (status = 415, body = ApiProblem, content_type = "application/problem+json"),
        (status = 422, description = "invalid-spec or unsupported-spec, with every problem and its path", body = ApiProblem, content_type = "application/problem+json"),
    ))]
pub async fn create(
    State(state): State<Shared>,
    Authed(caller): Authed,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let document = read_spec(&headers, &body(raw)?)?;
    let started = Instant::now();
    let sessions = state.sessions.clone();
    let created = blocking(move || sessions.create(&caller, document)).await;
    state
        .metrics
        .create_seconds
        .observe(started.elapsed().as_secs_f64());
    let info = CellInfoDto::from(created?);
    let mut response = (StatusCode::CREATED, Json(&info)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/cells/{}", info.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Filters and page of `GET /v1/cells`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only cells in this state.
    state: Option<CellStateDto>,
    /// Page size (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// The `nextCursor` of the previous page: cells with ids after it.
    cursor: Option<String>,
}

/// List cells, sorted by id.
#[utoipa::path(get, path = "/v1/cells", operation_id = "listCells", tag = "cells", params(ListQuery),
    responses((status = 200, body = CellPage),
        (status = 400, body = ApiProblem, content_type = "application/problem+json")))]
pub async fn list(
    State(state): State<Shared>,
    _caller: Authed,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Json<CellPage>> {
    let limit = match query.limit {
        None => DEFAULT_LIMIT,
        Some(n) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => {
            return Err(ApiProblem::bad_request(format!(
                "limit: must be 1 to {MAX_LIMIT}"
            )))
        }
    };
    let sessions = state.sessions.clone();
    let mut cells = tokio::task::spawn_blocking(move || sessions.list())
        .await
        .map_err(|e| ApiProblem::new(Kind::Backend, e.to_string()))?;
    cells.sort_by(|a, b| a.id.cmp(&b.id));
    let wanted: Option<CellState> = query.state.map(Into::into);
    let mut page: Vec<CellInfoDto> = cells
        .into_iter()
        .filter(|c| query.cursor.as_ref().is_none_or(|after| c.id > *after))
        .filter(|c| wanted.is_none_or(|s| c.state == s))
        .take(limit + 1)
        .map(Into::into)
        .collect();
    let more = page.len() > limit;
    page.truncate(limit);
    let next_cursor = more.then(|| page.last().map(|c| c.id.clone())).flatten();
    Ok(Json(CellPage {
        cells: page,
        next_cursor,
    }))
}

/// One cell.
#[utoipa::path(get, path = "/v1/cells/{id}", operation_id = "getCell", tag = "cells", params(("id" = String, Path)),
    responses((status = 200, body = CellInfoDto),
        (status = 404, body = ApiProblem, content_type = "application/problem+json")))]
pub async fn get(
    State(state): State<Shared>,
    _caller: Authed,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<CellInfoDto>> {
    let sessions = state.sessions.clone();
    let info = blocking(move || sessions.get(&id)).await?;
    Ok(Json(info.into()))
}

/// Destroy a cell (killing its execs) and verify nothing is left; idempotent.
#[utoipa::path(delete, path = "/v1/cells/{id}", operation_id = "destroyCell", tag = "cells", params(("id" = String, Path)),
    responses((status = 200, description = "Destroyed, with the teardown report", body = CellInfoDto),
        (status = 403, description = "refused", body = ApiProblem, content_type = "application/problem+json"),
        (status = 404, body = ApiProblem, content_type = "application/problem+json"),
        (status = 409, body = ApiProblem, content_type = "application/problem+json"),
        (status = 500, body = ApiProblem, content_type = "application/problem+json")))]
pub async fn destroy(
    State(state): State<Shared>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<CellInfoDto>> {
    let started = Instant::now();
    let sessions = state.sessions.clone();
    let destroyed = blocking(move || sessions.destroy(&caller, &id)).await;
    state
        .metrics
        .destroy_seconds
        .observe(started.elapsed().as_secs_f64());
    Ok(Json(destroyed?.into()))
}

/// Freeze every process of a cell.
#[utoipa::path(post, path = "/v1/cells/{id}/pause", operation_id = "pauseCell", tag = "cells", params(("id" = String, Path)),
    responses((status = 200, body = CellInfoDto),
        (status = 403, description = "refused", body = ApiProblem, content_type = "application/problem+json"),
        (status = 404, body = ApiProblem, content_type = "application/problem+json"),
        (status = 409, body = ApiProblem, content_type = "application/problem+json")))]
pub async fn pause(
    State(state): State<Shared>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<CellInfoDto>> {
    let sessions = state.sessions.clone();
    Ok(Json(
        blocking(move || sessions.pause(&caller, &id)).await?.into(),
    ))
}

/// Thaw a paused cell.
#[utoipa::path(post, path = "/v1/cells/{id}/resume", operation_id = "resumeCell", tag = "cells", params(("id" = String, Path)),
    responses((status = 200, body = CellInfoDto),
        (status = 403, description = "refused", body = ApiProblem, content_type = "application/problem+json"),
        (status = 404, body = ApiProblem, content_type = "application/problem+json"),
        (status = 409, body = ApiProblem, content_type = "application/problem+json")))]
pub async fn resume(
    State(state): State<Shared>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<CellInfoDto>> {
    let sessions = state.sessions.clone();
    Ok(Json(
        blocking(move || sessions.resume(&caller, &id))
            .await?
            .into(),
    ))
}

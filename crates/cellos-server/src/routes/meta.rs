//! About the server: version, liveness, readiness, metrics and the OpenAPI document.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::Shared;
use crate::auth::Authed;
use crate::dto::{Health, Version};
use crate::problem::{ApiProblem, ApiResult, Kind};

/// Media type of `/metrics`.
pub const METRICS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The server's version.
#[utoipa::path(get, path = "/v1/version", operation_id = "version", tag = "meta", responses((status = 200, body = Version)))]
pub async fn version(_caller: Authed) -> Json<Version> {
    Json(Version {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        api: "v1".to_owned(),
    })
}

/// Liveness: the server answers.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "meta", responses((status = 200, body = Health)))]
pub async fn healthz(_caller: Authed) -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
    })
}

/// Readiness: the server takes new work (fails once shutdown began).
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "meta", responses((status = 200, body = Health),
    (status = 503, body = ApiProblem, content_type = "application/problem+json")))]
pub async fn readyz(State(state): State<Shared>, _caller: Authed) -> ApiResult<Json<Health>> {
    if state.is_stopping() {
        return Err(ApiProblem::new(
            Kind::Backend,
            "the server is shutting down",
        ));
    }
    Ok(Json(Health {
        status: "ready".to_owned(),
    }))
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "meta",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<Shared>, _caller: Authed) -> ApiResult<Response> {
    let sessions = state.sessions.clone();
    let counts = tokio::task::spawn_blocking(move || sessions.counts())
        .await
        .map_err(|e| ApiProblem::new(Kind::Backend, e.to_string()))?;
    let text = state
        .metrics
        .render(&counts, state.feed.appended())
        .map_err(|e| ApiProblem::new(Kind::Backend, format!("cannot encode metrics: {e}")))?;
    let mut response = text.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(METRICS_TEXT));
    Ok(response)
}

/// This API's OpenAPI 3.1 document, generated from the code.
#[utoipa::path(get, path = "/openapi.json", operation_id = "openapi", tag = "meta",
    responses((status = 200, description = "OpenAPI 3.1", body = Object)))]
pub async fn openapi(State(state): State<Shared>, _caller: Authed) -> Response {
    let mut response = state.openapi.clone().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

//! The HTTP API: one module per resource, the shared state, and the extractors that turn
//! every malformed input into a problem instead of axum's plain-text rejections.

pub mod cells;
pub mod events;
pub mod exec;
pub mod files;
pub mod meta;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use cellos_supervisor::{SessionError, Sessions};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::auth::{authenticate, Auth};
use crate::events::EventFeed;
use crate::metrics::Metrics;
use crate::problem::{ApiProblem, ApiResult, Kind};

/// Smallest WebSocket message limit (a control message must always fit).
pub const MIN_WS_MESSAGE: usize = 64 << 10;

/// Body limits of the API.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub spec_body: usize,
    pub json_body: usize,
    pub file_body: usize,
}

/// What every handler shares.
pub struct AppState {
    pub sessions: Arc<Sessions>,
    pub feed: Arc<EventFeed>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    pub keep_alive: Duration,
    /// Set once shutdown began: `/readyz` then fails so balancers stop sending work, and
    /// event streams end so their connections can close.
    pub stopping: watch::Sender<bool>,
    /// The OpenAPI document, rendered once.
    pub openapi: String,
}

impl AppState {
    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Mark shutdown as begun (idempotent).
    pub fn begin_stopping(&self) {
        self.stopping.send_replace(true);
    }
}

pub type Shared = Arc<AppState>;

/// The whole API (with the MCP endpoint, when given). Every route requires an authenticated
/// caller; denials are counted.
pub fn router(state: Shared, auth: Arc<Auth>, mcp: Option<cellos_mcp::McpHttpService>) -> Router {
    let limits = state.limits;
    let mut api = Router::new();
    if let Some(mcp) = mcp {
        // The MCP endpoint reads its own bodies (with its own limit); the caller the
        // authentication below attaches reaches its tools through the request's extensions.
        api = api.route_service(cellos_mcp::MCP_PATH, mcp);
    }
    let api = api
        .route(
            "/v1/cells",
            post(cells::create)
                .layer(DefaultBodyLimit::max(limits.spec_body))
                .get(cells::list),
        )
        .route("/v1/cells/{id}", get(cells::get).delete(cells::destroy))
        .route("/v1/cells/{id}/pause", post(cells::pause))
        .route("/v1/cells/{id}/resume", post(cells::resume))
        .route("/v1/cells/{id}/exec", post(exec::start))
        .route("/v1/cells/{id}/exec/ws", get(exec::websocket))
        .route("/v1/cells/{id}/execs/{exec}", get(exec::reread))
        .route("/v1/cells/{id}/execs/{exec}/kill", post(exec::kill))
        .route(
            "/v1/cells/{id}/files",
            get(files::read)
                .put(files::write)
                .delete(files::remove)
                .layer(DefaultBodyLimit::max(limits.file_body)),
        )
        .route("/v1/cells/{id}/files/list", get(files::list))
        .route("/v1/cells/{id}/files/stat", get(files::stat))
        .route("/v1/events", get(events::page))
        .route("/v1/events/stream", get(events::stream))
        .route("/v1/version", get(meta::version))
        .route("/healthz", get(meta::healthz))
        .route("/readyz", get(meta::readyz))
        .route("/metrics", get(meta::metrics))
        .route("/openapi.json", get(meta::openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(
            limits.spec_body.max(limits.json_body),
        ))
        .with_state(state.clone());
    api.layer(middleware::from_fn_with_state(auth, authenticate))
        .layer(middleware::from_fn_with_state(state, count_denials))
}

async fn not_found() -> ApiProblem {
    ApiProblem::new(Kind::NotFound, "no such route; see /openapi.json")
}

async fn method_not_allowed() -> ApiProblem {
    ApiProblem::new(
        Kind::MethodNotAllowed,
        "this route does not take that method; see /openapi.json",
    )
}

/// Middleware: count every denial problem (`cellos_denials_total{kind}`), whoever raised it.
async fn count_denials(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if let Some(kind) = response.extensions().get::<Kind>() {
        if kind.is_denial() {
            state.metrics.deny(kind.slug());
        }
    }
    response
}

/// Run a blocking `Sessions` call off the async workers.
pub async fn blocking<T, F>(f: F) -> ApiResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, SessionError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| {
            ApiProblem::new(
                Kind::Backend,
                format!("the operation failed inside the server: {e}"),
            )
        })?
        .map_err(Into::into)
}

/// Query parameters, with a bad value answered by a `bad-request` problem.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiProblem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|axum::extract::Query(v)| ApiQuery(v))
            .map_err(|e| ApiProblem::bad_request(format!("query: {}", e.body_text())))
    }
}

/// Path parameters, with a bad one answered by a `bad-request` problem.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiProblem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| ApiPath(v))
            .map_err(|e| ApiProblem::bad_request(e.body_text()))
    }
}

/// The request body, with an oversized one answered by `too-large`.
pub fn body(result: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
    result.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiProblem::new(Kind::TooLarge, e.body_text())
        } else {
            ApiProblem::bad_request(e.body_text())
        }
    })
}

/// The media type of a request, without parameters, lowercased.
pub fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next().unwrap_or_default().trim();
    Some(essence.to_ascii_lowercase())
}

/// Refuse a body that is not JSON, then parse it naming the field that is wrong.
pub fn json_body<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> ApiResult<T> {
    match media_type(headers).as_deref() {
        Some("application/json") => {}
        other => {
            return Err(ApiProblem::new(
                Kind::UnsupportedMediaType,
                format!(
                    "send Content-Type: application/json (got {})",
                    other.unwrap_or("none")
                ),
            ))
        }
    }
    parse_json(body)
}

/// Parse JSON, naming the field path of the first mistake.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| ApiProblem::bad_request(format!("body: {}: {}", e.path(), e.inner())))?;
    de.end()
        .map_err(|e| ApiProblem::bad_request(format!("body: {e}")))?;
    Ok(value)
}

//! The event log over HTTP: pages by sequence cursor, and an SSE stream that resumes from
//! `Last-Event-ID` (each SSE `id` is the event's `cellosseq`), so a follower that reconnects
//! sees every event exactly once.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cellos_core::events::CloudEvent;
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::watch;
use utoipa::IntoParams;

use super::{ApiQuery, Shared};
use crate::auth::Authed;
use crate::dto::EventPage;
use crate::events::{EventFeed, FeedError};
use crate::problem::{ApiProblem, ApiResult, Kind};

/// Default page size of `/v1/events`.
const DEFAULT_LIMIT: usize = 1000;
/// Events an SSE stream reads from the feed at a time.
const STREAM_BATCH: usize = 1000;

/// `GET /v1/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Return events with a larger `cellosseq` (default 0: from the start).
    #[param(minimum = 0, maximum = 9223372036854775807_i64)]
    after: Option<u64>,
    /// Page size (default 1000, at most 10000).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<usize>,
    /// Only events of this cell.
    cell: Option<String>,
}

/// `GET /v1/events/stream`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Start after this sequence (the `Last-Event-ID` header wins when both are given).
    #[param(minimum = 0, maximum = 9223372036854775807_i64)]
    after: Option<u64>,
    /// Only events of this cell.
    cell: Option<String>,
}

/// Largest sequence number the API takes: a JSON integer (`int64`) every client can carry.
pub const MAX_SEQ: u64 = i64::MAX as u64;

/// `after` (or `Last-Event-ID`, named by `what`) within 0..=[`MAX_SEQ`].
fn sequence(what: &str, value: u64) -> ApiResult<u64> {
    if value <= MAX_SEQ {
        Ok(value)
    } else {
        Err(ApiProblem::bad_request(format!(
            "{what}: at most {MAX_SEQ}"
        )))
    }
}

fn feed_problem(e: FeedError) -> ApiProblem {
    ApiProblem::new(Kind::Events, e.to_string())
}

/// A page of the log, oldest first.
#[utoipa::path(get, path = "/v1/events", operation_id = "listEvents", tag = "events", params(PageQuery),
    responses((status = 200, body = EventPage),
        (status = 400, body = ApiProblem, content_type = "application/problem+json"),
        (status = 503, body = ApiProblem, content_type = "application/problem+json")))]
pub async fn page(
    State(state): State<Shared>,
    _caller: Authed,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Json<EventPage>> {
    let limit = match query.limit {
        None => DEFAULT_LIMIT,
        Some(n) if (1..=crate::events::MAX_PAGE).contains(&n) => n,
        Some(_) => {
            return Err(ApiProblem::bad_request(format!(
                "limit: must be 1 to {}",
                crate::events::MAX_PAGE
            )))
        }
    };
    let feed = state.feed.clone();
    let after = sequence("after", query.after.unwrap_or(0))?;
    let page = tokio::task::spawn_blocking(move || feed.page(after, limit, query.cell.as_deref()))
        .await
        .map_err(|e| ApiProblem::new(Kind::Events, e.to_string()))?
        .map_err(feed_problem)?;
    Ok(Json(EventPage {
        events: page.events,
        next: page.next,
    }))
}

/// Where a stream starts: `Last-Event-ID` (a reconnect), else `?after=`, else 0.
/// Both are checked even when the header wins, so a bad `after` is never silently ignored.
fn resume_point(headers: &HeaderMap, after: Option<u64>) -> ApiResult<u64> {
    let after = sequence("after", after.unwrap_or(0))?;
    let Some(value) = headers.get("last-event-id") else {
        return Ok(after);
    };
    let seq = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            ApiProblem::bad_request(
                "Last-Event-ID: expected the cellosseq of the last event received",
            )
        })?;
    sequence("Last-Event-ID", seq)
}

/// Follow the log as Server-Sent Events.
#[utoipa::path(get, path = "/v1/events/stream", operation_id = "streamEvents", tag = "events", params(StreamQuery,
        ("Last-Event-ID" = Option<u64>, Header, nullable = false, minimum = 0, maximum = 9223372036854775807_i64,
            description = "Resume after this cellosseq (a reconnecting EventSource sends it)")),
    responses(
        (status = 200, description = "SSE: `id: <cellosseq>`, `event: <type>`, `data: <CloudEvent JSON>`; keep-alive comments", body = String, content_type = "text/event-stream"),
        (status = 400, body = ApiProblem, content_type = "application/problem+json")))]
pub async fn stream(
    State(state): State<Shared>,
    _caller: Authed,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<StreamQuery>,
) -> ApiResult<Response> {
    let after = resume_point(&headers, query.after)?;
    let events = follow(
        state.feed.clone(),
        after,
        query.cell,
        state.stopping.subscribe(),
    );
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(state.keep_alive))
        .into_response())
}

struct Follower {
    feed: Arc<EventFeed>,
    head: watch::Receiver<u64>,
    stop: watch::Receiver<bool>,
    after: u64,
    cell: Option<String>,
    pending: VecDeque<Arc<CloudEvent>>,
    failed: bool,
}

/// The events after `after`, then every new one as it is appended, until the server stops.
fn follow(
    feed: Arc<EventFeed>,
    after: u64,
    cell: Option<String>,
    stop: watch::Receiver<bool>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let head = feed.subscribe();
    let follower = Follower {
        feed,
        head,
        stop,
        after,
        cell,
        pending: VecDeque::new(),
        failed: false,
    };
    futures_util::stream::unfold(follower, |mut f| async move {
        let event = next_event(&mut f).await?;
        Some((Ok(event), f))
    })
}

/// The next SSE event; `None` ends the stream (the feed is gone or failed).
async fn next_event(f: &mut Follower) -> Option<Event> {
    if f.failed {
        return None;
    }
    loop {
        if let Some(event) = f.pending.pop_front() {
            return Some(sse_event(&event));
        }
        // Marked seen before reading, so an append between the read and the wait wakes us.
        f.head.borrow_and_update();
        let feed = f.feed.clone();
        let (after, cell) = (f.after, f.cell.clone());
        let page =
            tokio::task::spawn_blocking(move || feed.page(after, STREAM_BATCH, cell.as_deref()))
                .await
                .ok()?;
        match page {
            Ok(page) => {
                f.after = page.next;
                f.pending.extend(page.events);
                if f.pending.is_empty() && !wait_for_more(f).await {
                    return None;
                }
            }
            Err(e) => {
                f.failed = true;
                return Some(Event::default().event("error").data(e.to_string()));
            }
        }
    }
}

/// Wait for the head to move; false when the feed is gone or the server is stopping.
async fn wait_for_more(f: &mut Follower) -> bool {
    tokio::select! {
        changed = f.head.changed() => changed.is_ok(),
        _ = f.stop.wait_for(|s| *s) => false,
    }
}

fn sse_event(event: &CloudEvent) -> Event {
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".to_owned());
    let mut sse = Event::default().event(event.ty.as_str()).data(data);
    if let Some(seq) = event.cellosseq {
        sse = sse.id(seq.to_string());
    }
    sse
}

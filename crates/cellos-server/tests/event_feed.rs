//! The event feed: pages by `cellosseq` cursor, a bounded in-memory window backed by the
//! log on disk, holes left by other writers filled, and an SSE stream that resumes from
//! `Last-Event-ID` with no gap and no duplicate.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cellos_adapters::event_log::{JsonlEventLog, LogConfig};
use cellos_core::integrity::Signer;
use cellos_core::ports::EventSink;
use cellos_server::events::FeedError;
use cellos_server::EventFeed;
use common::{event, get, start, MemorySink};
use http_body_util::BodyExt;

fn seqs(page: &cellos_server::events::Page) -> Vec<u64> {
    page.events.iter().filter_map(|e| e.cellosseq).collect()
}

fn emit(feed: &EventFeed, cell: &str, n: u64) -> u64 {
    feed.emit(event(cell, n))
        .expect("emit")
        .cellosseq
        .expect("sealed")
}

#[test]
fn pages_follow_the_cursor_without_gap_or_duplicate() {
    let feed = EventFeed::new(Arc::new(MemorySink::default()), 1000);
    for n in 0..25 {
        emit(&feed, if n % 2 == 0 { "a" } else { "b" }, n);
    }
    let mut after = 0;
    let mut seen = Vec::new();
    loop {
        let page = feed.page(after, 10, None).expect("page");
        if page.events.is_empty() {
            assert_eq!(page.next, after, "an empty page keeps the cursor");
            break;
        }
        seen.extend(seqs(&page));
        after = page.next;
    }
    assert_eq!(seen, (1..=25).collect::<Vec<_>>());
    let only_b = feed.page(0, 100, Some("b")).expect("page");
    assert_eq!(seqs(&only_b), (2..=24).step_by(2).collect::<Vec<_>>());
    assert_eq!(feed.appended(), 25);
}

#[test]
fn a_page_older_than_the_window_of_a_diskless_feed_is_refused() {
    let feed = EventFeed::new(Arc::new(MemorySink::default()), 5);
    for n in 0..12 {
        emit(&feed, "a", n);
    }
    assert_eq!(
        seqs(&feed.page(7, 100, None).expect("in window")),
        vec![8, 9, 10, 11, 12]
    );
    assert!(matches!(
        feed.page(2, 100, None),
        Err(FeedError::OutsideWindow { oldest: 8, .. })
    ));
}

fn signer() -> Signer {
    Signer::hmac("test", vec![7; 32]).expect("signer")
}

#[test]
fn history_holes_and_old_pages_come_from_the_log_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = || JsonlEventLog::open(dir.path(), signer(), LogConfig::default()).expect("log");
    let earlier = open();
    for n in 0..6 {
        earlier.emit(event("old", n)).expect("emit");
    }
    // Loaded at start: the last 4 in memory, the rest read from disk when asked for.
    let feed = EventFeed::open(Arc::new(open()), dir.path(), 4).expect("feed");
    assert_eq!(feed.head(), 6);
    assert_eq!(seqs(&feed.page(0, 3, None).expect("from disk")), vec![1, 2]);
    assert_eq!(
        seqs(&feed.page(2, 100, None).expect("in memory")),
        vec![3, 4, 5, 6]
    );

    // Another process appends to the same log: the feed fills the hole at its next emit.
    let other = open();
    other.emit(event("other", 0)).expect("emit");
    other.emit(event("other", 1)).expect("emit");
    assert_eq!(emit(&feed, "mine", 0), 9);
    assert_eq!(seqs(&feed.page(6, 100, None).expect("page")), vec![7, 8, 9]);
    let after_hole = feed.page(6, 100, Some("other")).expect("page");
    assert_eq!(seqs(&after_hole), vec![7, 8]);
}

/// One parsed Server-Sent Event.
#[derive(Debug)]
struct Sse {
    id: u64,
    event: String,
    data: serde_json::Value,
}

/// Read SSE events from `body` until `n` have arrived (keep-alive comments are skipped).
async fn read_sse(body: &mut hyper::body::Incoming, n: usize) -> Vec<Sse> {
    let mut buffer = String::new();
    let mut out = Vec::new();
    while out.len() < n {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("an SSE event within 10 s")
            .expect("stream open")
            .expect("frame");
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buffer.push_str(std::str::from_utf8(&data).expect("utf-8"));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            if let Some(event) = parse_block(&block) {
                out.push(event);
            }
        }
    }
    out
}

fn parse_block(block: &str) -> Option<Sse> {
    let (mut id, mut ty, mut data) = (None, None, None);
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("id:") {
            id = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("event:") {
            ty = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("data:") {
            data = serde_json::from_str(v.trim()).ok();
        }
    }
    Some(Sse {
        id: id?,
        event: ty?,
        data: data?,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_resumes_from_last_event_id_without_gap_or_duplicate() {
    let server = start(|_, _| {}).await;
    for n in 0..3 {
        emit(&server.feed, "a", n);
    }
    let first = server.unix_streaming(get("/v1/events/stream")).await;
    assert_eq!(first.status(), 200);
    assert!(first.headers()["content-type"]
        .to_str()
        .is_ok_and(|t| t.starts_with("text/event-stream")));
    let mut body = first.into_body();
    let mut events = read_sse(&mut body, 3).await;
    // Live: an event appended while connected arrives at once.
    emit(&server.feed, "a", 3);
    events.extend(read_sse(&mut body, 1).await);
    drop(body);
    assert_eq!(
        events.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(
        events[0].event,
        "dev.cellos.events.cell.lifecycle.v1.started"
    );
    assert_eq!(events[3].data["cellosseq"], 4);

    // Appended while disconnected: the reconnect starts right after the last id seen.
    for n in 4..7 {
        emit(&server.feed, "a", n);
    }
    let mut again = get("/v1/events/stream");
    again
        .headers_mut()
        .insert("last-event-id", "4".parse().expect("header"));
    let mut body = server.unix_streaming(again).await.into_body();
    let resumed = read_sse(&mut body, 3).await;
    assert_eq!(
        resumed.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![5, 6, 7]
    );

    // `?after=` works the same, and pages agree with the stream.
    let page = server.unix(get("/v1/events?after=5&limit=10")).await.json();
    let ids: Vec<u64> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["cellosseq"].as_u64())
        .collect();
    assert_eq!(ids, vec![6, 7]);
    assert_eq!(page["next"], 7);
    drop(body);
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_last_event_id_is_a_bad_request() {
    let server = start(|_, _| {}).await;
    let mut request = get("/v1/events/stream");
    request
        .headers_mut()
        .insert("last-event-id", "yesterday".parse().expect("header"));
    server.unix(request).await.problem(400, "bad-request");
    server.stop().await.expect("clean stop");
}

/// Sequences are `int64` in the OpenAPI document; the server takes exactly that range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_beyond_int64_or_with_a_sign_are_bad_requests() {
    let server = start(|_, _| {}).await;
    let too_big = "9223372036854775808";
    for path in [
        format!("/v1/events?after={too_big}"),
        format!("/v1/events/stream?after={too_big}"),
    ] {
        server.unix(get(&path)).await.problem(400, "bad-request");
    }
    for header in [too_big, "+5", "-1", ""] {
        let mut request = get("/v1/events/stream");
        request
            .headers_mut()
            .insert("last-event-id", header.parse().expect("header"));
        server.unix(request).await.problem(400, "bad-request");
    }
    let largest = get("/v1/events?after=9223372036854775807");
    assert_eq!(server.unix(largest).await.status, 200);
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_stream_ends_when_the_server_stops() {
    let server = start(|_, _| {}).await;
    emit(&server.feed, "a", 0);
    let mut body = server
        .unix_streaming(get("/v1/events/stream"))
        .await
        .into_body();
    assert_eq!(read_sse(&mut body, 1).await[0].id, 1);
    let started = std::time::Instant::now();
    server.stop().await.expect("clean stop");
    assert!(
        started.elapsed() < cellos_server::shutdown::DRAIN_TIMEOUT,
        "the stream held the shutdown for {:?}",
        started.elapsed()
    );
    let rest = tokio::time::timeout(Duration::from_secs(5), body.collect()).await;
    assert!(rest.is_ok(), "the stream did not end");
}

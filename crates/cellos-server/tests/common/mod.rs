//! Shared fixtures of the HTTP-layer tests.
//!
//! The session cells themselves are being built elsewhere, so these tests drive a real
//! `Sessions` over a real `Supervisor` whose backend refuses every create
//! ([`RefusingBackend`]): that is enough for everything the HTTP layer owns (listeners,
//! authentication, problem mapping, body limits, metrics, OpenAPI, the event feed), and
//! nothing here pretends to be a cell.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cellos_core::events::{CloudEvent, EventFactory};
use cellos_core::ports::{
    CellBackend, CellRequest, CellSummary, EventSink, ExportSink, PortError, PortErrorKind,
    TeardownReport,
};
use cellos_core::spec::ExportTarget;
use cellos_server::{EventFeed, ServeConfig, ServeError};
use cellos_supervisor::{ExportRouter, SessionConfig, Sessions, Supervisor};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{HeaderMap, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A backend that refuses to create anything (HTTP-layer tests only; see the module doc).
pub struct RefusingBackend;

fn refused() -> PortError {
    PortError::new(PortErrorKind::Refused, "the test backend creates no cells")
}

impl CellBackend for RefusingBackend {
    fn name(&self) -> &'static str {
        "refusing-test-backend"
    }
    fn create(&self, _: CellRequest<'_>) -> Result<Box<dyn cellos_core::ports::Cell>, PortError> {
        Err(refused())
    }
    fn reclaim(&self, cell_id: &str) -> Result<TeardownReport, PortError> {
        Ok(TeardownReport {
            cell_id: cell_id.to_owned(),
            ..TeardownReport::default()
        })
    }
    fn orphans(&self) -> Result<Vec<String>, PortError> {
        Ok(Vec::new())
    }
    fn list(&self) -> Result<Vec<CellSummary>, PortError> {
        Ok(Vec::new())
    }
    fn signal(&self, _: &str, _: i32) -> Result<(), PortError> {
        Err(refused())
    }
    fn pause(&self, _: &str) -> Result<String, PortError> {
        Err(refused())
    }
    fn resume(&self, _: &str) -> Result<String, PortError> {
        Err(refused())
    }
}

struct NoExports;

impl ExportRouter for NoExports {
    fn sink_for(&self, _: Option<&ExportTarget>) -> Result<Arc<dyn ExportSink>, PortError> {
        Err(refused())
    }
}

/// An in-memory log: numbers events from 1 like the real one (no signatures).
#[derive(Default)]
pub struct MemorySink {
    next: AtomicU64,
    pub kept: Mutex<Vec<CloudEvent>>,
}

impl EventSink for MemorySink {
    fn emit(&self, mut event: CloudEvent) -> Result<CloudEvent, PortError> {
        event.cellosseq = Some(self.next.fetch_add(1, Ordering::SeqCst) + 1);
        if let Ok(mut kept) = self.kept.lock() {
            kept.push(event.clone());
        }
        Ok(event)
    }
}

/// An event of cell `cell` not yet sealed.
pub fn event(cell: &str, n: u64) -> CloudEvent {
    CloudEvent {
        specversion: "1.0".into(),
        id: format!("{cell}-{n}"),
        source: "//cellos/test/server".into(),
        ty: "dev.cellos.events.cell.lifecycle.v1.started".into(),
        subject: Some(cellos_core::events::cell_subject_urn(cell)),
        time: "2026-01-01T00:00:00Z".into(),
        datacontenttype: "application/json".into(),
        data: serde_json::json!({ "n": n }),
        cellosactor: None,
        cellosseq: None,
        cellosprev: None,
        celloskid: None,
        cellossig: None,
    }
}

/// Sessions over the refusing backend, logging into `feed`.
pub fn sessions(feed: Arc<EventFeed>) -> Arc<Sessions> {
    let counter = Arc::new(AtomicU64::new(0));
    let factory = EventFactory::new(
        "test",
        "supervisor",
        Arc::new(move || format!("id-{}", counter.fetch_add(1, Ordering::SeqCst))),
    );
    let supervisor = Supervisor::new(
        Arc::new(RefusingBackend),
        feed,
        factory,
        Vec::new(),
        Arc::new(NoExports),
    );
    Arc::new(Sessions::new(
        Arc::new(supervisor),
        Vec::new(),
        SessionConfig::default(),
    ))
}

/// A running server on a temporary socket.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub tcp: Option<SocketAddr>,
    pub feed: Arc<EventFeed>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

/// A loopback address with a port nobody listens on (now).
pub fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a probe port");
    listener.local_addr().expect("probe port")
}

/// Start a server with an in-memory log; `configure` adjusts its configuration.
pub async fn start(configure: impl FnOnce(&mut ServeConfig, &Path)) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("cellos.sock");
    let mut config = ServeConfig::new(&socket);
    config.keep_alive = Duration::from_millis(200);
    configure(&mut config, dir.path());
    let tcp = config.tcp.first().copied();
    let feed = Arc::new(EventFeed::new(Arc::new(MemorySink::default()), 1000));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(cellos_server::serve(
        config,
        sessions(feed.clone()),
        feed.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    let server = Server {
        dir,
        socket,
        tcp,
        feed,
        stop: Some(stop),
        task: Some(task),
    };
    server.wait_until_listening().await;
    server
}

impl Server {
    async fn wait_until_listening(&self) {
        for _ in 0..200 {
            let unix_up = tokio::net::UnixStream::connect(&self.socket).await.is_ok();
            let tcp_up = match self.tcp {
                Some(addr) => tokio::net::TcpStream::connect(addr).await.is_ok(),
                None => true,
            };
            if unix_up && tcp_up {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the server did not start listening");
    }

    /// Stop the server and return what `serve` returned.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.expect("serve task"),
            None => Ok(()),
        }
    }

    /// One request over the Unix socket.
    pub async fn unix(&self, request: Request<Full<Bytes>>) -> Reply {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .expect("connect to the socket");
        send(stream, request).await
    }

    /// One request over the Unix socket, returning the response with its body unread.
    pub async fn unix_streaming(&self, request: Request<Full<Bytes>>) -> Response<Incoming> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .expect("connect to the socket");
        open(stream, request).await
    }
}

/// A complete response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// Assert this is an RFC 9457 problem of `slug` with `status`; return its body.
    pub fn problem(&self, status: u16, slug: &str) -> serde_json::Value {
        assert_eq!(
            self.status,
            status,
            "status of {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.content_type(), "application/problem+json");
        let body = self.json();
        assert_eq!(body["type"], format!("https://cellos.dev/problems/{slug}"));
        assert_eq!(body["status"], status);
        assert!(body["title"].is_string() && body["detail"].is_string());
        body
    }
}

/// Send one request on a fresh HTTP/1.1 connection over `io`.
pub async fn open<I>(io: I, request: Request<Full<Bytes>>) -> Response<Incoming>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .expect("HTTP handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender.send_request(request).await.expect("send request")
}

/// Send one request and read the whole response.
pub async fn send<I>(io: I, request: Request<Full<Bytes>>) -> Reply
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let response = open(io, request).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("read body")
        .to_bytes()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

/// A request with a body and content type.
pub fn request(
    method: &str,
    uri: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "cellos");
    if let Some(ct) = content_type {
        builder = builder.header("content-type", ct);
    }
    builder
        .body(Full::new(Bytes::copy_from_slice(body)))
        .expect("request")
}

pub fn get(uri: &str) -> Request<Full<Bytes>> {
    request("GET", uri, None, b"")
}

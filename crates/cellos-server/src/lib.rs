//! `cellos serve`: the HTTP API of CellOS over a Unix socket (callers identified by uid) and
//! optionally TCP with TLS and a bearer token.
//!
//! Layout, one idea per module: [`config`] what to serve, [`listen`] the sockets, [`auth`]
//! who is calling, [`problem`] RFC 9457 errors, [`routes`] the API, [`dto`] its wire types,
//! [`events`] the event feed in front of the log, [`metrics`] Prometheus, [`openapi`] the
//! generated document, [`shutdown`] stopping cleanly, [`mcp`] the MCP endpoint (`/mcp`, and
//! `cellos mcp --http`).
//!
//! Choices the contract left open:
//! - Over TCP every route needs the bearer token, `/healthz` and `/metrics` included; a
//!   local probe can use the Unix socket, where the peer's uid is the identity.
//! - `refused` (the cell refused a file operation or exec) is 403; a refusal that is really
//!   "no such path" or "too large" is reported as `not-found` / `too-large`.
//! - Besides the listed problem types there are `unsupported-media-type` (415) and
//!   `method-not-allowed` (405).
//! - `GET .../execs/{exec}` does not follow unless `follow=true`.
//! - The event feed keeps the newest events in memory; older pages are read from the log on
//!   disk (see [`events`]).
//! - `exec` durations are observed when a stream (NDJSON or WebSocket) delivers the exit;
//!   an exec whose client left before it ended is not in `cellos_exec_seconds`.

pub mod auth;
pub mod config;
pub mod dto;
pub mod events;
pub mod listen;
pub mod mcp;
pub mod metrics;
pub mod openapi;
pub mod problem;
pub mod routes;
pub mod shutdown;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use cellos_mcp::McpHttpService;
use cellos_supervisor::Sessions;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::watch;

pub use config::{ConfigError, Listen, OnShutdown, ServeConfig};
pub use events::EventFeed;
pub use listen::ListenError;

use crate::auth::Auth;
use crate::listen::{accept_tcp, accept_unix, Listeners};
use crate::metrics::Metrics;
use crate::routes::{AppState, Limits, Shared};

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
}

/// The state and router of a server, without listeners (tests drive it directly).
pub fn app(
    config: &ServeConfig,
    sessions: Arc<Sessions>,
    feed: Arc<EventFeed>,
) -> Result<(Shared, Router), ServeError> {
    app_with_mcp(config, sessions, feed, None)
}

/// [`app`], with the MCP endpoint mounted at `/mcp` behind the same authentication.
pub fn app_with_mcp(
    config: &ServeConfig,
    sessions: Arc<Sessions>,
    feed: Arc<EventFeed>,
    mcp: Option<McpHttpService>,
) -> Result<(Shared, Router), ServeError> {
    let metrics = Arc::new(Metrics::new()?);
    let state = Arc::new(AppState {
        sessions,
        feed,
        metrics,
        limits: Limits {
            spec_body: config.spec_body_limit,
            json_body: config.json_body_limit,
            file_body: config.file_body_limit,
        },
        keep_alive: config.keep_alive,
        stopping: watch::channel(false).0,
        openapi: openapi::document(),
    });
    let auth = Auth::new(config.token.clone()).with_store(config.token_store.clone());
    let router = routes::router(state.clone(), Arc::new(auth), mcp);
    Ok((state, router))
}

/// Serve until `shutdown` resolves; then stop accepting, shut the cells down (destroy, or
/// keep per `config.on_shutdown`), let open connections finish briefly, and return.
pub async fn serve(
    config: ServeConfig,
    sessions: Arc<Sessions>,
    feed: Arc<EventFeed>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    serve_with_mcp(config, sessions, feed, None, shutdown).await
}

/// [`serve`], with the MCP endpoint at `/mcp` (its sessions end when its service's
/// cancellation token is cancelled).
pub async fn serve_with_mcp(
    config: ServeConfig,
    sessions: Arc<Sessions>,
    feed: Arc<EventFeed>,
    mcp: Option<McpHttpService>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    config.check()?;
    let (state, router) = app_with_mcp(&config, sessions.clone(), feed, mcp)?;
    let listeners = Listeners::bind(&config).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let graceful = Arc::new(GracefulShutdown::new());
    let accepting = spawn_acceptors(listeners.unix, listeners.tcp, &router, &graceful, &stop_rx);
    let sweeper = tokio::spawn(sweep(sessions.clone(), config.sweep_interval, stop_rx));
    tracing::info!("serving on unix:{}", listeners.unix_path.display());

    shutdown.await;
    state.begin_stopping();
    let _ = stop_tx.send(true);
    for task in accepting {
        let _ = task.await;
    }
    let _ = sweeper.await;
    let keep = config.on_shutdown == OnShutdown::Keep;
    if let Err(e) = tokio::task::spawn_blocking(move || sessions.shutdown(keep)).await {
        tracing::error!("shutting the cells down failed: {e}");
    }
    if let Ok(graceful) = Arc::try_unwrap(graceful) {
        shutdown::drain(graceful).await;
    }
    let _ = std::fs::remove_file(&listeners.unix_path);
    Ok(())
}

fn spawn_acceptors(
    unix: tokio::net::UnixListener,
    tcp: Vec<listen::Tcp>,
    router: &Router,
    graceful: &Arc<GracefulShutdown>,
    stop: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = vec![tokio::spawn(accept_unix(
        unix,
        router.clone(),
        graceful.clone(),
        stop.clone(),
    ))];
    for listener in tcp {
        tasks.push(tokio::spawn(accept_tcp(
            listener,
            router.clone(),
            graceful.clone(),
            stop.clone(),
        )));
    }
    tasks
}

/// Destroy expired cells about once per `interval` until `stop`.
async fn sweep(
    sessions: Arc<Sessions>,
    interval: std::time::Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let sessions = sessions.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || sessions.sweep()).await {
            tracing::error!("sweep failed: {e}");
        }
    }
}

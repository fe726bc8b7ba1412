//! The MCP endpoint on its own TCP listener (`cellos mcp --http ADDR`): the same
//! authentication as the API's TCP listeners (a bearer token, always; TLS unless loopback),
//! and nothing else served beside it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::middleware;
use axum::Router;
use cellos_mcp::{McpHttpService, MCP_PATH};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::{authenticate, Auth};
use crate::config::{BearerToken, ServeConfig, TlsFiles};
use crate::listen::{accept_tcp, tls_acceptor, ListenError, Tcp};
use crate::ServeError;

/// Where and how the endpoint listens.
pub struct McpListen {
    pub addr: SocketAddr,
    pub tls: Option<TlsFiles>,
    pub token: Option<BearerToken>,
}

/// Serve `service` at `/mcp` on `listen.addr` until `shutdown`; refused before binding when
/// the listener would be unsafe (no token, or no TLS off loopback).
pub async fn serve_mcp(
    listen: McpListen,
    service: McpHttpService,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let mut check = ServeConfig::new("").listen(vec![crate::Listen::Tcp(listen.addr)]);
    check.tls = listen.tls.clone();
    check.token = listen.token.clone();
    check.check()?;
    let tls = listen.tls.as_ref().map(tls_acceptor).transpose()?;
    let listener = TcpListener::bind(listen.addr)
        .await
        .map_err(|source| ListenError::Io {
            what: format!("tcp:{}", listen.addr),
            source,
        })?;
    let router =
        Router::new()
            .route_service(MCP_PATH, service)
            .layer(middleware::from_fn_with_state(
                Arc::new(Auth::new(listen.token)),
                authenticate,
            ));
    let (stop_tx, stop_rx) = watch::channel(false);
    let graceful = Arc::new(GracefulShutdown::new());
    let accepting = tokio::spawn(accept_tcp(
        Tcp { listener, tls },
        router,
        graceful.clone(),
        stop_rx,
    ));
    tracing::info!("serving MCP on tcp:{}{MCP_PATH}", listen.addr);
    shutdown.await;
    let _ = stop_tx.send(true);
    let _ = accepting.await;
    if let Ok(graceful) = Arc::try_unwrap(graceful) {
        crate::shutdown::drain(graceful).await;
    }
    Ok(())
}

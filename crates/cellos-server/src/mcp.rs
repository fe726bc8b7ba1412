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
use crate::config::{BearerToken, TlsFiles, MIN_TOKEN_LEN};
use crate::listen::{accept_tcp, tls_acceptor, ListenError, Tcp};

/// Why the endpoint cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum McpServeError {
    #[error("--http {0} needs a bearer token: give --token-file PATH or set CELLOS_TOKEN")]
    TokenRequired(SocketAddr),
    #[error("the bearer token is shorter than {MIN_TOKEN_LEN} characters; use a long random one")]
    TokenTooShort,
    #[error(
        "--http {0} is not a loopback address, so it needs TLS: give --tls-cert and --tls-key"
    )]
    TlsRequired(SocketAddr),
    #[error(transparent)]
    Listen(#[from] ListenError),
}

impl McpListen {
    /// The same rules as the API's TCP listeners.
    fn check(&self) -> Result<(), McpServeError> {
        match &self.token {
            None => return Err(McpServeError::TokenRequired(self.addr)),
            Some(token) if token.len() < MIN_TOKEN_LEN => return Err(McpServeError::TokenTooShort),
            Some(_) => {}
        }
        if self.tls.is_none() && !self.addr.ip().is_loopback() {
            return Err(McpServeError::TlsRequired(self.addr));
        }
        Ok(())
    }
}

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
) -> Result<(), McpServeError> {
    listen.check()?;
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

//! The listeners: the Unix socket (always; mode 0600, so only its owner and root reach it)
//! and any TCP listeners (TLS unless loopback). Each accepted connection is served by hyper
//! with the router, every request tagged with the [`Peer`] it came from.

use std::fs::Permissions;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::auth::Peer;
use crate::config::{ServeConfig, TlsFiles};

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the server cannot listen.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("another server is live on {0}; stop it or pass --listen unix:OTHER_PATH")]
    Live(PathBuf),
    #[error("{0} exists and is not a socket; move it away")]
    NotASocket(PathBuf),
    #[error("cannot listen on {what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("TLS: {0}")]
    Tls(String),
}

fn io_err(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> ListenError {
    let what = what.to_string();
    move |source| ListenError::Io { what, source }
}

/// A TCP listener and, unless it is loopback without TLS, its TLS acceptor.
pub struct Tcp {
    pub listener: TcpListener,
    pub tls: Option<TlsAcceptor>,
}

/// Every listener of one server.
pub struct Listeners {
    pub unix: UnixListener,
    pub unix_path: PathBuf,
    pub tcp: Vec<Tcp>,
}

impl Listeners {
    /// Bind everything `config` names; nothing is bound if any fails.
    pub async fn bind(config: &ServeConfig) -> Result<Self, ListenError> {
        let tls = config.tls.as_ref().map(tls_acceptor).transpose()?;
        let mut tcp = Vec::new();
        for addr in &config.tcp {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(io_err(format!("tcp:{addr}")))?;
            tcp.push(Tcp {
                listener,
                tls: tls.clone(),
            });
        }
        let unix = bind_unix(&config.unix_socket).await?;
        Ok(Self {
            unix,
            unix_path: config.unix_socket.clone(),
            tcp,
        })
    }
}

/// Bind the socket at `path` with mode 0600. A socket file nobody answers on is stale (a
/// server that died) and replaced; one that answers belongs to a live server and is kept.
///
/// The socket is bound under a temporary name, restricted, then renamed into place, so it
/// is never reachable at `path` with looser permissions.
pub async fn bind_unix(path: &Path) -> Result<UnixListener, ListenError> {
    remove_if_stale(path).await?;
    let temp = temp_name(path);
    let _ = std::fs::remove_file(&temp);
    let what = format!("unix:{}", path.display());
    let listener = std::os::unix::net::UnixListener::bind(&temp).map_err(io_err(&what))?;
    let placed = std::fs::set_permissions(&temp, Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&temp, path))
        .and_then(|()| listener.set_nonblocking(true));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&temp);
        return Err(io_err(&what)(e));
    }
    UnixListener::from_std(listener).map_err(io_err(&what))
}

fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

async fn remove_if_stale(path: &Path) -> Result<(), ListenError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(path.display())(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(ListenError::NotASocket(path.to_owned()));
    }
    if tokio::net::UnixStream::connect(path).await.is_ok() {
        return Err(ListenError::Live(path.to_owned()));
    }
    std::fs::remove_file(path).map_err(io_err(path.display()))
}

/// A TLS acceptor from PEM files, speaking HTTP/2 and HTTP/1.1.
pub fn tls_acceptor(files: &TlsFiles) -> Result<TlsAcceptor, ListenError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| ListenError::Tls(format!("{}: {e}", path.display())))
    };
    let cert_pem = read(&files.cert)?;
    let key_pem = read(&files.key)?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ListenError::Tls(format!("{}: {e}", files.cert.display())))?;
    if certs.is_empty() {
        return Err(ListenError::Tls(format!(
            "{}: no certificate in it",
            files.cert.display()
        )));
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| ListenError::Tls(format!("{}: {e}", files.key.display())))?
        .ok_or_else(|| {
            ListenError::Tls(format!("{}: no private key in it", files.key.display()))
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ListenError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ListenError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serve one connection with `app`, tagging its requests with `peer`, until it closes or
/// the graceful shutdown ends it.
fn serve_connection<I>(io: I, peer: Peer, app: Router, watcher: Watcher)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = app.map_request(move |mut request: Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(peer.clone());
        request
    });
    let builder = Builder::new(TokioExecutor::new());
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service))
        .into_owned();
    let connection = watcher.watch(connection);
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("connection ended: {e}");
        }
    });
}

/// Accept errors (out of descriptors) are transient: wait a little instead of spinning.
async fn backoff(e: io::Error) {
    tracing::warn!("accept failed: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Accept on the Unix socket until `stop` fires.
pub async fn accept_unix(
    listener: UnixListener,
    app: Router,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => return,
        };
        match accepted {
            Ok((stream, _)) => {
                let uid = stream.peer_cred().ok().map(|c| c.uid());
                serve_connection(stream, Peer::Unix { uid }, app.clone(), graceful.watcher());
            }
            Err(e) => backoff(e).await,
        }
    }
}

/// Accept on a TCP listener until `stop` fires; TLS handshakes run per connection so a
/// slow client never holds up others.
pub async fn accept_tcp(
    tcp: Tcp,
    app: Router,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = tcp.listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (stream, addr) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                backoff(e).await;
                continue;
            }
        };
        let peer = Peer::Tcp { addr };
        let Some(acceptor) = tcp.tls.clone() else {
            serve_connection(stream, peer, app.clone(), graceful.watcher());
            continue;
        };
        let (app, watcher) = (app.clone(), graceful.watcher());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => serve_connection(tls, peer, app, watcher),
                Ok(Err(e)) => tracing::debug!("TLS handshake with {addr} failed: {e}"),
                Err(_) => tracing::debug!("TLS handshake with {addr} timed out"),
            }
        });
    }
}

//! The client side of `cellos serve`: which server to talk to, and one connection to it.
//!
//! Every request opens its own connection (a CLI command makes a handful), so there is no pool
//! to keep healthy; the unix socket is the default because it needs neither TLS nor a token.

pub mod frames;
pub mod http;
pub mod problem;
pub mod ws;

use std::fmt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::rustls;

/// Name of the server's socket under CELLOS_HOME.
pub const SOCKET_NAME: &str = "cellos.sock";

/// Why a server address, a token or a CA file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--server {0:?}: expected unix:PATH, https://HOST:PORT or http://127.0.0.1:PORT")]
    Scheme(String),
    #[error("--server {0:?}: no port (write HOST:PORT)")]
    Port(String),
    #[error(
        "--server {0:?}: plain http is only allowed to a loopback address; use https:// with --ca-cert"
    )]
    PlainRemote(String),
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: no PEM certificate in it", .0.display())]
    NoCertificate(PathBuf),
    #[error("{}: {reason}", path.display())]
    BadCertificate { path: PathBuf, reason: String },
    #[error("a TCP server needs a bearer token: set CELLOS_TOKEN or pass --token-file")]
    NoToken,
}

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Unix(PathBuf),
    Tcp { tls: bool, host: String, port: u16 },
}

impl Address {
    /// The default: the socket a `cellos serve` with the same CELLOS_HOME creates.
    pub fn default_for(home: &Path) -> Self {
        Self::Unix(home.join(SOCKET_NAME))
    }

    /// `unix:PATH`, `https://HOST:PORT` or `http://LOOPBACK:PORT` (a trailing `/` is allowed).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(ConfigError::Scheme(text.to_owned()));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        let (tls, rest) = if let Some(rest) = text.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(ConfigError::Scheme(text.to_owned()));
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains('/') {
            return Err(ConfigError::Scheme(text.to_owned()));
        }
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| ConfigError::Port(text.to_owned()))?;
        let port: u16 = port
            .parse()
            .map_err(|_| ConfigError::Port(text.to_owned()))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(ConfigError::Scheme(text.to_owned()));
        }
        if !tls && !is_loopback(host) {
            return Err(ConfigError::PlainRemote(text.to_owned()));
        }
        Ok(Self::Tcp {
            tls,
            host: host.to_owned(),
            port,
        })
    }

    /// The `Host` header (and the authority of WebSocket URLs).
    pub fn authority(&self) -> String {
        match self {
            Self::Unix(_) => "localhost".to_owned(),
            Self::Tcp { host, port, .. } if host.contains(':') => format!("[{host}]:{port}"),
            Self::Tcp { host, port, .. } => format!("{host}:{port}"),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::Tcp { tls, .. } => {
                let scheme = if *tls { "https" } else { "http" };
                write!(f, "{scheme}://{}", self.authority())
            }
        }
    }
}

/// Loopback by name or address: the only hosts plain http may go to.
fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A byte stream to the server: unix, TCP or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An open stream, boxed so HTTP and WebSocket code does not care which transport it is.
pub type Stream = Pin<Box<dyn Io>>;

/// A server and what it takes to reach it: the token for TCP, the trust roots for TLS.
#[derive(Clone)]
pub struct Server {
    pub address: Address,
    /// True when the user named the server (flag or env), so failing to reach it is an error
    /// rather than a reason to fall back to local cells.
    pub explicit: bool,
    token: Option<String>,
    tls: Option<tokio_rustls::TlsConnector>,
}

/// What the command line says about the server.
pub struct ServerOptions<'a> {
    pub server: Option<&'a str>,
    pub token_file: Option<&'a Path>,
    pub ca_cert: Option<&'a Path>,
    /// `CELLOS_TOKEN`, passed in so tests need not touch the environment.
    pub token_env: Option<String>,
}

impl Server {
    /// Resolve the server for `home`, reading the token and CA file a TCP server needs.
    pub fn configure(home: &Path, options: ServerOptions<'_>) -> Result<Self, ConfigError> {
        let address = match options.server {
            Some(text) => Address::parse(text)?,
            None => Address::default_for(home),
        };
        let mut server = Self {
            address,
            explicit: options.server.is_some(),
            token: None,
            tls: None,
        };
        if let Address::Tcp { tls, .. } = &server.address {
            server.token = Some(read_token(options.token_file, options.token_env)?);
            if *tls {
                server.tls = Some(tls_connector(options.ca_cert)?);
            }
        }
        Ok(server)
    }

    /// Whether there is any point trying: a named server always, the default socket only if
    /// its file exists.
    pub fn worth_trying(&self) -> bool {
        match &self.address {
            Address::Unix(path) => self.explicit || path.exists(),
            Address::Tcp { .. } => true,
        }
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Open one stream to the server (TLS handshake included).
    pub async fn connect(&self) -> Result<Stream, http::ClientError> {
        let unreachable = |source| http::ClientError::Unreachable {
            address: self.address.to_string(),
            source,
        };
        match &self.address {
            Address::Unix(path) => {
                let stream = UnixStream::connect(path).await.map_err(unreachable)?;
                Ok(Box::pin(stream))
            }
            Address::Tcp { host, port, .. } => {
                let tcp = TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(unreachable)?;
                let Some(connector) = &self.tls else {
                    return Ok(Box::pin(tcp));
                };
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| http::ClientError::Tls(format!("server name {host:?}: {e}")))?;
                let tls = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| http::ClientError::Tls(tls_failure(&self.address, &e)))?;
                Ok(Box::pin(tls))
            }
        }
    }
}

/// A failed handshake, with the fix when it is the certificate that was not trusted.
fn tls_failure(address: &Address, e: &std::io::Error) -> String {
    let untrusted = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)));
    match untrusted {
        true => format!(
            "{address}: {e}; trust the server's CA or certificate with --ca-cert PEM (or CELLOS_CA_CERT)"
        ),
        false => format!("{address}: {e}"),
    }
}

/// The bearer token: the first line of `--token-file`, else `CELLOS_TOKEN`.
fn read_token(file: Option<&Path>, env: Option<String>) -> Result<String, ConfigError> {
    let token = match file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned(),
        None => env.unwrap_or_default().trim().to_owned(),
    };
    if token.is_empty() {
        return Err(ConfigError::NoToken);
    }
    Ok(token)
}

/// A TLS connector trusting the certificates in `ca_cert` (the server's CA or its own
/// certificate); without one, nothing is trusted, so https needs `--ca-cert`.
fn tls_connector(ca_cert: Option<&Path>) -> Result<tokio_rustls::TlsConnector, ConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = ca_cert {
        let pem = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut found = false;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(bad_cert(path))?;
            roots.add(cert).map_err(bad_cert(path))?;
            found = true;
        }
        if !found {
            return Err(ConfigError::NoCertificate(path.to_owned()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(bad_cert(Path::new("TLS")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

fn bad_cert<E: fmt::Display>(path: &Path) -> impl Fn(E) -> ConfigError + '_ {
    move |e| ConfigError::BadCertificate {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// Percent-encode `text` for a query value or path segment (unreserved characters stay).
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_addresses_keep_their_path() {
        assert_eq!(
            Address::parse("unix:/run/cellos.sock").unwrap(),
            Address::Unix("/run/cellos.sock".into())
        );
        assert!(Address::parse("unix:").is_err());
        assert_eq!(
            Address::default_for(Path::new("/h")).to_string(),
            "unix:/h/cellos.sock"
        );
    }

    #[test]
    fn https_takes_any_host_and_http_only_loopback() {
        assert_eq!(
            Address::parse("https://cells.example:8443/").unwrap(),
            Address::Tcp {
                tls: true,
                host: "cells.example".into(),
                port: 8443
            }
        );
        assert!(matches!(
            Address::parse("http://127.0.0.1:7000"),
            Ok(Address::Tcp { tls: false, .. })
        ));
        assert!(Address::parse("http://localhost:7000").is_ok());
        let v6 = Address::parse("http://[::1]:7000").unwrap();
        assert_eq!(v6.to_string(), "http://[::1]:7000");
        assert!(matches!(
            Address::parse("http://10.0.0.1:7000"),
            Err(ConfigError::PlainRemote(_))
        ));
    }

    #[test]
    fn malformed_addresses_say_what_is_expected() {
        for bad in [
            "tcp:1.2.3.4:5",
            "/run/x.sock",
            "https://host",
            "https://host:x",
            "https://:1",
        ] {
            let err = Address::parse(bad).unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
        assert!(Address::parse("https://host/v1:8").is_err());
    }

    #[test]
    fn tcp_needs_a_token_and_unix_does_not() {
        let home = Path::new("/h");
        let opts = |server, token_env| ServerOptions {
            server,
            token_file: None,
            ca_cert: None,
            token_env,
        };
        assert!(Server::configure(home, opts(None, None)).is_ok());
        let err = Server::configure(home, opts(Some("http://127.0.0.1:1"), None))
            .err()
            .unwrap();
        assert!(matches!(err, ConfigError::NoToken));
        let server = Server::configure(
            home,
            opts(Some("http://127.0.0.1:1"), Some(" t0k \n".into())),
        )
        .unwrap();
        assert_eq!(server.token(), Some("t0k"));
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not pem").unwrap();
        assert!(matches!(
            tls_connector(Some(&path)),
            Err(ConfigError::NoCertificate(_))
        ));
    }

    #[test]
    fn encoding_keeps_slashes_and_escapes_the_rest() {
        assert_eq!(encode("/a b/c&d=é"), "/a%20b/c%26d%3D%C3%A9");
    }
}

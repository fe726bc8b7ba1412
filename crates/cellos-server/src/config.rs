//! What `cellos serve` was asked to do: where to listen, how TCP callers prove who they are,
//! what happens to cells at shutdown, and the body limits of the API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use cellos_supervisor::SessionConfig;

/// Largest spec document `POST /v1/cells` reads.
pub const DEFAULT_SPEC_BODY_LIMIT: usize = 1 << 20;
/// Largest JSON request (exec bodies, WebSocket control messages) the API reads.
pub const DEFAULT_JSON_BODY_LIMIT: usize = 1 << 20;
/// Name of the default socket under CELLOS_HOME.
pub const SOCKET_NAME: &str = "cellos.sock";
/// Shortest bearer token accepted: a short token over TCP is guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// Why a configuration cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--listen {0:?}: expected unix:PATH or tcp:HOST:PORT")]
    BadListen(String),
    #[error(
        "--listen tcp:{0} is not a loopback address, so it needs TLS: give --tls-cert and --tls-key"
    )]
    TlsRequired(SocketAddr),
    #[error("--tls-cert and --tls-key go together; give both or neither")]
    TlsIncomplete,
    #[error("--listen tcp:... needs a bearer token: give --token-file PATH or set CELLOS_TOKEN")]
    TokenRequired,
    #[error("the bearer token is shorter than {MIN_TOKEN_LEN} characters; use a long random one")]
    TokenTooShort,
    #[error("cannot read the token file {path}: {source}")]
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One `--listen` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// Replace the default socket path.
    Unix(PathBuf),
    /// Also listen on TCP (TLS unless loopback; a bearer token always).
    Tcp(SocketAddr),
}

impl FromStr for Listen {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || ConfigError::BadListen(text.to_owned());
        if let Some(path) = text.strip_prefix("unix:") {
            return if path.is_empty() {
                Err(bad())
            } else {
                Ok(Listen::Unix(PathBuf::from(path)))
            };
        }
        let addr = text.strip_prefix("tcp:").ok_or_else(bad)?;
        addr.parse().map(Listen::Tcp).map_err(|_| bad())
    }
}

/// PEM files of the TCP listener's certificate chain and private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What happens to live cells when the server stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnShutdown {
    /// Destroy every cell and verify nothing is left (the default: a stopped server leaves
    /// nothing running that nobody can reach).
    #[default]
    Destroy,
    /// Leave cells running for a restarted server to reclaim.
    Keep,
}

/// The server's configuration.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Always served: local callers are identified by their uid.
    pub unix_socket: PathBuf,
    pub tcp: Vec<SocketAddr>,
    pub tls: Option<TlsFiles>,
    /// A single bearer token TCP callers may present (subject `token:api`).
    pub token: Option<BearerToken>,
    /// The token store (`cellos token create`) whose tokens TCP callers may present; reread
    /// when it changes, so created and revoked tokens count from the next request.
    pub token_store: Option<cellos_adapters::tokens::TokenStore>,
    pub on_shutdown: OnShutdown,
    pub spec_body_limit: usize,
    pub json_body_limit: usize,
    /// Largest file one `PUT .../files` carries (the sessions' `max_file_bytes`).
    pub file_body_limit: usize,
    /// How often expired cells are swept.
    pub sweep_interval: Duration,
    /// Interval of SSE keep-alive comments.
    pub keep_alive: Duration,
}

impl ServeConfig {
    /// A Unix socket only, with the default limits.
    pub fn new(unix_socket: impl Into<PathBuf>) -> Self {
        Self {
            unix_socket: unix_socket.into(),
            tcp: Vec::new(),
            tls: None,
            token: None,
            token_store: None,
            on_shutdown: OnShutdown::Destroy,
            spec_body_limit: DEFAULT_SPEC_BODY_LIMIT,
            json_body_limit: DEFAULT_JSON_BODY_LIMIT,
            file_body_limit: usize::try_from(SessionConfig::default().max_file_bytes)
                .unwrap_or(usize::MAX),
            sweep_interval: Duration::from_secs(1),
            keep_alive: Duration::from_secs(15),
        }
    }

    /// The default socket of a CELLOS_HOME.
    pub fn default_socket(home: &Path) -> PathBuf {
        home.join(SOCKET_NAME)
    }

    /// Apply `--listen` values: a `unix:` replaces the socket path, each `tcp:` adds one.
    pub fn listen(mut self, listens: impl IntoIterator<Item = Listen>) -> Self {
        for listen in listens {
            match listen {
                Listen::Unix(path) => self.unix_socket = path,
                Listen::Tcp(addr) => self.tcp.push(addr),
            }
        }
        self
    }

    /// Refuse a configuration that would expose the API: TCP with no way to authenticate, or
    /// off loopback without TLS.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.tcp.is_empty() {
            return Ok(());
        }
        match &self.token {
            None if self.token_store.is_none() => return Err(ConfigError::TokenRequired),
            None => {}
            Some(token) if token.len() < MIN_TOKEN_LEN => return Err(ConfigError::TokenTooShort),
            Some(_) => {}
        }
        if self.tls.is_none() {
            if let Some(addr) = self.tcp.iter().find(|a| !a.ip().is_loopback()) {
                return Err(ConfigError::TlsRequired(*addr));
            }
        }
        Ok(())
    }
}

/// The bearer token: `--token-file` wins over `CELLOS_TOKEN`; surrounding whitespace (the
/// newline an editor adds) is not part of it.
pub fn load_token(
    file: Option<&Path>,
    env: Option<String>,
) -> Result<Option<BearerToken>, ConfigError> {
    let text = match file {
        Some(path) => std::fs::read_to_string(path).map_err(|source| ConfigError::TokenFile {
            path: path.to_owned(),
            source,
        })?,
        None => match env {
            Some(text) => text,
            None => return Ok(None),
        },
    };
    let token = text.trim();
    Ok((!token.is_empty()).then(|| BearerToken::new(token)))
}

/// A bearer token; its `Debug` never shows the value, so logging the configuration is safe.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

impl BearerToken {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_values_parse_and_bad_ones_are_refused() {
        assert_eq!(
            "tcp:127.0.0.1:8443".parse::<Listen>().ok(),
            Some(Listen::Tcp(([127, 0, 0, 1], 8443).into()))
        );
        assert!("tcp:nowhere".parse::<Listen>().is_err());
        assert!("http://x".parse::<Listen>().is_err());
        assert!(matches!("unix:/run/c.sock".parse(), Ok(Listen::Unix(_))));
    }

    #[test]
    fn tcp_off_loopback_needs_tls_and_always_a_token() {
        let mut config = ServeConfig::new("/tmp/x.sock")
            .listen([Listen::Tcp("0.0.0.0:8443".parse().expect("addr"))]);
        assert!(matches!(config.check(), Err(ConfigError::TokenRequired)));
        config.token = Some(BearerToken::new("0123456789abcdef0123"));
        assert!(matches!(config.check(), Err(ConfigError::TlsRequired(_))));
        config.tcp = vec!["127.0.0.1:8443".parse().expect("addr")];
        assert!(config.check().is_ok());
    }
}

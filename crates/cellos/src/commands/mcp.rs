//! `cellos mcp`: the MCP server of `cellos-mcp` on stdio (a client starts it and speaks on its
//! stdin/stdout), or on streamable HTTP with `--http ADDR`. Its cells live as long as the
//! server: when the client goes (stdin closes) or SIGTERM arrives, every cell is destroyed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cellos_linux::netscope::NetworkConfig;
use cellos_mcp::{McpState, Profiles};
use cellos_server::config::{load_token, TlsFiles};
use cellos_server::mcp::McpListen;
use cellos_supervisor::{Caller, SessionConfig, Sessions};
use tokio_util::sync::CancellationToken;

use crate::commands::serve::TOKEN_ENV;
use crate::commands::spec::load_policies;
use crate::compose;
use crate::exit::Failure;

/// What `cellos mcp` was asked for.
pub struct McpArgs {
    pub http: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    pub profiles: Option<PathBuf>,
    pub policies: Vec<PathBuf>,
    pub secrets_dir: Option<PathBuf>,
    pub network: NetworkConfig,
}

/// The profiles of `--profiles FILE`, else the built-in ones.
pub fn load_profiles(path: Option<&Path>) -> Result<Profiles, Failure> {
    match path {
        Some(path) => Profiles::load(path),
        None => Profiles::builtin(),
    }
    .map_err(|e| Failure::invalid(e.to_string()))
}

/// Who a connection without an authenticated identity is: the user who started the server.
pub fn local_caller() -> Caller {
    Caller {
        subject: format!("uid:{}", rustix::process::getuid().as_raw()),
    }
}

/// Serve until the client leaves (stdio) or SIGTERM/SIGINT; destroy every cell; exit 0.
pub fn mcp(home: &Path, args: McpArgs) -> Result<u8, Failure> {
    let profiles = load_profiles(args.profiles.as_deref())?;
    let listen = match args.http {
        Some(addr) => Some(http_listen(addr, &args)?),
        None => None,
    };
    let policies = load_policies(&args.policies)?;
    let supervisor = compose::server_supervisor(home, args.secrets_dir, args.network, Ok)?;
    if let Err(e) = supervisor.gc() {
        eprintln!("cellos mcp: reclaiming cells a crashed run left: {e} (run `cellos gc`)");
    }
    let sessions = Arc::new(Sessions::new(
        Arc::new(supervisor),
        policies,
        SessionConfig::default(),
    ));
    let state = Arc::new(McpState::new(
        sessions.clone(),
        profiles,
        home.to_owned(),
        local_caller(),
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("cellos-mcp")
        .build()
        .map_err(|e| Failure::cellos(format!("cannot start the MCP runtime: {e}")))?;
    let served = runtime.block_on(async {
        let sweeper = tokio::spawn(sweep(sessions.clone()));
        let served = match listen {
            Some(listen) => serve_http(state, listen).await,
            None => serve_stdio(state).await,
        };
        sweeper.abort();
        let sessions = sessions.clone();
        let _ = tokio::task::spawn_blocking(move || sessions.shutdown(false)).await;
        served
    });
    served.map(|()| 0)
}

fn http_listen(addr: SocketAddr, args: &McpArgs) -> Result<McpListen, Failure> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        (None, None) => None,
        _ => {
            return Err(Failure::invalid(
                cellos_server::ConfigError::TlsIncomplete.to_string(),
            ))
        }
    };
    let token = load_token(args.token_file.as_deref(), std::env::var(TOKEN_ENV).ok())
        .map_err(|e| Failure::invalid(e.to_string()))?;
    Ok(McpListen { addr, tls, token })
}

/// Stdio: until the client closes stdin, or a signal ends the server first.
async fn serve_stdio(state: Arc<McpState>) -> Result<(), Failure> {
    tokio::select! {
        served = cellos_mcp::serve_stdio(state) => served.map_err(|e| Failure::cellos(e.to_string())),
        () = cellos_server::shutdown::signal_received() => Ok(()),
    }
}

async fn serve_http(state: Arc<McpState>, listen: McpListen) -> Result<(), Failure> {
    let stop = CancellationToken::new();
    let service = cellos_mcp::http_service(state, stop.clone());
    let shutdown = async move {
        cellos_server::shutdown::signal_received().await;
        stop.cancel();
    };
    cellos_server::mcp::serve_mcp(listen, service, shutdown)
        .await
        .map_err(|e| Failure::invalid(e.to_string()))
}

/// Destroy cells whose TTL or idle timeout passed, about once a second.
async fn sweep(sessions: Arc<Sessions>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let sessions = sessions.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || sessions.sweep()).await {
            tracing::error!("sweep failed: {e}");
        }
    }
}

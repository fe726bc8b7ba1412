//! `cellos serve`: one long-lived supervisor holding many session cells, driven over the
//! HTTP API of `cellos-server` (a Unix socket at CELLOS_HOME/cellos.sock, and TCP on request),
//! with the MCP endpoint of `cellos-mcp` at `/mcp` over the same cells.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cellos_core::ports::EventSink;
use cellos_linux::netscope::NetworkConfig;
use cellos_server::config::{load_token, TlsFiles};
use cellos_server::events::DEFAULT_KEPT_EVENTS;
use cellos_server::{EventFeed, Listen, OnShutdown, ServeConfig};
use cellos_supervisor::{SessionConfig, Sessions};

use crate::commands::spec::load_policies;
use crate::compose;
use crate::exit::Failure;

/// Environment variable holding the bearer token when `--token-file` is not given.
pub const TOKEN_ENV: &str = "CELLOS_TOKEN";

/// What `cellos serve` was asked for.
pub struct ServeArgs {
    pub listen: Vec<Listen>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    pub on_shutdown: OnShutdown,
    pub policies: Vec<PathBuf>,
    /// Profiles of the MCP endpoint at `/mcp` (default: the built-in ones).
    pub mcp_profiles: Option<PathBuf>,
    pub secrets_dir: Option<PathBuf>,
    pub network: NetworkConfig,
}

fn tls(cert: Option<PathBuf>, key: Option<PathBuf>) -> Result<Option<TlsFiles>, Failure> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles { cert, key })),
        (None, None) => Ok(None),
        _ => Err(Failure::invalid(
            cellos_server::ConfigError::TlsIncomplete.to_string(),
        )),
    }
}

/// The server's configuration from the flags; refused before anything starts if unsafe.
fn config(
    home: &Path,
    args: &mut ServeArgs,
    sessions: &SessionConfig,
) -> Result<ServeConfig, Failure> {
    let mut config = ServeConfig::new(ServeConfig::default_socket(home))
        .listen(std::mem::take(&mut args.listen));
    config.tls = tls(args.tls_cert.take(), args.tls_key.take())?;
    config.token = load_token(args.token_file.as_deref(), std::env::var(TOKEN_ENV).ok())
        .map_err(|e| Failure::invalid(e.to_string()))?;
    config.token_store = Some(cellos_adapters::tokens::TokenStore::new(home));
    config.on_shutdown = args.on_shutdown;
    config.file_body_limit = usize::try_from(sessions.max_file_bytes).unwrap_or(usize::MAX);
    config
        .check()
        .map_err(|e| Failure::invalid(e.to_string()))?;
    Ok(config)
}

/// Serve until SIGTERM or SIGINT; exit 0 after the cells were shut down.
pub fn serve(home: &Path, mut args: ServeArgs) -> Result<u8, Failure> {
    let session_config = SessionConfig::default();
    let config = config(home, &mut args, &session_config)?;
    let policies = load_policies(&args.policies)?;
    let profiles = crate::commands::mcp::load_profiles(args.mcp_profiles.as_deref())?;
    let mut feed = None;
    let supervisor = compose::server_supervisor(home, args.secrets_dir, args.network, |log| {
        let tee = Arc::new(
            EventFeed::open(log, home, DEFAULT_KEPT_EVENTS)
                .map_err(|e| Failure::cellos(format!("event feed: {e}")))?,
        );
        feed = Some(tee.clone());
        Ok(tee as Arc<dyn EventSink>)
    })?;
    let feed = feed.ok_or_else(|| Failure::cellos("the event feed was not set up"))?;
    reclaim_left_behind(&supervisor)?;
    let sessions = Arc::new(Sessions::new(
        Arc::new(supervisor),
        policies,
        session_config,
    ));
    remember_history(home, &sessions)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("cellos-serve")
        .build()
        .map_err(|e| Failure::cellos(format!("cannot start the server runtime: {e}")))?;
    let mcp = Arc::new(cellos_mcp::McpState::new(
        sessions.clone(),
        profiles,
        home.to_owned(),
        crate::commands::mcp::local_caller(),
    ));
    runtime
        .block_on(async {
            // Handlers first: a SIGTERM once the socket answers must reach the shutdown.
            let signal = cellos_server::shutdown::signal_received();
            let stop = tokio_util::sync::CancellationToken::new();
            let mcp = cellos_mcp::http_service(mcp, stop.clone());
            let shutdown = async move {
                signal.await;
                stop.cancel();
            };
            cellos_server::serve_with_mcp(config, sessions, feed, Some(mcp), shutdown).await
        })
        .map_err(|e| Failure::cellos(e.to_string()))?;
    Ok(0)
}

/// Reclaim what a dead server (or a crashed `cellos run`) left on this host before taking new
/// cells: its cells' processes died with it, their cgroups, network scopes and records did
/// not. Each reclaim is recorded (`gc.v1.reclaimed`), so every cell of the dead server ends in
/// a terminal state in the log.
fn reclaim_left_behind(supervisor: &cellos_supervisor::Supervisor) -> Result<(), Failure> {
    let report = supervisor
        .gc()
        .map_err(|e| Failure::cellos(format!("reclaiming cells a previous server left: {e}")))?;
    if !report.reclaimed.is_empty() {
        eprintln!(
            "cellos serve: reclaimed {} cell(s) a previous server left",
            report.reclaimed.len()
        );
    }
    for (cell, err) in &report.failed {
        eprintln!("cellos serve: could not reclaim cell {cell}: {err} (run `cellos gc`)");
    }
    Ok(())
}

/// Rebuild, from the fold of the event log, what earlier servers' cells came to, so `GET`
/// and `ps` show them after a restart.
fn remember_history(home: &Path, sessions: &Sessions) -> Result<(), Failure> {
    let events = cellos_adapters::event_log::read_log(home)
        .map_err(|e| Failure::cellos(format!("reading the event log to rebuild state: {e}")))?;
    sessions.remember(&cellos_core::projection::project(&events));
    Ok(())
}

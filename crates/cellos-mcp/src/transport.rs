//! The transports: stdio for a client that starts the server, and streamable HTTP for one
//! that reaches it over the network (authentication is the HTTP layer's: see `cellos serve`).

use std::sync::Arc;

use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::ServiceExt;
use tokio_util::sync::CancellationToken;

use crate::cells::McpState;
use crate::server::CellsMcp;

/// Where `cellos serve` mounts the streamable HTTP endpoint.
pub const MCP_PATH: &str = "/mcp";

/// The streamable HTTP endpoint as a tower service.
pub type McpHttpService = StreamableHttpService<CellsMcp, LocalSessionManager>;

/// Serve one client on stdin/stdout until it closes them.
pub async fn serve_stdio(state: Arc<McpState>) -> Result<(), std::io::Error> {
    let running = CellsMcp::new(state)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| std::io::Error::other(format!("MCP initialization failed: {e}")))?;
    running
        .waiting()
        .await
        .map_err(|e| std::io::Error::other(format!("the MCP session failed: {e}")))?;
    Ok(())
}

/// The streamable HTTP endpoint: a handler per MCP session over the shared state. `stop`
/// ends every session (at shutdown). The `Host` check is off: the endpoint is only served
/// behind the caller's authentication (a bearer token over TCP, the peer's uid on a socket),
/// which is what stops a rebinding page, and it must answer on any name the operator serves.
pub fn http_service(state: Arc<McpState>, stop: CancellationToken) -> McpHttpService {
    let config = StreamableHttpServerConfig::default()
        .with_cancellation_token(stop)
        .disable_allowed_hosts();
    StreamableHttpService::new(
        move || Ok(CellsMcp::new(state.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    )
}

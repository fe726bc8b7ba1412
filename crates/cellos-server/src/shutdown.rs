//! Stopping: SIGTERM or SIGINT ends `cellos serve`; open connections get a bounded time to
//! finish after the cells were shut down.

use std::future::Future;
use std::time::Duration;

use hyper_util::server::graceful::GracefulShutdown;
use tokio::signal::unix::{signal, SignalKind};

/// How long open connections (exec streams, SSE followers) may take to finish.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Resolves at the first SIGTERM or SIGINT after this call. The handlers are installed by the
/// call itself (it must run inside the runtime), not when the future is first polled: a
/// signal that comes once the server answers but before it waits for one must not get the
/// default action, which kills the process with its cells and socket left behind. If the
/// handlers cannot be installed, it never resolves on its own (the process can still be
/// killed) rather than stopping at once.
pub fn signal_received() -> impl Future<Output = ()> {
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::warn!("cannot install SIGTERM/SIGINT handlers");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}

/// Let open connections finish, up to [`DRAIN_TIMEOUT`]; streams still open then are cut.
pub async fn drain(graceful: GracefulShutdown) {
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!("connections still open after {DRAIN_TIMEOUT:?}; closing them");
    }
}

//! WebSocket connections (interactive execs), over the same unix/TCP/TLS stream as HTTP.

use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{HeaderValue, AUTHORIZATION};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::WebSocketStream;

use super::http::ClientError;
use super::problem::Problem;
use super::{Server, Stream};

/// An open WebSocket to the server.
pub type Socket = WebSocketStream<Stream>;

impl Server {
    /// Upgrade a new connection to a WebSocket on `path`. TLS, if any, is already under the
    /// stream, so the URL is always `ws://` (it only supplies Host and the path).
    pub async fn websocket(&self, path: &str) -> Result<Socket, ClientError> {
        let stream = self.connect().await?;
        let url = format!("ws://{}{path}", self.address.authority());
        let mut request = url
            .into_client_request()
            .map_err(|e| ClientError::WebSocket(format!("{path}: {e}")))?;
        if let Some(token) = self.token() {
            let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                ClientError::Http("the token has characters a header cannot carry".into())
            })?;
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        match tokio_tungstenite::client_async(request, stream).await {
            Ok((socket, _)) => Ok(socket),
            // The server refused the upgrade: its answer is a problem like any other.
            Err(WsError::Http(response)) => {
                let status = response.status().as_u16();
                let body = response.body().as_deref().unwrap_or_default();
                Err(ClientError::Problem(Problem::decode(status, body)))
            }
            Err(e) => Err(ClientError::WebSocket(e.to_string())),
        }
    }
}

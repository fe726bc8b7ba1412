//! HTTP/1.1 requests to the server: one connection per request, the bearer token on TCP,
//! and any non-2xx answer decoded as a [`Problem`].

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;

use super::frames::{FrameError, Lines};
use super::problem::Problem;
use super::Server;

/// Why a call to the server failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no server at {address} (start one with `cellos serve`, or set --server)")]
    Unreachable {
        address: String,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("talking to the server: {0}")]
    Http(String),
    #[error("{}", .0.one_line())]
    Problem(Problem),
    #[error("unexpected answer to {what}: {reason}")]
    Decode { what: String, reason: String },
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("WebSocket: {0}")]
    WebSocket(String),
}

impl ClientError {
    /// The problem `type` slug, if the server answered with a problem.
    pub fn slug(&self) -> Option<&str> {
        match self {
            Self::Problem(p) => Some(p.slug()),
            _ => None,
        }
    }
}

impl From<hyper::Error> for ClientError {
    fn from(e: hyper::Error) -> Self {
        Self::Http(e.to_string())
    }
}

/// A request body and its media type.
pub struct Body {
    pub content_type: &'static str,
    pub bytes: Bytes,
}

impl Body {
    pub fn json(value: &impl serde::Serialize) -> Self {
        Self {
            content_type: "application/json",
            // Serializing our own request types cannot fail (no maps with non-string keys).
            bytes: Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
        }
    }
}

impl Server {
    /// The request with the headers every call carries: Host and, on TCP, the token.
    pub fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.address.authority());
        if let Some(token) = self.token() {
            let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                ClientError::Http("the token has characters a header cannot carry".into())
            })?;
            builder = builder.header(AUTHORIZATION, value);
        }
        let bytes = match body {
            Some(body) => {
                builder = builder.header(CONTENT_TYPE, body.content_type);
                body.bytes
            }
            None => Bytes::new(),
        };
        builder
            .body(Full::new(bytes))
            .map_err(|e| ClientError::Http(format!("{path}: {e}")))
    }

    /// Send `request` on a new connection; a non-2xx answer becomes [`ClientError::Problem`].
    pub async fn send(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, ClientError> {
        let stream = self.connect().await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        // The connection runs until the response body is read to its end (or dropped).
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let response = sender.send_request(request).await?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Err(ClientError::Problem(Problem::decode(status, &body)))
    }

    /// A call whose whole answer is read into memory.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
    ) -> Result<Bytes, ClientError> {
        let request = self.request(method, path, body)?;
        let response = self.send(request).await?;
        Ok(response.into_body().collect().await?.to_bytes())
    }

    /// A call answered with JSON of type `T`.
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
    ) -> Result<T, ClientError> {
        let what = format!("{method} {path}");
        let bytes = self.call(method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            what,
            reason: e.to_string(),
        })
    }

    /// A call answered with an NDJSON stream of exec frames, each handed to `on_frame` as it
    /// arrives; returns what `on_frame` returned for the last frame it was given, if any.
    pub async fn frames<R>(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
        mut on_frame: impl FnMut(super::frames::Frame) -> Option<R>,
    ) -> Result<Option<R>, ClientError> {
        let request = self.request(method, path, body)?;
        let mut body = self.send(request).await?.into_body();
        let mut lines = Lines::default();
        let mut last = None;
        while let Some(frame) = body.frame().await {
            let Ok(chunk) = frame?.into_data() else {
                continue; // trailers
            };
            for frame in lines.push(&chunk)? {
                if let Some(r) = on_frame(frame) {
                    last = Some(r);
                }
            }
        }
        if let Some(frame) = lines.finish()? {
            if let Some(r) = on_frame(frame) {
                last = Some(r);
            }
        }
        Ok(last)
    }
}

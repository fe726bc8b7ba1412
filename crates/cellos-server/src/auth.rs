//! Who is calling. A Unix-socket peer is its uid (from `SO_PEERCRED`, which the kernel
//! vouches for); a TCP caller must present the configured bearer token, compared in constant
//! time, and is then `token:api`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cellos_supervisor::Caller;
use subtle::ConstantTimeEq;

use crate::config::BearerToken;
use crate::problem::{ApiProblem, Kind};

/// Subject of a caller holding the (single) API token.
pub const TOKEN_SUBJECT: &str = "token:api";

/// The connection a request came in on, attached by the listener to every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// `uid` is `None` when the kernel could not tell (never trusted).
    Unix {
        uid: Option<u32>,
    },
    Tcp {
        addr: SocketAddr,
    },
}

/// How callers are authenticated.
#[derive(Debug, Clone)]
pub struct Auth {
    token: Option<BearerToken>,
}

impl Auth {
    pub fn new(token: Option<BearerToken>) -> Self {
        Self { token }
    }

    /// The caller behind `peer`, or an `unauthorized` problem.
    pub fn caller(&self, peer: Option<&Peer>, headers: &HeaderMap) -> Result<Caller, ApiProblem> {
        match peer {
            Some(Peer::Unix { uid: Some(uid) }) => Ok(Caller {
                subject: format!("uid:{uid}"),
            }),
            Some(Peer::Unix { uid: None }) => Err(unauthorized(
                "the kernel did not report the peer's credentials on this socket",
            )),
            Some(Peer::Tcp { .. }) => self.bearer(headers),
            None => Err(unauthorized("the request came in on no known listener")),
        }
    }

    fn bearer(&self, headers: &HeaderMap) -> Result<Caller, ApiProblem> {
        let Some(expected) = &self.token else {
            return Err(unauthorized("this server has no token configured for TCP"));
        };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_value)
            .ok_or_else(|| unauthorized("send Authorization: Bearer <token>"))?;
        if bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
            Ok(Caller {
                subject: TOKEN_SUBJECT.to_owned(),
            })
        } else {
            Err(unauthorized("the bearer token is not valid"))
        }
    }
}

/// The token of an `Authorization: Bearer <token>` value (the scheme is case-insensitive).
fn bearer_value(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn unauthorized(detail: &str) -> ApiProblem {
    ApiProblem::new(Kind::Unauthorized, detail)
}

/// Middleware: attach the [`Caller`] to the request, or answer 401.
pub async fn authenticate(
    State(auth): State<Arc<Auth>>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request.extensions().get::<Peer>();
    match auth.caller(peer, request.headers()) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(problem) => {
            let mut response = problem.into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            response
        }
    }
}

/// The authenticated caller of a request.
pub struct Authed(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for Authed {
    type Rejection = ApiProblem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .map(Authed)
            .ok_or_else(|| unauthorized("the request was not authenticated"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_configured_token_is_accepted() {
        let auth = Auth::new(Some(BearerToken::new("s3cret-token-0123456789")));
        let tcp = Peer::Tcp {
            addr: ([127, 0, 0, 1], 1).into(),
        };
        let mut headers = HeaderMap::new();
        assert!(auth.caller(Some(&tcp), &headers).is_err());
        headers.insert(
            header::AUTHORIZATION,
            "Bearer nope".parse().expect("header"),
        );
        assert!(auth.caller(Some(&tcp), &headers).is_err());
        headers.insert(
            header::AUTHORIZATION,
            "bearer s3cret-token-0123456789".parse().expect("header"),
        );
        assert_eq!(
            auth.caller(Some(&tcp), &headers).map(|c| c.subject).ok(),
            Some(TOKEN_SUBJECT.to_owned())
        );
    }

    #[test]
    fn a_unix_peer_is_its_uid() {
        let auth = Auth::new(None);
        let caller = auth.caller(Some(&Peer::Unix { uid: Some(1000) }), &HeaderMap::new());
        assert_eq!(caller.map(|c| c.subject).ok(), Some("uid:1000".to_owned()));
    }
}

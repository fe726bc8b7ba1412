//! Who is calling. A Unix-socket peer is its uid (from `SO_PEERCRED`, which the kernel
//! vouches for); a TCP caller must present a bearer token: one from the token store
//! (`cellos token create`), which makes it that token's subject, or the single configured
//! token, compared in constant time, which makes it `token:api`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cellos_adapters::tokens::{Rejection, TokenRecord, TokenStore};
use cellos_supervisor::Caller;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

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
#[derive(Debug)]
pub struct Auth {
    token: Option<BearerToken>,
    store: Option<StoreCache>,
}

/// The token store's records, reread when the file changes (its modification time, size or
/// inode), so a request costs one `stat` and a revocation holds from the next request.
#[derive(Debug)]
struct StoreCache {
    store: TokenStore,
    loaded: Mutex<Loaded>,
}

/// The file's (modification time, size, inode) when last read, and what it held.
type Stamp = Option<(SystemTime, u64, u64)>;

#[derive(Debug, Default)]
struct Loaded {
    stamp: Stamp,
    records: Arc<Vec<TokenRecord>>,
}

impl StoreCache {
    fn records(&self) -> Result<Arc<Vec<TokenRecord>>, ApiProblem> {
        use std::os::unix::fs::MetadataExt;
        let stamp = std::fs::metadata(self.store.path()).ok().map(|m| {
            (
                m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                m.len(),
                m.ino(),
            )
        });
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if loaded.stamp != stamp || stamp.is_none() {
            let records = self.store.list().map_err(|e| {
                tracing::error!("token store: {e}");
                ApiProblem::new(Kind::Backend, "the server cannot read its token store")
            })?;
            *loaded = Loaded {
                stamp,
                records: Arc::new(records),
            };
        }
        Ok(loaded.records.clone())
    }
}

impl Auth {
    pub fn new(token: Option<BearerToken>) -> Self {
        Self { token, store: None }
    }

    /// Also accept the tokens of `store`.
    pub fn with_store(mut self, store: Option<TokenStore>) -> Self {
        self.store = store.map(|store| StoreCache {
            store,
            loaded: Mutex::new(Loaded::default()),
        });
        self
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
        if self.token.is_none() && self.store.is_none() {
            return Err(unauthorized("this server has no token configured for TCP"));
        }
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_value)
            .ok_or_else(|| unauthorized("send Authorization: Bearer <token>"))?;
        if let Some(expected) = &self.token {
            if bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
                return Ok(Caller {
                    subject: TOKEN_SUBJECT.to_owned(),
                });
            }
        }
        let Some(cache) = &self.store else {
            return Err(unauthorized("the bearer token is not valid"));
        };
        let records = cache.records()?;
        match TokenStore::check(&records, presented, OffsetDateTime::now_utc()) {
            Ok(record) => Ok(Caller {
                subject: record.subject.clone(),
            }),
            Err(Rejection::Revoked) => Err(unauthorized("this token was revoked")),
            Err(Rejection::Expired) => Err(unauthorized(
                "this token has expired; create another with cellos token create",
            )),
            Err(Rejection::Malformed | Rejection::Unknown) => {
                Err(unauthorized("the bearer token is not valid"))
            }
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

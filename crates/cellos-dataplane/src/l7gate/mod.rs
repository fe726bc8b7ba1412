//! Transparent L7 gate for hostname rules on TCP 80/443.
//!
//! The cell's ruleset redirects such connections to the gate's listener (bound inside the
//! cell's namespace); the gate reads the TLS ClientHello's SNI or the HTTP/1.x `Host`, checks
//! it against the rules for the original port *and* that the original destination is an
//! address the cell's DNS authority resolved for that name, then splices the bytes to the
//! original destination without terminating TLS.
//!
//! Limits, by design of a non-terminating gate: only the first request / handshake of a
//! connection is judged, so later HTTP/1.x requests or HTTP/2 coalescing on the same
//! connection reach the same (resolved, allowed-name) address under another name; ECH hides
//! the inner SNI, and the outer (public) name must then be allowed.

mod http;
mod original_dst;
mod policy;
mod server;
mod sni;

pub use http::{parse_request_head, Head, MAX_HEAD};
pub use original_dst::{ConntrackOriginalDst, FixedOriginalDst, OriginalDestination};
pub use policy::{DenyReason, GatePolicy, NameSource};
pub use server::{GateContext, L7Gate, DEFAULT_CONNECT_TIMEOUT, DEFAULT_PEEK_TIMEOUT};
pub use sni::{parse_client_hello, Hello, MAX_HELLO};

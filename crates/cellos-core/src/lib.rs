//! CellOS domain core: the language every other part speaks.
//!
//! Pure by design: no tokio, no filesystem, no sockets. Everything here takes plain values and
//! returns plain values, so it can be tested exhaustively and reused by every layer above.

pub mod authority;
pub mod events;
pub mod integrity;
pub mod policy;
pub mod ports;
pub mod projection;
pub mod session;
pub mod spec;

//! CellOS in-cell telemetry, host side.
//!
//! A cell's workload (and the small in-cell agent beside it) can *declare* things about itself
//! over one Unix socket per cell. The host trusts only which socket bytes arrived on: every
//! frame is decoded, version-gated, bounded and rate limited, then stamped with attribution the
//! host holds (cell, run, spec hash, receive time). Declarations are evidence of the weakest
//! kind (`Declared`); they are checked against what the spec authorised and against what the
//! host itself observed of the cell's processes.
//!
//! The wire format lives in its own crate, `cellos-telemetry-wire` (re-exported here as
//! [`wire`]), and the in-cell agent in `cellos-telemetry-agent`, which depends on the wire
//! crate only: this crate depends on `cellos-core` and with it the signing code, and keeping
//! the agent out of it keeps that code out of the agent by construction.

pub mod declared;
pub mod discrepancy;
pub mod hostprobe;
pub mod keepalive;
pub mod receiver;
pub mod session;
pub use cellos_telemetry_wire as wire;

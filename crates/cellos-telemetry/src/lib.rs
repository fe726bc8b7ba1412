//! CellOS in-cell telemetry.
//!
//! A cell's workload (and the small in-cell agent beside it) can *declare* things about itself
//! over one Unix socket per cell. The host trusts only which socket bytes arrived on: every
//! frame is decoded, version-gated, bounded and rate limited, then stamped with attribution the
//! host holds (cell, run, spec hash, receive time). Declarations are evidence of the weakest
//! kind (`Declared`); they are checked against what the spec authorised and against what the
//! host itself observed of the cell's processes.
//!
//! The wire module is always built; it is all the in-cell agent needs. Everything host-side is
//! behind the default `host` feature, which brings in `cellos-core` (and with it the signing
//! code): build the agent with `--no-default-features` and no signing crate is linked into it.

pub mod agent;
#[cfg(feature = "host")]
pub mod declared;
#[cfg(feature = "host")]
pub mod discrepancy;
#[cfg(feature = "host")]
pub mod hostprobe;
#[cfg(feature = "host")]
pub mod keepalive;
#[cfg(feature = "host")]
pub mod receiver;
#[cfg(feature = "host")]
pub mod session;
pub mod wire;

//! CellOS lifecycle: one linear, evidence-first path from spec to a destroyed cell.
//!
//! The supervisor talks to the host only through the core ports (backend, event sink, secret
//! brokers, export sinks); the composition root injects the adapters. Every step emits its event
//! durably before the next step begins, so a log always shows how far a cell got.

mod evidence;
mod exports;
mod gc;
mod lifecycle;
mod observed;

pub use exports::ExportRouter;
pub use gc::GcReport;
pub use lifecycle::{RunReport, RunRequest, Supervisor, SupervisorError};

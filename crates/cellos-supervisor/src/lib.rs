//! CellOS lifecycle: one linear, evidence-first path from spec to a destroyed cell.
//!
//! The supervisor talks to the host only through the core ports (backend, event sink, secret
//! brokers, export sinks); the composition root injects the adapters. Events become durable at
//! barriers: before the workload's exec, before and after each export, and before a run
//! returns, so a log always shows how far a cell got (see `evidence`).

mod evidence;
mod exports;
mod gc;
mod lifecycle;
mod observed;
mod session;

pub use exports::ExportRouter;
pub use gc::GcReport;
pub use lifecycle::{RunReport, RunRequest, Supervisor, SupervisorError};
pub use session::{
    Caller, CellInfo, CellState, ExecLog, ExecOutcome, ExecRead, ExecStarted, Frame, SessionConfig,
    SessionError, Sessions, Stream, DEFAULT_KEPT_BYTES,
};

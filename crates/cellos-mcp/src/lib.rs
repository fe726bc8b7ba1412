//! CellOS as an MCP server: agents create, drive and inspect cells through tools
//! (`sandbox_create`, `sandbox_exec`, `run`, the file tools, `sandbox_destroy`,
//! `sandbox_evidence`), built on the official Rust SDK (`rmcp`).
//!
//! One implementation serves every transport: [`CellsMcp`] over the session registry that
//! `cellos serve` uses, on stdio ([`serve_stdio`]) or streamable HTTP ([`http_service`], which
//! `cellos serve` mounts at `/mcp` behind its own authentication).
//!
//! Layout: [`profile`] what the operator grants, [`narrow`] what a call may ask of it, [`args`]
//! the tools' arguments (their schemas), [`server`] the tools, [`cells`] the cells behind them
//! and what each was granted, [`exec`] one command to its end,
//! [`files`] content across a call, [`evidence`] the verified log of one cell, [`error`] tool
//! errors, [`descriptions`] what the tools tell an agent.

pub mod args;
pub mod cells;
pub mod descriptions;
pub mod error;
pub mod evidence;
pub mod exec;
pub mod files;
pub mod narrow;
pub mod profile;
pub mod server;
mod transport;

pub use cells::McpState;
pub use error::ToolError;
pub use profile::{Profile, ProfileError, Profiles, DEFAULT_PROFILES};
pub use server::CellsMcp;
pub use transport::{http_service, serve_stdio, McpHttpService, MCP_PATH};

/// The names of the tools, as clients rely on them.
pub const TOOL_NAMES: [&str; 8] = [
    "sandbox_create",
    "sandbox_exec",
    "sandbox_read_file",
    "sandbox_write_file",
    "sandbox_list_files",
    "sandbox_destroy",
    "run",
    "sandbox_evidence",
];

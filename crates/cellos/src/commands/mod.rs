//! One module per group of commands.

pub mod cells;
pub mod export;
pub mod log;
pub mod mcp;
pub mod remote;
pub mod serve;
pub mod spec;
pub mod token;
pub mod tty;

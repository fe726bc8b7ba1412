//! Adapters: implementations of the core ports for one machine (event log, keys, secret
//! brokers, export sinks, API tokens).

pub mod event_log;
pub mod export;
pub mod home;
pub mod keys;
pub mod logs;
pub mod secrets;
pub mod tokens;

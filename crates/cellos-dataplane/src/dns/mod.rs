//! The cell's DNS authority: the only resolver the cell can reach.

mod cache;
pub mod config;
pub mod filter;
mod ledger;
pub mod observer;
mod resolve;
mod server;
mod upstream;

pub use config::{system_upstream, upstream_from_resolv_conf, DnsConfig};
pub use observer::{
    CoalescedQueries, DnsCounters, DnsCounts, DnsObserver, QueryEvent, RateLimitedObserver, Verdict,
};
pub use server::DnsAuthorityServer;

/// Why the DNS authority could not start or forward.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot bind the DNS authority on {addr} ({transport}): {source}")]
    Bind {
        addr: std::net::SocketAddr,
        transport: &'static str,
        source: std::io::Error,
    },
    #[error("DNS upstream: {0}")]
    Upstream(String),
}

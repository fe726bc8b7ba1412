//! Flow decisions: one connection attempt and what the dataplane did with it.

use std::net::SocketAddr;

use cellos_core::authority::AuthorityKind;
use cellos_core::events::FlowVerdict;

/// One flow decided by the L7 gate or reported by the kernel's drop log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowEvent {
    pub dst: SocketAddr,
    /// `tcp`, `udp`, `icmp`, ...
    pub protocol: String,
    pub verdict: FlowVerdict,
    /// Why (`sni-mismatch`, `not-resolved`, `allowed by api.example.com:443`, `range`, ...).
    pub reason: String,
    /// The host name the flow claimed (SNI or Host), when one was seen.
    pub name: Option<String>,
    /// Bytes from the cell to the destination (allowed flows, once closed).
    pub bytes_up: u64,
    /// Bytes from the destination to the cell.
    pub bytes_down: u64,
    /// `Observed` when the host saw it on the wire (the gate), `Imposed` when the kernel's
    /// ruleset enforced it (a logged drop).
    pub authority: AuthorityKind,
}

/// Receives flow events. Called on the gate's tasks: keep it quick.
pub trait FlowObserver: Send + Sync {
    fn flow(&self, event: &FlowEvent);
}

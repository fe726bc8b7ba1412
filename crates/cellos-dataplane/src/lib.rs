//! CellOS egress dataplane.

pub mod dns;
pub mod events;
pub mod flow;
pub mod flowlog;
pub mod l7gate;
pub mod nft;
pub mod pin;
pub mod ranges;
pub mod ruleset;

pub use dns::{DnsAuthorityServer, DnsConfig, DnsObserver, QueryEvent, RateLimitedObserver};
pub use flow::{FlowEvent, FlowObserver};
pub use l7gate::{GateContext, GatePolicy, L7Gate};
pub use nft::{NftController, NftError, NftPinner};
pub use pin::{AddressPinner, Pin, PinError, PinFanout, PinTable, PinnedResolver};
pub use ranges::DeniedRanges;
pub use ruleset::{EgressPlan, PlanError, PlanInputs, Proto, Ruleset};

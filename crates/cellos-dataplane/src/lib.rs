//! CellOS egress dataplane.

pub mod dns;
pub mod nft;
pub mod pin;
pub mod ranges;
pub mod ruleset;

pub use dns::{DnsAuthorityServer, DnsConfig, DnsObserver, QueryEvent, RateLimitedObserver};
pub use nft::{NftController, NftError, NftPinner};
pub use pin::{AddressPinner, Pin, PinError, PinFanout, PinTable, PinnedResolver};
pub use ranges::DeniedRanges;
pub use ruleset::{EgressPlan, PlanError, PlanInputs, Proto, Ruleset};

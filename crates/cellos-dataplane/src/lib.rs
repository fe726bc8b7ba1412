//! CellOS egress dataplane: what lets a networked cell reach exactly what its spec allows.
//!
//! Pure decisions ([`ruleset`], [`ranges`], [`dns::filter`], the gate's parsers and
//! [`l7gate::GatePolicy`]) are separate from the I/O that applies them ([`nft`], the DNS and
//! gate servers), so each can be tested on its own.
//!
//! # Wiring a cell (the Linux backend's job)
//!
//! Done in `cellos_linux::netscope` (link, host table, address pool) and
//! `cellos_linux::netscope::egress` (steps 2-7), which also reads the drop log (NFLOG) into
//! per-attempt flow events.
//!
//! Only for specs that declare egress (`authority.egressRules` or `dnsAuthority`); other cells
//! keep a loopback-only namespace and need none of this.
//!
//! 1. Create the cell's network namespace and a veth pair; give the host end an address from
//!    the pool (say `10.x.y.1/30`) and the cell end `10.x.y.2` with a default route via the
//!    host end; host-side forwarding and NAT for that veth only.
//! 2. Plan: [`EgressPlan::from_spec`] with [`PlanInputs`] `{ dns_server: 10.x.y.1,
//!    l7_gate_port: Some(PORT), host_addresses: <every address of the host>, log_group }`.
//! 3. Load: `let ruleset = plan.render();` then
//!    [`NftController::for_pid(cell_init_pid)`](NftController::for_pid) (or
//!    [`NftController::for_netns`]) `.apply(&ruleset)` — one atomic nf_tables netlink
//!    transaction inside the cell's namespace, sent by the host over a socket opened there,
//!    so the cell never needs `CAP_NET_ADMIN` and no `nft` process runs. Emit
//!    `network.v1.enforced` with [`events::network_enforced`] (carries
//!    [`Ruleset::sha256`]).
//!
//!    Pooled: a supervisor that keeps network bases ready loads
//!    [`Ruleset::base`] with [`NftController::apply_base`] ahead of time and keeps it under
//!    [`BaseRuleset::key`]; at cell creation it renders the spec's plan with that base's
//!    [`PlanInputs`], takes a base whose key equals `ruleset.base().key()`, and loads
//!    [`Ruleset::per_cell`] with [`NftController::apply_cell`] (one transaction plus a
//!    counter reset). The namespace then holds exactly `ruleset`, so the evidence is still
//!    [`Ruleset::sha256`]; a base takes one cell part ([`NftError::BaseClaimed`] after).
//! 4. Pins: `let pins = Arc::new(PinTable::new());` and a
//!    [`PinFanout`]`(vec![Arc::new(NftPinner { controller, plan }), pins.clone()])` — the
//!    nft pinner makes resolved addresses reachable on their rules' ports, the table is what
//!    the gate checks destinations against.
//! 5. DNS: [`DnsAuthorityServer::bind`]`(10.x.y.1:53, DnsConfig::from_plan(&plan, upstream),
//!    fanout, observer)` on the host (upstream: [`dns::system_upstream`] by default). Wrap the
//!    event observer in [`RateLimitedObserver`]; map events with
//!    [`events::dns_query_event`]; call `flush()` at teardown. Answers are pinned before
//!    they are sent.
//! 6. Gate: bind a `std::net::TcpListener` on `127.0.0.1:PORT` (and `[::1]:PORT` for IPv6)
//!    *inside the cell's namespace* (a helper thread that `setns(CLONE_NEWNET)`s, binds,
//!    returns the socket, set non-blocking), then [`L7Gate::from_std`] with
//!    [`GateContext`] `{ policy: GatePolicy::new(plan.gate_policy()), resolver: pins,
//!    original_dst: Arc::new(ConntrackOriginalDst), observer, .. }`. The process stays in
//!    the host namespace, so the gate's upstream connections leave from the host. Map its
//!    events with [`events::flow_decision`] (authority `Observed`).
//! 7. Teardown: read [`NftController::read_counters`] (one netlink dump) into
//!    [`flowlog::NftCounters`], build [`flowlog::EgressSummary`] with the DNS server's
//!    [`dns::DnsCounters::snapshot`], then stop the servers and delete the namespace.
//!
//! Events are built with `cellos_core::events::EventFactory`: `dns_query_permitted` /
//! `dns_query_refused`, `flow_decided`, `network_enforced`.

pub mod dns;
pub mod events;
pub mod flow;
pub mod flowlog;
pub mod host_table;
pub mod l7gate;
pub mod netns_exec;
pub mod nft;
pub mod nftables;
pub mod pin;
pub mod ranges;
pub mod ruleset;

pub use dns::{DnsAuthorityServer, DnsConfig, DnsObserver, QueryEvent, RateLimitedObserver};
pub use flow::{FlowEvent, FlowObserver};
pub use host_table::HostTable;
pub use l7gate::{GateContext, GatePolicy, L7Gate};
pub use nft::{NftController, NftError, NftPinner};
pub use nftables::{BaseRuleset, CellPart};
pub use pin::{AddressPinner, Pin, PinError, PinFanout, PinTable, PinnedResolver};
pub use ranges::DeniedRanges;
pub use ruleset::{EgressPlan, PlanError, PlanInputs, Proto, Ruleset};

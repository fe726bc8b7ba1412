//! The egress dataplane of one networked cell, wired from `cellos-dataplane` (its crate doc
//! lists the steps): the ruleset inside the cell's namespace, the DNS authority on the host end
//! of the veth, the L7 gate listening inside the namespace, kernel drop logs over NFLOG, and the
//! summary read back at teardown. Every finding becomes an event through the
//! `RuntimeEvidence` port as it happens.
//!
//! The servers run on one small tokio runtime shared by every cell of the process, created the
//! first time a networked cell appears (cells without egress never start it). Its threads stay
//! in the host namespace, so the DNS authority's and the gate's upstream connections leave from
//! the host; only the gate's listening socket is bound inside the cell's namespace (by a helper
//! thread that joins it, binds and exits).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use cellos_core::events::{EventFactory, NetworkSummaryData};
use cellos_core::ports::RuntimeEvidence;
use cellos_core::spec::ExecutionCellSpec;
use cellos_dataplane::dns::{CoalescedQueries, DnsCounters};
use cellos_dataplane::flowlog::EgressSummary;
use cellos_dataplane::l7gate::{
    ConntrackOriginalDst, DEFAULT_CONNECT_TIMEOUT, DEFAULT_PEEK_TIMEOUT,
};
use cellos_dataplane::{
    events, AddressPinner, DnsAuthorityServer, DnsConfig, DnsObserver, EgressPlan, FlowEvent,
    FlowObserver, GateContext, GatePolicy, L7Gate, NftController, NftPinner, PinFanout, PinTable,
    PlanInputs, QueryEvent, RateLimitedObserver,
};
use time::OffsetDateTime;

use crate::error::LinuxError;
use crate::netscope::nflog::NflogReader;
use crate::netscope::NetRecord;

/// Port of the L7 gate's listener on the cell's loopback (each cell has its own namespace).
pub const GATE_PORT: u16 = 15001;
/// NFLOG group the cell's drop rules log to (each cell's namespace has its own groups).
pub const LOG_GROUP: u16 = 7;
/// DNS query events per second per cell; the rest are counted and summarised.
pub const DNS_EVENTS_PER_SECOND: u32 = 100;
/// How the summary's numbers are obtained (recorded in the event).
pub const SUMMARY_MECHANISM: &str =
    "named nftables counters of the cell's table (read over netlink), \
     DNS authority counters, L7 gate decisions";

/// The runtime the DNS authorities and gates of this process run on.
fn runtime() -> Result<&'static tokio::runtime::Runtime, LinuxError> {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("cellos-egress")
        .enable_all()
        .build()
        .map_err(|e| LinuxError::io("start the egress dataplane runtime", e))?;
    Ok(RUNTIME.get_or_init(|| rt))
}

/// Turns the dataplane's observations into events on the `RuntimeEvidence` port.
struct Evidence {
    factory: EventFactory,
    cell_id: String,
    sink: Arc<dyn RuntimeEvidence>,
    coalesced: AtomicU64,
    gate_allowed: AtomicU64,
    gate_denied: AtomicU64,
}

impl DnsObserver for Evidence {
    fn query(&self, event: &QueryEvent) {
        let ev = events::dns_query_event(
            &self.factory,
            OffsetDateTime::now_utc(),
            &self.cell_id,
            event,
        );
        self.sink.observe(ev);
    }

    fn coalesced(&self, summary: &CoalescedQueries) {
        self.coalesced.fetch_add(
            summary.permitted.saturating_add(summary.refused),
            Ordering::Relaxed,
        );
    }
}

impl FlowObserver for Evidence {
    fn flow(&self, event: &FlowEvent) {
        let counter = match event.verdict {
            cellos_core::events::FlowVerdict::Allow => &self.gate_allowed,
            cellos_core::events::FlowVerdict::Deny => &self.gate_denied,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let ev = self.factory.flow_decided(
            OffsetDateTime::now_utc(),
            &self.cell_id,
            &events::flow_decision(event),
        );
        self.sink.observe(ev);
    }
}

/// What starting the dataplane needs.
pub struct EgressSetup<'a> {
    pub spec: &'a ExecutionCellSpec,
    pub rec: &'a NetRecord,
    /// The cell's network namespace (held until teardown, so the counters stay readable after
    /// init has exited).
    pub netns: OwnedFd,
    pub upstream: SocketAddr,
    pub factory: EventFactory,
    pub evidence: Arc<dyn RuntimeEvidence>,
}

/// A cell's running dataplane.
pub struct Egress {
    cell_id: String,
    controller: NftController,
    ruleset_sha256: String,
    gated: Vec<(String, u16)>,
    netns: Arc<OwnedFd>,
    dns: Option<DnsAuthorityServer>,
    dns_counters: Arc<DnsCounters>,
    /// One gate per loopback the ruleset redirects to (`127.0.0.1`, and `::1` with IPv6).
    gates: Vec<L7Gate>,
    nflog: Option<NflogReader>,
    limiter: Arc<RateLimitedObserver>,
    evidence: Arc<Evidence>,
}

impl Egress {
    /// Loads the ruleset, reports it (`network.v1.enforced`), then starts the DNS authority,
    /// the gate and the drop-log reader. On error everything started so far is stopped.
    pub fn start(setup: EgressSetup<'_>) -> Result<Self, LinuxError> {
        let EgressSetup {
            spec,
            rec,
            netns,
            upstream,
            factory,
            evidence,
        } = setup;
        let plan = EgressPlan::from_spec(
            spec,
            PlanInputs {
                dns_server: IpAddr::V4(rec.host_addr),
                l7_gate_port: Some(GATE_PORT),
                host_addresses: crate::netscope::host_addresses(),
                log_group: LOG_GROUP,
            },
        )
        .map_err(|e| LinuxError::Refused {
            what: e.to_string(),
        })?;
        let ruleset = plan.render();
        // By descriptor: nft joins this very namespace even after init has exited, and a pin
        // still in flight at teardown can never land in another cell's namespace.
        let netns = Arc::new(netns);
        let controller = NftController::for_netns_fd(netns.clone());
        controller.apply(&ruleset).map_err(|e| LinuxError::Setup {
            what: "load the cell's egress ruleset".into(),
            detail: e.to_string(),
        })?;
        let enforced = events::network_enforced(&plan, &ruleset);
        evidence.observe(factory.network_enforced(OffsetDateTime::now_utc(), &spec.id, &enforced));

        let ev = Arc::new(Evidence {
            factory,
            cell_id: spec.id.clone(),
            sink: evidence,
            coalesced: AtomicU64::new(0),
            gate_allowed: AtomicU64::new(0),
            gate_denied: AtomicU64::new(0),
        });
        let limiter = Arc::new(RateLimitedObserver::new(ev.clone(), DNS_EVENTS_PER_SECOND));
        let pins = Arc::new(PinTable::new());
        let fanout: Arc<dyn AddressPinner> = Arc::new(PinFanout(vec![
            Arc::new(NftPinner {
                controller: controller.clone(),
                plan: plan.clone(),
            }),
            pins.clone(),
        ]));
        let rt = runtime()?;
        let dns = rt
            .block_on(DnsAuthorityServer::bind(
                SocketAddr::new(IpAddr::V4(rec.host_addr), 53),
                DnsConfig::from_plan(&plan, upstream),
                fanout,
                limiter.clone(),
            ))
            .map_err(|e| LinuxError::Setup {
                what: "start the cell's DNS authority".into(),
                detail: e.to_string(),
            })?;
        let mut this = Self {
            cell_id: spec.id.clone(),
            controller,
            ruleset_sha256: ruleset.sha256(),
            gated: plan.gate_policy(),
            dns_counters: dns.counters(),
            dns: Some(dns),
            netns,
            gates: Vec::new(),
            nflog: None,
            limiter,
            evidence: ev.clone(),
        };
        if !this.gated.is_empty() {
            let loopbacks: &[IpAddr] = if rec.cell_addr6.is_some() {
                &[
                    IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(Ipv6Addr::LOCALHOST),
                ]
            } else {
                &[IpAddr::V4(Ipv4Addr::LOCALHOST)]
            };
            for ip in loopbacks {
                let listener = bind_in_netns(this.netns.as_fd(), SocketAddr::new(*ip, GATE_PORT))?;
                let _enter = rt.enter();
                let gate = L7Gate::from_std(
                    listener,
                    GateContext {
                        policy: GatePolicy::new(this.gated.clone()),
                        resolver: pins.clone(),
                        original_dst: Arc::new(ConntrackOriginalDst),
                        observer: ev.clone(),
                        peek_timeout: DEFAULT_PEEK_TIMEOUT,
                        connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                    },
                )
                .map_err(|e| LinuxError::io("serve the cell's L7 gate", e))?;
                this.gates.push(gate);
            }
        }
        this.nflog = Some(NflogReader::start(
            this.netns.as_fd(),
            LOG_GROUP,
            ev as Arc<dyn FlowObserver>,
        )?);
        Ok(this)
    }

    /// Hex SHA-256 of the loaded ruleset.
    pub fn ruleset_sha256(&self) -> &str {
        &self.ruleset_sha256
    }

    /// The `network` line of the isolation report.
    pub fn describe(&self, rec: &NetRecord) -> String {
        let gate = if self.gated.is_empty() {
            String::new()
        } else {
            let names: Vec<String> = self.gated.iter().map(|(n, p)| format!("{n}:{p}")).collect();
            format!("; L7 gate (SNI/Host) for {}", names.join(", "))
        };
        format!(
            "egress: nftables ruleset sha256:{} in the cell's netns (default drop, IPv4 and \
             IPv6); eth0 {}/30{} via {} {}; DNS authority {}:53{gate}",
            self.ruleset_sha256,
            rec.cell_addr,
            rec.cell_addr6
                .map(|a| format!(" and {a}/{}", crate::netscope::pool::LINK_PREFIX6))
                .unwrap_or_default(),
            rec.veth,
            rec.host_addr,
            rec.host_addr
        )
    }

    /// Stops the servers, reads the counters and reports `network.v1.summary`; the cell's
    /// namespace is released when this returns.
    pub fn stop(mut self) -> NetworkSummaryData {
        if let Ok(rt) = runtime() {
            if let Some(dns) = self.dns.take() {
                rt.block_on(dns.shutdown());
            }
            for gate in self.gates.drain(..) {
                rt.block_on(gate.shutdown());
            }
        }
        if let Some(nflog) = self.nflog.take() {
            nflog.stop();
        }
        self.limiter.flush();
        // Counters that cannot be read are zeros, and the mechanism says they were not read.
        let (counters, mechanism) = match self.controller.read_counters() {
            Ok(counters) => (counters, SUMMARY_MECHANISM.to_owned()),
            Err(e) => (
                Default::default(),
                format!("{SUMMARY_MECHANISM}; the nftables counters could not be read ({e}), so the flow and byte counts are not measured"),
            ),
        };
        let s = EgressSummary::new(&counters, self.dns_counters.snapshot());
        let ev = &self.evidence;
        let data = NetworkSummaryData {
            flows_allowed: s.flows_allowed,
            flows_denied: s.flows_denied,
            denied_range: s.denied_range,
            bytes_out: s.bytes_out,
            bytes_in: s.bytes_in,
            gate_allowed: ev.gate_allowed.load(Ordering::Relaxed),
            gate_denied: ev.gate_denied.load(Ordering::Relaxed),
            dns_permitted: s.dns.permitted,
            dns_refused: s.dns.refused,
            dns_malformed: s.dns.malformed,
            dns_rebinding_dropped: s.dns.rebinding_dropped,
            dns_upstream_failures: s.dns.upstream_failures,
            dns_events_coalesced: ev.coalesced.load(Ordering::Relaxed),
            mechanism,
        };
        ev.sink.observe(ev.factory.network_summary(
            OffsetDateTime::now_utc(),
            &self.cell_id,
            &data,
        ));
        data
    }
}

/// Binds a TCP listener inside the namespace `netns` (non-blocking, ready for tokio) from a
/// helper thread; the calling thread never changes namespace.
pub fn bind_in_netns(
    netns: BorrowedFd<'_>,
    addr: SocketAddr,
) -> Result<std::net::TcpListener, LinuxError> {
    let ns = netns
        .try_clone_to_owned()
        .map_err(|e| LinuxError::io("duplicate the cell's netns descriptor", e))?;
    std::thread::scope(|s| {
        s.spawn(move || -> std::io::Result<std::net::TcpListener> {
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
            let listener = std::net::TcpListener::bind(addr)?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the bind thread panicked")))
    })
    .map_err(|e| LinuxError::io(format!("bind the L7 gate on {addr} inside the cell"), e))
}

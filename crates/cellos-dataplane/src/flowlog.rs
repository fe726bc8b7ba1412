//! Per-cell egress accounting read back from the ruleset's named counters.
//!
//! Mechanism: one NFT_MSG_GETOBJ dump of the table's counters over netlink
//! ([`crate::NftController::read_counters`]); [`NftCounters::from_nft_json`] reads the same
//! from `nft -j` output, which tests compare against. The drop rules also log to NFLOG (group and prefix in
//! [`crate::ruleset`]); the Linux backend reads that group over netlink inside the cell's
//! namespace (`cellos_linux::netscope::nflog`) and reports each denied attempt as a flow event,
//! rate-limited, while these counters stay the exact totals.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::dns::DnsCounts;

/// Packets and bytes of one named counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Count {
    pub packets: u64,
    pub bytes: u64,
}

/// Every named counter of the table, by name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct NftCounters(pub BTreeMap<String, Count>);

impl NftCounters {
    /// The named counters in `nft -j list table` output; unknown objects are skipped.
    pub fn from_nft_json(json: &serde_json::Value) -> Self {
        let objects = json
            .get("nftables")
            .and_then(serde_json::Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let counters = objects
            .iter()
            .filter_map(|o| {
                let c = o.get("counter")?;
                let name = c.get("name")?.as_str()?.to_owned();
                let packets = c.get("packets")?.as_u64()?;
                let bytes = c.get("bytes")?.as_u64()?;
                Some((name, Count { packets, bytes }))
            })
            .collect();
        Self(counters)
    }

    pub fn get(&self, name: &str) -> Count {
        self.0.get(name).copied().unwrap_or_default()
    }

    fn sum(&self, names: &[&str]) -> Count {
        names.iter().fold(Count::default(), |acc, n| {
            let c = self.get(n);
            Count {
                packets: acc.packets.saturating_add(c.packets),
                bytes: acc.bytes.saturating_add(c.bytes),
            }
        })
    }
}

/// The per-cell egress summary for teardown.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressSummary {
    /// New flows the kernel let out (DNS, CIDR rules, pinned addresses).
    pub flows_allowed: u64,
    /// Connection attempts the kernel dropped (each retransmission counts).
    pub flows_denied: u64,
    /// Bytes the cell sent on allowed flows (network layer, first packets included).
    pub bytes_out: u64,
    /// Bytes the cell received on allowed flows.
    pub bytes_in: u64,
    /// Attempts dropped because the destination was a denied range.
    pub denied_range: u64,
    pub dns: DnsCounts,
}

impl EgressSummary {
    pub fn new(counters: &NftCounters, dns: DnsCounts) -> Self {
        let allowed = counters.sum(&["allow_dns", "allow_cidr", "allow_pinned"]);
        let denied = counters.sum(&["deny_invalid", "deny_range", "deny_default"]);
        let established_out = counters.get("established_out");
        Self {
            flows_allowed: allowed.packets,
            flows_denied: denied.packets,
            bytes_out: allowed.bytes.saturating_add(established_out.bytes),
            bytes_in: counters.get("established_in").bytes,
            denied_range: counters.get("deny_range").packets,
            dns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_from_nft_json_and_summed() {
        let json = serde_json::json!({"nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "inet", "name": "cellos"}},
            {"counter": {"family": "inet", "table": "cellos", "name": "allow_dns", "packets": 2, "bytes": 120}},
            {"counter": {"family": "inet", "table": "cellos", "name": "allow_pinned", "packets": 1, "bytes": 60}},
            {"counter": {"family": "inet", "table": "cellos", "name": "established_out", "packets": 9, "bytes": 900}},
            {"counter": {"family": "inet", "table": "cellos", "name": "established_in", "packets": 9, "bytes": 4000}},
            {"counter": {"family": "inet", "table": "cellos", "name": "deny_range", "packets": 3, "bytes": 180}},
            {"counter": {"family": "inet", "table": "cellos", "name": "deny_default", "packets": 1, "bytes": 60}},
            {"counter": {"name": "broken"}}
        ]});
        let c = NftCounters::from_nft_json(&json);
        assert_eq!(
            c.get("allow_dns"),
            Count {
                packets: 2,
                bytes: 120
            }
        );
        assert_eq!(c.get("broken"), Count::default());
        let s = EgressSummary::new(&c, DnsCounts::default());
        assert_eq!((s.flows_allowed, s.flows_denied, s.denied_range), (3, 4, 3));
        assert_eq!((s.bytes_out, s.bytes_in), (1080, 4000));
    }

    #[test]
    fn non_nft_json_gives_no_counters() {
        assert_eq!(
            NftCounters::from_nft_json(&serde_json::json!([1, 2])),
            NftCounters::default()
        );
    }
}

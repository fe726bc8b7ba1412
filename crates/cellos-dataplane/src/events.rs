//! The dataplane's findings as CellOS event payloads (`cellos_core::events`).

use cellos_core::events::{
    CloudEvent, DnsQueryData, EventFactory, FlowDecisionData, NetworkEnforcedData,
};
use time::OffsetDateTime;

use crate::dns::{QueryEvent, Verdict};
use crate::flow::FlowEvent;
use crate::ruleset::{EgressPlan, Ruleset, MECHANISM};

/// `network.v1.enforced` for a ruleset that was loaded.
pub fn network_enforced(plan: &EgressPlan, ruleset: &Ruleset) -> NetworkEnforcedData {
    NetworkEnforcedData {
        ruleset_sha256: ruleset.sha256(),
        mechanism: MECHANISM.to_owned(),
        allowed_hosts: plan.allowed_hosts(),
    }
}

/// `dns.v1.permitted` / `dns.v1.refused` payload; dropped rebinding answers are named in the
/// reason.
pub fn dns_query(event: &QueryEvent) -> DnsQueryData {
    let mut reason = event.reason.clone();
    if !event.rebinding_dropped.is_empty() {
        let dropped = event
            .rebinding_dropped
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let note = format!("answers in denied ranges dropped: {dropped}");
        reason = Some(match reason {
            Some(r) => format!("{r}; {note}"),
            None => note,
        });
    }
    DnsQueryData {
        name: event.name.clone(),
        query_type: event.qtype.clone(),
        answer_count: event.answers,
        reason,
    }
}

/// The CloudEvent of one query, permitted or refused.
pub fn dns_query_event(
    factory: &EventFactory,
    time: OffsetDateTime,
    cell_id: &str,
    event: &QueryEvent,
) -> CloudEvent {
    let data = dns_query(event);
    match event.verdict {
        Verdict::Permitted => factory.dns_query_permitted(time, cell_id, &data),
        Verdict::Refused => factory.dns_query_refused(time, cell_id, &data),
    }
}

/// `flow.v1.decided` payload.
pub fn flow_decision(event: &FlowEvent) -> FlowDecisionData {
    let reason = match &event.name {
        Some(name) => format!("{} ({name})", event.reason),
        None => event.reason.clone(),
    };
    FlowDecisionData {
        dst: event.dst.ip().to_string(),
        port: event.dst.port(),
        protocol: event.protocol.clone(),
        decision: event.verdict,
        reason,
        authority: event.authority,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use cellos_core::authority::AuthorityKind;
    use cellos_core::events::{EventKind, FlowVerdict};

    use super::*;

    #[test]
    fn refused_and_permitted_queries_become_their_event_kinds() {
        let factory = EventFactory::new("h", "dataplane", Arc::new(|| "id".to_owned()));
        let mut q = QueryEvent {
            name: "evil.allowed.test".into(),
            qtype: "A".into(),
            verdict: Verdict::Permitted,
            answers: 0,
            reason: Some("allowed by *.allowed.test".into()),
            rebinding_dropped: vec!["10.0.0.5".parse().unwrap()],
        };
        let e = dns_query_event(&factory, OffsetDateTime::UNIX_EPOCH, "c1", &q);
        assert_eq!(e.kind(), Some(EventKind::DnsQueryPermitted));
        assert_eq!(
            e.data["reason"],
            "allowed by *.allowed.test; answers in denied ranges dropped: 10.0.0.5"
        );
        q.verdict = Verdict::Refused;
        let e = dns_query_event(&factory, OffsetDateTime::UNIX_EPOCH, "c1", &q);
        assert_eq!(e.kind(), Some(EventKind::DnsQueryRefused));
    }

    #[test]
    fn flow_events_carry_destination_reason_and_authority() {
        let d = flow_decision(&FlowEvent {
            dst: "203.0.113.10:443".parse().unwrap(),
            protocol: "tcp".into(),
            verdict: FlowVerdict::Deny,
            reason: "sni-mismatch".into(),
            name: Some("other.test".into()),
            bytes_up: 0,
            bytes_down: 0,
            authority: AuthorityKind::Observed,
        });
        assert_eq!(
            (d.dst.as_str(), d.port, d.protocol.as_str()),
            ("203.0.113.10", 443, "tcp")
        );
        assert_eq!(d.reason, "sni-mismatch (other.test)");
        assert_eq!(d.authority, AuthorityKind::Observed);
    }
}

//! Pure decisions of the DNS authority: which queries go upstream, what the refusals look like,
//! and what of an upstream answer the cell may see.
//!
//! CNAME chains are kept: the cell asked for an allowed name, and every A/AAAA record in the
//! answer section is an address *of that name* (possibly through aliases on a CDN). Those
//! addresses are pinned under the queried name, never under the alias targets, so an alias
//! does not make its target name resolvable. Address records in the additional section are
//! removed (they are glue for other names).

use std::net::IpAddr;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};

use super::config::DnsConfig;
use crate::pin::{normalize, Pin};

/// What to do with a parsed packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Not a query (a response, probably spoofed or looped): no answer at all.
    Ignore,
    /// Answer REFUSED locally; nothing leaves the host.
    Refuse {
        name: String,
        qtype: String,
        reason: String,
    },
    /// Forward upstream; `pattern` is the allow-list entry that matched.
    Forward {
        name: String,
        qtype: RecordType,
        pattern: String,
    },
}

/// Decides on a parsed query.
pub fn classify(query: &Message, config: &DnsConfig) -> Decision {
    if query.message_type() != MessageType::Query {
        return Decision::Ignore;
    }
    let (name, qtype) = match query.queries() {
        [q] => (normalize(&q.name().to_ascii()), q.query_type()),
        qs => {
            return Decision::Refuse {
                name: String::new(),
                qtype: String::new(),
                reason: format!("{} questions; exactly one is answered", qs.len()),
            }
        }
    };
    let refuse = |reason: String| Decision::Refuse {
        name: name.clone(),
        qtype: qtype.to_string(),
        reason,
    };
    if query.op_code() != OpCode::Query {
        return refuse(format!("opcode {:?} is not served", query.op_code()));
    }
    if let Some(q) = query.queries().first() {
        if q.query_class() != DNSClass::IN {
            return refuse(format!("class {} is not served", q.query_class()));
        }
    }
    match config.matching_pattern(&name) {
        Some(pattern) => Decision::Forward {
            pattern: pattern.to_owned(),
            name,
            qtype,
        },
        None => refuse("not on the cell's DNS allow-list".to_owned()),
    }
}

/// A response to `query` carrying only its question and `code`.
pub fn error_response(query: &Message, code: ResponseCode) -> Message {
    let mut m = Message::new();
    m.set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(query.op_code())
        .set_recursion_desired(query.recursion_desired())
        .set_recursion_available(true)
        .set_response_code(code)
        .add_queries(query.queries().to_vec());
    m
}

/// An upstream answer made safe for the cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Filtered {
    /// The response to send, with the client's id.
    pub message: Message,
    /// Kept A/AAAA addresses of the queried name, with clamped TTLs.
    pub pins: Vec<Pin>,
    /// Addresses removed because they point into a denied range.
    pub rebinding_dropped: Vec<IpAddr>,
}

/// Drops answers into denied ranges, clamps TTLs, strips address glue, restores the client's id.
pub fn filter_response(
    mut upstream: Message,
    client_query: &Message,
    name: &str,
    config: &DnsConfig,
) -> Filtered {
    let mut pins = Vec::new();
    let mut rebinding_dropped = Vec::new();
    let answers = upstream
        .take_answers()
        .into_iter()
        .filter_map(|mut record| {
            let ttl = config.clamp_ttl(record.ttl());
            record.set_ttl(ttl);
            match address_of(&record) {
                Some(ip) if config.denied_ranges.is_denied(ip, &config.explicit_cidrs) => {
                    rebinding_dropped.push(ip);
                    None
                }
                Some(ip) => {
                    pins.push(Pin {
                        name: name.to_owned(),
                        ip,
                        ttl: Duration::from_secs(u64::from(ttl)),
                    });
                    Some(record)
                }
                None => Some(record),
            }
        })
        .collect();
    upstream.insert_answers(answers);
    let authority = upstream
        .take_name_servers()
        .into_iter()
        .filter(|r| address_of(r).is_none())
        .map(|mut r| {
            let ttl = config.clamp_ttl(r.ttl());
            r.set_ttl(ttl);
            r
        })
        .collect();
    upstream.insert_name_servers(authority);
    let additional = upstream
        .take_additionals()
        .into_iter()
        .filter(|r| address_of(r).is_none())
        .collect();
    upstream.insert_additionals(additional);
    upstream
        .set_id(client_query.id())
        .set_recursion_desired(client_query.recursion_desired());
    Filtered {
        message: upstream,
        pins,
        rebinding_dropped,
    }
}

/// Does `response` answer `name`/`qtype` (and nothing else)?
pub fn answers_question(response: &Message, name: &str, qtype: RecordType) -> bool {
    response.message_type() == MessageType::Response
        && matches!(response.queries(), [q] if q.query_type() == qtype
            && normalize(&q.name().to_ascii()) == name)
}

fn address_of(record: &Record) -> Option<IpAddr> {
    match record.data() {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use hickory_proto::op::Query;
    use hickory_proto::rr::rdata::{A, AAAA, CNAME};
    use hickory_proto::rr::Name;

    use super::*;
    use crate::dns::config::DEFAULT_UPSTREAM_TIMEOUT;
    use crate::ranges::DeniedRanges;

    fn config() -> DnsConfig {
        DnsConfig {
            allowlist: vec!["*.allowed.test".into(), "exact.test".into()],
            upstream: "127.0.0.1:53".parse().unwrap(),
            min_ttl: Duration::from_secs(30),
            max_ttl: Duration::from_secs(300),
            denied_ranges: DeniedRanges::defaults(),
            explicit_cidrs: vec![cellos_core::spec::Cidr::parse("10.9.0.0/16").unwrap()],
            upstream_timeout: DEFAULT_UPSTREAM_TIMEOUT,
        }
    }

    fn query(name: &str, t: RecordType) -> Message {
        let mut m = Message::new();
        m.set_id(4242)
            .set_recursion_desired(true)
            .add_query(Query::query(Name::from_str(name).unwrap(), t));
        m
    }

    #[test]
    fn allowed_names_are_forwarded_others_refused() {
        let c = config();
        assert_eq!(
            classify(&query("api.allowed.test.", RecordType::A), &c),
            Decision::Forward {
                name: "api.allowed.test".into(),
                qtype: RecordType::A,
                pattern: "*.allowed.test".into()
            }
        );
        for refused in ["allowed.test.", "secret.evil.test.", "exact.test.evil."] {
            assert!(
                matches!(
                    classify(&query(refused, RecordType::A), &c),
                    Decision::Refuse { .. }
                ),
                "{refused}"
            );
        }
    }

    #[test]
    fn responses_are_ignored_and_multi_question_queries_refused() {
        let c = config();
        let mut resp = query("api.allowed.test.", RecordType::A);
        resp.set_message_type(MessageType::Response);
        assert_eq!(classify(&resp, &c), Decision::Ignore);
        let mut two = query("api.allowed.test.", RecordType::A);
        two.add_query(Query::query(
            Name::from_str("x.allowed.test.").unwrap(),
            RecordType::A,
        ));
        assert!(matches!(classify(&two, &c), Decision::Refuse { .. }));
    }

    #[test]
    fn refusal_keeps_id_and_question() {
        let q = query("secret.evil.test.", RecordType::TXT);
        let r = error_response(&q, ResponseCode::Refused);
        assert_eq!(r.id(), 4242);
        assert_eq!(r.response_code(), ResponseCode::Refused);
        assert_eq!(r.queries(), q.queries());
        assert!(r.answers().is_empty());
    }

    #[test]
    fn denied_answers_dropped_ttls_clamped_cname_kept_glue_stripped() {
        let c = config();
        let q = query("api.allowed.test.", RecordType::A);
        let name = Name::from_str("api.allowed.test.").unwrap();
        let cdn = Name::from_str("edge.cdn.example.").unwrap();
        let mut up = q.clone();
        up.set_id(1).set_message_type(MessageType::Response);
        up.add_answer(Record::from_rdata(
            name.clone(),
            5,
            RData::CNAME(CNAME(cdn.clone())),
        ));
        up.add_answer(Record::from_rdata(
            cdn.clone(),
            5,
            RData::A(A::new(203, 0, 113, 10)),
        ));
        up.add_answer(Record::from_rdata(
            cdn.clone(),
            99_999,
            RData::A(A::new(10, 0, 0, 5)),
        ));
        up.add_answer(Record::from_rdata(
            cdn.clone(),
            60,
            RData::A(A::new(10, 9, 1, 1)),
        ));
        up.add_answer(Record::from_rdata(
            cdn.clone(),
            60,
            RData::AAAA(AAAA::from_str("fd00::1").unwrap()),
        ));
        up.add_additional(Record::from_rdata(
            cdn,
            60,
            RData::A(A::new(198, 51, 100, 1)),
        ));
        let f = filter_response(up, &q, "api.allowed.test", &c);
        assert_eq!(f.message.id(), 4242);
        let ttls: Vec<u32> = f.message.answers().iter().map(Record::ttl).collect();
        assert_eq!(ttls, vec![30, 30, 60]);
        assert_eq!(
            f.rebinding_dropped,
            vec![
                "10.0.0.5".parse::<IpAddr>().unwrap(),
                "fd00::1".parse().unwrap()
            ]
        );
        let pinned: Vec<(String, IpAddr, u64)> = f
            .pins
            .iter()
            .map(|p| (p.name.clone(), p.ip, p.ttl.as_secs()))
            .collect();
        assert_eq!(
            pinned,
            vec![
                (
                    "api.allowed.test".into(),
                    "203.0.113.10".parse().unwrap(),
                    30
                ),
                ("api.allowed.test".into(), "10.9.1.1".parse().unwrap(), 60),
            ]
        );
        assert!(f.message.additionals().is_empty());
    }
}

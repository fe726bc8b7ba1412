//! One query, from packet to response: answered at once when nothing has to be waited for (a
//! malformed packet, a refusal, a cached answer whose pins still stand), otherwise after the
//! upstream and the pinner.
//!
//! Whatever path it takes, every query is counted and produces exactly one event, and no
//! answer leaves before its addresses are pinned for at least its TTL.

use std::sync::Arc;
use std::time::Instant;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::sync::Semaphore;

use super::cache::{AnswerCache, CacheKey, Cached};
use super::config::DnsConfig;
use super::filter::{classify, error_response, filter_response, Decision};
use super::ledger::PinLedger;
use super::observer::{DnsCounters, DnsObserver, QueryEvent, Verdict};
use super::upstream::forward;
use crate::pin::{AddressPinner, Pin};

/// Classic DNS UDP payload limit, used when the client sent no EDNS size.
const MIN_UDP_PAYLOAD: usize = 512;

/// What serving one cell's queries shares.
pub(crate) struct Shared {
    pub config: DnsConfig,
    pub pinner: Arc<dyn AddressPinner>,
    pub observer: Arc<dyn DnsObserver>,
    pub counters: Arc<DnsCounters>,
    /// Queries waiting on the upstream or the pinner at once.
    pub in_flight: Semaphore,
    pub cache: AnswerCache,
    pub ledger: PinLedger,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Udp,
    Tcp,
}

/// The outcome of [`answer_now`].
pub(crate) enum Step {
    /// The response (none for a packet that gets no answer).
    Done(Option<Vec<u8>>),
    /// An allowed query that needs [`finish`] (boxed: it is the rare, larger case).
    Wait(Box<Pending>),
}

/// An allowed query waiting for the upstream, or for its cached answer's pins to be renewed.
pub(crate) struct Pending {
    query: Message,
    name: String,
    qtype: RecordType,
    pattern: String,
    cached: Option<Cached>,
}

/// Everything decided without waiting.
pub(crate) fn answer_now(packet: &[u8], transport: Transport, shared: &Shared) -> Step {
    let counters = &shared.counters;
    let Ok(query) = Message::from_vec(packet) else {
        DnsCounters::bump(&counters.malformed, 1);
        return Step::Done(None);
    };
    match classify(&query, &shared.config) {
        Decision::Ignore => {
            DnsCounters::bump(&counters.malformed, 1);
            Step::Done(None)
        }
        Decision::Refuse {
            name,
            qtype,
            reason,
        } => {
            DnsCounters::bump(&counters.refused, 1);
            shared.observer.query(&QueryEvent {
                name,
                qtype,
                verdict: Verdict::Refused,
                answers: 0,
                reason: Some(reason),
                rebinding_dropped: Vec::new(),
            });
            let refusal = error_response(&query, ResponseCode::Refused);
            Step::Done(encode(refusal, &query, transport))
        }
        Decision::Forward {
            name,
            qtype,
            pattern,
        } => {
            DnsCounters::bump(&counters.permitted, 1);
            let allowed = Pending {
                query,
                name,
                qtype,
                pattern,
                cached: None,
            };
            from_cache(allowed, transport, shared)
        }
    }
}

/// A cached answer whose pins stand is sent at once; anything else waits for [`finish`].
fn from_cache(mut p: Pending, transport: Transport, shared: &Shared) -> Step {
    let now = Instant::now();
    let key = CacheKey::of(&p.query, &p.name, p.qtype);
    match shared.cache.get(&key, now, ttl_floor(&shared.config)) {
        Some(hit) if shared.ledger.missing(&hit.pins, now).is_empty() => {
            let (reply, event) = cached_reply(hit.message, &p.query, &p.name, p.qtype, &p.pattern);
            shared.observer.query(&event);
            Step::Done(encode(reply, &p.query, transport))
        }
        cached => {
            p.cached = cached;
            Step::Wait(Box::new(p))
        }
    }
}

/// Answers an allowed query: renews a cached answer's pins, or asks the upstream.
pub(crate) async fn finish(
    p: Box<Pending>,
    transport: Transport,
    shared: &Shared,
) -> Option<Vec<u8>> {
    let (response, event) = match p.cached {
        Some(hit) => match pin(shared, &hit.pins).await {
            Ok(()) => cached_reply(hit.message, &p.query, &p.name, p.qtype, &p.pattern),
            Err(reason) => {
                let mut event = permitted(&p.name, p.qtype, &p.pattern);
                event.reason = Some(reason);
                (error_response(&p.query, ResponseCode::ServFail), event)
            }
        },
        None => resolve_upstream(&p, shared).await,
    };
    shared.observer.query(&event);
    encode(response, &p.query, transport)
}

/// Forwards, filters, pins and caches; the response and its event.
async fn resolve_upstream(p: &Pending, shared: &Shared) -> (Message, QueryEvent) {
    let (config, counters) = (&shared.config, &shared.counters);
    let mut event = permitted(&p.name, p.qtype, &p.pattern);
    let upstream = forward(
        &p.query,
        &p.name,
        p.qtype,
        config.upstream,
        config.upstream_timeout,
    )
    .await;
    let up = match upstream {
        Ok(up) => up,
        Err(e) => {
            DnsCounters::bump(&counters.upstream_failures, 1);
            event.reason = Some(e.to_string());
            return (error_response(&p.query, ResponseCode::ServFail), event);
        }
    };
    let filtered = filter_response(up, &p.query, &p.name, config);
    let dropped = filtered.rebinding_dropped.len() as u64;
    DnsCounters::bump(&counters.rebinding_dropped, dropped);
    event.rebinding_dropped = filtered.rebinding_dropped;
    let started = Instant::now();
    if let Err(reason) = pin(shared, &filtered.pins).await {
        event.reason = Some(reason);
        return (error_response(&p.query, ResponseCode::ServFail), event);
    }
    if event.rebinding_dropped.is_empty() {
        let key = CacheKey::of(&p.query, &p.name, p.qtype);
        shared
            .cache
            .insert(key, &filtered.message, &filtered.pins, started);
    }
    event.answers = u32::try_from(filtered.message.answers().len()).unwrap_or(u32::MAX);
    (filtered.message, event)
}

/// A cached answer re-addressed to `query`, and its event (marked as cached in the reason,
/// the field consumers already read as free text).
fn cached_reply(
    mut message: Message,
    query: &Message,
    name: &str,
    qtype: RecordType,
    pattern: &str,
) -> (Message, QueryEvent) {
    message
        .set_id(query.id())
        .set_recursion_desired(query.recursion_desired());
    // The client's own spelling of the question (some randomise its case).
    *message.queries_mut() = query.queries().to_vec();
    let mut event = permitted(name, qtype, pattern);
    event.reason = Some(format!("allowed by {pattern}; cached answer"));
    event.answers = u32::try_from(message.answers().len()).unwrap_or(u32::MAX);
    (message, event)
}

fn permitted(name: &str, qtype: RecordType, pattern: &str) -> QueryEvent {
    QueryEvent {
        name: name.to_owned(),
        qtype: qtype.to_string(),
        verdict: Verdict::Permitted,
        answers: 0,
        reason: Some(format!("allowed by {pattern}")),
        rebinding_dropped: Vec::new(),
    }
}

/// Installs the pins the ledger does not already know to stand, before the answer leaves, off
/// the async threads (the pinner may run `nft`).
async fn pin(shared: &Shared, pins: &[Pin]) -> Result<(), String> {
    let started = Instant::now();
    let missing = shared.ledger.missing(pins, started);
    if missing.is_empty() {
        return Ok(());
    }
    let pinner = shared.pinner.clone();
    let installed = tokio::task::spawn_blocking(move || pinner.pin(&missing).map(|()| missing));
    match installed.await {
        Ok(Ok(missing)) => {
            shared.ledger.installed(&missing, started);
            Ok(())
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("pinning task failed: {e}")),
    }
}

/// Cached answers keep at least the configured minimum TTL, as fresh ones do.
fn ttl_floor(config: &DnsConfig) -> u32 {
    config.clamp_ttl(0)
}

/// Encodes `response`; over UDP, one larger than the client accepts is sent truncated (TC set)
/// so the client retries over TCP.
fn encode(response: Message, query: &Message, transport: Transport) -> Option<Vec<u8>> {
    let bytes = response.to_vec().ok()?;
    let limit = query.extensions().as_ref().map_or(MIN_UDP_PAYLOAD, |e| {
        usize::from(e.max_payload()).max(MIN_UDP_PAYLOAD)
    });
    if transport == Transport::Udp && bytes.len() > limit {
        return response.truncate().to_vec().ok();
    }
    Some(bytes)
}

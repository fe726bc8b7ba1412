//! Answers of allowed names kept within their TTL, so a repeated query is answered without the
//! upstream.
//!
//! Only answers already made safe for the cell are kept ([`super::filter::filter_response`]),
//! with the pins they installed, and only positive ones that lost nothing to rebinding checks
//! (a dropped answer is re-asked and reported every time). An entry is served while every
//! record has at least the configured minimum TTL left, with its TTLs decremented by the time
//! it spent here (whole seconds, rounded up), so no answer leaves with a TTL below the minimum
//! and no entry outlives the upstream's own TTL. The pins of an entry expire with it; the
//! caller checks they still stand before sending a cached answer.
//!
//! Hand-written: a map with a per-entry deadline; the cache crates bring their own eviction
//! threads or policies this does not need.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Record, RecordType};

use crate::pin::Pin;

/// Encoded bytes of answers one cell may keep; past it, expired entries are swept and, if
/// that is not enough, all are dropped. Bounds what a cell can make the host hold.
const BUDGET: usize = 1 << 20;
/// Largest answer kept (bigger ones are asked again each time).
const MAX_ENTRY: usize = 16 << 10;

/// What makes two queries the same question: the answer differs with EDNS and its DO and CD
/// flags (signatures, validation), so those are part of the key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey {
    name: String,
    qtype: RecordType,
    edns: bool,
    dnssec_ok: bool,
    checking_disabled: bool,
}

impl CacheKey {
    /// `name` is the normalised name of `query`'s single question.
    pub(crate) fn of(query: &Message, name: &str, qtype: RecordType) -> Self {
        Self {
            name: name.to_owned(),
            qtype,
            edns: query.extensions().is_some(),
            dnssec_ok: query
                .extensions()
                .as_ref()
                .is_some_and(|e| e.flags().dnssec_ok),
            checking_disabled: query.checking_disabled(),
        }
    }
}

#[derive(Debug)]
struct Entry {
    message: Message,
    pins: Vec<Pin>,
    stored: Instant,
    /// Encoded length, counted against [`BUDGET`].
    size: usize,
}

/// A cached answer as it may be sent now.
#[derive(Debug)]
pub(crate) struct Cached {
    /// The stored answer with its TTLs decremented (id and question still the first asker's).
    pub message: Message,
    /// Its pins, each with exactly the time left until the pin it installed expires (the
    /// records' TTLs, rounded down to whole seconds, never reach past it).
    pub pins: Vec<Pin>,
}

/// One cell's answers.
#[derive(Debug, Default)]
pub(crate) struct AnswerCache {
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<CacheKey, Entry>,
    /// Sum of the entries' `size`.
    bytes: usize,
}

impl AnswerCache {
    /// Keeps `message` if it is a positive answer, as of `stored` (an instant taken before its
    /// pins were installed, so the entry never outlives them).
    pub(crate) fn insert(&self, key: CacheKey, message: &Message, pins: &[Pin], stored: Instant) {
        if message.response_code() != ResponseCode::NoError
            || message.truncated()
            || message.answers().is_empty()
        {
            return;
        }
        let Some(size) = message.to_vec().ok().map(|b| b.len()) else {
            return;
        };
        if size > MAX_ENTRY {
            return;
        }
        let mut entries = self.lock();
        if entries.bytes + size > BUDGET {
            entries
                .map
                .retain(|_, e| e.stored + lifetime(&e.message) > stored);
            entries.bytes = entries.map.values().map(|e| e.size).sum();
            if entries.bytes + size > BUDGET {
                entries.map.clear();
                entries.bytes = 0;
            }
        }
        let entry = Entry {
            message: message.clone(),
            pins: pins.to_vec(),
            stored,
            size,
        };
        entries.bytes += size;
        if let Some(old) = entries.map.insert(key, entry) {
            entries.bytes -= old.size;
        }
    }

    /// The answer for `key` if every record keeps at least `floor` seconds (and at least one)
    /// of TTL at `now`; an entry past that is dropped.
    pub(crate) fn get(&self, key: &CacheKey, now: Instant, floor: u32) -> Option<Cached> {
        let mut entries = self.lock();
        let entry = entries.map.get(key)?;
        let age = elapsed_secs(entry.stored, now);
        let lowest = entry.message.answers().iter().map(|r| r.ttl()).min()?;
        if lowest.saturating_sub(age) < floor.max(1) {
            if let Some(old) = entries.map.remove(key) {
                entries.bytes -= old.size;
            }
            return None;
        }
        let mut message = entry.message.clone();
        let pins = entry
            .pins
            .iter()
            .map(|p| Pin {
                ttl: (entry.stored + p.ttl).saturating_duration_since(now),
                ..p.clone()
            })
            .collect();
        drop(entries);
        let older = |records: &mut Vec<Record>| {
            for record in records {
                record.set_ttl(record.ttl().saturating_sub(age));
            }
        };
        older(message.answers_mut());
        older(message.name_servers_mut());
        older(message.additionals_mut());
        Some(Cached { message, pins })
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        // A poisoned lock means a panic mid-update; every entry is still a valid answer with
        // its own deadline.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// How long an answer may be served at all (its shortest answer TTL).
fn lifetime(message: &Message) -> Duration {
    let secs = message.answers().iter().map(|r| r.ttl()).min().unwrap_or(0);
    Duration::from_secs(u64::from(secs))
}

/// Whole seconds from `from` to `now`, rounded up, so TTLs only ever err short.
fn elapsed_secs(from: Instant, now: Instant) -> u32 {
    let d = now.saturating_duration_since(from);
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    u32::try_from(secs).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use hickory_proto::op::{MessageType, Query};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData};

    use super::*;

    fn answer(ttl: u32) -> (Message, Vec<Pin>) {
        let name = Name::from_str("api.allowed.test.").unwrap();
        let mut m = Message::new();
        m.set_message_type(MessageType::Response)
            .add_query(Query::query(name.clone(), RecordType::A))
            .add_answer(Record::from_rdata(
                name,
                ttl,
                RData::A(A::new(203, 0, 113, 10)),
            ));
        let pins = vec![Pin {
            name: "api.allowed.test".into(),
            ip: "203.0.113.10".parse().unwrap(),
            ttl: Duration::from_secs(u64::from(ttl)),
        }];
        (m, pins)
    }

    fn key(m: &Message) -> CacheKey {
        CacheKey::of(m, "api.allowed.test", RecordType::A)
    }

    #[test]
    fn ttls_and_pins_count_down_and_the_entry_ends_at_the_floor() {
        let cache = AnswerCache::default();
        let (m, pins) = answer(60);
        let t0 = Instant::now();
        cache.insert(key(&m), &m, &pins, t0);
        let hit = cache
            .get(&key(&m), t0 + Duration::from_millis(10_500), 30)
            .unwrap();
        assert_eq!(hit.message.answers()[0].ttl(), 49);
        assert_eq!(hit.pins[0].ttl, Duration::from_millis(49_500));
        assert!(cache
            .get(&key(&m), t0 + Duration::from_secs(30), 30)
            .is_some());
        assert!(cache
            .get(&key(&m), t0 + Duration::from_millis(30_001), 30)
            .is_none());
        // Dropped, not only hidden.
        assert!(cache.get(&key(&m), t0, 30).is_none());
    }

    #[test]
    fn negative_answers_are_not_kept() {
        let cache = AnswerCache::default();
        let (mut m, _) = answer(60);
        m.take_answers();
        cache.insert(key(&m), &m, &[], Instant::now());
        assert!(cache.get(&key(&m), Instant::now(), 0).is_none());
        let (mut m, pins) = answer(60);
        m.set_response_code(ResponseCode::ServFail);
        cache.insert(key(&m), &m, &pins, Instant::now());
        assert!(cache.get(&key(&m), Instant::now(), 0).is_none());
    }

    #[test]
    fn the_cache_holds_a_bounded_number_of_bytes() {
        let cache = AnswerCache::default();
        let (m, pins) = answer(300);
        let t0 = Instant::now();
        let size = m.to_vec().unwrap().len();
        let fit = BUDGET / size;
        for i in 0..=fit {
            let key = CacheKey::of(&m, &format!("n{i}.allowed.test"), RecordType::A);
            cache.insert(key, &m, &pins, t0);
        }
        let entries = cache.lock();
        assert!(entries.bytes <= BUDGET);
        assert_eq!(entries.bytes, entries.map.len() * size);
        assert!(entries.map.len() < fit + 1);
    }

    #[test]
    fn edns_flags_are_part_of_the_question() {
        let (m, pins) = answer(60);
        let cache = AnswerCache::default();
        cache.insert(key(&m), &m, &pins, Instant::now());
        let mut with_edns = m.clone();
        with_edns.set_edns(hickory_proto::op::Edns::new());
        assert!(cache.get(&key(&with_edns), Instant::now(), 0).is_none());
        assert!(cache.get(&key(&m), Instant::now(), 0).is_some());
    }
}

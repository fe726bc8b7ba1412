//! What the authority has pinned and until when, so an answer whose pins already stand is sent
//! without running the pinner again.
//!
//! Every pin of a cell goes through its one authority, so the authority can know each pin's
//! expiry without asking the pinner. The figures are lower bounds: installing an address for
//! one name may replace the timeout of the same address installed for another name (the
//! nftables pinner refreshes an element by deleting and re-adding it, and names can share
//! ports), so such an install lowers the other names' expiries of that address to its own.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::pin::Pin;

/// Addresses tracked before expired ones are swept.
const SWEEP_AT: usize = 4096;

/// Per address, per name: the instant its pin is known to stand until.
#[derive(Debug, Default)]
pub(crate) struct PinLedger {
    expiries: Mutex<HashMap<IpAddr, HashMap<String, Instant>>>,
}

impl PinLedger {
    /// The pins not known to stand for their whole TTL from `now`.
    pub(crate) fn missing(&self, pins: &[Pin], now: Instant) -> Vec<Pin> {
        let map = self.lock();
        pins.iter()
            .filter(|p| {
                let until = map.get(&p.ip).and_then(|names| names.get(&p.name));
                until.is_none_or(|until| *until < now + p.ttl)
            })
            .cloned()
            .collect()
    }

    /// Records `pins` as installed by a pinner call that started at `started`.
    pub(crate) fn installed(&self, pins: &[Pin], started: Instant) {
        let mut map = self.lock();
        if map.len() >= SWEEP_AT {
            map.retain(|_, names| {
                names.retain(|_, until| *until > started);
                !names.is_empty()
            });
        }
        for pin in pins {
            let until = started + pin.ttl;
            let names = map.entry(pin.ip).or_default();
            for other in names.values_mut() {
                *other = (*other).min(until);
            }
            names.insert(pin.name.clone(), until);
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, HashMap<String, Instant>>> {
        // A poisoned lock means a panic mid-update; the map is still a map, and every entry
        // in it is a lower bound, so keep using it.
        self.expiries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn pin(name: &str, ip: &str, secs: u64) -> Pin {
        Pin {
            name: name.into(),
            ip: ip.parse().unwrap(),
            ttl: Duration::from_secs(secs),
        }
    }

    #[test]
    fn a_pin_standing_for_the_whole_ttl_is_not_missing() {
        let ledger = PinLedger::default();
        let t0 = Instant::now();
        let p = pin("a.test", "203.0.113.1", 60);
        assert_eq!(
            ledger.missing(std::slice::from_ref(&p), t0),
            vec![p.clone()]
        );
        ledger.installed(std::slice::from_ref(&p), t0);
        assert!(ledger
            .missing(&[pin("a.test", "203.0.113.1", 60)], t0)
            .is_empty());
        // Later, the same TTL reaches past the pin's expiry.
        let later = t0 + Duration::from_secs(1);
        assert_eq!(ledger.missing(std::slice::from_ref(&p), later).len(), 1);
        assert!(ledger
            .missing(&[pin("a.test", "203.0.113.1", 59)], later)
            .is_empty());
        // Another name with the same address is its own pin.
        assert_eq!(
            ledger.missing(&[pin("b.test", "203.0.113.1", 1)], t0).len(),
            1
        );
    }

    #[test]
    fn a_shorter_install_of_the_same_address_lowers_other_names() {
        let ledger = PinLedger::default();
        let t0 = Instant::now();
        ledger.installed(&[pin("a.test", "203.0.113.1", 300)], t0);
        ledger.installed(&[pin("b.test", "203.0.113.1", 30)], t0);
        assert_eq!(
            ledger
                .missing(&[pin("a.test", "203.0.113.1", 31)], t0)
                .len(),
            1
        );
        assert!(ledger
            .missing(&[pin("a.test", "203.0.113.1", 30)], t0)
            .is_empty());
    }
}

//! Pins: addresses the DNS authority resolved for an allowed name, reachable until they expire.
//!
//! The DNS authority hands every pin to an [`AddressPinner`] *before* it answers the cell, so
//! the address is already reachable when the workload connects. Two pinners exist: the
//! nftables one ([`crate::NftPinner`]: one netlink transaction per answer, from
//! [`crate::EgressPlan::pin_updates`]) and the in-memory [`PinTable`] that the L7 gate asks, as
//! a [`PinnedResolver`], whether a destination really is an address of the name in the SNI.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One resolved address of an allowed name, valid for `ttl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// The queried name, lower-cased, without a trailing dot.
    pub name: String,
    pub ip: IpAddr,
    /// The answer's TTL after clamping to the configured bounds.
    pub ttl: Duration,
}

/// Why pins could not be installed; the DNS authority then answers SERVFAIL instead of giving
/// the cell an address it could not reach.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pinning resolved addresses failed: {0}")]
pub struct PinError(pub String);

/// Makes resolved addresses reachable. Called from a blocking context (it may wait on the
/// kernel).
pub trait AddressPinner: Send + Sync {
    /// Installs every pin of one answer, all or nothing where the mechanism allows.
    fn pin(&self, pins: &[Pin]) -> Result<(), PinError>;
}

/// Answers "did the DNS authority resolve `name` to `ip`, and is that still valid?".
pub trait PinnedResolver: Send + Sync {
    fn resolved(&self, name: &str, ip: IpAddr) -> bool;
}

/// Hands each pin batch to several pinners in order; the first failure stops the batch.
pub struct PinFanout(pub Vec<Arc<dyn AddressPinner>>);

impl AddressPinner for PinFanout {
    fn pin(&self, pins: &[Pin]) -> Result<(), PinError> {
        self.0.iter().try_for_each(|p| p.pin(pins))
    }
}

/// In-memory name → addresses table with expiry; the L7 gate's view of DNS.
#[derive(Debug, Default)]
pub struct PinTable {
    entries: Mutex<HashMap<String, HashMap<IpAddr, Instant>>>,
}

impl PinTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Addresses of `name` that have not expired.
    pub fn addresses(&self, name: &str) -> Vec<IpAddr> {
        let now = Instant::now();
        let key = normalize(name);
        self.lock()
            .get(&key)
            .map(|ips| {
                ips.iter()
                    .filter(|(_, until)| **until > now)
                    .map(|(ip, _)| *ip)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<IpAddr, Instant>>> {
        // A poisoned lock only means another thread panicked mid-insert; the map is still a
        // valid map, so keep serving rather than failing every later lookup.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl AddressPinner for PinTable {
    fn pin(&self, pins: &[Pin]) -> Result<(), PinError> {
        let now = Instant::now();
        let mut map = self.lock();
        for pin in pins {
            let until = now + pin.ttl;
            let ips = map.entry(normalize(&pin.name)).or_default();
            ips.retain(|_, expiry| *expiry > now);
            let slot = ips.entry(pin.ip).or_insert(until);
            *slot = (*slot).max(until);
        }
        Ok(())
    }
}

impl PinnedResolver for PinTable {
    fn resolved(&self, name: &str, ip: IpAddr) -> bool {
        let known = self.addresses(name);
        known.contains(&ip) || known.contains(&ip.to_canonical())
    }
}

/// Lower-case without one trailing dot, the form pins are keyed by.
pub fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_name_resolves_to_its_address_only() {
        let t = PinTable::new();
        let ip: IpAddr = "203.0.113.10".parse().unwrap();
        t.pin(&[Pin {
            name: "API.allowed.test.".into(),
            ip,
            ttl: Duration::from_secs(60),
        }])
        .unwrap();
        assert!(t.resolved("api.allowed.test", ip));
        assert!(!t.resolved("api.allowed.test", "203.0.113.11".parse().unwrap()));
        assert!(!t.resolved("other.allowed.test", ip));
    }

    #[test]
    fn expired_pins_do_not_resolve() {
        let t = PinTable::new();
        let ip: IpAddr = "203.0.113.10".parse().unwrap();
        t.pin(&[Pin {
            name: "a.test".into(),
            ip,
            ttl: Duration::ZERO,
        }])
        .unwrap();
        assert!(!t.resolved("a.test", ip));
    }
}

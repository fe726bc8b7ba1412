//! The gate's decision, given what the client sent and where it was going. Pure.

use std::net::SocketAddr;

use cellos_core::spec::hostname_matches;

use crate::pin::PinnedResolver;

/// Why the gate refused a flow. The string forms are the `reason` of flow events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// TLS ClientHello without a server name.
    NoSni,
    /// The SNI matches no hostname rule for the original port.
    SniMismatch,
    /// The HTTP `Host` matches no hostname rule for the original port (or is missing).
    HostMismatch,
    /// The name matches, but the destination is not an address the cell's DNS authority
    /// resolved for it (SNI spoofing towards a shared address).
    NotResolved,
    /// The client sent nothing decisive in time.
    Timeout,
    /// Neither a TLS ClientHello nor an HTTP/1.x request head.
    Unparseable,
    /// The original destination of the redirected connection could not be read.
    NoOriginalDestination,
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::NoSni => "no-sni",
            DenyReason::SniMismatch => "sni-mismatch",
            DenyReason::HostMismatch => "host-mismatch",
            DenyReason::NotResolved => "not-resolved",
            DenyReason::Timeout => "timeout",
            DenyReason::Unparseable => "unparseable",
            DenyReason::NoOriginalDestination => "no-original-destination",
        }
    }
}

impl std::fmt::Display for DenyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the name came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameSource {
    Sni,
    Host,
}

/// Hostname rules the gate enforces: (pattern, original destination port).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GatePolicy {
    rules: Vec<(String, u16)>,
}

impl GatePolicy {
    pub fn new(rules: Vec<(String, u16)>) -> Self {
        Self { rules }
    }

    pub fn rules(&self) -> &[(String, u16)] {
        &self.rules
    }

    /// Allows `name` towards `original` when a rule for that port matches the name and the
    /// DNS authority resolved the name to that address. Returns the matching pattern.
    pub fn decide(
        &self,
        name: &str,
        source: NameSource,
        original: SocketAddr,
        resolver: &dyn PinnedResolver,
    ) -> Result<&str, DenyReason> {
        let pattern = self
            .rules
            .iter()
            .find(|(pattern, port)| *port == original.port() && hostname_matches(pattern, name))
            .map(|(pattern, _)| pattern.as_str())
            .ok_or(match source {
                NameSource::Sni => DenyReason::SniMismatch,
                NameSource::Host => DenyReason::HostMismatch,
            })?;
        if resolver.resolved(name, original.ip()) {
            Ok(pattern)
        } else {
            Err(DenyReason::NotResolved)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::pin::{AddressPinner, Pin, PinTable};

    fn setup() -> (GatePolicy, PinTable) {
        let policy = GatePolicy::new(vec![
            ("api.allowed.test".into(), 443),
            ("*.cdn.test".into(), 80),
        ]);
        let pins = PinTable::new();
        pins.pin(&[
            Pin {
                name: "api.allowed.test".into(),
                ip: "203.0.113.10".parse().unwrap(),
                ttl: Duration::from_secs(60),
            },
            Pin {
                name: "x.cdn.test".into(),
                ip: "203.0.113.20".parse().unwrap(),
                ttl: Duration::from_secs(60),
            },
            Pin {
                name: "other.test".into(),
                ip: "203.0.113.30".parse().unwrap(),
                ttl: Duration::from_secs(60),
            },
        ])
        .unwrap();
        (policy, pins)
    }

    #[test]
    fn matching_name_on_its_port_to_its_resolved_address_is_allowed() {
        let (p, pins) = setup();
        assert_eq!(
            p.decide(
                "api.allowed.test",
                NameSource::Sni,
                "203.0.113.10:443".parse().unwrap(),
                &pins
            ),
            Ok("api.allowed.test")
        );
        assert_eq!(
            p.decide(
                "x.cdn.test",
                NameSource::Host,
                "203.0.113.20:80".parse().unwrap(),
                &pins
            ),
            Ok("*.cdn.test")
        );
    }

    #[test]
    fn wrong_port_or_name_is_a_mismatch() {
        let (p, pins) = setup();
        assert_eq!(
            p.decide(
                "api.allowed.test",
                NameSource::Sni,
                "203.0.113.10:80".parse().unwrap(),
                &pins
            ),
            Err(DenyReason::SniMismatch)
        );
        assert_eq!(
            p.decide(
                "other.test",
                NameSource::Host,
                "203.0.113.30:80".parse().unwrap(),
                &pins
            ),
            Err(DenyReason::HostMismatch)
        );
        assert_eq!(
            p.decide(
                "cdn.test",
                NameSource::Host,
                "203.0.113.20:80".parse().unwrap(),
                &pins
            ),
            Err(DenyReason::HostMismatch)
        );
    }

    #[test]
    fn spoofed_sni_towards_an_unresolved_address_is_denied() {
        let (p, pins) = setup();
        // Allowed name, but the cell connects to an address that name never resolved to.
        assert_eq!(
            p.decide(
                "api.allowed.test",
                NameSource::Sni,
                "203.0.113.30:443".parse().unwrap(),
                &pins
            ),
            Err(DenyReason::NotResolved)
        );
    }
}

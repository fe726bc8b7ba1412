//! Declared ⊆ authorised: a guest declaration that claims authority the spec never granted is a
//! violation.
//!
//! A declaration is turned into a [`DeclaredSurface`] and checked with core's
//! [`validate_declared_authority_surface`] against [`AuthorisedSurface::from_spec`]. Intents
//! the check cannot even read (no destination, a port that is not a number) are flagged too:
//! the check fails closed rather than letting an unreadable claim pass.

use cellos_core::authority::{
    validate_declared_authority_surface, AuthorisedSurface, AuthorityKind, DeclaredEgress,
    DeclaredSurface,
};
use cellos_core::events::{ViolationData, ViolationKind};
use cellos_core::spec::{EgressProtocol, ExecutionCellSpec};

use crate::wire::{GuestFrame, ProbeSource};

/// Rule name on violations found by this check.
pub const RULE_DECLARED_SUBSET: &str = "declaredSubsetOfSpec";
/// Rule name on intents too malformed to check.
pub const RULE_DECLARATION_READABLE: &str = "declarationReadable";

/// Checks declarations of one cell against its spec.
#[derive(Debug, Clone)]
pub struct DeclaredChecker {
    authorised: AuthorisedSurface,
}

impl DeclaredChecker {
    pub fn new(spec: &ExecutionCellSpec) -> Self {
        DeclaredChecker {
            authorised: AuthorisedSurface::from_spec(spec),
        }
    }

    /// The violation this frame amounts to, if any. Frames that claim no authority (process
    /// reports, custom events, read intents) never do.
    pub fn check(&self, frame: &GuestFrame) -> Option<ViolationData> {
        let surface = match surface_of(frame) {
            Ok(Some(surface)) => surface,
            Ok(None) => return None,
            Err(reason) => {
                return Some(violation(
                    RULE_DECLARATION_READABLE,
                    format!(
                        "{} from guest pid {}: {reason}",
                        frame.probe_source, frame.guest_pid
                    ),
                ))
            }
        };
        let excess = validate_declared_authority_surface(&surface, &self.authorised).err()?;
        let what: Vec<String> = excess.iter().map(ToString::to_string).collect();
        Some(violation(
            RULE_DECLARED_SUBSET,
            format!(
                "guest pid {} ({}) declared {}: {}",
                frame.guest_pid,
                frame.guest_comm,
                frame.probe_source,
                what.join("; ")
            ),
        ))
    }
}

fn violation(rule: &str, detail: String) -> ViolationData {
    ViolationData {
        kind: ViolationKind::Violation,
        rule: rule.to_owned(),
        detail,
        authority: AuthorityKind::Declared,
    }
}

/// The authority a frame claims, `None` when it claims none.
///
/// * `net.intent`: `destination` = `host`, `host:port` or `[v6]:port`, optional `protocol`
///   (`tcp`/`udp`). With a port it is an egress claim; without one it is a claim to resolve the
///   name (an IP literal without a port claims nothing checkable and is refused).
/// * `fs.intent`: `path`, optional `access` (`write`, the default, or `read`). Only writes are
///   authority the spec grants.
/// * `secret.intent`: `name`.
pub fn surface_of(frame: &GuestFrame) -> Result<Option<DeclaredSurface>, String> {
    let field = |key: &str| {
        frame
            .detail
            .get(key)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("detail.{key} is missing"))
    };
    let mut surface = DeclaredSurface::default();
    match &frame.probe_source {
        ProbeSource::NetIntent => {
            let protocol = match frame.detail.get("protocol").map(String::as_str) {
                None | Some("tcp") => EgressProtocol::Tcp,
                Some("udp") => EgressProtocol::Udp,
                Some(other) => return Err(format!("detail.protocol {other:?} is not tcp or udp")),
            };
            let (host, port) = split_host_port(field("destination")?)?;
            match port {
                Some(port) => surface.egress.push(DeclaredEgress {
                    destination: host,
                    port,
                    protocol,
                }),
                None if host.parse::<std::net::IpAddr>().is_ok() => {
                    return Err(format!("destination {host} is an address without a port"))
                }
                None => surface.dns_names.push(host),
            }
        }
        ProbeSource::FsIntent => match frame.detail.get("access").map(String::as_str) {
            None | Some("write") => surface.write_paths.push(field("path")?.clone()),
            Some("read") => return Ok(None),
            Some(other) => return Err(format!("detail.access {other:?} is not write or read")),
        },
        ProbeSource::SecretIntent => surface.secret_names.push(field("name")?.clone()),
        ProbeSource::ProcessSpawned
        | ProbeSource::ProcessExited
        | ProbeSource::Keepalive
        | ProbeSource::Custom(_) => return Ok(None),
    }
    Ok(Some(surface))
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; a bare IPv6 address has no port.
fn split_host_port(destination: &str) -> Result<(String, Option<u32>), String> {
    let port = |p: &str| {
        p.parse::<u16>()
            .map(u32::from)
            .map_err(|_| format!("port {p:?} in destination is not a number 0-65535"))
    };
    if let Some(rest) = destination.strip_prefix('[') {
        let (host, tail) = rest
            .split_once(']')
            .ok_or_else(|| format!("destination {destination:?} has no closing ']'"))?;
        return match tail.strip_prefix(':') {
            Some(p) => Ok((host.to_owned(), Some(port(p)?))),
            None if tail.is_empty() => Ok((host.to_owned(), None)),
            None => Err(format!("destination {destination:?} is not [address]:port")),
        };
    }
    if destination.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok((destination.to_owned(), None));
    }
    match destination.rsplit_once(':') {
        Some((host, p)) => Ok((host.to_owned(), Some(port(p)?))),
        None => Ok((destination.to_owned(), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_split_into_host_and_optional_port() {
        assert_eq!(
            split_host_port("api.example.com:443").unwrap(),
            ("api.example.com".into(), Some(443))
        );
        assert_eq!(
            split_host_port("api.example.com").unwrap(),
            ("api.example.com".into(), None)
        );
        assert_eq!(
            split_host_port("[2001:db8::1]:53").unwrap(),
            ("2001:db8::1".into(), Some(53))
        );
        assert_eq!(
            split_host_port("2001:db8::1").unwrap(),
            ("2001:db8::1".into(), None)
        );
        assert!(split_host_port("host:http").is_err());
        assert!(split_host_port("[::1").is_err());
    }
}

//! What the DNS authority of one cell resolves, where, and how long answers stay pinned.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use cellos_core::spec::{hostname_matches, Cidr};

use crate::ranges::DeniedRanges;
use crate::ruleset::EgressPlan;

/// Default lower bound of a pinned answer's TTL: short TTLs would make pins expire between
/// the answer and the connection.
pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(30);
/// Default upper bound: a long TTL would keep an address reachable long after the name moved.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(300);
/// Default time to wait for the upstream resolver, per attempt.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);

/// Configuration of one cell's DNS authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Names resolved upstream: literals, or `*.domain` (sub-names only, never the apex).
    pub allowlist: Vec<String>,
    /// The resolver allowed names are forwarded to.
    pub upstream: SocketAddr,
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    /// Answers inside these ranges are dropped (rebinding protection)...
    pub denied_ranges: DeniedRanges,
    /// ...unless a literal CIDR rule of the cell names them.
    pub explicit_cidrs: Vec<Cidr>,
    pub upstream_timeout: Duration,
}

impl DnsConfig {
    /// The configuration a cell's [`EgressPlan`] implies, with default TTL bounds.
    pub fn from_plan(plan: &EgressPlan, upstream: SocketAddr) -> Self {
        Self {
            allowlist: plan.dns_allowlist().to_vec(),
            upstream,
            min_ttl: DEFAULT_MIN_TTL,
            max_ttl: DEFAULT_MAX_TTL,
            denied_ranges: plan.denied().clone(),
            explicit_cidrs: plan.explicit_cidrs(),
            upstream_timeout: DEFAULT_UPSTREAM_TIMEOUT,
        }
    }

    /// The allow-list pattern that admits `name`, if any.
    pub fn matching_pattern(&self, name: &str) -> Option<&str> {
        self.allowlist
            .iter()
            .find(|p| hostname_matches(p, name))
            .map(String::as_str)
    }

    /// `ttl` clamped to `[min_ttl, max_ttl]` (whole seconds, as DNS carries them).
    pub fn clamp_ttl(&self, ttl: u32) -> u32 {
        let min = secs(self.min_ttl);
        let max = secs(self.max_ttl).max(min);
        ttl.clamp(min, max)
    }
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

/// The first `nameserver` of a resolv.conf text, on port 53.
///
/// Hand-written: the format is one keyword per line and only this keyword matters here; the
/// resolver crates that parse it bring a whole resolver along.
pub fn upstream_from_resolv_conf(text: &str) -> Option<SocketAddr> {
    text.lines()
        .map(|l| l.split(['#', ';']).next().unwrap_or_default())
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        // A link-local IPv6 nameserver carries a `%zone` suffix that IpAddr does not parse.
        .find_map(|addr| addr.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
}

/// The host's resolver from `/etc/resolv.conf`.
pub fn system_upstream() -> Result<SocketAddr, crate::dns::DnsError> {
    let path = "/etc/resolv.conf";
    let text = std::fs::read_to_string(path).map_err(|e| {
        crate::dns::DnsError::Upstream(format!(
            "cannot read {path}: {e}; set the DNS upstream explicitly"
        ))
    })?;
    upstream_from_resolv_conf(&text).ok_or_else(|| {
        crate::dns::DnsError::Upstream(format!(
            "{path} has no usable nameserver line; set the DNS upstream explicitly"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(allow: &[&str]) -> DnsConfig {
        DnsConfig {
            allowlist: allow.iter().map(|s| s.to_string()).collect(),
            upstream: "127.0.0.1:53".parse().unwrap(),
            min_ttl: Duration::from_secs(30),
            max_ttl: Duration::from_secs(300),
            denied_ranges: DeniedRanges::defaults(),
            explicit_cidrs: vec![],
            upstream_timeout: DEFAULT_UPSTREAM_TIMEOUT,
        }
    }

    #[test]
    fn wildcard_matches_sub_names_only() {
        let c = config(&["*.allowed.test", "exact.test"]);
        assert_eq!(
            c.matching_pattern("api.allowed.test."),
            Some("*.allowed.test")
        );
        assert_eq!(
            c.matching_pattern("a.b.allowed.test"),
            Some("*.allowed.test")
        );
        assert_eq!(c.matching_pattern("allowed.test"), None);
        assert_eq!(c.matching_pattern("EXACT.test."), Some("exact.test"));
        assert_eq!(c.matching_pattern("sub.exact.test"), None);
        assert_eq!(c.matching_pattern("evilallowed.test"), None);
    }

    #[test]
    fn ttl_is_clamped_to_the_bounds() {
        let c = config(&[]);
        assert_eq!(c.clamp_ttl(0), 30);
        assert_eq!(c.clamp_ttl(120), 120);
        assert_eq!(c.clamp_ttl(86_400), 300);
    }

    #[test]
    fn resolv_conf_first_parsable_nameserver() {
        let text = "# comment\nsearch example\nnameserver fe80::1%eth0\nnameserver 192.0.2.53 # x\nnameserver 8.8.8.8\n";
        assert_eq!(
            upstream_from_resolv_conf(text),
            Some("192.0.2.53:53".parse().unwrap())
        );
        assert_eq!(upstream_from_resolv_conf("options ndots:1\n"), None);
    }
}

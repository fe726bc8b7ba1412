//! Does the host's firewall forward a networked cell's traffic?
//!
//! A cell's packets leave through its veth (`cv…`) and the host's forward hook. The cell's own
//! host table accepts them, but every base chain on the hook must accept a packet, so another
//! table's forward chain with policy drop (Docker sets `FORWARD DROP`) drops the cell's traffic
//! unless it accepts `cv*` itself. The ruleset is read with `nft -j list ruleset`, which also
//! shows rules loaded through iptables-nft.

use std::process::{Command, Stdio};

use serde_json::Value;

use super::FeatureCheck;

/// The feature name of this check.
pub const FEATURE: &str = "host forward policy";

/// Prefix of the host ends of cells' veth pairs.
const VETH_PREFIX: &str = "cv";

/// The check against the host's ruleset, or that of the named network namespace
/// (`ip netns exec`).
pub fn check(netns: Option<&str>) -> FeatureCheck {
    check_with("nft", netns)
}

/// [`check`] with the `nft` program to run.
pub fn check_with(nft: &str, netns: Option<&str>) -> FeatureCheck {
    let mut command = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, nft]);
            c
        }
        None => Command::new(nft),
    };
    command.args(["-j", "list", "ruleset"]).stdin(Stdio::null());
    let ruleset = match command.output() {
        Err(e) => Err(format!("cannot run {nft}: {e}")),
        Ok(out) if !out.status.success() => Err(format!(
            "{nft} -j list ruleset failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(out) => serde_json::from_slice::<Value>(&out.stdout)
            .map_err(|e| format!("{nft} -j list ruleset printed no JSON ruleset: {e}")),
    };
    match ruleset {
        Ok(ruleset) => judge(&ruleset),
        Err(why) => FeatureCheck::unverified(
            FEATURE,
            why,
            "install nftables (apt-get install nftables) so the forward hook's policy can be \
             read; until then a FORWARD policy of drop would go unnoticed",
        ),
    }
}

/// A base chain on the forward hook with policy drop.
#[derive(Debug)]
struct DropChain<'a> {
    family: &'a str,
    table: &'a str,
    name: &'a str,
}

/// The verdict on a parsed ruleset.
fn judge(ruleset: &Value) -> FeatureCheck {
    let items: Vec<&Value> = ruleset["nftables"]
        .as_array()
        .map(|v| v.iter().collect())
        .unwrap_or_default();
    let chains: Vec<DropChain> = items
        .iter()
        .filter_map(|i| i.get("chain"))
        .filter(|c| c["hook"] == "forward" && c["policy"] == "drop")
        .filter(|c| matches!(c["family"].as_str(), Some("ip" | "inet")))
        .filter_map(|c| {
            Some(DropChain {
                family: c["family"].as_str()?,
                table: c["table"].as_str()?,
                name: c["name"].as_str()?,
            })
        })
        .collect();
    let blocking: Vec<(&DropChain, Vec<&str>)> = chains
        .iter()
        .map(|c| (c, missing_accepts(&items, c)))
        .filter(|(_, missing)| !missing.is_empty())
        .collect();
    if blocking.is_empty() {
        let detail = if chains.is_empty() {
            "no IPv4 forward chain with policy drop".to_owned()
        } else {
            format!(
                "{} forward chain(s) with policy drop accept {VETH_PREFIX}* both ways",
                chains.len()
            )
        };
        return FeatureCheck::new(FEATURE, true, detail, "");
    }
    let detail = blocking
        .iter()
        .map(|(c, missing)| {
            let directions: Vec<String> = missing
                .iter()
                .map(|d| format!("{d} {VETH_PREFIX}*"))
                .collect();
            format!(
                "{} {} {} has policy drop and accepts no traffic {}: networked cells' packets \
                 are dropped",
                c.family,
                c.table,
                c.name,
                directions.join(" or ")
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let fix = blocking
        .iter()
        .map(|(c, _)| {
            let at = format!("{} {} {}", c.family, c.table, c.name);
            format!(
                "nft insert rule {at} iifname \"{VETH_PREFIX}*\" accept; nft insert rule {at} \
                 oifname \"{VETH_PREFIX}*\" ct state established,related accept"
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    FeatureCheck::new(
        FEATURE,
        false,
        detail,
        &format!(
            "accept forwarding for the CellOS interfaces: {fix} (with Docker, add the same to \
             its DOCKER-USER chain: iptables -I DOCKER-USER -i {VETH_PREFIX}+ -j ACCEPT; \
             iptables -I DOCKER-USER -o {VETH_PREFIX}+ -m conntrack --ctstate \
             RELATED,ESTABLISHED -j ACCEPT)"
        ),
    )
}

/// The directions (`from`, `to`) of cell traffic that `chain` (and the chains it jumps to)
/// accepts nowhere.
fn missing_accepts(items: &[&Value], chain: &DropChain) -> Vec<&'static str> {
    let mut missing = Vec::new();
    for (direction, key) in [("from", "iifname"), ("to", "oifname")] {
        if !accepts(items, chain, chain.name, key, 0) {
            missing.push(direction);
        }
    }
    missing
}

/// Whether a rule of `name` (in `chain`'s table) accepts packets whose `key` (`iifname` or
/// `oifname`) is a cell veth, following jumps a few levels deep.
fn accepts(items: &[&Value], chain: &DropChain, name: &str, key: &str, depth: u8) -> bool {
    if depth > 8 {
        return false;
    }
    let rules = items
        .iter()
        .filter_map(|i| i.get("rule"))
        .filter(|r| r["family"] == chain.family && r["table"] == chain.table && r["chain"] == name);
    for rule in rules {
        let exprs: Vec<&Value> = rule["expr"]
            .as_array()
            .map(|v| v.iter().collect())
            .unwrap_or_default();
        let matches: Vec<&Value> = exprs.iter().filter_map(|e| e.get("match")).collect();
        let names_cells = matches.iter().any(|m| {
            m["left"]["meta"]["key"] == key
                && m["right"]
                    .as_str()
                    .is_some_and(|r| r.starts_with(VETH_PREFIX))
        });
        let accepts_all = matches.is_empty();
        if exprs.iter().any(|e| e.get("accept").is_some()) && (names_cells || accepts_all) {
            return true;
        }
        let jumped = exprs
            .iter()
            .filter_map(|e| e.get("jump").or_else(|| e.get("goto")))
            .filter_map(|j| j["target"].as_str());
        for target in jumped {
            if accepts(items, chain, target, key, depth + 1) {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::CheckStatus;

    fn ruleset(rules: &str) -> Value {
        serde_json::from_str(&format!(
            r#"{{"nftables": [
                {{"chain": {{"family": "ip", "table": "filter", "name": "FORWARD",
                  "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}}}},
                {{"chain": {{"family": "ip", "table": "filter", "name": "DOCKER-USER"}}}}
                {rules}
            ]}}"#
        ))
        .unwrap()
    }

    fn rule(chain: &str, expr: &str) -> String {
        format!(
            r#", {{"rule": {{"family": "ip", "table": "filter", "chain": "{chain}", "expr": [{expr}]}}}}"#
        )
    }

    const FROM_CELLS: &str = r#"{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "cv*"}}, {"accept": null}"#;
    const TO_CELLS: &str = r#"{"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "cv*"}}, {"accept": null}"#;

    #[test]
    fn a_drop_policy_without_cell_accepts_is_reported_with_the_fix() {
        let c = judge(&ruleset(""));
        assert_eq!(c.status, CheckStatus::Missing, "{c:?}");
        assert!(
            c.detail.contains("ip filter FORWARD has policy drop"),
            "{c:?}"
        );
        assert!(
            c.detail.contains("accepts no traffic from cv* or to cv*"),
            "{c:?}"
        );
        let fix = c.fix.unwrap();
        assert!(fix.contains("nft insert rule ip filter FORWARD iifname \"cv*\" accept"));
        assert!(fix.contains("DOCKER-USER -i cv+ -j ACCEPT"), "{fix}");
    }

    #[test]
    fn accepts_in_the_chain_or_a_jumped_chain_make_it_ok() {
        let direct = judge(&ruleset(
            &(rule("FORWARD", FROM_CELLS) + &rule("FORWARD", TO_CELLS)),
        ));
        assert_eq!(direct.status, CheckStatus::Ok, "{direct:?}");
        let jump = r#"{"jump": {"target": "DOCKER-USER"}}"#;
        let via_jump = judge(&ruleset(
            &(rule("FORWARD", jump)
                + &rule("DOCKER-USER", FROM_CELLS)
                + &rule("DOCKER-USER", TO_CELLS)),
        ));
        assert_eq!(via_jump.status, CheckStatus::Ok, "{via_jump:?}");
        let one_way = judge(&ruleset(&rule("FORWARD", FROM_CELLS)));
        assert_eq!(one_way.status, CheckStatus::Missing, "{one_way:?}");
        assert!(
            one_way.detail.contains("accepts no traffic to cv*:"),
            "{one_way:?}"
        );
    }

    #[test]
    fn an_accept_policy_or_other_families_are_ok() {
        let accept: Value = serde_json::from_str(
            r#"{"nftables": [{"chain": {"family": "inet", "table": "t", "name": "f",
                "hook": "forward", "policy": "accept"}},
              {"chain": {"family": "ip6", "table": "t", "name": "f6",
                "hook": "forward", "policy": "drop"}}]}"#,
        )
        .unwrap();
        let c = judge(&accept);
        assert_eq!(c.status, CheckStatus::Ok, "{c:?}");
        assert_eq!(c.detail, "no IPv4 forward chain with policy drop");
    }

    #[test]
    fn a_ruleset_that_cannot_be_read_is_unverified_not_ok() {
        let c = check_with("/nonexistent/nft", None);
        assert_eq!(c.status, CheckStatus::Unverified, "{c:?}");
        assert!(
            c.detail
                .starts_with("could not check: cannot run /nonexistent/nft"),
            "{c:?}"
        );
        assert!(c.fix.unwrap().contains("install nftables"));
    }
}

//! Policy packs bound egress at admission: a spec that asks for more network than the pack
//! allows is denied before any of its network exists.

use crate::cell::{authority, unique_id, Cells};
use crate::internet::{Internet, ALPHA, GAMMA};

#[test]
fn a_spec_asking_for_more_egress_than_the_pack_allows_is_denied_before_anything_exists() {
    let net = Internet::new();
    let cells = Cells::new();
    let pack = cells.path().join("pack.yaml");
    std::fs::write(
        &pack,
        format!(
            "apiVersion: cellos.io/v1\nkind: PolicyPack\nspec:\n  id: egress-pack\n  version: \"1\"\n  rules:\n    allowedEgressHosts: [{ALPHA}]\n"
        ),
    )
    .expect("write pack");
    let id = unique_id("eg-admission");
    let spec = cells.spec(
        &id,
        &["/bin/true"],
        &[],
        &authority(
            &[
                format!("{{ host: {ALPHA}, port: 443 }}"),
                format!("{{ host: {GAMMA}, port: 443 }}"),
            ],
            &[],
        ),
    );
    let pack_arg = pack.to_string_lossy();
    let out = cells.run(&net, &spec, &["--policy", &pack_arg]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("admission denied"), "{stderr}");
    assert!(
        stderr.contains(GAMMA),
        "the reason names the host: {stderr}"
    );

    let events = cells.events(&id);
    assert_eq!(
        events.0.len(),
        1,
        "only the admission is recorded: {:?}",
        events.0
    );
    assert_eq!(events.0[0]["data"]["decision"]["verdict"], "deny");
    // No address was leased for it.
    let leases = cells.path().join("run").join("net");
    let leased = std::fs::read_dir(&leases).map(|d| d.count()).unwrap_or(0);
    assert_eq!(leased, 0, "leases in {}", leases.display());
    cells.assert_log_verifies();
}

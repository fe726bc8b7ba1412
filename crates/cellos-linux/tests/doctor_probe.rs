//! The host probe reports what this machine really offers, with fixes only for what is missing.

use cellos_linux::cgroup::{Controller, Layout};
use cellos_linux::doctor::{probe, FeatureCheck};
use cellos_linux::landlock_rules::kernel_abi;

fn check<'a>(checks: &'a [FeatureCheck], feature: &str) -> &'a FeatureCheck {
    checks
        .iter()
        .find(|c| c.feature == feature)
        .unwrap_or_else(|| panic!("no check for {feature} in {checks:?}"))
}

#[test]
fn probe_reports_userns_seccomp_and_landlock_available() {
    let checks = probe();
    for feature in [
        "user namespaces",
        "seccomp filter",
        "landlock",
        "pidfd",
        "egress forwarding",
    ] {
        let c = check(&checks, feature);
        assert!(c.available, "{c:?}");
        assert_eq!(c.fix, None);
    }
    let abi = kernel_abi().expect("Landlock ABI");
    assert_eq!(
        check(&checks, "landlock").detail,
        format!("Landlock ABI {abi}")
    );
}

#[test]
fn probe_reports_each_cgroup_controller_with_the_version_that_serves_it() {
    let checks = probe();
    for controller in Controller::ALL {
        let c = check(&checks, &format!("cgroup {}", controller.name()));
        let (version, root) = Layout::host()
            .locate(controller)
            .expect("controller available on this host");
        assert!(c.available, "{c:?}");
        assert!(c.detail.starts_with(version.as_str()), "{c:?}");
        assert!(c.detail.contains(&root.display().to_string()), "{c:?}");
    }
}

#[test]
fn missing_features_carry_a_fix_and_checks_serialize_in_camel_case() {
    let checks = probe();
    for c in &checks {
        assert_eq!(c.fix.is_some(), !c.available, "{c:?}");
    }
    let json = serde_json::to_value(&checks).expect("serialize");
    let first = &json[0];
    assert!(first.get("feature").is_some() && first.get("available").is_some());
    assert!(first.get("detail").is_some() && first.get("fix").is_some());
}

//! `cellos doctor` on this host: every check passes here, and a check that cannot run is shown
//! as such and fails the exit status instead of reading "ok".

use crate::support::{stdout, Home};

#[test]
fn doctor_reports_every_check_ok_on_this_host_and_exits_0() {
    let out = Home::new().run(&["doctor"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for feature in [
        "user namespaces",
        "landlock",
        "host forward policy",
        "mount API (supervisor side)",
        "cell namespaces and root",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("ok ") && l.contains(feature)),
            "{feature}: {text}"
        );
    }
    assert!(text.lines().all(|l| l.starts_with("ok ")), "{text}");

    let out = Home::new().run(&["doctor", "--json"]);
    let checks: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let checks = checks.as_array().expect("array");
    assert!(checks.len() >= 10, "{checks:?}");
    assert!(checks.iter().all(|c| c["status"] == "ok"), "{checks:?}");
}

#[test]
fn a_check_that_cannot_run_is_unchecked_and_fails_the_exit_status() {
    // No nft on PATH: the forward policy cannot be read, which must not pass as "ok".
    let empty = tempfile::tempdir().unwrap();
    let out = Home::new()
        .cellos()
        .arg("doctor")
        .env("PATH", empty.path())
        .output()
        .expect("run cellos");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("host forward policy"))
        .unwrap_or_else(|| panic!("no forward check: {text}"));
    assert!(line.starts_with("UNCHECKED "), "{line}");
    assert!(line.contains("could not check: cannot run nft"), "{line}");
    assert!(text.contains("fix: install nftables"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("MISSING ") && l.contains("nftables")),
        "{text}"
    );
}

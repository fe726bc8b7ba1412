//! Capability dropping in a child before exec: after the drop and a switch to an unprivileged
//! uid, every capability set is empty and no_new_privs is set.

use std::os::unix::process::CommandExt;
use std::process::Command;

use cellos_linux::caps::{capabilities_summary_from_status, drop_all_capabilities};

fn status_of_child(drop_caps: bool, uid: Option<u32>) -> Vec<String> {
    let mut cmd = Command::new("cat");
    cmd.arg("/proc/self/status");
    // SAFETY: the hook only makes prctl/capset/setres[ug]id/setgroups calls.
    unsafe {
        cmd.pre_exec(move || {
            if drop_caps {
                drop_all_capabilities().map_err(|e| std::io::Error::other(e.to_string()))?;
            }
            if let Some(id) = uid {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setresgid(id, id, id) != 0
                    || libc::setresuid(id, id, id) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let out = cmd.output().expect("run cat");
    assert!(out.status.success(), "{out:?}");
    capabilities_summary_from_status(&String::from_utf8_lossy(&out.stdout))
}

fn field<'a>(summary: &'a [String], name: &str) -> &'a str {
    summary
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("{name} missing in {summary:?}"))
}

const ZERO: &str = "0000000000000000";

#[test]
fn dropped_and_unprivileged_child_holds_no_capability() {
    let summary = status_of_child(true, Some(65534));
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(field(&summary, set), ZERO, "{set} in {summary:?}");
    }
    assert_eq!(field(&summary, "NoNewPrivs"), "1");
}

#[test]
fn setuid_alone_keeps_the_bounding_set_which_the_drop_removes() {
    // Control: switching uid clears permitted/effective but not the bounding set.
    let summary = status_of_child(false, Some(65534));
    assert_eq!(field(&summary, "CapEff"), ZERO);
    assert_ne!(field(&summary, "CapBnd"), ZERO);
    assert_eq!(field(&summary, "NoNewPrivs"), "0");
}

#[test]
fn even_root_gains_nothing_across_exec_after_the_drop() {
    // With an empty bounding set, exec as uid 0 cannot regain permitted capabilities.
    let summary = status_of_child(true, None);
    for set in ["CapPrm", "CapEff", "CapBnd", "CapAmb", "CapInh"] {
        assert_eq!(field(&summary, set), ZERO, "{set} in {summary:?}");
    }
}

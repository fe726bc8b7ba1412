//! A real kernel refusal, provoked the way an outer container's seccomp profile provokes it,
//! arrives named: the blocked call, the seccomp cause and the fix.

#[path = "support/eperm_filter.rs"]
mod eperm_filter;

use std::path::Path;

use cellos_linux::error::LinuxError;
use cellos_linux::refusal::{Refusal, Step};
use cellos_linux::trees::{clone_tree, etc_overlay, MOUNT_ATTR_RDONLY};
use eperm_filter::under_eperm_filter;

fn refusal(err: LinuxError) -> Refusal {
    match err {
        LinuxError::Kernel(r) => r,
        other => panic!("not a kernel refusal: {other:?}"),
    }
}

#[test]
fn open_tree_blocked_by_seccomp_names_the_call_the_filter_and_the_fix() {
    let err = under_eperm_filter(&[libc::SYS_open_tree], || {
        clone_tree(Path::new("/etc"), MOUNT_ATTR_RDONLY, "/etc").map(drop)
    })
    .unwrap_err();
    let text = err.to_string();
    let r = refusal(err);
    assert_eq!(r.step, Step::OpenTree);
    assert_eq!(r.errno, libc::EPERM);
    assert!(r.confinement.seccomp_filtered, "{r:?}");
    assert!(
        text.starts_with(
            "open_tree(OPEN_TREE_CLONE) of /etc for /etc refused with EPERM (Operation not \
             permitted); likely cause: this process runs under a seccomp filter"
        ),
        "{text}"
    );
    assert!(
        text.contains("fix: run cellos outside that container"),
        "{text}"
    );
    assert!(!text.contains('\n'), "{text}");
}

#[test]
fn fsopen_blocked_by_seccomp_names_the_filesystem_and_the_filter() {
    let err = under_eperm_filter(&[libc::SYS_fsopen], || {
        etc_overlay("refusal-test", None, Path::new("/etc"), None).map(drop)
    })
    .unwrap_err();
    let text = err.to_string();
    let r = refusal(err);
    assert_eq!(r.step, Step::Fsopen { fstype: "tmpfs" });
    assert!(
        text.starts_with("fsopen(tmpfs) for the cell's /etc refused with EPERM"),
        "{text}"
    );
    assert!(text.contains("seccomp filter"), "{text}");
}

#[test]
fn the_same_steps_succeed_without_the_filter() {
    // The refusals above come from the filter, not from this host.
    clone_tree(Path::new("/etc"), MOUNT_ATTR_RDONLY, "/etc").expect("open_tree");
    etc_overlay("refusal-test", None, Path::new("/etc"), None).expect("overlay");
}

#[test]
fn open_tree_without_cap_sys_admin_names_the_missing_capability() {
    // Capabilities are per thread too: drop CAP_SYS_ADMIN from this thread's effective set,
    // as an outer container that withholds it would.
    let err = std::thread::spawn(|| {
        use rustix::thread::{capabilities, set_capabilities, CapabilityFlags};
        let mut sets = capabilities(None).expect("capget");
        sets.effective.remove(CapabilityFlags::SYS_ADMIN);
        set_capabilities(None, sets).expect("capset");
        clone_tree(Path::new("/etc"), MOUNT_ATTR_RDONLY, "/etc").map(drop)
    })
    .join()
    .expect("thread")
    .unwrap_err();
    let text = err.to_string();
    let r = refusal(err);
    assert_eq!((r.step, r.errno), (Step::OpenTree, libc::EPERM));
    assert!(
        !r.confinement.cap_sys_admin && !r.confinement.seccomp_filtered,
        "{r:?}"
    );
    assert!(
        text.contains(
            "likely cause: the caller lacks CAP_SYS_ADMIN, which open_tree(OPEN_TREE_CLONE) needs"
        ),
        "{text}"
    );
    assert!(
        text.contains("fix: run cellos as root with CAP_SYS_ADMIN"),
        "{text}"
    );
}

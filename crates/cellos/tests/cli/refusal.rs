//! A kernel refusal inside the cell's setup reaches `cellos run`'s one-line error named: the
//! blocked call, the likely cause and the fix (exit 125), not a bare errno.

use std::collections::BTreeMap;

use seccompiler::{SeccompAction, SeccompFilter, TargetArch};

use crate::support::{sh, stderr, unique_id, Home};

#[test]
fn move_mount_refused_by_an_outer_seccomp_profile_is_named_with_cause_and_fix() {
    let home = Home::new();
    let id = unique_id("refused");
    let spec = home.spec(&id, &sh("true"));
    // An outer container's profile, as Docker's default applies it to the mount API: only the
    // cell's init attaches trees with move_mount, so the refusal happens inside the cell.
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> =
        [(libc::SYS_move_mount, Vec::new())].into_iter().collect();
    let program: seccompiler::BpfProgram = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        TargetArch::x86_64,
    )
    .and_then(TryInto::try_into)
    .expect("filter");
    let mut cmd = home.cellos();
    cmd.args(["run", spec.to_str().unwrap()]);
    let out = std::thread::spawn(move || {
        // Filters are per thread and inherited by the processes it starts.
        seccompiler::apply_filter(&program).expect("install filter");
        cmd.output().expect("run cellos")
    })
    .join()
    .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(125), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("cellos:"))
        .unwrap_or_else(|| panic!("no reason line: {err}"));
    assert!(
        line.contains("cell init: move_mount of /")
            && line.contains(" into the cell refused with EPERM"),
        "{line}"
    );
    assert!(
        line.contains("likely cause: this process runs under a seccomp filter"),
        "{line}"
    );
    assert!(
        line.contains("fix: run cellos outside that container"),
        "{line}"
    );
    assert!(!line.contains("os error 1"), "{line}");
}

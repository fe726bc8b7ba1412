//! Running test code the way an outer container's seccomp profile would confine it.

use std::collections::BTreeMap;

use seccompiler::{SeccompAction, SeccompFilter, TargetArch};

/// Run `f` on a new thread whose seccomp filter answers `EPERM` to `syscalls` (as Docker's
/// default profile does for the mount API); filters are per thread, so nothing else is touched,
/// and children that `f` clones inherit the filter, as a cell would.
pub fn under_eperm_filter<T: Send + 'static>(
    syscalls: &[libc::c_long],
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> =
        syscalls.iter().map(|nr| (*nr, Vec::new())).collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        TargetArch::x86_64,
    )
    .expect("filter");
    let program: seccompiler::BpfProgram = filter.try_into().expect("compile filter");
    std::thread::spawn(move || {
        seccompiler::apply_filter(&program).expect("install filter on this thread");
        f()
    })
    .join()
    .expect("filtered thread")
}

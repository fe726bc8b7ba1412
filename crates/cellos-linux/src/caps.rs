//! Capability dropping for the workload, and evidence of what it holds.
//!
//! The cell's init drops every capability from the ambient, bounding and inheritable sets and
//! sets `no_new_privs`, then switches to the workload uid (which clears the permitted and
//! effective sets). With the bounding set empty and `no_new_privs` set, no later exec (setuid
//! binary, file capabilities) can give anything back.

use std::sync::OnceLock;

use rustix::thread::{self as rthread, CapabilityFlags};

use crate::error::LinuxError;

const STATUS_FIELDS: [&str; 6] = [
    "CapInh",
    "CapPrm",
    "CapEff",
    "CapBnd",
    "CapAmb",
    "NoNewPrivs",
];

/// Drop every capability from the ambient, bounding and inheritable sets, then set
/// `no_new_privs`. Needs `CAP_SETPCAP` (held by root, or by the user-namespace owner). The
/// permitted and effective sets are kept so the caller can still `setresuid`; switching to a
/// non-root uid clears them.
pub fn drop_all_capabilities() -> Result<(), LinuxError> {
    rthread::clear_ambient_capability_set()
        .map_err(|e| LinuxError::errno("prctl(PR_CAP_AMBIENT_CLEAR_ALL)", e.raw_os_error()))?;
    for cap in 0..=last_cap() {
        drop_from_bounding_set(cap)?;
    }
    let mut sets =
        rthread::capabilities(None).map_err(|e| LinuxError::errno("capget", e.raw_os_error()))?;
    sets.inheritable = CapabilityFlags::empty();
    rthread::set_capabilities(None, sets)
        .map_err(|e| LinuxError::errno("capset (clear inheritable)", e.raw_os_error()))?;
    set_no_new_privs()
}

/// `prctl(PR_SET_NO_NEW_PRIVS, 1)`: execve can no longer grant privileges (setuid bits, file
/// capabilities), and unprivileged seccomp and Landlock become possible.
pub fn set_no_new_privs() -> Result<(), LinuxError> {
    rthread::set_no_new_privs(true)
        .map_err(|e| LinuxError::errno("prctl(PR_SET_NO_NEW_PRIVS)", e.raw_os_error()))
}

/// The calling process's capability sets and `no_new_privs` as `Name=value` strings
/// (`CapEff=0000000000000000`, ..., `NoNewPrivs=1`), for isolation evidence.
pub fn current_capabilities_summary() -> Vec<String> {
    std::fs::read_to_string("/proc/self/status")
        .map(|status| capabilities_summary_from_status(&status))
        .unwrap_or_default()
}

/// The capability lines of a `/proc/<pid>/status` text, in the [`current_capabilities_summary`]
/// format.
pub fn capabilities_summary_from_status(status: &str) -> Vec<String> {
    STATUS_FIELDS
        .iter()
        .filter_map(|field| {
            status.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                (name == *field).then(|| format!("{field}={}", value.trim()))
            })
        })
        .collect()
}

/// Highest capability number the kernel knows. Read once from `/proc/sys/kernel/cap_last_cap`;
/// when `/proc` is not mounted (inside a fresh root) it is found by asking `PR_CAPBSET_READ`
/// until the kernel answers `EINVAL`.
pub fn last_cap() -> u32 {
    static LAST: OnceLock<u32> = OnceLock::new();
    *LAST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(probe_last_cap)
    })
}

fn probe_last_cap() -> u32 {
    let mut cap: u32 = 0;
    // Capability numbers fit in the 64-bit kernel masks.
    while cap < 63 {
        // SAFETY: PR_CAPBSET_READ takes an integer and reads no memory.
        let known = unsafe { libc::prctl(libc::PR_CAPBSET_READ, libc::c_ulong::from(cap + 1)) };
        if known < 0 {
            break;
        }
        cap += 1;
    }
    cap
}

/// `PR_CAPBSET_DROP` by number. rustix only names the capabilities it was built with, and the
/// kernel may know newer ones, so the raw prctl is used.
fn drop_from_bounding_set(cap: u32) -> Result<(), LinuxError> {
    // SAFETY: PR_CAPBSET_DROP takes an integer and reads no memory.
    let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap)) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    // EINVAL: the kernel does not know this capability, so it cannot be held.
    if err.raw_os_error() == Some(libc::EINVAL) {
        return Ok(());
    }
    Err(LinuxError::io(
        format!("prctl(PR_CAPBSET_DROP, {cap})"),
        err,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_picks_the_capability_lines() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\n\
                      CapEff:\t000001ffffffffff\nCapBnd:\t000001ffffffffff\n\
                      CapAmb:\t0000000000000000\nNoNewPrivs:\t0\nSeccomp:\t0\n";
        assert_eq!(
            capabilities_summary_from_status(status),
            [
                "CapInh=0000000000000000",
                "CapPrm=000001ffffffffff",
                "CapEff=000001ffffffffff",
                "CapBnd=000001ffffffffff",
                "CapAmb=0000000000000000",
                "NoNewPrivs=0",
            ]
        );
    }

    #[test]
    fn last_cap_agrees_with_the_bounding_set_probe() {
        assert_eq!(last_cap(), probe_last_cap());
    }
}

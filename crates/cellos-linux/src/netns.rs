//! The cell's network: a fresh network namespace with only `lo`, brought up by init.
//!
//! We use the classic `SIOCSIFFLAGS` ioctl on an `AF_INET` socket rather than rtnetlink: it is
//! two system calls, needs no netlink message encoding (no crate in our dependency set does
//! rtnetlink without an async runtime), and is exactly what `ip link set lo up` amounts to.
//! nix has no wrapper for setting interface flags, hence the raw ioctl.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::error::LinuxError;

/// Bring the loopback interface of the current network namespace up.
pub fn loopback_up() -> Result<(), LinuxError> {
    // SAFETY: plain socket creation; the fd is owned below.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(LinuxError::last_os_error("socket for loopback setup"));
    }
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: valid socket and ifreq for the duration of the calls.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(LinuxError::last_os_error("read flags of lo"));
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(LinuxError::last_os_error("bring lo up"));
        }
    }
    Ok(())
}

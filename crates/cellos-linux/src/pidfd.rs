//! Signalling cell processes through pidfds only.
//!
//! A pid names whatever process holds it now: "check its start time, then `kill(pid)`" races
//! with the pid being recycled in between. A pidfd names one process for as long as the
//! descriptor lives: signals sent through it reach that process or fail with `ESRCH`. The
//! supervisor's own children come with one from the clone (`CLONE_PIDFD`); a process known
//! only from a run record is opened here first and its start time compared after, which
//! proves the descriptor is the recorded process (it held the pid from its start, recorded
//! earlier, until after the open).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use rustix::process::{Pid, PidfdFlags, Signal};

use crate::error::LinuxError;
use crate::record::process_start_time;

/// A pidfd for `pid` if it is still the process that started at `start` (clock ticks since
/// boot, as recorded); `None` when it is gone or the pid now belongs to another process.
pub fn open_verified(pid: i32, start: u64) -> Result<Option<OwnedFd>, LinuxError> {
    let Some(target) = Pid::from_raw(pid) else {
        return Ok(None);
    };
    let pidfd = match rustix::process::pidfd_open(target, PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::SRCH) => return Ok(None),
        Err(rustix::io::Errno::NOSYS) => {
            return Err(LinuxError::missing(
                "pidfd_open(2)",
                "run on Linux 5.3 or newer (cells are signalled through pidfds only)",
            ))
        }
        Err(e) => {
            return Err(LinuxError::errno(
                format!("pidfd_open {pid}"),
                e.raw_os_error(),
            ))
        }
    };
    Ok((process_start_time(pid) == Some(start)).then_some(pidfd))
}

/// Send `signal` to the process of `pidfd`; `ESRCH` once it has exited.
pub fn signal(pidfd: impl AsFd, signal: i32) -> std::io::Result<()> {
    let signal = Signal::from_raw(signal).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{signal} is not a signal"),
        )
    })?;
    rustix::process::pidfd_send_signal(pidfd, signal).map_err(Into::into)
}

/// Wait up to `timeout` for the process of `pidfd` to exit (a pidfd polls readable then);
/// whether it did.
pub fn wait_exit(pidfd: impl AsFd, timeout: Duration) -> bool {
    // Rounded up, so a timed-out poll is past the deadline.
    let ms = i32::try_from(timeout.as_millis() + 1).unwrap_or(i32::MAX);
    loop {
        let mut pfd = libc::pollfd {
            fd: pidfd.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n >= 0 {
            return n > 0;
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command};

    fn sleeper() -> Child {
        Command::new("sleep").arg("30").spawn().unwrap()
    }

    fn still_running(child: &mut Child) -> bool {
        child.try_wait().unwrap().is_none()
    }

    #[test]
    fn a_process_whose_start_time_differs_from_the_record_is_not_opened() {
        let mut child = sleeper();
        let pid = child.id() as i32;
        let start = process_start_time(pid).unwrap();
        assert!(open_verified(pid, start + 1).unwrap().is_none());
        assert!(still_running(&mut child));
        let pidfd = open_verified(pid, start)
            .unwrap()
            .expect("the recorded process");
        signal(&pidfd, libc::SIGKILL).unwrap();
        assert!(wait_exit(&pidfd, Duration::from_secs(5)));
        child.wait().unwrap();
    }

    #[test]
    fn a_pidfd_outlives_its_process_and_never_reaches_the_next_holder_of_the_pid() {
        let mut child = sleeper();
        let pid = child.id() as i32;
        let pidfd = open_verified(pid, process_start_time(pid).unwrap())
            .unwrap()
            .unwrap();
        signal(&pidfd, libc::SIGKILL).unwrap();
        child.wait().unwrap();
        // Reaped: the pid may now be handed to anyone; the pidfd still names the dead process.
        let err = signal(&pidfd, libc::SIGTERM).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ESRCH));
        assert!(open_verified(pid, 0).unwrap().is_none());
    }

    #[test]
    fn waiting_on_a_live_process_times_out() {
        let mut child = sleeper();
        let pid = child.id() as i32;
        let pidfd = open_verified(pid, process_start_time(pid).unwrap())
            .unwrap()
            .unwrap();
        assert!(!wait_exit(&pidfd, Duration::from_millis(50)));
        assert!(still_running(&mut child));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

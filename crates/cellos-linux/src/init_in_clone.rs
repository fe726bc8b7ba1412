//! Running the cell's init in the clone itself, without exec.
//!
//! Exec'ing an init binary costs a whole program load (kernel exec, dynamic linking, libc and
//! runtime start-up): most of a millisecond, paid before the workload can start. When the
//! cloning process is single-threaded, the fork-like clone is an ordinary copy whose heap and
//! locks are consistent, so it can run init directly. With more than one thread, another one
//! may hold a lock (malloc's, stdio's) at the moment of the clone and the copy could deadlock
//! on it: such a process must exec the init binary (see [`crate::clone::InitMode`]).
//!
//! The clone's memory is a copy of the supervisor's, event-signing key included. Before it
//! runs init it makes itself what a freshly exec'd init would be, and less readable:
//! - **not dumpable**, and its address space still belongs to the host user namespace (it was
//!   never exec'd inside the cell), so nothing in the cell, not even the cell's root, can
//!   ptrace it, read its `/proc/1/{mem,environ,maps}` or make it dump core;
//! - its argv and environment strings, which `/proc/1/cmdline` shows to anyone, are
//!   overwritten, and its environment emptied;
//! - signal handlers the supervisor installed are reset to their defaults, as exec would;
//! - it leaves with `_exit`, even on a panic, so it never runs the supervisor's exit handlers
//!   or unwinds into the supervisor's frames.

use std::ops::Range;
use std::sync::OnceLock;

use zeroize::Zeroize;

use crate::protocol::Handoff;

/// The name init shows in `/proc/1/comm` and `/proc/1/cmdline`, as if exec'd from
/// `cellos-cell-init`.
const INIT_NAME: &[u8] = b"cellos-cell-init\0";

/// Whether the calling process has exactly one thread. `/proc/self/task` links one entry per
/// thread besides `.` and `..`, so its link count is two more than the number of threads. If
/// we are the only thread, no other can appear before our clone: only we could start one.
pub fn single_threaded() -> bool {
    rustix::fs::stat("/proc/self/task").is_ok_and(|st| st.st_nlink == 3)
}

/// Where this process's argv and environment strings live: the memory `/proc/PID/cmdline`
/// and `/proc/PID/environ` read.
#[derive(Debug, Clone)]
pub struct ProcessStrings {
    args: Range<usize>,
    env: Range<usize>,
}

impl ProcessStrings {
    /// This process's, read once from `/proc/self/stat` (fields 48 to 51); `None` if the
    /// kernel does not report them, in which case init cannot run in the clone.
    pub fn of_self() -> Option<&'static ProcessStrings> {
        static STRINGS: OnceLock<Option<ProcessStrings>> = OnceLock::new();
        STRINGS
            .get_or_init(|| {
                let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
                ProcessStrings::parse(&stat)
            })
            .as_ref()
    }

    fn parse(stat: &str) -> Option<ProcessStrings> {
        // The command name (field 2) may hold spaces and parentheses: fields after the last
        // ')' start at field 3, so field 48 is the 46th of them.
        let rest = &stat[stat.rfind(')')? + 1..];
        let mut fields = rest.split_ascii_whitespace().skip(45);
        let mut next = || fields.next()?.parse::<usize>().ok();
        let (arg_start, arg_end, env_start, env_end) = (next()?, next()?, next()?, next()?);
        let sane = arg_start < arg_end && arg_end <= env_start && env_start <= env_end;
        sane.then_some(ProcessStrings {
            args: arg_start..arg_end,
            env: env_start..env_end,
        })
    }

    /// Overwrite the argv strings with init's name and zero the environment strings.
    ///
    /// # Safety
    /// The ranges must be this process's own (from [`ProcessStrings::of_self`]), and nothing
    /// may hold references into those strings while they are overwritten.
    unsafe fn scrub(&self) {
        for (range, title) in [(&self.args, INIT_NAME), (&self.env, &b""[..])] {
            // SAFETY: the kernel reported these bytes as our argv/environment strings, which
            // live in our (writable) stack mapping; the caller guarantees no live references.
            let bytes =
                unsafe { std::slice::from_raw_parts_mut(range.start as *mut u8, range.len()) };
            bytes.zeroize();
            let n = title.len().min(bytes.len().saturating_sub(1));
            bytes[..n].copy_from_slice(&title[..n]);
        }
    }
}

/// Become the cell's init in the clone and never return. Called by [`crate::clone`] in the
/// freshly cloned child of a single-threaded process, once it holds its final ids, with the
/// plan in its copy of the supervisor's memory.
///
/// # Safety
/// Only in that child: the process must be single-threaded and a fork-like copy of the
/// process that read `strings`.
pub unsafe fn become_init(strings: &ProcessStrings, handoff: &Handoff) -> ! {
    // SAFETY: prctl calls on this process only.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        libc::prctl(libc::PR_SET_NAME, INIT_NAME.as_ptr(), 0, 0, 0);
    }
    // SAFETY: single-threaded copy of the process that read `strings`; the supervisor frames
    // below us hold no references into argv or the environment while init runs.
    unsafe {
        strings.scrub();
        libc::clearenv();
    }
    reset_signal_handlers();
    // SAFETY: our copy of the supervisor's plan, moved out by value: this process never
    // returns to the frame that owns it (it ends in `_exit` below), so it is dropped once, by
    // init, which zeroises the secrets in it.
    let handoff = unsafe { std::ptr::read(handoff) };
    let code = std::panic::catch_unwind(|| crate::init::init_main(Some(handoff))).unwrap_or(1);
    // SAFETY: end this process without the supervisor's exit handlers or buffered output.
    unsafe { libc::_exit(code) }
}

/// Reset every signal the supervisor handles to its default disposition, as exec does.
/// Ignored signals stay ignored (exec keeps them too), and the Rust runtime's SIGSEGV/SIGBUS
/// stack-overflow handlers stay: they describe this very stack.
fn reset_signal_handlers() {
    for signo in 1..=libc::SIGRTMAX() {
        if matches!(
            signo,
            libc::SIGKILL | libc::SIGSTOP | libc::SIGSEGV | libc::SIGBUS
        ) {
            continue;
        }
        // SAFETY: reading and resetting this process's own signal dispositions; glibc refuses
        // its reserved real-time signals with EINVAL, which leaves them as they are.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signo, std::ptr::null(), &mut old) != 0 {
                continue;
            }
            if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(signo, &default, std::ptr::null_mut());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_strings_are_found_and_hold_our_argv_and_environment() {
        let strings = ProcessStrings::of_self().expect("kernel reports arg/env ranges");
        // SAFETY: reading (not writing) our own argv/environment strings.
        let args = unsafe {
            std::slice::from_raw_parts(strings.args.start as *const u8, strings.args.len())
        };
        let argv0 = std::env::args_os().next().unwrap();
        use std::os::unix::ffi::OsStrExt;
        assert!(args.starts_with(argv0.as_bytes()));
        assert!(strings.env.start >= strings.args.end);
    }

    #[test]
    fn a_command_name_with_parentheses_and_spaces_does_not_shift_the_fields() {
        let mut fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        fields[48 - 3] = "100".into();
        fields[49 - 3] = "200".into();
        fields[50 - 3] = "200".into();
        fields[51 - 3] = "300".into();
        let stat = format!("42 (a) b (c) {}", fields.join(" "));
        let parsed = ProcessStrings::parse(&stat).unwrap();
        assert_eq!(parsed.args, 100..200);
        assert_eq!(parsed.env, 200..300);
    }

    #[test]
    fn inconsistent_ranges_are_refused() {
        let mut fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        fields[48 - 3] = "300".into();
        fields[49 - 3] = "200".into();
        let stat = format!("42 (x) {}", fields.join(" "));
        assert!(ProcessStrings::parse(&stat).is_none());
    }

    #[test]
    fn the_test_harness_is_not_single_threaded_and_one_thread_links_three_task_entries() {
        let _other = std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_secs(1)));
        assert!(!single_threaded());
        let status = std::process::Command::new("sh")
            .args(["-c", "test \"$(stat -c %h /proc/self/task)\" = 3"])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

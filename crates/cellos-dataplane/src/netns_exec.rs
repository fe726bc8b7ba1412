//! Runs a network tool (`ip`, and `nft` for listings and scripts given as text) as a child
//! process, optionally inside another network namespace. nftables tables and pins are loaded
//! over netlink instead ([`crate::nftables`]); the Linux backend still configures links
//! with `ip`.
//!
//! The child joins the namespace itself with `setns(2)` in a `pre_exec` hook, between fork and
//! exec: the calling process and its threads never change namespace, and nothing depends on
//! `ip netns` names or on `nsenter`. The namespace arrives as an open descriptor, so it cannot
//! be swapped for another one between the caller's decision and the fork.

use std::io::Write as _;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};

/// Why a tool run failed; callers map it onto their own error with the fix that applies.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("wait for {program}: {source}")]
    Wait {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} {args} exited with {status}: {stderr}")]
    Failed {
        program: String,
        args: String,
        status: String,
        stderr: String,
    },
}

/// Runs `program args`, feeding `stdin`, inside `netns` when given; returns its stdout.
pub fn run_tool(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
    netns: Option<OwnedFd>,
) -> Result<String, ToolError> {
    let spawn_error = |source| ToolError::Spawn {
        program: program.to_owned(),
        source,
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(ns) = netns {
        // SAFETY: the hook runs in the forked child before exec and only calls setns(2),
        // which is async-signal-safe; it allocates nothing and touches no locks.
        unsafe {
            cmd.pre_exec(move || {
                nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)
            });
        }
    }
    let mut child = cmd.spawn().map_err(spawn_error)?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A write error means the tool exited early; its status and stderr say why.
        let _ = pipe.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().map_err(|source| ToolError::Wait {
        program: program.to_owned(),
        source,
    })?;
    if !out.status.success() {
        return Err(ToolError::Failed {
            program: program.to_owned(),
            args: args.join(" "),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

//! What each tool tells an agent: what it does, and what it may not do. An agent reads these to
//! choose a tool, so each names its limits and where refusals come from.

use crate::narrow;
use crate::profile::Profiles;

pub const CREATE: &str = "Create a sandbox: a disposable, kernel-isolated Linux cell from one of \
the operator's profiles, which stays up for sandbox_exec and the file tools until sandbox_destroy \
or its TTL. Returns the cell id and exactly what it may reach. You may narrow the profile (egress \
as host:port entries it already allows, a shorter ttlSeconds, lower limits) but never widen it: a \
request for more is refused, names the field and the limit, and is recorded in the cell's signed \
log. Optional initial files are written before it returns. It may not reach any network the \
profile (or your narrowing) does not list; everything runs as an unprivileged user.";

pub const EXEC: &str =
    "Run a command in a sandbox and wait for it: `command` is run by /bin/sh -c, \
or give `argv` to run a program without a shell; optional cwd, env, stdin (text) and timeoutMs. \
Returns stdout, stderr, the exit code or the signal, and the duration; a non-zero exit is a \
result, not an error. Output beyond 64 KiB per stream is cut, with a note saying how much is \
missing and how to read it from a file. It may not run longer than timeoutMs (at most, and by \
default, the profile's limit): on timeout its whole process tree is killed and the call is an \
error. A command has no privileges and reaches only the sandbox's network.";

pub const RUN: &str = "Run one command in a fresh sandbox that is destroyed afterwards: the \
inputs of sandbox_exec plus the profile and its narrowing (egress host:port, ttlSeconds, limits) \
and initial files. Returns what sandbox_exec returns and the id of the destroyed cell, whose \
evidence stays readable with sandbox_evidence. Nothing of the command survives the call; it may \
not widen the profile, run past timeoutMs, or reach anything the profile does not allow.";

pub const READ: &str = "Read a file from a sandbox, as UTF-8 text (the default) or base64 for \
binary content; a large file comes in parts of up to 1 MiB (offset, length), with a note saying \
what is left. Paths resolve inside the cell only: symlinks and `..` cannot reach the host. The \
read is recorded (path, size, SHA-256) in the signed log.";

pub const WRITE: &str = "Write a file into a sandbox, replacing it atomically: text, or base64 \
for binary content (encoding), with optional permission bits (mode). The file belongs to the \
sandbox's user. It may not write outside the cell, into read-only mounts, or more than 64 MiB. \
The write is recorded (path, size, SHA-256) in the signed log.";

pub const LIST: &str = "List a directory of a sandbox (default /): each entry's name, kind \
(file, directory, symlink, other), size, mode and modification time. Symlinks are listed, never \
followed out of the cell.";

pub const DESTROY: &str = "Destroy a sandbox: kill everything in it, remove it, and verify that \
nothing of it is left on the host (processes, mounts, cgroups, network). Returns whether it is \
residue-free. Idempotent; its evidence stays readable with sandbox_evidence.";

pub const EVIDENCE: &str = "What a sandbox did and was refused, read from the host's signed, \
hash-chained event log: admission, execs (argv, status, duration), files written and read \
(path, size, SHA-256), DNS queries permitted and refused, network flows allowed and denied, \
limits hit, violations, and its end. `chainVerified` says whether the whole log verified (every \
hash link and signature). Works for destroyed cells too. It cannot show another caller's cells.";

/// The server's instructions: the tools in one line, and each profile with what it grants.
pub fn instructions(profiles: &Profiles) -> String {
    let mut text = String::from(
        "CellOS sandboxes: disposable, kernel-isolated Linux cells with signed evidence. Use \
         `run` for one command, or sandbox_create then sandbox_exec / the file tools, and \
         sandbox_destroy when done. A call may narrow a profile, never widen it. Profiles:\n",
    );
    for profile in profiles.iter() {
        let limits = profile.template.cell_limits();
        let ttl = profile
            .template
            .lifetime
            .as_ref()
            .and_then(|l| l.ttl_seconds);
        text.push_str(&format!(
            "- {}: {}. Reach: {}. Memory: {}. TTL: {}. Longest exec: {} ms.\n",
            profile.name,
            profile.description,
            narrow::describe_reach(&profile.template.authority.egress_rules),
            limits
                .memory_max_bytes
                .map_or("unbounded".into(), |b| format!("{} MiB", b >> 20)),
            ttl.map_or("none".into(), |s| format!("{s} s")),
            profile.max_exec_timeout_ms,
        ));
    }
    text
}

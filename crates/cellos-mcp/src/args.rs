//! The tools' arguments. Their JSON Schemas, which `list_tools` shows, are generated from these
//! types, and the same types parse each call, so the schema and the parser cannot drift. Each
//! tool's type lists its fields itself (no `serde(flatten)`, which loses the path of a wrong
//! field), so a mistake is named and unknown fields are refused.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

/// How a profile may be narrowed (never widened): the narrowing fields of `sandbox_create`
/// and `run`.
#[derive(Debug, Clone, Default)]
pub struct NarrowArgs {
    pub egress: Option<Vec<String>>,
    pub ttl_seconds: Option<u64>,
    pub limits: Option<LimitsArg>,
}

/// What to run (exactly one of `command` and `argv`): the command fields of `sandbox_exec`
/// and `run`.
#[derive(Debug, Clone, Default)]
pub struct CommandArgs {
    pub command: Option<String>,
    pub argv: Option<Vec<String>>,
    pub cwd: Option<String>,
    pub env: BTreeMap<String, String>,
    pub stdin: Option<String>,
    pub timeout_ms: Option<u64>,
}

/// Cgroup limits, each at most the profile's.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitsArg {
    /// Memory limit in bytes (no swap).
    #[serde(default)]
    pub memory_max_bytes: Option<u64>,
    /// Most processes and threads at once.
    #[serde(default)]
    pub pids_max: Option<u64>,
    /// CPU bandwidth in millicores (1000 = one core).
    #[serde(default)]
    pub cpu_millis: Option<u64>,
}

/// How file content is carried in a tool call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// UTF-8 text.
    #[default]
    Text,
    /// Standard base64 (RFC 4648), for binary content.
    Base64,
}

/// A file to place in the cell.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileArg {
    /// Absolute path inside the cell, e.g. `/work/main.py`.
    pub path: String,
    /// The content, as `encoding` says.
    pub content: String,
    #[serde(default)]
    pub encoding: Encoding,
    /// Permission bits, e.g. 493 (0o755) for a script; default 0o644.
    #[serde(default)]
    pub mode: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateArgs {
    /// Name of an operator-declared profile (the server's instructions list them).
    pub profile: String,
    /// Destinations the cell may reach, as `host:port` (`pypi.org:443`); each must be covered
    /// by the profile's egress. `[]` means no network. Absent: everything the profile allows.
    #[serde(default)]
    pub egress: Option<Vec<String>>,
    /// Destroy the cell this many seconds after creation; at most the profile's TTL.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// Lower cgroup limits than the profile's.
    #[serde(default)]
    pub limits: Option<LimitsArg>,
    /// Files written into the cell before this call returns.
    #[serde(default)]
    pub files: Vec<FileArg>,
}

impl CreateArgs {
    pub fn narrowing(&self) -> NarrowArgs {
        NarrowArgs {
            egress: self.egress.clone(),
            ttl_seconds: self.ttl_seconds,
            limits: self.limits.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecArgs {
    /// The cell's id, from `sandbox_create`.
    pub id: String,
    /// A shell command line, run by `/bin/sh -c`.
    #[serde(default)]
    pub command: Option<String>,
    /// The program and its arguments, run without a shell.
    #[serde(default)]
    pub argv: Option<Vec<String>>,
    /// Working directory inside the cell.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Environment variables added for this command.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Text written to the command's stdin (then closed); absent: stdin is empty.
    #[serde(default)]
    pub stdin: Option<String>,
    /// Kill the command's whole process tree after this long; at most, and by default, the
    /// profile's longest exec.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

impl ExecArgs {
    pub fn command(&self) -> CommandArgs {
        CommandArgs {
            command: self.command.clone(),
            argv: self.argv.clone(),
            cwd: self.cwd.clone(),
            env: self.env.clone(),
            stdin: self.stdin.clone(),
            timeout_ms: self.timeout_ms,
        }
    }
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunArgs {
    /// Name of an operator-declared profile (the server's instructions list them).
    pub profile: String,
    /// A shell command line, run by `/bin/sh -c`.
    #[serde(default)]
    pub command: Option<String>,
    /// The program and its arguments, run without a shell.
    #[serde(default)]
    pub argv: Option<Vec<String>>,
    /// Working directory inside the cell.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Environment variables added for this command.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Text written to the command's stdin (then closed); absent: stdin is empty.
    #[serde(default)]
    pub stdin: Option<String>,
    /// Kill the command's whole process tree after this long; at most, and by default, the
    /// profile's longest exec.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Destinations the cell may reach, as `host:port`; each must be covered by the profile's
    /// egress. `[]` means no network. Absent: everything the profile allows.
    #[serde(default)]
    pub egress: Option<Vec<String>>,
    /// Destroy the cell this many seconds after creation; at most the profile's TTL.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// Lower cgroup limits than the profile's.
    #[serde(default)]
    pub limits: Option<LimitsArg>,
    /// Files written into the cell before the command runs.
    #[serde(default)]
    pub files: Vec<FileArg>,
}

impl RunArgs {
    pub fn narrowing(&self) -> NarrowArgs {
        NarrowArgs {
            egress: self.egress.clone(),
            ttl_seconds: self.ttl_seconds,
            limits: self.limits.clone(),
        }
    }

    pub fn command(&self) -> CommandArgs {
        CommandArgs {
            command: self.command.clone(),
            argv: self.argv.clone(),
            cwd: self.cwd.clone(),
            env: self.env.clone(),
            stdin: self.stdin.clone(),
            timeout_ms: self.timeout_ms,
        }
    }
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadFileArgs {
    pub id: String,
    /// Absolute path inside the cell.
    pub path: String,
    /// `text` (the default; refused for content that is not UTF-8) or `base64`.
    #[serde(default)]
    pub encoding: Encoding,
    /// First byte to return (default 0), to read a large file in parts.
    #[serde(default)]
    pub offset: Option<u64>,
    /// Most bytes to return (default and cap: the server's, 1 MiB).
    #[serde(default)]
    pub length: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WriteFileArgs {
    /// The cell's id, from `sandbox_create`.
    pub id: String,
    /// Absolute path inside the cell, e.g. `/work/main.py`.
    pub path: String,
    /// The content, as `encoding` says.
    pub content: String,
    #[serde(default)]
    pub encoding: Encoding,
    /// Permission bits, e.g. 493 (0o755) for a script; default 0o644.
    #[serde(default)]
    pub mode: Option<u32>,
}

impl WriteFileArgs {
    pub fn file(&self) -> FileArg {
        FileArg {
            path: self.path.clone(),
            content: self.content.clone(),
            encoding: self.encoding,
            mode: self.mode,
        }
    }
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListFilesArgs {
    pub id: String,
    /// Absolute directory path inside the cell (default `/`).
    #[serde(default)]
    pub path: Option<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdArgs {
    /// The cell's id, from `sandbox_create`.
    pub id: String,
}

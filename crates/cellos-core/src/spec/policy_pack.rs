//! `kind: PolicyPack`: the rules an operator imposes on every admitted cell.
//!
//! The document lives with the other spec documents so that one parser and one schema cover
//! all kinds; `crate::policy` evaluates it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::document::Metadata;

/// `kind: PolicyPack`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyPackDocument {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: Metadata,
    pub spec: PolicyPackSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyPackSpec {
    /// DNS-label-like id, reported in every violation.
    pub id: String,
    /// Free-form version (e.g. `1.2.0`), reported as `id@version`.
    pub version: String,
    #[serde(default)]
    pub enforcement: Enforcement,
    /// A pack without any rule is audit-only: it is consulted and recorded but never denies.
    #[serde(default)]
    pub rules: PolicyRules,
}

/// Whether a violated rule stops the cell (`enforce`) or is only recorded (`audit`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Enforcement {
    #[default]
    Enforce,
    Audit,
}

/// The rules of a pack. An absent rule imposes nothing; a `max*` rule also requires the
/// spec to set the bounded value (an unset limit is unbounded, which no maximum allows).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyRules {
    /// Upper bound of `spec.lifetime.ttlSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ttl_seconds: Option<u64>,
    /// Upper bound of `spec.run.limits.memoryMaxBytes`; a number or a size string (`1Gi`).
    #[serde(
        default,
        deserialize_with = "super::byte_size::optional_bytes::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<super::document::ByteSize>")]
    pub max_memory_bytes: Option<u64>,
    /// Upper bound of `spec.run.timeoutMs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_timeout_ms: Option<u64>,
    /// Upper bound of `spec.run.limits.cpuMillis`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cpu_millis: Option<u64>,
    /// Upper bound of `spec.run.limits.pidsMax`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pids_max: Option<u64>,
    /// `spec.run.limits.memoryMaxBytes` and `pidsMax` must both be set.
    #[serde(default, skip_serializing_if = "is_false")]
    pub require_limits: bool,
    /// The spec must state its network intent: at least one egress rule, or an explicit
    /// `dnsAuthority` block (an empty one says "this cell deliberately reaches nothing").
    #[serde(default, skip_serializing_if = "is_false")]
    pub require_egress_declared: bool,
    /// No egress rule and no DNS allow-list entry at all.
    #[serde(default, skip_serializing_if = "is_false")]
    pub forbid_egress: bool,
    /// When set, every egress host and DNS allow-list entry must be covered by one of these
    /// patterns, and CIDR egress rules are not allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_egress_hosts: Option<Vec<String>>,
    /// When set, every `secretRefs` entry must be one of these names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_secret_refs: Option<Vec<String>>,
    /// `spec.run.secretDelivery` must be `file` (secrets never in the environment).
    #[serde(default, skip_serializing_if = "is_false")]
    pub require_file_secret_delivery: bool,
    /// A spec that reaches any host by name must say why in `dnsEgressJustification`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub require_dns_egress_justification: bool,
    /// Lower bound of the Landlock ABI a cell requires (`spec.filesystem.landlock.minAbi`,
    /// 1 when unset): `1` forbids cells that run without Landlock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_landlock_abi: Option<u32>,
    /// When set, every host path a cell binds (`filesystem.mounts[].source` and a
    /// `filesystem.workspace.source`) must resolve, symlinks and `..` included, to a path under
    /// one of these prefixes, and may be read-write only under a prefix that allows it. An
    /// empty list allows no host mounts at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_mount_sources: Option<Vec<MountSourceRule>>,
    /// When set, the kinds of root filesystem a cell may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_rootfs: Option<RootfsRules>,
    /// Upper bound of the workspace tmpfs (`filesystem.workspace.sizeBytes`, 64 MiB when
    /// unset); a number or a size string (`256Mi`).
    #[serde(
        default,
        deserialize_with = "super::byte_size::optional_bytes::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<super::document::ByteSize>")]
    pub max_workspace_bytes: Option<u64>,
}

/// One allowed host mount prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MountSourceRule {
    /// Absolute host path; a source is under it when its resolved path is this path or lies
    /// below it (compared component by component, after resolving this prefix too).
    pub prefix: String,
    /// Whether sources under this prefix may be bound read-write (default: read-only only).
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_write: bool,
}

/// The root filesystems a pack allows. Each kind is refused unless named here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RootfsRules {
    /// `rootfs: host` (read-only binds of the host's system directories).
    #[serde(default, skip_serializing_if = "is_false")]
    pub host: bool,
    /// `rootfs: {path}` under one of these directories (resolved like mount sources).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path_prefixes: Vec<String>,
    /// `rootfs: {ociLayout, ref}` whose layout directory lies under one of these stores.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub oci_stores: Vec<String>,
    /// `rootfs: {ociLayout, ref}` whose `ref` is one of these `sha256:` digests, wherever the
    /// layout is (the digest fixes the content).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub oci_digests: Vec<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl PolicyRules {
    /// True when the pack sets no rule at all (such a pack is audit-only).
    pub fn is_empty(&self) -> bool {
        *self == PolicyRules::default()
    }
}

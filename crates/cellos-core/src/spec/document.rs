//! The document types: `ExecutionCell`, `PolicyPack` and `Formation` (apiVersion `cellos.io/v1`).
//!
//! Parsing is strict (`deny_unknown_fields` everywhere) so that a typo in a security-relevant
//! field is an error instead of a silently ignored key. Field names are camelCase on the wire
//! and keep the original system's names where it had one.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The only apiVersion this build understands.
pub const API_VERSION: &str = "cellos.io/v1";

/// Object metadata shared by every document kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// `kind: ExecutionCell`: one disposable cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecutionCellDocument {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: Metadata,
    pub spec: ExecutionCellSpec,
}

/// Everything a cell may touch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecutionCellSpec {
    /// DNS-label-like id, unique per run.
    pub id: String,
    /// The workload. Without it the cell is a session cell: it stays up, driven by execs and
    /// file operations, until it is deleted, its TTL runs out or it sits idle too long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunSpec>,
    /// The cell's cgroup limits; a cell with `run` may give them as `run.limits` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<RunLimits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<Lifetime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<FilesystemSpec>,
    #[serde(default)]
    pub authority: AuthorityBundle,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<ExportSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<TelemetrySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<Correlation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<PlacementSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<WorkloadIdentity>,
}

impl ExecutionCellSpec {
    /// The Landlock ABI the kernel must offer for this cell to run.
    pub fn landlock_min_abi(&self) -> u32 {
        self.filesystem
            .as_ref()
            .and_then(|fs| fs.landlock)
            .map_or(super::DEFAULT_MIN_LANDLOCK_ABI, |l| l.min_abi)
    }

    /// Whether this is a session cell (no `run`: it lives until deleted, TTL or idle).
    pub fn is_session(&self) -> bool {
        self.run.is_none()
    }

    /// The cell's cgroup limits, from `limits` or `run.limits` (validation allows one).
    pub fn cell_limits(&self) -> RunLimits {
        self.limits
            .clone()
            .or_else(|| self.run.as_ref().and_then(|r| r.limits.clone()))
            .unwrap_or_default()
    }

    /// The spec path the cell's limits were given at.
    pub fn limits_path(&self) -> &'static str {
        if self.limits.is_some() {
            "spec.limits"
        } else {
            "spec.run.limits"
        }
    }

    /// How secrets reach the workload and every exec (a session cell: as files).
    pub fn secret_delivery(&self) -> SecretDeliveryMode {
        self.run
            .as_ref()
            .map_or(SecretDeliveryMode::File, |r| r.secret_delivery)
    }

    /// The workload's `timeoutMs` (session cells have none: each exec has its own).
    pub fn timeout_ms(&self) -> Option<u64> {
        self.run.as_ref().and_then(|r| r.timeout_ms)
    }

    /// The workload's argv (empty for a session cell).
    pub fn argv(&self) -> &[String] {
        self.run.as_ref().map_or(&[], |r| r.argv.as_slice())
    }
}

/// How secrets reach the workload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SecretDeliveryMode {
    /// `/run/secrets/<KEY>` on a private tmpfs (the default; never in the environment).
    #[default]
    File,
    /// `KEY=value` in the workload's environment; must be asked for explicitly and is recorded.
    Env,
}

/// The workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunSpec {
    pub argv: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Non-secret environment. Secrets go through `authority.secretRefs`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Wall-clock budget of the workload, counted from its exec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<RunLimits>,
    #[serde(default)]
    pub secret_delivery: SecretDeliveryMode,
}

/// Resource limits enforced by cgroups.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunLimits {
    /// Bytes, as a number or a size string (`256Mi`); always a plain number once parsed.
    #[serde(
        default,
        deserialize_with = "super::byte_size::optional_bytes::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<ByteSize>")]
    pub memory_max_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_max: Option<u64>,
    /// CPU bandwidth in millicores (1000 = one full core).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u64>,
}

/// Bounds the whole cell, from create to destroy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Lifetime {
    /// Destroy the cell this long after it was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// Destroy a session cell after this long with no exec or file operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_seconds: Option<u64>,
}

/// The cell's filesystem view.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilesystemSpec {
    #[serde(default)]
    pub rootfs: RootfsSpec,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<MountSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<WorkspaceSpec>,
    /// Write-xor-execute: the workload may not execute files in the places it can write
    /// (`/tmp`, the workspace, read-write mounts). By default it may, so it can run what it
    /// builds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_exec_writable: bool,
    /// What the cell requires of Landlock; absent means Landlock is required (any ABI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub landlock: Option<LandlockSpec>,
}

/// The Landlock requirement of a cell. CellOS always applies the best ABI the kernel offers
/// (up to the highest it knows); this says how low the kernel may go before the cell is
/// refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LandlockSpec {
    /// The lowest kernel Landlock ABI the cell runs under: `1` (the default) requires
    /// Landlock, `3` truncate rights, `5` ioctl rights on devices. `0` lets the cell run on a
    /// kernel without Landlock, confined by its other layers only, and the evidence says so.
    pub min_abi: u32,
}

/// `rootfs: host`, `rootfs: {path}` or `rootfs: {ociLayout, ref}`.
///
/// Serde impls are in `rootfs.rs`: a derived untagged enum would answer every mistake with
/// "data did not match any variant", hiding which field was wrong.
#[derive(Debug, Clone, Default, PartialEq, Eq, JsonSchema)]
#[schemars(untagged)]
pub enum RootfsSpec {
    /// The literal string `host`: read-only binds of the host's system directories.
    #[default]
    #[schemars(schema_with = "super::rootfs::host_literal_schema")]
    Host,
    Path(RootfsPath),
    Oci(RootfsOci),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RootfsPath {
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RootfsOci {
    /// Directory holding an OCI image layout (`oci-layout`, `index.json`, `blobs/`).
    pub oci_layout: String,
    /// Reference inside the layout (`org.opencontainers.image.ref.name`) or a `sha256:` digest.
    #[serde(rename = "ref")]
    pub reference: String,
}

/// A declared host path bound into the cell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MountSpec {
    pub source: String,
    pub target: String,
    /// Read-only unless explicitly `false`.
    #[serde(default = "default_true")]
    pub read_only: bool,
}

fn default_true() -> bool {
    true
}

/// The writable work area: a size-capped tmpfs, or a declared host directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkspaceSpec {
    pub target: String,
    /// Size cap of the tmpfs, as bytes (`1048576`) or a size string (`"64Mi"`);
    /// [`DEFAULT_WORKSPACE_BYTES`] when neither this nor `source` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<ByteSize>,
    /// A host directory to bind read-write instead of a tmpfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// Size of a workspace tmpfs whose spec gives no `sizeBytes`.
pub const DEFAULT_WORKSPACE_BYTES: u64 = 64 << 20;

/// A byte count written as a number or a string with a unit (`64Mi`, `1G`, `512k`).
///
/// `Deserialize` is written by hand in `byte_size.rs` for clear error messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum ByteSize {
    Bytes(u64),
    Text(String),
}

/// What the cell is authorised to reach.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorityBundle {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_refs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress_rules: Vec<EgressRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_authority: Option<DnsAuthority>,
    /// Why the cell needs DNS egress; some policy packs require it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_egress_justification: Option<String>,
}

/// One allowed destination: a hostname (possibly `*.`-wildcarded) or a CIDR, on a port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    pub port: u32,
    #[serde(default)]
    pub protocol: EgressProtocol,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EgressProtocol {
    #[default]
    Tcp,
    Udp,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DnsAuthority {
    /// Literal names, or names with one leading `*.` label (sub-names only, never the apex).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostname_allowlist: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExportSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<ExportArtifact>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<ExportTarget>,
}

/// A file inside the cell to copy out after the workload ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExportArtifact {
    pub name: String,
    /// Absolute path inside the cell.
    pub path: String,
    /// Name of an entry in `export.targets`; the local export directory when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExportTarget {
    pub name: String,
    pub kind: ExportTargetKind,
    /// Directory for `localPath` targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Base URL for `http` targets (PUT `<url>/<cell-id>/<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Bucket for `s3` targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// `s3` targets on an S3-compatible service other than AWS: its base URL
    /// (`https://minio.internal:9000`); path-style requests are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Names of host secrets (resolved by the host's secret brokers and never delivered into
    /// the cell) that authenticate the push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<ExportCredentials>,
    /// Further attempts after a failed one (`http` and `s3`; default 3). Between attempts the
    /// artifact waits on the host, so nothing is lost while the destination is down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Time limit of one attempt in seconds (`http` and `s3`; default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
}

/// Secret names holding an export target's credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExportCredentials {
    /// `s3`: the access key id (SigV4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id_ref: Option<String>,
    /// `s3`: the secret access key (SigV4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key_ref: Option<String>,
    /// `s3`: a session token, for temporary credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token_ref: Option<String>,
    /// `http`: the whole `Authorization` header value (`Bearer ...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_ref: Option<String>,
}

impl ExportCredentials {
    /// Every secret name referenced, with its field name.
    pub fn refs(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("accessKeyIdRef", &self.access_key_id_ref),
            ("secretAccessKeyRef", &self.secret_access_key_ref),
            ("sessionTokenRef", &self.session_token_ref),
            ("authorizationRef", &self.authorization_ref),
        ]
        .into_iter()
        .filter_map(|(field, value)| value.as_deref().map(|v| (field, v)))
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum ExportTargetKind {
    LocalPath,
    Http,
    S3,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TelemetrySpec {
    #[serde(default)]
    pub enabled: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Correlation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack_version: Option<String>,
}

/// Where a cell may run; matched against host labels by schedulers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlacementSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadIdentity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

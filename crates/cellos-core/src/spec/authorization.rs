//! `kind: AuthorizationPolicy`: who may do what on a shared server, which policy packs their
//! cells are admitted against, and how much they may use.
//!
//! It extends the original shape (`subjects`, `allowedPools`, `allowedPolicyPacks`,
//! `maxCellsPerHour`, one tenant per document) to one entry per subject: a subject (a token's
//! subject, or `uid:N` for a Unix-socket peer) belongs to a tenant, holds scopes, and its cells
//! are admitted against the packs named and counted against the tenant's quotas. Scopes are
//! flat: `admin` implies every other; none implies another.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::document::Metadata;

/// `kind: AuthorizationPolicy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicyDocument {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: Metadata,
    pub spec: AuthorizationPolicySpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicySpec {
    /// DNS-label-like id of this policy.
    pub id: String,
    pub version: String,
    /// Every subject the server knows; any other caller is refused.
    pub subjects: Vec<SubjectGrant>,
}

/// What one subject may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubjectGrant {
    /// A token's subject (`cellos token create --subject NAME`) or `uid:N`.
    pub name: String,
    /// The tenant whose cells, execs, files and events this subject sees (default: its name).
    /// Subjects of one tenant share its cells and its quotas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub scopes: Vec<Scope>,
    /// Ids of the policy packs every cell of this subject is admitted against, on top of the
    /// server's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_packs: Vec<String>,
    /// Warm-pool profiles this subject may draw from (none: no pooled cells).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_pools: Vec<String>,
    #[serde(default, skip_serializing_if = "Quotas::is_unbounded")]
    pub quotas: Quotas,
}

impl SubjectGrant {
    /// The tenant this subject acts for.
    pub fn tenant(&self) -> &str {
        self.tenant.as_deref().unwrap_or(&self.name)
    }

    /// Whether the subject holds `scope` (directly, or through `admin`).
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes
            .iter()
            .any(|s| *s == scope || *s == Scope::Admin)
    }
}

/// One permission.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum Scope {
    #[serde(rename = "cells:create")]
    CellsCreate,
    #[serde(rename = "cells:read")]
    CellsRead,
    #[serde(rename = "cells:exec")]
    CellsExec,
    #[serde(rename = "cells:files")]
    CellsFiles,
    #[serde(rename = "cells:delete")]
    CellsDelete,
    #[serde(rename = "events:read")]
    EventsRead,
    #[serde(rename = "formations:write")]
    FormationsWrite,
    /// Everything, including other tenants' cells and the token store.
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 8] = [
        Scope::CellsCreate,
        Scope::CellsRead,
        Scope::CellsExec,
        Scope::CellsFiles,
        Scope::CellsDelete,
        Scope::EventsRead,
        Scope::FormationsWrite,
        Scope::Admin,
    ];

    /// The scope as written in documents and problem types (`cells:create`).
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::CellsCreate => "cells:create",
            Scope::CellsRead => "cells:read",
            Scope::CellsExec => "cells:exec",
            Scope::CellsFiles => "cells:files",
            Scope::CellsDelete => "cells:delete",
            Scope::EventsRead => "events:read",
            Scope::FormationsWrite => "formations:write",
            Scope::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| {
                let known: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown scope {text:?}; scopes are {}", known.join(", "))
            })
    }
}

/// Limits of one tenant; an absent limit is unbounded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Quotas {
    /// Cells alive at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent_cells: Option<u32>,
    /// Cells created in any sliding hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cells_per_hour: Option<u32>,
    /// Sum of the memory limits of the tenant's live cells; a number or a size string
    /// (`8Gi`). A cell without a memory limit cannot be created under this quota.
    #[serde(
        default,
        deserialize_with = "super::byte_size::optional_bytes::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<super::document::ByteSize>")]
    pub memory_bytes: Option<u64>,
}

impl Quotas {
    pub fn is_unbounded(&self) -> bool {
        *self == Quotas::default()
    }
}

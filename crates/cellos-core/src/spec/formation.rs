//! `kind: Formation`: cells that work together, each authorised by another.
//!
//! One coordinator holds the widest authority; every member names the member (or the
//! coordinator) that authorises it, and its authority must be a subset of that authoriser's.
//! Because every member has exactly one authoriser and every chain must end at the
//! coordinator, the graph is a tree rooted at the coordinator, and scope only narrows along it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::document::{ExecutionCellSpec, Metadata};

/// `kind: Formation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FormationDocument {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: Metadata,
    pub spec: FormationSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FormationSpec {
    /// DNS-label-like id of the formation.
    pub id: String,
    pub coordinator: FormationCoordinator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<FormationMember>,
}

/// The root of the authorisation tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FormationCoordinator {
    /// Name other members use in `authorizedBy`.
    pub name: String,
    pub cell: ExecutionCellSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FormationMember {
    pub name: String,
    /// Name of the coordinator or of another member.
    pub authorized_by: String,
    pub cell: ExecutionCellSpec,
}

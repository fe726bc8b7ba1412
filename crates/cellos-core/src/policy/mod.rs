//! Admission: checking a spec against policy packs.
//!
//! The `PolicyPack` document itself is defined with the other documents in [`crate::spec`]
//! (one parser, one schema); it is re-exported here for convenience.

mod admission;
mod filesystem;

pub use crate::spec::{
    Enforcement, MountSourceRule, PolicyPackDocument, PolicyPackSpec, PolicyRules, RootfsRules,
};
pub use admission::{admit, admit_with};
pub use filesystem::{HostPaths, PathResolver};

use serde::{Deserialize, Serialize};

/// Outcome of admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Verdict {
    /// Every rule of every pack holds.
    Admit,
    /// At least one enforcing pack has a violated rule; nothing may be created.
    Deny,
    /// Violations were found only in audit-only packs (packs with no enforcing rules, or
    /// `enforcement: audit`); the cell runs and the violations are recorded.
    AuditOnly,
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyViolation {
    pub pack_id: String,
    /// Rule name as written in the pack, e.g. `maxTtlSeconds`.
    pub rule: String,
    /// Spec path that broke it, e.g. `spec.lifetime.ttlSeconds`.
    pub path: String,
    pub message: String,
}

/// The admission decision, with every reason; can itself be emitted as an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionDecision {
    pub verdict: Verdict,
    /// `packId@packVersion` of every pack consulted.
    pub packs: Vec<String>,
    pub violations: Vec<PolicyViolation>,
}

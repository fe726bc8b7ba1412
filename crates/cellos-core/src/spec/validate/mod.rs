//! Semantic validation: every rule serde cannot express, reporting every problem at once.

mod authorization;
mod capabilities;
mod cell;
mod common;
mod formation;
mod policy_pack;

pub use authorization::check_subject_name;
pub use capabilities::Capabilities;
pub use cell::{
    check_secret_name, MAX_CPU_MILLIS, MAX_TTL_SECONDS, MIN_MEMORY_BYTES, RESERVED_ENV_PREFIX,
};

use super::authorization::AuthorizationPolicyDocument;
use super::document::{ExecutionCellDocument, ExecutionCellSpec};
use super::formation::FormationDocument;
use super::parse::{
    Document, KIND_AUTHORIZATION_POLICY, KIND_EXECUTION_CELL, KIND_FORMATION, KIND_POLICY_PACK,
};
use super::policy_pack::PolicyPackDocument;
use super::problem::{Problem, Problems};

/// Checks a cell document; `Err` holds every problem found, each with its field path.
pub fn validate_execution_cell(doc: &ExecutionCellDocument) -> Result<(), Vec<Problem>> {
    let mut p = Problems::default();
    common::check_header(&doc.api_version, &doc.kind, KIND_EXECUTION_CELL, &mut p);
    common::check_metadata(&doc.metadata, &mut p);
    cell::check_cell_spec(&doc.spec, "spec", &mut p);
    p.into_result()
}

/// Checks a bare cell spec, reporting paths under `spec` as in a document. For consumers
/// handed a spec without its document (a backend planning a cell), so they refuse exactly
/// what [`validate_execution_cell`] refuses, with the same messages.
pub fn validate_cell_spec(spec: &ExecutionCellSpec) -> Result<(), Vec<Problem>> {
    let mut p = Problems::default();
    cell::check_cell_spec(spec, "spec", &mut p);
    p.into_result()
}

/// Checks that this build can serve everything `spec` asks for (export kinds, telemetry).
/// Separate from validation: the answer depends on the build, not on the spec alone.
pub fn check_capabilities(
    spec: &ExecutionCellSpec,
    caps: &Capabilities,
) -> Result<(), Vec<Problem>> {
    let mut p = Problems::default();
    capabilities::check_capabilities(spec, caps, "spec", &mut p);
    p.into_result()
}

/// Checks a policy pack; `Err` holds every problem found.
pub fn validate_policy_pack(doc: &PolicyPackDocument) -> Result<(), Vec<Problem>> {
    let mut p = Problems::default();
    common::check_header(&doc.api_version, &doc.kind, KIND_POLICY_PACK, &mut p);
    common::check_metadata(&doc.metadata, &mut p);
    policy_pack::check_policy_pack_spec(&doc.spec, &mut p);
    p.into_result()
}

/// Checks a formation: every cell, names, the authorisation tree and narrowing scope.
pub fn validate_formation(doc: &FormationDocument) -> Result<(), Vec<Problem>> {
    let mut p = Problems::default();
    common::check_header(&doc.api_version, &doc.kind, KIND_FORMATION, &mut p);
    common::check_metadata(&doc.metadata, &mut p);
    formation::check_formation_spec(&doc.spec, &mut p);
    p.into_result()
}

/// Checks an authorization policy: ids, unique subject names, tenants and pack ids.
pub fn validate_authorization_policy(
    doc: &AuthorizationPolicyDocument,
) -> Result<(), Vec<Problem>> {
    let mut p = Problems::default();
    common::check_header(
        &doc.api_version,
        &doc.kind,
        KIND_AUTHORIZATION_POLICY,
        &mut p,
    );
    common::check_metadata(&doc.metadata, &mut p);
    authorization::check_authorization_policy_spec(&doc.spec, &mut p);
    p.into_result()
}

/// Checks any document with the validator of its kind.
pub fn validate_document(doc: &Document) -> Result<(), Vec<Problem>> {
    match doc {
        Document::ExecutionCell(d) => validate_execution_cell(d),
        Document::PolicyPack(d) => validate_policy_pack(d),
        Document::Formation(d) => validate_formation(d),
        Document::AuthorizationPolicy(d) => validate_authorization_policy(d),
    }
}

//! The spec documents, their parsing, semantic validation, canonical hash and JSON Schema.
//!
//! Flow: text → [`parse_document`] (structure, strict) → [`validate_document`] (every semantic
//! problem at once) → admission in [`crate::policy`]. [`canonical_spec_hash`] identifies a spec
//! independently of how it was written; [`json_schema`] describes the accepted structure.

mod authorization;
mod byte_size;
mod cidr;
mod document;
mod formation;
mod hash;
mod hostname;
mod landlock;
mod parse;
mod paths;
mod policy_pack;
mod problem;
mod rootfs;
mod schema;
mod validate;

pub use authorization::{
    AuthorizationPolicyDocument, AuthorizationPolicySpec, Quotas, Scope, SubjectGrant,
};
pub use byte_size::{parse_byte_size, ByteSizeError};
pub use cidr::{Cidr, CidrError};
pub use document::*;
pub use formation::{FormationCoordinator, FormationDocument, FormationMember, FormationSpec};
pub use hash::{canonical_spec_hash, canonical_spec_json};
pub use hostname::{
    check_dns_name, check_hostname_pattern, hostname_matches, hostname_pattern_covers,
};
pub use landlock::{landlock_abi_kernel, DEFAULT_MIN_LANDLOCK_ABI, HIGHEST_LANDLOCK_ABI};
pub use parse::{
    parse_authorization_policy, parse_document, parse_execution_cell, parse_formation,
    parse_policy_pack, Document, Format, ParseError, KIND_AUTHORIZATION_POLICY,
    KIND_EXECUTION_CELL, KIND_FORMATION, KIND_POLICY_PACK,
};
pub use paths::{absolute_path, cell_target, normalize_path, PathError, RESERVED_TARGETS};
pub use policy_pack::{
    Enforcement, MountSourceRule, PolicyPackDocument, PolicyPackSpec, PolicyRules, RootfsRules,
};
pub use problem::Problem;
pub use schema::json_schema;
pub use validate::{
    check_capabilities, check_secret_name, check_subject_name, validate_authorization_policy,
    validate_cell_spec, validate_document, validate_execution_cell, validate_formation,
    validate_policy_pack, Capabilities, MAX_CPU_MILLIS, MAX_TTL_SECONDS, MIN_MEMORY_BYTES,
    RESERVED_ENV_PREFIX,
};

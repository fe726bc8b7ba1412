//! The spec documents, their parsing, semantic validation, canonical hash and JSON Schema.

mod document;

pub use document::*;

//! JSON Schema (draft 7) of every document kind, generated from the Rust types.
//!
//! Generated rather than hand-written so it cannot drift from what the parser accepts. It
//! describes structure (fields, types, unknown fields rejected); semantic rules such as
//! "port in 1..=65535" or "mount target not under /proc" are the validators' job, so a
//! schema-valid document can still have validation problems, never the other way round.

use schemars::gen::SchemaSettings;
use schemars::schema::{InstanceType, RootSchema, Schema, SchemaObject};

use super::document::{ExecutionCellDocument, API_VERSION};
use super::formation::FormationDocument;
use super::parse::{KIND_EXECUTION_CELL, KIND_FORMATION, KIND_POLICY_PACK};
use super::policy_pack::PolicyPackDocument;

/// One schema accepting any document: a `oneOf` of the three kinds, each with `apiVersion`
/// and `kind` pinned to their constant values so exactly one branch can match.
pub fn json_schema() -> serde_json::Value {
    let mut gen = SchemaSettings::draft07().into_generator();
    let branches = vec![
        gen.subschema_for::<ExecutionCellDocument>(),
        gen.subschema_for::<PolicyPackDocument>(),
        gen.subschema_for::<FormationDocument>(),
    ];
    let mut definitions = gen.take_definitions();
    let pinned = [
        ("ExecutionCellDocument", KIND_EXECUTION_CELL),
        ("PolicyPackDocument", KIND_POLICY_PACK),
        ("FormationDocument", KIND_FORMATION),
    ];
    for (definition, kind) in pinned {
        if let Some(Schema::Object(doc)) = definitions.get_mut(definition) {
            let properties = &mut doc.object().properties;
            properties.insert("apiVersion".to_owned(), constant(API_VERSION));
            properties.insert("kind".to_owned(), constant(kind));
        }
    }
    let mut root = SchemaObject::default();
    root.metadata().title = Some("CellOS document".to_owned());
    root.metadata().description = Some(format!(
        "An ExecutionCell, PolicyPack or Formation document, apiVersion {API_VERSION}"
    ));
    root.subschemas().one_of = Some(branches);
    let root = RootSchema {
        meta_schema: gen.settings().meta_schema.clone(),
        schema: root,
        definitions,
    };
    // A RootSchema is plain data with string keys; converting it to a Value cannot fail.
    serde_json::to_value(root).expect("a JSON Schema always converts to a JSON value")
}

fn constant(value: &str) -> Schema {
    Schema::Object(SchemaObject {
        instance_type: Some(InstanceType::String.into()),
        const_value: Some(value.into()),
        ..Default::default()
    })
}

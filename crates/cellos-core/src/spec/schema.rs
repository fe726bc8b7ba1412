//! JSON Schema (draft 7) of every document kind, generated from the Rust types.
//!
//! Generated rather than hand-written so it cannot drift from what the parser accepts. It
//! describes structure (fields, types, unknown fields rejected); semantic rules such as
//! "port in 1..=65535" or "mount target not under /proc" are the validators' job, so a
//! schema-valid document can still have validation problems, never the other way round.
//!
//! YAML reads any unquoted scalar where a string is expected (`packVersion: 1` is the version
//! "1", `A: true` the value "true"), so the schema's plain strings accept numbers, booleans
//! and null too: the schema must accept every document the validator accepts.

use schemars::gen::SchemaSettings;
use schemars::schema::{InstanceType, RootSchema, Schema, SchemaObject};
use serde_json::{json, Value};

use super::authorization::AuthorizationPolicyDocument;
use super::document::{ExecutionCellDocument, API_VERSION};
use super::formation::FormationDocument;
use super::parse::{
    KIND_AUTHORIZATION_POLICY, KIND_EXECUTION_CELL, KIND_FORMATION, KIND_POLICY_PACK,
};
use super::policy_pack::PolicyPackDocument;

/// One schema accepting any document: a `oneOf` of the four kinds, each with `apiVersion`
/// and `kind` pinned to their constant values so exactly one branch can match.
pub fn json_schema() -> serde_json::Value {
    let mut gen = SchemaSettings::draft07().into_generator();
    let branches = vec![
        gen.subschema_for::<ExecutionCellDocument>(),
        gen.subschema_for::<PolicyPackDocument>(),
        gen.subschema_for::<FormationDocument>(),
        gen.subschema_for::<AuthorizationPolicyDocument>(),
    ];
    let mut definitions = gen.take_definitions();
    let pinned = [
        ("ExecutionCellDocument", KIND_EXECUTION_CELL),
        ("PolicyPackDocument", KIND_POLICY_PACK),
        ("FormationDocument", KIND_FORMATION),
        ("AuthorizationPolicyDocument", KIND_AUTHORIZATION_POLICY),
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
        "An ExecutionCell, PolicyPack, Formation or AuthorizationPolicy document, apiVersion \
         {API_VERSION}"
    ));
    root.subschemas().one_of = Some(branches);
    let root = RootSchema {
        meta_schema: gen.settings().meta_schema.clone(),
        schema: root,
        definitions,
    };
    // A RootSchema is plain data with string keys; converting it to a Value cannot fail.
    let mut schema =
        serde_json::to_value(root).expect("a JSON Schema always converts to a JSON value");
    if let Some(Value::Object(definitions)) = schema.get_mut("definitions") {
        for (name, definition) in definitions.iter_mut() {
            // Sizes are read by their own visitor, which takes numbers and strings only.
            if name != "ByteSize" {
                read_scalars_as_text(definition);
            }
        }
    }
    schema
}

/// Where serde asks YAML for a string, any scalar is read as its text; widen every plain
/// string type (not constants or enums, whose values must match exactly) to match.
fn read_scalars_as_text(schema: &mut Value) {
    match schema {
        Value::Object(object) => {
            let exact = object.contains_key("enum") || object.contains_key("const");
            if let Some(types) = object.get_mut("type").filter(|_| !exact) {
                let names_string = match types {
                    Value::String(t) => t == "string",
                    Value::Array(ts) => ts.iter().any(|t| t == "string"),
                    _ => false,
                };
                if names_string {
                    *types = json!(["string", "number", "boolean", "null"]);
                }
            }
            object.values_mut().for_each(read_scalars_as_text);
        }
        Value::Array(items) => items.iter_mut().for_each(read_scalars_as_text),
        _ => {}
    }
}

fn constant(value: &str) -> Schema {
    Schema::Object(SchemaObject {
        instance_type: Some(InstanceType::String.into()),
        const_value: Some(value.into()),
        ..Default::default()
    })
}

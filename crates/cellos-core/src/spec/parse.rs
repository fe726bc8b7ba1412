//! Reading documents from text: YAML or JSON, dispatched on `kind`.
//!
//! Structure errors (unknown or missing field, wrong type) come from serde and name the leaf
//! field's path and the line/column; semantic rules are the validators' job.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_path_to_error::Segment;
use serde_value::{DeserializerError, Unexpected, Value};

use super::authorization::AuthorizationPolicyDocument;
use super::document::ExecutionCellDocument;
use super::formation::FormationDocument;
use super::policy_pack::PolicyPackDocument;

pub const KIND_EXECUTION_CELL: &str = "ExecutionCell";
pub const KIND_POLICY_PACK: &str = "PolicyPack";
pub const KIND_FORMATION: &str = "Formation";
pub const KIND_AUTHORIZATION_POLICY: &str = "AuthorizationPolicy";

/// Any document this build understands. Serialises as the document itself (each carries its
/// own `kind`); read documents with [`parse_document`], which picks the variant from `kind`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Document {
    ExecutionCell(ExecutionCellDocument),
    PolicyPack(PolicyPackDocument),
    Formation(FormationDocument),
    AuthorizationPolicy(AuthorizationPolicyDocument),
}

impl Document {
    /// The document's `kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Document::ExecutionCell(_) => KIND_EXECUTION_CELL,
            Document::PolicyPack(_) => KIND_POLICY_PACK,
            Document::Formation(_) => KIND_FORMATION,
            Document::AuthorizationPolicy(_) => KIND_AUTHORIZATION_POLICY,
        }
    }
}

/// The text syntax a document was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

impl Format {
    /// JSON documents are objects, so they start with `{`; everything else is read as YAML.
    pub fn detect(text: &str) -> Format {
        if text.trim_start().starts_with('{') {
            Format::Json
        } else {
            Format::Yaml
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Yaml => "YAML",
            Format::Json => "JSON",
        })
    }
}

/// Why text is not a document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Syntax error or structure mismatch. `message` names the field path and the unknown,
    /// missing or mistyped field and ends with its line and column, as in
    /// ``spec.run.argvv: unknown field, expected one of `argv`, ... at line 6 column 5`` or
    /// `spec.id: required at line 3 column 1`.
    #[error("invalid {format} document: {message}")]
    Invalid {
        format: Format,
        /// 1-based line, when the parser knows it.
        line: Option<usize>,
        /// 1-based column, when the parser knows it.
        column: Option<usize>,
        message: String,
    },
    #[error("the document has no `kind`; set kind to ExecutionCell, PolicyPack, Formation or AuthorizationPolicy")]
    MissingKind,
    #[error("unknown kind {0:?}; this build understands ExecutionCell, PolicyPack, Formation and AuthorizationPolicy")]
    UnknownKind(String),
    #[error("expected a {expected} document, but its kind is {found:?}")]
    WrongKind {
        expected: &'static str,
        found: String,
    },
}

fn yaml_error(e: &serde_yaml::Error) -> ParseError {
    let location = e.location();
    ParseError::Invalid {
        format: Format::Yaml,
        line: location.as_ref().map(|l| l.line()),
        column: location.as_ref().map(|l| l.column()),
        message: e.to_string(),
    }
}

fn json_error(e: &serde_json::Error) -> ParseError {
    ParseError::Invalid {
        format: Format::Json,
        line: Some(e.line()),
        column: Some(e.column()),
        message: e.to_string(),
    }
}

/// The document as an untyped tree, after its syntax was checked.
fn tree(text: &str, format: Format) -> Result<Value, ParseError> {
    let tree = match format {
        Format::Json => serde_json::from_str::<serde_json::Value>(text)
            .map_err(|e| json_error(&e))
            .map(serde_value::to_value),
        Format::Yaml => serde_yaml::from_str::<serde_yaml::Value>(text)
            .map_err(|e| yaml_error(&e))
            .map(serde_value::to_value),
    }?;
    tree.map_err(|e| ParseError::Invalid {
        format,
        line: None,
        column: None,
        message: e.to_string(),
    })
}

/// The `kind` of a document, read before its typed parse so the right type can be chosen.
fn peek_kind(tree: &Value, format: Format) -> Result<String, ParseError> {
    let Value::Map(map) = tree else {
        return Err(ParseError::MissingKind);
    };
    match map.get(&Value::String("kind".to_owned())) {
        None => Err(ParseError::MissingKind),
        Some(Value::String(kind)) => Ok(kind.clone()),
        Some(_) => Err(ParseError::Invalid {
            format,
            line: None,
            column: None,
            message: "kind: must be a string".to_owned(),
        }),
    }
}

/// Reads `T` from the text, and on failure names the leaf field that is wrong.
///
/// The format's own deserializer knows where in the text the mistake is, but its errors are
/// text naming the enclosing mapping. So a failure is replayed over the untyped tree, whose
/// errors are typed: a missing field becomes `spec.id: required`, a bad value the path of its
/// own field. The replay's error is used only when it is about the same place as the first
/// pass's (see [`replay`]); otherwise the first pass's own message stands.
fn parse_as<T: DeserializeOwned>(text: &str, format: Format, tree: Value) -> Result<T, ParseError> {
    let located = match format {
        Format::Yaml => serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text))
            .map_err(|e| (e.path().to_string(), yaml_error(e.inner()))),
        // Trailing text after the document was refused when its tree was read.
        Format::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            serde_path_to_error::deserialize(&mut de)
                .map_err(|e| (e.path().to_string(), json_error(e.inner())))
        }
    };
    let (path, first) = match located {
        Ok(value) => return Ok(value),
        Err(failure) => failure,
    };
    let ParseError::Invalid { line, column, .. } = first else {
        return Err(first);
    };
    let Some(error) = replay::<T>(tree, &path) else {
        return Err(first);
    };
    let location = line
        .zip(column)
        .map(|(l, c)| format!(" at line {l} column {c}"))
        .unwrap_or_default();
    Err(ParseError::Invalid {
        format,
        line,
        column,
        message: format!("{}{location}", leaf_message(&path, &error)),
    })
}

/// How many scalars [`replay`] may read as text before it gives up.
const MAX_REPLAY_FIXES: usize = 64;

/// The typed error of reading `T` from `tree` at `path` (a path rendered as
/// `serde_path_to_error` renders it), if the replay gets there.
///
/// The tree differs from the text in two ways: its maps are visited in key order, not text
/// order, and it does not read a number or boolean as text where a string is expected, as
/// YAML does. So an error elsewhere that is such a scalar is fixed up (the scalar becomes its
/// text) and the replay goes on; any other error elsewhere ends it without an answer.
fn replay<T: DeserializeOwned>(mut tree: Value, path: &str) -> Option<DeserializerError> {
    for _ in 0..MAX_REPLAY_FIXES {
        let error = serde_path_to_error::deserialize::<_, T>(tree.clone()).err()?;
        if error.path().to_string() == path {
            return Some(error.into_inner());
        }
        let DeserializerError::InvalidType(found, _) = error.inner() else {
            return None;
        };
        let text = scalar_text(found)?;
        *value_at(&mut tree, error.path())? = Value::String(text);
    }
    None
}

/// A scalar as YAML would read it where a string is expected.
fn scalar_text(found: &Unexpected) -> Option<String> {
    match found {
        Unexpected::Bool(b) => Some(b.to_string()),
        Unexpected::Unsigned(n) => Some(n.to_string()),
        Unexpected::Signed(n) => Some(n.to_string()),
        Unexpected::Float(f) => Some(f.to_string()),
        Unexpected::Char(c) => Some(c.to_string()),
        Unexpected::Unit => Some("null".to_owned()),
        _ => None,
    }
}

/// The node of `tree` at `path`.
fn value_at<'a>(tree: &'a mut Value, path: &serde_path_to_error::Path) -> Option<&'a mut Value> {
    path.iter()
        .try_fold(tree, |node, segment| match (node, segment) {
            (Value::Map(map), Segment::Map { key }) => map.get_mut(&Value::String(key.clone())),
            (Value::Seq(items), Segment::Seq { index }) => items.get_mut(*index),
            _ => None,
        })
}

/// serde's "unknown field" wording, without the field the path already names.
fn unknown_field(expected: &[&str]) -> String {
    let known: Vec<String> = expected.iter().map(|f| format!("`{f}`")).collect();
    match known.as_slice() {
        [] => "unknown field, there are no fields here".to_owned(),
        known => format!("unknown field, expected one of {}", known.join(", ")),
    }
}

/// `path: what is wrong`, with a missing field named by its own path.
fn leaf_message(path: &str, error: &DeserializerError) -> String {
    use serde::de::value::Error as Std;
    use serde::de::Error as _;
    let at = |field: &str| match path {
        "." => field.to_owned(),
        parent => format!("{parent}.{field}"),
    };
    // serde's own wording, which the typed variants carry the parts of.
    let message = match error {
        DeserializerError::MissingField(field) => return format!("{}: required", at(field)),
        DeserializerError::Custom(message) => message.clone(),
        DeserializerError::InvalidType(found, expected) => {
            Std::invalid_type(found.to_unexpected(), &expected.as_str()).to_string()
        }
        DeserializerError::InvalidValue(found, expected) => {
            Std::invalid_value(found.to_unexpected(), &expected.as_str()).to_string()
        }
        DeserializerError::InvalidLength(len, expected) => {
            Std::invalid_length(*len, &expected.as_str()).to_string()
        }
        DeserializerError::UnknownVariant(variant, expected) => {
            Std::unknown_variant(variant, expected).to_string()
        }
        // The path already ends in the unknown name; say only what would be known instead.
        DeserializerError::UnknownField(_, expected) => unknown_field(expected),
        DeserializerError::DuplicateField(field) => Std::duplicate_field(field).to_string(),
    };
    format!("{path}: {message}")
}

/// Editors on some systems start UTF-8 files with a byte-order mark; neither parser skips it.
fn without_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// Parses any document, YAML or JSON, choosing the type from its `kind`.
pub fn parse_document(text: &str) -> Result<Document, ParseError> {
    let text = without_bom(text);
    let format = Format::detect(text);
    let tree = tree(text, format)?;
    match peek_kind(&tree, format)?.as_str() {
        KIND_EXECUTION_CELL => parse_as(text, format, tree).map(Document::ExecutionCell),
        KIND_POLICY_PACK => parse_as(text, format, tree).map(Document::PolicyPack),
        KIND_FORMATION => parse_as(text, format, tree).map(Document::Formation),
        KIND_AUTHORIZATION_POLICY => {
            parse_as(text, format, tree).map(Document::AuthorizationPolicy)
        }
        other => Err(ParseError::UnknownKind(other.to_owned())),
    }
}

fn parse_kind<T: DeserializeOwned>(text: &str, expected: &'static str) -> Result<T, ParseError> {
    let text = without_bom(text);
    let format = Format::detect(text);
    let tree = tree(text, format)?;
    let found = peek_kind(&tree, format)?;
    if found == expected {
        parse_as(text, format, tree)
    } else {
        Err(ParseError::WrongKind { expected, found })
    }
}

/// Parses an `ExecutionCell` document (YAML or JSON); any other kind is an error.
pub fn parse_execution_cell(text: &str) -> Result<ExecutionCellDocument, ParseError> {
    parse_kind(text, KIND_EXECUTION_CELL)
}

/// Parses a `PolicyPack` document (YAML or JSON); any other kind is an error.
pub fn parse_policy_pack(text: &str) -> Result<PolicyPackDocument, ParseError> {
    parse_kind(text, KIND_POLICY_PACK)
}

/// Parses a `Formation` document (YAML or JSON); any other kind is an error.
pub fn parse_formation(text: &str) -> Result<FormationDocument, ParseError> {
    parse_kind(text, KIND_FORMATION)
}

/// Parses an `AuthorizationPolicy` document (YAML or JSON); any other kind is an error.
pub fn parse_authorization_policy(text: &str) -> Result<AuthorizationPolicyDocument, ParseError> {
    parse_kind(text, KIND_AUTHORIZATION_POLICY)
}

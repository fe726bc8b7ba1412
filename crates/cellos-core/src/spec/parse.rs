//! Reading documents from text: YAML or JSON, dispatched on `kind`.
//!
//! Structure errors (unknown or missing field, wrong type) come from serde and name the field
//! path and the line/column; semantic rules are the validators' job.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::document::ExecutionCellDocument;
use super::formation::FormationDocument;
use super::policy_pack::PolicyPackDocument;

pub const KIND_EXECUTION_CELL: &str = "ExecutionCell";
pub const KIND_POLICY_PACK: &str = "PolicyPack";
pub const KIND_FORMATION: &str = "Formation";

/// Any document this build understands. Serialises as the document itself (each carries its
/// own `kind`); read documents with [`parse_document`], which picks the variant from `kind`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Document {
    ExecutionCell(ExecutionCellDocument),
    PolicyPack(PolicyPackDocument),
    Formation(FormationDocument),
}

impl Document {
    /// The document's `kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Document::ExecutionCell(_) => KIND_EXECUTION_CELL,
            Document::PolicyPack(_) => KIND_POLICY_PACK,
            Document::Formation(_) => KIND_FORMATION,
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
    /// ``spec.run: unknown field `argvv`, expected one of ... at line 6 column 5``.
    #[error("invalid {format} document: {message}")]
    Invalid {
        format: Format,
        /// 1-based line, when the parser knows it.
        line: Option<usize>,
        /// 1-based column, when the parser knows it.
        column: Option<usize>,
        message: String,
    },
    #[error("the document has no `kind`; set kind to ExecutionCell, PolicyPack or Formation")]
    MissingKind,
    #[error("unknown kind {0:?}; this build understands ExecutionCell, PolicyPack and Formation")]
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

fn json_error(e: &serde_json::Error, path: Option<&serde_path_to_error::Path>) -> ParseError {
    let message = match path.map(ToString::to_string) {
        Some(path) if path != "." => format!("{path}: {e}"),
        _ => e.to_string(),
    };
    ParseError::Invalid {
        format: Format::Json,
        line: Some(e.line()),
        column: Some(e.column()),
        message,
    }
}

/// The `kind` of a document, read before its typed parse so the right type can be chosen.
fn peek_kind(text: &str, format: Format) -> Result<String, ParseError> {
    let kind = match format {
        Format::Json => {
            let value: serde_json::Value =
                serde_json::from_str(text).map_err(|e| json_error(&e, None))?;
            value.get("kind").map(|k| k.as_str().map(str::to_owned))
        }
        Format::Yaml => {
            let value: serde_yaml::Value =
                serde_yaml::from_str(text).map_err(|e| yaml_error(&e))?;
            value.get("kind").map(|k| k.as_str().map(str::to_owned))
        }
    };
    match kind {
        None => Err(ParseError::MissingKind),
        Some(None) => Err(ParseError::Invalid {
            format,
            line: None,
            column: None,
            message: "kind: must be a string".to_owned(),
        }),
        Some(Some(kind)) => Ok(kind),
    }
}

fn parse_as<T: DeserializeOwned>(text: &str, format: Format) -> Result<T, ParseError> {
    match format {
        Format::Yaml => serde_yaml::from_str(text).map_err(|e| yaml_error(&e)),
        Format::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            let value: T = serde_path_to_error::deserialize(&mut de)
                .map_err(|e| json_error(e.inner(), Some(e.path())))?;
            de.end().map_err(|e| json_error(&e, None))?;
            Ok(value)
        }
    }
}

/// Editors on some systems start UTF-8 files with a byte-order mark; neither parser skips it.
fn without_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// Parses any document, YAML or JSON, choosing the type from its `kind`.
pub fn parse_document(text: &str) -> Result<Document, ParseError> {
    let text = without_bom(text);
    let format = Format::detect(text);
    match peek_kind(text, format)?.as_str() {
        KIND_EXECUTION_CELL => parse_as(text, format).map(Document::ExecutionCell),
        KIND_POLICY_PACK => parse_as(text, format).map(Document::PolicyPack),
        KIND_FORMATION => parse_as(text, format).map(Document::Formation),
        other => Err(ParseError::UnknownKind(other.to_owned())),
    }
}

fn parse_kind<T: DeserializeOwned>(text: &str, expected: &'static str) -> Result<T, ParseError> {
    let text = without_bom(text);
    let format = Format::detect(text);
    let found = peek_kind(text, format)?;
    if found == expected {
        parse_as(text, format)
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

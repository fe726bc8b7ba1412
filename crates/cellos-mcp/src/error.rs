//! Tool errors: every failure of a tool call becomes an MCP tool error (`isError: true`) whose
//! text tells an agent what was wrong and what to do instead. None of them ends the session.

use cellos_supervisor::SessionError;
use rmcp::model::{CallToolResult, ContentBlock};
use serde_json::Value;

use crate::narrow::{BadNarrowing, Widening};

/// Why a tool call failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The arguments are malformed; the message names the field.
    #[error("bad arguments: {0}")]
    BadArgument(String),
    #[error("no cell {0:?} here: use an id that sandbox_create returned (a destroyed cell's evidence stays readable)")]
    UnknownCell(String),
    #[error("no profile {asked:?}; profiles: {known}")]
    UnknownProfile { asked: String, known: String },
    /// The call asked for more than its profile grants (recorded as an admission denial).
    #[error(
        "refused: profile {profile:?} may be narrowed, never widened: {}",
        join(.widenings)
    )]
    Widened {
        profile: String,
        widenings: Vec<Widening>,
    },
    #[error("{}", session_message(.0))]
    Session(#[from] SessionError),
    /// The command ran but did not finish on its own; `output` is what it wrote.
    #[error("{message}")]
    Exec { message: String, output: Value },
    /// The client cancelled the call; the command it waited for was killed.
    #[error("cancelled by the client: the command was killed")]
    Cancelled,
    #[error("evidence: {0}")]
    Evidence(#[from] crate::evidence::EvidenceError),
    /// The server's own task failed (never the caller's doing).
    #[error("internal: {0}")]
    Internal(String),
}

impl From<BadNarrowing> for ToolError {
    fn from(err: BadNarrowing) -> Self {
        ToolError::BadArgument(err.to_string())
    }
}

fn join(widenings: &[Widening]) -> String {
    widenings
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A session error in words an agent can act on.
fn session_message(err: &SessionError) -> String {
    let problems = |what: &str, problems: &[cellos_core::spec::Problem]| {
        let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
        format!("{what}: {}", list.join("; "))
    };
    match err {
        SessionError::Invalid(p) => problems("the cell's spec is invalid", p),
        SessionError::Unsupported(p) => problems("this server cannot serve the cell", p),
        SessionError::Denied(decision) => {
            let list: Vec<String> = decision
                .violations
                .iter()
                .map(|v| format!("{} ({} of {}): {}", v.path, v.rule, v.pack_id, v.message))
                .collect();
            format!("admission denied by policy: {}", list.join("; "))
        }
        SessionError::BadRequest(list) => format!("bad arguments: {}", list.join("; ")),
        SessionError::NotFound { what } => format!("{what} not found"),
        SessionError::Conflict { what } => what.clone(),
        SessionError::TooLarge { what } => format!("too large: {what}"),
        SessionError::Refused(e) => format!("the cell refused: {}", e.message),
        SessionError::Backend(e) => format!("the cell failed: {e}"),
        SessionError::Events(e) => format!("the event log failed, so nothing runs: {e}"),
    }
}

impl ToolError {
    /// The MCP tool error: the message first, then what the command wrote, when there is any.
    pub fn into_result(self) -> CallToolResult {
        let message = self.to_string();
        match self {
            ToolError::Exec { output, .. } => {
                let mut structured = output;
                if let Value::Object(map) = &mut structured {
                    map.insert("error".into(), Value::String(message.clone()));
                }
                let mut result = CallToolResult::error(vec![
                    ContentBlock::text(message),
                    ContentBlock::text(structured.to_string()),
                ]);
                result.structured_content = Some(structured);
                result
            }
            _ => CallToolResult::error(vec![ContentBlock::text(message)]),
        }
    }
}

//! RFC 9457 problem details: every error of the API is `application/problem+json` with a
//! stable `type` URI per kind of problem, so clients branch on `type`, never on wording.
//!
//! `refused` (a cell refusing an operation: a path escaping the cell, a read-only mount) is
//! 403: the request was understood and is well-formed, the cell will not do it.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cellos_core::policy::{AdmissionDecision, PolicyViolation};
use cellos_core::ports::PortErrorKind;
use cellos_core::spec::{ParseError, Problem as SpecProblem};
use cellos_supervisor::SessionError;
use serde::Serialize;
use utoipa::ToSchema;

/// Base of every problem `type`.
pub const TYPE_BASE: &str = "https://cellos.dev/problems/";
/// Media type of problem bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The kinds of problem, one `type` URI and one status each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    InvalidSpec,
    UnsupportedSpec,
    AdmissionDenied,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    Conflict,
    TooLarge,
    UnsupportedMediaType,
    Refused,
    Unauthorized,
    Backend,
    Events,
}

impl Kind {
    /// The last segment of the `type` URI; also the `kind` label of `cellos_denials_total`.
    pub fn slug(self) -> &'static str {
        match self {
            Kind::InvalidSpec => "invalid-spec",
            Kind::UnsupportedSpec => "unsupported-spec",
            Kind::AdmissionDenied => "admission-denied",
            Kind::BadRequest => "bad-request",
            Kind::NotFound => "not-found",
            Kind::MethodNotAllowed => "method-not-allowed",
            Kind::Conflict => "conflict",
            Kind::TooLarge => "too-large",
            Kind::UnsupportedMediaType => "unsupported-media-type",
            Kind::Refused => "refused",
            Kind::Unauthorized => "unauthorized",
            Kind::Backend => "backend",
            Kind::Events => "events",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Kind::InvalidSpec | Kind::UnsupportedSpec => StatusCode::UNPROCESSABLE_ENTITY,
            Kind::AdmissionDenied | Kind::Refused => StatusCode::FORBIDDEN,
            Kind::BadRequest => StatusCode::BAD_REQUEST,
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Kind::Conflict => StatusCode::CONFLICT,
            Kind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Kind::Unauthorized => StatusCode::UNAUTHORIZED,
            Kind::Backend => StatusCode::INTERNAL_SERVER_ERROR,
            Kind::Events => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn title(self) -> &'static str {
        match self {
            Kind::InvalidSpec => "The spec is invalid",
            Kind::UnsupportedSpec => "This server cannot serve the spec",
            Kind::AdmissionDenied => "Admission denied by policy",
            Kind::BadRequest => "The request is malformed",
            Kind::NotFound => "Not found",
            Kind::MethodNotAllowed => "Method not allowed here",
            Kind::Conflict => "The cell cannot do this now",
            Kind::TooLarge => "Too large",
            Kind::UnsupportedMediaType => "Unsupported content type",
            Kind::Refused => "The cell refused the operation",
            Kind::Unauthorized => "Unauthorized",
            Kind::Backend => "The cell backend failed",
            Kind::Events => "The event log is unavailable",
        }
    }

    /// Whether the problem is a denial `cellos_denials_total` counts.
    pub fn is_denial(self) -> bool {
        matches!(
            self,
            Kind::AdmissionDenied | Kind::Unauthorized | Kind::Refused
        )
    }
}

/// One located problem of a spec, as `cellos validate` prints it (`path: message`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpecProblemDto {
    /// Field path such as `spec.id`, or `.` for the document as a whole.
    pub path: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

impl From<SpecProblem> for SpecProblemDto {
    fn from(p: SpecProblem) -> Self {
        Self {
            path: p.path,
            message: p.message,
            line: None,
            column: None,
        }
    }
}

/// One broken policy rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ViolationDto {
    pub pack_id: String,
    pub rule: String,
    pub path: String,
    pub message: String,
}

impl From<PolicyViolation> for ViolationDto {
    fn from(v: PolicyViolation) -> Self {
        Self {
            pack_id: v.pack_id,
            rule: v.rule,
            path: v.path,
            message: v.message,
        }
    }
}

/// An RFC 9457 problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiProblem {
    /// Stable URI of the kind of problem, e.g. `https://cellos.dev/problems/not-found`.
    #[serde(rename = "type")]
    pub ty: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Boxed: most problems have none, and handlers return problems by value.
    #[serde(flatten)]
    pub details: Box<Details>,
    #[serde(skip)]
    kind: Option<Kind>,
}

/// The extension members of a problem.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Details {
    /// Every problem of an invalid or unsupported spec, each with its path.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<SpecProblemDto>,
    /// Every violated rule of a denied admission.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<ViolationDto>,
    /// Policy packs consulted by a denied admission.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub packs: Vec<String>,
}

impl ApiProblem {
    pub fn new(kind: Kind, detail: impl Into<String>) -> Self {
        Self {
            ty: format!("{TYPE_BASE}{}", kind.slug()),
            title: kind.title().to_owned(),
            status: kind.status().as_u16(),
            detail: detail.into(),
            details: Box::default(),
            kind: Some(kind),
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(Kind::BadRequest, detail)
    }

    pub fn kind(&self) -> Option<Kind> {
        self.kind
    }

    pub fn with_problems(mut self, problems: Vec<SpecProblemDto>) -> Self {
        self.details.problems = problems;
        self
    }

    /// An invalid spec with every problem located.
    pub fn invalid_spec(problems: Vec<SpecProblem>) -> Self {
        let problems: Vec<SpecProblemDto> = problems.into_iter().map(Into::into).collect();
        Self::new(Kind::InvalidSpec, listing(&problems)).with_problems(problems)
    }

    /// A denied admission with every violation.
    pub fn denied(decision: AdmissionDecision) -> Self {
        let mut problem = Self::new(
            Kind::AdmissionDenied,
            format!(
                "{} policy violation(s); nothing was created",
                decision.violations.len()
            ),
        );
        problem.details.violations = decision.violations.into_iter().map(Into::into).collect();
        problem.details.packs = decision.packs;
        problem
    }
}

/// `path: message; ...`, the way `cellos validate` lists problems.
fn listing(problems: &[SpecProblemDto]) -> String {
    problems
        .iter()
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<ParseError> for ApiProblem {
    fn from(e: ParseError) -> Self {
        let problem = match &e {
            ParseError::Invalid {
                line,
                column,
                message,
                ..
            } => {
                let (path, text) = split_path(message);
                SpecProblemDto {
                    path,
                    message: text,
                    line: *line,
                    column: *column,
                }
            }
            ParseError::MissingKind | ParseError::UnknownKind(_) | ParseError::WrongKind { .. } => {
                SpecProblemDto {
                    path: "kind".to_owned(),
                    message: e.to_string(),
                    line: None,
                    column: None,
                }
            }
        };
        Self::new(Kind::InvalidSpec, e.to_string()).with_problems(vec![problem])
    }
}

/// A parser message `spec.id: required at line 3 column 1` split into its field path and
/// the rest; a message without a leading path (a syntax error) is about the whole document.
fn split_path(message: &str) -> (String, String) {
    match message.split_once(": ") {
        Some((path, rest)) if looks_like_path(path) => (path.to_owned(), rest.to_owned()),
        _ => (".".to_owned(), message.to_owned()),
    }
}

fn looks_like_path(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '[' | ']' | '_' | '-'))
}

impl From<SessionError> for ApiProblem {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Invalid(problems) => Self::invalid_spec(problems),
            SessionError::Unsupported(problems) => {
                let problems: Vec<SpecProblemDto> = problems.into_iter().map(Into::into).collect();
                Self::new(Kind::UnsupportedSpec, listing(&problems)).with_problems(problems)
            }
            SessionError::Denied(decision) => Self::denied(decision),
            SessionError::BadRequest(entries) => Self::bad_request(entries.join("; ")),
            e @ SessionError::NotFound { .. } => Self::new(Kind::NotFound, e.to_string()),
            e @ SessionError::Conflict { .. } => Self::new(Kind::Conflict, e.to_string()),
            e @ SessionError::TooLarge { .. } => Self::new(Kind::TooLarge, e.to_string()),
            SessionError::Refused(port) => Self::new(refusal_kind(port.kind), port.to_string()),
            e @ SessionError::Backend(_) => Self::new(Kind::Backend, e.to_string()),
            e @ SessionError::Events(_) => Self::new(Kind::Events, e.to_string()),
        }
    }
}

/// A refusal that is really "no such path" or "too large" is reported as that.
fn refusal_kind(kind: PortErrorKind) -> Kind {
    match kind {
        PortErrorKind::NotFound => Kind::NotFound,
        PortErrorKind::TooLarge => Kind::TooLarge,
        _ => Kind::Refused,
    }
}

impl IntoResponse for ApiProblem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(kind) = self.kind {
            response.extensions_mut().insert(kind);
        }
        response
    }
}

/// A handler's result.
pub type ApiResult<T> = Result<T, ApiProblem>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_messages_are_split_into_path_and_rule() {
        assert_eq!(
            split_path("spec.id: required at line 3 column 1"),
            ("spec.id".into(), "required at line 3 column 1".into())
        );
        assert_eq!(
            split_path("did not find expected key at line 2 column 3").0,
            "."
        );
    }
}

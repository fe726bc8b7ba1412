//! RFC 9457 problem details from the server, turned into the one-line errors the CLI prints.

use serde::Deserialize;

/// Base of every problem `type` the server sends.
const TYPE_BASE: &str = "https://cellos.dev/problems/";

/// One field-level problem: where in the document, and what is wrong (the server's message
/// says the fix).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FieldProblem {
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub message: String,
}

/// An `application/problem+json` body. Every field is optional on the wire, so a terse
/// server (or a proxy) still yields a readable line.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Problem {
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub status: u16,
    #[serde(default)]
    pub detail: String,
    #[serde(default)]
    pub problems: Vec<FieldProblem>,
}

impl Problem {
    /// Decode a problem body; a body that is not one becomes a problem naming the status and
    /// the start of the body, so the user still sees what the server said.
    pub fn decode(status: u16, body: &[u8]) -> Self {
        match serde_json::from_slice::<Problem>(body) {
            Ok(mut problem) => {
                if problem.status == 0 {
                    problem.status = status;
                }
                problem
            }
            Err(_) => Problem {
                kind: String::new(),
                title: format!("HTTP {status}"),
                status,
                detail: snippet(body),
                problems: Vec::new(),
            },
        }
    }

    /// The last segment of the `type` URI (`invalid-spec`, `not-found`, ...); stable, so
    /// the CLI branches on it rather than on wording.
    pub fn slug(&self) -> &str {
        self.kind.strip_prefix(TYPE_BASE).unwrap_or(&self.kind)
    }

    /// One line: the title, then the detail, then each field problem as `path: message`.
    pub fn one_line(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if !self.detail.is_empty() && self.detail != self.title {
            parts.push(self.detail.clone());
        }
        for p in &self.problems {
            parts.push(match p.path.is_empty() {
                true => p.message.clone(),
                false => format!("{}: {}", p.path, p.message),
            });
        }
        let title = match self.title.is_empty() {
            true => format!("HTTP {}", self.status),
            false => self.title.clone(),
        };
        let line = match parts.is_empty() {
            true => title,
            false => format!("{title}: {}", parts.join("; ")),
        };
        single_line(&line)
    }
}

/// The start of a non-problem body, printable on one line.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let mut out: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        out.push('…');
    }
    if out.is_empty() {
        out = "(empty body)".into();
    }
    out
}

/// Newlines would break the one-line rule of CLI errors.
fn single_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_problems_are_named_with_their_fix_on_one_line() {
        let body =
            br#"{"type":"https://cellos.dev/problems/invalid-spec","title":"The spec is invalid",
            "status":422,"detail":"2 problems","problems":[
            {"path":"spec.run.argv","message":"must not be empty; give the program to run"},
            {"path":"spec.limits.memory","message":"\"lots\" is not a size\n(write 256Mi)"}]}"#;
        let problem = Problem::decode(422, body);
        assert_eq!(problem.slug(), "invalid-spec");
        assert_eq!(
            problem.one_line(),
            "The spec is invalid: 2 problems; spec.run.argv: must not be empty; give the \
             program to run; spec.limits.memory: \"lots\" is not a size (write 256Mi)"
        );
    }

    #[test]
    fn a_problem_without_fields_is_title_and_detail() {
        let body = br#"{"type":"https://cellos.dev/problems/not-found","title":"Not found","status":404,"detail":"no cell \"x\""}"#;
        let problem = Problem::decode(404, body);
        assert_eq!(problem.slug(), "not-found");
        assert_eq!(problem.one_line(), "Not found: no cell \"x\"");
    }

    #[test]
    fn a_body_that_is_not_a_problem_still_reads() {
        let problem = Problem::decode(502, b"<html>\nBad gateway\n</html>");
        assert_eq!(problem.one_line(), "HTTP 502: <html> Bad gateway </html>");
        assert_eq!(
            Problem::decode(500, b"").one_line(),
            "HTTP 500: (empty body)"
        );
        assert_eq!(Problem::decode(500, b"{}").one_line(), "HTTP 500");
    }
}

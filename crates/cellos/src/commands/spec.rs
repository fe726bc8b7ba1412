//! `validate`, `admit`, `schema`: working with documents. No host state is involved beyond
//! which features this build serves (see [`compose::capabilities`]).

use std::path::{Path, PathBuf};

use cellos_core::policy::{admit as admit_spec, Verdict};
use cellos_core::spec::{
    check_capabilities, json_schema, parse_document, parse_execution_cell, parse_policy_pack,
    validate_document, validate_execution_cell, validate_policy_pack, Document, PolicyPackDocument,
    Problem,
};

use crate::compose;
use crate::exit::Failure;

pub fn read_text(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path)
        .map_err(|e| Failure::invalid(format!("{}: cannot read: {e}", path.display())))
}

/// Validate every file; print each problem as `file: path: rule`; exit 2 if any.
pub fn validate(files: &[PathBuf]) -> Result<u8, Failure> {
    let mut bad = 0usize;
    for file in files {
        let text = match read_text(file) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("{e}");
                bad += 1;
                continue;
            }
        };
        let problems = match parse_document(&text) {
            Ok(doc) => validate_for_this_build(&doc),
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                bad += 1;
                continue;
            }
        };
        if problems.is_empty() {
            println!("{}: valid", file.display());
        } else {
            bad += 1;
            for problem in problems {
                eprintln!("{}: {problem}", file.display());
            }
        }
    }
    if bad == 0 {
        Ok(0)
    } else {
        Err(Failure::invalid(format!(
            "{bad} of {} file(s) invalid",
            files.len()
        )))
    }
}

/// Every validation problem and, for a valid cell, every feature it asks for that this build
/// cannot serve: exactly what `cellos run` refuses before creating anything.
fn validate_for_this_build(doc: &Document) -> Vec<Problem> {
    if let Err(problems) = validate_document(doc) {
        return problems;
    }
    match doc {
        Document::ExecutionCell(cell) => check_capabilities(&cell.spec, &compose::capabilities())
            .err()
            .unwrap_or_default(),
        Document::PolicyPack(_) | Document::Formation(_) | Document::AuthorizationPolicy(_) => {
            Vec::new()
        }
    }
}

/// One line naming the file and every problem in it.
fn invalid(path: &Path, what: &str, problems: &[Problem]) -> Failure {
    let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
    Failure::invalid(format!("{}: {what}{}", path.display(), list.join("; ")))
}

/// Load and validate policy packs, failing on the first bad one.
pub fn load_policies(paths: &[PathBuf]) -> Result<Vec<PolicyPackDocument>, Failure> {
    paths
        .iter()
        .map(|path| {
            let text = read_text(path)?;
            let pack = parse_policy_pack(&text)
                .map_err(|e| Failure::invalid(format!("{}: {e}", path.display())))?;
            validate_policy_pack(&pack).map_err(|problems| invalid(path, "", &problems))?;
            Ok(pack)
        })
        .collect()
}

/// Print the admission decision; exit 0 on admit/audit-only, 1 on deny.
pub fn admit(file: &Path, policies: &[PathBuf], json: bool) -> Result<u8, Failure> {
    let text = read_text(file)?;
    let doc = parse_execution_cell(&text)
        .map_err(|e| Failure::invalid(format!("{}: {e}", file.display())))?;
    validate_execution_cell(&doc).map_err(|problems| invalid(file, "invalid spec: ", &problems))?;
    check_capabilities(&doc.spec, &compose::capabilities())
        .map_err(|problems| invalid(file, "this build cannot serve the spec: ", &problems))?;
    let packs = load_policies(policies)?;
    let decision = admit_spec(&doc.spec, &packs);
    if json {
        let text = serde_json::to_string_pretty(&decision)
            .map_err(|e| Failure::other(format!("cannot print decision: {e}")))?;
        println!("{text}");
    } else {
        let verdict = match decision.verdict {
            Verdict::Admit => "admit",
            Verdict::Deny => "deny",
            Verdict::AuditOnly => "audit-only",
        };
        println!("{verdict} ({})", decision.packs.join(", "));
        for v in &decision.violations {
            println!("  {}: {} [{}/{}]", v.path, v.message, v.pack_id, v.rule);
        }
    }
    Ok(if decision.verdict == Verdict::Deny {
        1
    } else {
        0
    })
}

pub fn schema() -> Result<u8, Failure> {
    let text = serde_json::to_string_pretty(&json_schema())
        .map_err(|e| Failure::other(format!("cannot print schema: {e}")))?;
    println!("{text}");
    Ok(0)
}

//! One validator: `cellos validate` and `cellos run` agree on every spec of the agreement
//! corpus (`examples/agreement`), accepting the same specs and refusing the others with the
//! same problems, including specs asking for an export kind this build cannot serve. No
//! message says its kind twice.

use std::path::Path;
use std::process::Output;

use crate::support::{processes_of, stderr, Home};

use crate::documents::shipped;

/// What a corpus file's header announces.
struct Header {
    accept: bool,
    /// `path: fragment` pairs, one per expected problem.
    expects: Vec<(String, String)>,
}

fn header(file: &Path) -> Header {
    let text = std::fs::read_to_string(file).expect("read corpus file");
    let mut accept = None;
    let mut expects = Vec::new();
    for line in text.lines().take_while(|l| l.starts_with('#')) {
        if let Some(verdict) = line.strip_prefix("# verdict: ") {
            accept = Some(match verdict.trim() {
                "accept" => true,
                "refuse" => false,
                other => panic!("{}: unknown verdict {other:?}", file.display()),
            });
        } else if let Some(expect) = line.strip_prefix("# expect: ") {
            let (path, fragment) = expect
                .split_once(": ")
                .unwrap_or_else(|| panic!("{}: malformed {line:?}", file.display()));
            expects.push((path.to_owned(), fragment.to_owned()));
        }
    }
    let accept = accept.unwrap_or_else(|| panic!("{}: no verdict line", file.display()));
    assert_eq!(
        accept,
        expects.is_empty(),
        "{}: a refused spec lists its problems, an accepted one none",
        file.display()
    );
    Header { accept, expects }
}

/// The problems a command reported about `file`: its `file: path: message` lines.
fn problems(out: &Output, file: &Path) -> Vec<String> {
    let prefix = format!("{}: ", file.display());
    stderr(out)
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(str::to_owned)
        .collect()
}

/// The cell id a corpus spec declares (absent in the file that tests a missing id).
fn cell_id(file: &Path) -> Option<String> {
    let text = std::fs::read_to_string(file).expect("read corpus file");
    text.lines()
        .find_map(|l| l.strip_prefix("  id: "))
        .map(str::to_owned)
}

#[test]
fn validate_and_run_agree_on_every_corpus_spec() {
    let files = shipped::yaml_files("agreement");
    assert!(files.len() >= 20, "the corpus has {} specs", files.len());
    for file in &files {
        let expected = header(file);
        let home = Home::new();
        let path = file.display().to_string();
        let validate = home.run(&["validate", &path]);
        let run = home.run(&["run", "--quiet", &path]);
        let validated = problems(&validate, file);
        let refused = problems(&run, file);

        if expected.accept {
            assert_eq!(
                validate.status.code(),
                Some(0),
                "{path}: validate\n{}",
                stderr(&validate)
            );
            assert_eq!(run.status.code(), Some(0), "{path}: run\n{}", stderr(&run));
        } else {
            assert_eq!(
                validate.status.code(),
                Some(2),
                "{path}: validate\n{}",
                stderr(&validate)
            );
            // 125: refused by CellOS, not a workload status.
            assert_eq!(
                run.status.code(),
                Some(125),
                "{path}: run\n{}",
                stderr(&run)
            );
            for (at, fragment) in &expected.expects {
                // A parse error reads `invalid YAML document: <path>: ...`.
                let names = |p: &String| {
                    (p.starts_with(&format!("{at}: ")) || p.contains(&format!(": {at}: ")))
                        && p.contains(fragment.as_str())
                };
                assert!(
                    validated.iter().any(names),
                    "{path}: validate does not report {at}: {fragment}\n{validated:#?}"
                );
            }
        }
        assert_eq!(
            validated, refused,
            "{path}: validate and run report different problems"
        );
        for doubled in ["refused: refused", "invalid spec: invalid spec"] {
            assert!(!stderr(&run).contains(doubled), "{path}: {}", stderr(&run));
        }
        if let (false, Some(id)) = (expected.accept, cell_id(file)) {
            assert!(
                processes_of(&id).is_empty(),
                "{path}: a refused cell has processes"
            );
            assert!(
                !stderr(&run).contains("workload"),
                "{path}: refused after the workload started\n{}",
                stderr(&run)
            );
        }
    }
}

//! `verify` at the command line: a tampered log fails at the right sequence number.

use crate::support::{stderr, stdout, unique_id, Home};

fn log_with_events(home: &Home) -> Vec<String> {
    for _ in 0..3 {
        let id = unique_id("ev");
        let spec = home.spec(&id, "  run:\n    argv: [\"/bin/true\"]\n");
        let out = home.run(&["run", "--quiet", spec.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let text = std::fs::read_to_string(home.path().join("events.jsonl")).unwrap();
    text.lines().map(str::to_string).collect()
}

fn verify_after(home: &Home, lines: &[String]) -> (bool, String) {
    std::fs::write(home.path().join("events.jsonl"), lines.join("\n") + "\n").unwrap();
    let out = home.run(&["verify"]);
    (out.status.success(), stderr(&out) + &stdout(&out))
}

#[test]
fn verify_names_the_first_bad_sequence_number() {
    let home = Home::new();
    let original = log_with_events(&home);
    assert!(original.len() >= 10);
    let (ok, text) = verify_after(&home, &original);
    assert!(ok, "{text}");

    // Flip one byte inside the data of event 5.
    let mut flipped = original.clone();
    flipped[4] = flipped[4].replacen("\"data\":{", "\"data\":{\"x\":1,", 1);
    let (ok, text) = verify_after(&home, &flipped);
    assert!(!ok);
    assert!(
        text.contains("seq 5") && text.contains("tampered"),
        "{text}"
    );

    // Delete event 4.
    let mut deleted = original.clone();
    deleted.remove(3);
    let (ok, text) = verify_after(&home, &deleted);
    assert!(!ok);
    assert!(text.contains("seq 4") && text.contains("missing"), "{text}");

    // Swap events 6 and 7.
    let mut swapped = original.clone();
    swapped.swap(5, 6);
    let (ok, text) = verify_after(&home, &swapped);
    assert!(!ok);
    assert!(
        text.contains("seq 6") && text.contains("reordered"),
        "{text}"
    );
}

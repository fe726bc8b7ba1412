//! End-to-end basics: output capture, exit status propagation, spawn failures.

mod cell_support;

use cell_support::*;
use cellos_core::ports::WorkloadExit;
use serde_json::json;

#[test]
fn echo_output_is_captured_and_exit_zero_reported() {
    let fx = fixture();
    let r = run(
        &fx.backend,
        &spec(
            &unique_id("echo"),
            &["/bin/echo", "hello", "cell"],
            json!({}),
        ),
    );
    assert_eq!(
        r.outcome.exit,
        WorkloadExit::Exited { code: 0 },
        "stderr: {}",
        r.stderr
    );
    assert_eq!(r.stdout, "hello cell\n");
    assert!(r.teardown.residue.is_empty(), "{:?}", r.teardown.residue);
}

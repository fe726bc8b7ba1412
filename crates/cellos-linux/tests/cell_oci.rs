//! `rootfs: {ociLayout, ref}` cells: the image is materialised into the state directory's
//! store and becomes the cell's read-only root.

mod cell_support;
#[path = "support/oci_builder.rs"]
mod oci_builder;

use cell_support::*;
use cellos_core::ports::WorkloadExit;
use serde_json::json;

#[test]
fn oci_image_becomes_the_read_only_root() {
    let sh = std::fs::read("/usr/bin/dash").unwrap();
    let libc = std::fs::read("/lib/x86_64-linux-gnu/libc.so.6").unwrap();
    let ld = std::fs::read("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2").unwrap();
    let layout = tempfile::tempdir().unwrap();
    let reference = oci_builder::build_test_layout(
        layout.path(),
        &[
            ("bin/sh", &sh, 0o755),
            ("lib/x86_64-linux-gnu/libc.so.6", &libc, 0o755),
            ("lib64/ld-linux-x86-64.so.2", &ld, 0o755),
            ("etc/os-release", b"ID=tiny\n", 0o644),
        ],
    )
    .unwrap();
    let fx = fixture();
    let r = run(
        &fx.backend,
        &shell(
            &unique_id("oci"),
            "read x < /etc/os-release; echo $x; if ( echo x > /bin/new ) 2>/dev/null; then echo writable; fi; \
             for f in /*; do printf '%s ' \"$f\"; done; echo",
            json!({"filesystem": {"rootfs": {
                "ociLayout": layout.path().to_str().unwrap(),
                "ref": reference
            }}}),
        ),
    );
    assert_eq!(
        r.outcome.exit,
        WorkloadExit::Exited { code: 0 },
        "{}",
        r.stderr
    );
    assert_eq!(
        r.stdout,
        "ID=tiny\n/bin /dev /etc /lib /lib64 /proc /run /tmp \n"
    );
    assert!(
        r.isolation.rootfs.starts_with("oci:sha256:"),
        "{}",
        r.isolation.rootfs
    );
}

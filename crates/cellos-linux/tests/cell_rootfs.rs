//! `rootfs: {path}` cells: an image directory becomes the root, and nothing in it can redirect
//! a mount out of the cell.

mod cell_support;

use std::path::{Path, PathBuf};

use cell_support::*;
use cellos_core::ports::{CellBackend, WorkloadExit};
use serde_json::json;

/// A minimal image: dash, its libc and loader under usr/, merged-/usr symlinks, an /etc.
fn tiny_image() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let libdir = root.join("usr/lib/x86_64-linux-gnu");
    std::fs::create_dir_all(&libdir).unwrap();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::create_dir_all(root.join("usr/lib64")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::copy("/usr/bin/dash", root.join("usr/bin/sh")).unwrap();
    std::fs::copy("/lib/x86_64-linux-gnu/libc.so.6", libdir.join("libc.so.6")).unwrap();
    std::fs::copy(
        "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        libdir.join("ld-linux-x86-64.so.2"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        root.join("usr/lib64/ld-linux-x86-64.so.2"),
    )
    .unwrap();
    for (link, target) in [
        ("bin", "usr/bin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ] {
        std::os::unix::fs::symlink(target, root.join(link)).unwrap();
    }
    std::fs::write(root.join("etc/image-release"), b"tiny\n").unwrap();
    std::fs::write(root.join("etc/shadow"), b"image-owned\n").unwrap();
    (dir, root)
}

#[test]
fn image_directory_becomes_the_root() {
    let (_keep, root) = tiny_image();
    let fx = fixture();
    let id = unique_id("img");
    let r = run(
        &fx.backend,
        &shell(
            &id,
            "for f in /*; do printf '%s ' \"$f\"; done; echo; read x < /etc/image-release; echo $x; \
             read h < /etc/hostname; echo $h; if [ -e /usr/bin/python3 ]; then echo host-leak; fi",
            json!({"filesystem": {"rootfs": {"path": root.to_str().unwrap()}}}),
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
        format!("/bin /dev /etc /lib /lib64 /proc /run /tmp /usr \ntiny\n{id}\n")
    );
    assert_eq!(r.isolation.rootfs, format!("path:{}", root.display()));
}

#[test]
fn symlink_planted_in_an_image_cannot_redirect_a_mount() {
    let (_keep, root) = tiny_image();
    let victim = tempfile::tempdir().unwrap();
    let victim = std::fs::canonicalize(victim.path()).unwrap();
    // The image points /data at a host directory; a declared mount below it must not land there.
    std::os::unix::fs::symlink(&victim, root.join("data")).unwrap();
    let payload = tempfile::tempdir().unwrap();
    let payload = std::fs::canonicalize(payload.path()).unwrap();
    let fx = fixture();
    let spec = shell(
        &unique_id("plant"),
        "true",
        json!({"filesystem": {
            "rootfs": {"path": root.to_str().unwrap()},
            "mounts": [{"source": payload.to_str().unwrap(), "target": "/data/x"}]
        }}),
    );
    let failed = match fx.backend.create(quiet_request(&spec)) {
        Err(_) => true,
        Ok(mut cell) => {
            let started = cell.start();
            let _ = cell.destroy();
            started.is_err()
        }
    };
    assert!(
        failed,
        "the cell must not start with a symlinked mount target"
    );
    assert!(
        !victim.join("x").exists(),
        "mount target was created through the symlink"
    );
    assert!(std::fs::read_dir(&victim).unwrap().next().is_none());
    assert!(run_dir_entries(fx.state.path()).is_empty());
}

/// Init could not make the mount point (read-only `/usr`, and it does not exist there), so the
/// plan refuses the cell on the host, naming the field, before any of it exists.
#[test]
fn mount_target_in_a_read_only_directory_is_refused_before_the_cell_exists() {
    let fx = fixture();
    let src = tempfile::tempdir().unwrap();
    let src = std::fs::canonicalize(src.path()).unwrap();
    let spec = shell(
        &unique_id("rotarget"),
        "echo ran",
        json!({"filesystem": {"mounts": [{"source": src.to_str().unwrap(), "target": "/usr/cellos-missing"}]}}),
    );
    let error = fx
        .backend
        .create(quiet_request(&spec))
        .err()
        .expect("create must fail");
    assert_eq!(error.kind, cellos_core::ports::PortErrorKind::Refused);
    assert!(
        error.message.starts_with(
            "spec.filesystem.mounts[0].target: '/usr/cellos-missing' is inside /usr, which is read-only in this cell"
        ),
        "{error}"
    );
    assert!(run_dir_entries(fx.state.path()).is_empty());
    assert!(!Path::new("/usr/cellos-missing").exists());
}

//! OCI image layouts built on the fly, materialized into a store, and inspected.

#[path = "support/oci_builder.rs"]
mod oci_builder;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use cellos_linux::oci::{materialize, MaterializedRootfs, OciError};
use oci_builder::{build_test_layout, Blob, Entry, LayoutBuilder};
use serde_json::json;
use tar::EntryType;

fn file(path: &str, data: &[u8], mode: u32) -> Entry {
    Entry::from((path, data, mode))
}

fn dir(path: &str) -> Entry {
    Entry {
        path: path.to_string(),
        kind: EntryType::Directory,
        mode: 0o755,
        ..Entry::default()
    }
}

fn link(path: &str, kind: EntryType, target: &str) -> Entry {
    Entry {
        path: path.to_string(),
        kind,
        link: target.to_string(),
        ..Entry::default()
    }
}

/// Writes an image of `layers` named "img" and returns its manifest blob.
fn image(layout: &Path, layers: &[Vec<Entry>]) -> (LayoutBuilder, Blob) {
    let builder = LayoutBuilder::new(layout).unwrap();
    let blobs: Vec<Blob> = layers
        .iter()
        .map(|entries| builder.layer(entries, "tar+gzip").unwrap())
        .collect();
    let manifest = builder.manifest(&blobs).unwrap();
    builder.write_index(&[(Some("img"), &manifest)]).unwrap();
    (builder, manifest)
}

/// Writes an image index blob listing `manifests` with their `(os, architecture)`.
fn platform_index(builder: &LayoutBuilder, manifests: &[(&Blob, &str, &str)]) -> Blob {
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests
            .iter()
            .map(|(blob, os, arch)| {
                blob.descriptor(json!({ "platform": { "os": os, "architecture": arch } }))
            })
            .collect::<Vec<_>>(),
    });
    builder
        .blob(
            "application/vnd.oci.image.index.v1+json",
            &serde_json::to_vec(&index).unwrap(),
        )
        .unwrap()
}

/// Every path under `dir`, for asserting what exists anywhere in a test's scratch space.
fn all_paths(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        for entry in fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            found.push(path.display().to_string());
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                stack.push(path);
            }
        }
    }
    found
}

/// Nothing but lock files may be left in the store after a failed build.
fn assert_store_has_no_entry(store: &Path) {
    for path in all_paths(store) {
        let name = Path::new(&path)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        assert!(name.starts_with(".lock-"), "unexpected {path} in store");
    }
}

#[test]
fn file_from_a_layer_lands_with_its_content_and_without_setuid() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, manifest) = image(
        &tmp.path().join("layout"),
        &[vec![
            dir("usr"),
            dir("usr/bin"),
            file("usr/bin/tool", b"#!/bin/sh\necho hi\n", 0o4755),
            file("etc/hostname", b"cell\n", 0o644),
            Entry {
                mode: 0o1777,
                ..dir("tmp")
            },
        ]],
    );
    let got = materialize(&tmp.path().join("layout"), "img", &tmp.path().join("store")).unwrap();

    assert_eq!(got.digest, manifest.digest);
    let hex = manifest.digest.strip_prefix("sha256:").unwrap();
    assert_eq!(got.path, tmp.path().join("store").join(hex).join("rootfs"));
    assert_eq!(fs::read(got.path.join("etc/hostname")).unwrap(), b"cell\n");
    let tool = fs::metadata(got.path.join("usr/bin/tool")).unwrap();
    assert_eq!(
        tool.permissions().mode() & 0o7777,
        0o755,
        "setuid must be dropped"
    );
    let tmpdir = fs::metadata(got.path.join("tmp")).unwrap();
    assert_eq!(
        tmpdir.permissions().mode() & 0o7777,
        0o1777,
        "sticky bit kept"
    );
    assert!(got.skipped.is_empty());
}

#[test]
fn later_layer_whiteout_removes_an_earlier_file() {
    let tmp = tempfile::tempdir().unwrap();
    image(
        &tmp.path().join("layout"),
        &[
            vec![
                file("etc/secret", b"s", 0o600),
                file("etc/keep", b"k", 0o644),
                file("var/cache/a/b", b"x", 0o644),
            ],
            vec![
                file("etc/.wh.secret", b"", 0o644),
                file("var/.wh.cache", b"", 0o644),
            ],
        ],
    );
    let got = materialize(&tmp.path().join("layout"), "img", &tmp.path().join("store")).unwrap();

    assert!(!got.path.join("etc/secret").exists());
    assert!(
        !got.path.join("etc/.wh.secret").exists(),
        "whiteouts are not files"
    );
    assert!(
        !got.path.join("var/cache").exists(),
        "whiteout of a directory removes it"
    );
    assert_eq!(fs::read(got.path.join("etc/keep")).unwrap(), b"k");
}

#[test]
fn opaque_directory_hides_lower_content_but_keeps_its_own_layer() {
    let tmp = tempfile::tempdir().unwrap();
    image(
        &tmp.path().join("layout"),
        &[
            vec![
                file("app/old.conf", b"old", 0o644),
                file("app/sub/old", b"old", 0o644),
                file("other/stays", b"1", 0o644),
            ],
            // The marker comes after this layer's own entry: order inside a layer must not
            // matter.
            vec![
                dir("app"),
                file("app/new.conf", b"new", 0o644),
                file("app/.wh..wh..opq", b"", 0o644),
            ],
        ],
    );
    let got = materialize(&tmp.path().join("layout"), "img", &tmp.path().join("store")).unwrap();

    assert!(!got.path.join("app/old.conf").exists());
    assert!(!got.path.join("app/sub").exists());
    assert!(!got.path.join("app/.wh..wh..opq").exists());
    assert_eq!(fs::read(got.path.join("app/new.conf")).unwrap(), b"new");
    assert_eq!(fs::read(got.path.join("other/stays")).unwrap(), b"1");
}

#[test]
fn whiteout_and_recreation_in_one_layer_keeps_only_the_new_content() {
    let tmp = tempfile::tempdir().unwrap();
    image(
        &tmp.path().join("layout"),
        &[
            vec![file("conf/a", b"a", 0o644), file("conf/b", b"b", 0o644)],
            vec![
                dir("conf"),
                file("conf/c", b"c", 0o644),
                file(".wh.conf", b"", 0o644),
            ],
        ],
    );
    let got = materialize(&tmp.path().join("layout"), "img", &tmp.path().join("store")).unwrap();

    let mut names: Vec<String> = fs::read_dir(got.path.join("conf"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["c"]);
}

#[test]
fn layer_digest_mismatch_is_rejected_and_nothing_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let builder = LayoutBuilder::new(&layout).unwrap();
    let layer = builder
        .layer(&[file("bin/sh", b"real shell", 0o755)], "tar")
        .unwrap();
    let manifest = builder.manifest(std::slice::from_ref(&layer)).unwrap();
    builder.write_index(&[(Some("img"), &manifest)]).unwrap();
    // Same size, different bytes: only the hash can tell.
    let path = builder.blob_path(&layer.digest);
    let mut bytes = fs::read(&path).unwrap();
    let at = bytes.windows(4).position(|w| w == b"real").unwrap();
    bytes[at..at + 4].copy_from_slice(b"evil");
    fs::write(&path, &bytes).unwrap();

    let store = tmp.path().join("store");
    let err = materialize(&layout, "img", &store).unwrap_err();
    match &err {
        OciError::DigestMismatch { digest, .. } => assert_eq!(digest, &layer.digest),
        other => panic!("expected a digest mismatch, got {other}"),
    }
    assert!(
        err.to_string().contains("re-pull"),
        "message says the fix: {err}"
    );
    assert_store_has_no_entry(&store);
}

#[test]
fn blob_size_mismatch_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let (builder, manifest) = image(&layout, &[vec![file("a", b"a", 0o644)]]);
    let path = builder.blob_path(&manifest.digest);
    let mut bytes = fs::read(&path).unwrap();
    bytes.push(b' ');
    fs::write(&path, &bytes).unwrap();

    let err = materialize(&layout, "img", &tmp.path().join("store")).unwrap_err();
    assert!(
        matches!(err, OciError::SizeMismatch { expected, actual, .. } if actual == expected + 1),
        "got {err}"
    );
}

#[test]
fn parent_traversal_entry_is_rejected_and_nothing_lands_outside() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    image(
        &layout,
        &[vec![
            file("ok", b"1", 0o644),
            file("../evil", b"pwned", 0o644),
        ]],
    );
    let store = tmp.path().join("store");
    let err = materialize(&layout, "img", &store).unwrap_err();

    match &err {
        OciError::UnsafeEntry { entry, reason, .. } => {
            assert_eq!(entry, "../evil");
            assert!(reason.contains(".."), "{reason}");
        }
        other => panic!("expected an unsafe entry, got {other}"),
    }
    let evil: Vec<String> = all_paths(tmp.path())
        .into_iter()
        .filter(|p| p.ends_with("evil"))
        .collect();
    assert!(evil.is_empty(), "written outside: {evil:?}");
    assert_store_has_no_entry(&store);
}

#[test]
fn absolute_entry_path_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let outside = tmp.path().join("abs-target");
    let entry = format!("{}/planted", outside.display());
    fs::create_dir(&outside).unwrap();
    image(&layout, &[vec![file(&entry, b"pwned", 0o644)]]);

    let err = materialize(&layout, "img", &tmp.path().join("store")).unwrap_err();
    assert!(
        matches!(&err, OciError::UnsafeEntry { reason, .. } if reason.contains("absolute")),
        "got {err}"
    );
    assert!(fs::read_dir(&outside).unwrap().next().is_none());
}

#[test]
fn write_through_an_earlier_layer_symlink_is_rejected_and_nothing_lands_outside() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("host-etc");
    fs::create_dir(&outside).unwrap();
    let layout = tmp.path().join("layout");
    image(
        &layout,
        &[
            vec![link(
                "etc",
                EntryType::Symlink,
                &outside.display().to_string(),
            )],
            vec![file("etc/passwd", b"root::0:0::/:/bin/sh\n", 0o644)],
        ],
    );
    let err = materialize(&layout, "img", &tmp.path().join("store")).unwrap_err();

    match &err {
        OciError::UnsafeEntry { entry, reason, .. } => {
            assert_eq!(entry, "etc/passwd");
            assert!(reason.contains("symlink"), "{reason}");
        }
        other => panic!("expected an unsafe entry, got {other}"),
    }
    assert!(
        fs::read_dir(&outside).unwrap().next().is_none(),
        "host dir written"
    );
    assert_store_has_no_entry(&tmp.path().join("store"));
}

#[test]
fn write_through_a_relative_symlink_in_the_same_layer_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    image(
        &layout,
        &[vec![
            link("up", EntryType::Symlink, "../../.."),
            file("up/escaped", b"x", 0o644),
        ]],
    );
    let err = materialize(&layout, "img", &tmp.path().join("store")).unwrap_err();

    assert!(matches!(err, OciError::UnsafeEntry { .. }), "got {err}");
    let escaped: Vec<String> = all_paths(tmp.path())
        .into_iter()
        .filter(|p| p.ends_with("escaped"))
        .collect();
    assert!(escaped.is_empty(), "written outside: {escaped:?}");
}

#[test]
fn later_directory_replaces_an_earlier_symlink_instead_of_following_it() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("host-dir");
    fs::create_dir(&outside).unwrap();
    let layout = tmp.path().join("layout");
    image(
        &layout,
        &[
            vec![link(
                "data",
                EntryType::Symlink,
                &outside.display().to_string(),
            )],
            vec![dir("data"), file("data/f", b"inside", 0o644)],
        ],
    );
    let got = materialize(&layout, "img", &tmp.path().join("store")).unwrap();

    assert!(fs::symlink_metadata(got.path.join("data"))
        .unwrap()
        .is_dir());
    assert_eq!(fs::read(got.path.join("data/f")).unwrap(), b"inside");
    assert!(fs::read_dir(&outside).unwrap().next().is_none());
}

#[test]
fn hardlinks_inside_the_root_work_and_outside_targets_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    image(
        &layout,
        &[vec![
            file("bin/busybox", b"bb", 0o755),
            link("bin/ls", EntryType::Link, "bin/busybox"),
        ]],
    );
    let got = materialize(&layout, "img", &tmp.path().join("store")).unwrap();
    let a = fs::metadata(got.path.join("bin/busybox")).unwrap();
    let b = fs::metadata(got.path.join("bin/ls")).unwrap();
    assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()));

    for (target, why) in [("../../../etc/passwd", "'..'"), ("/etc/passwd", "absolute")] {
        let tmp = tempfile::tempdir().unwrap();
        let layout = tmp.path().join("layout");
        image(&layout, &[vec![link("stolen", EntryType::Link, target)]]);
        let err = materialize(&layout, "img", &tmp.path().join("store")).unwrap_err();
        assert!(
            matches!(&err, OciError::UnsafeEntry { reason, .. }
                if reason.starts_with("hardlink target") && reason.contains(why)),
            "target {target}: got {err}"
        );
    }
}

#[test]
fn second_materialize_is_a_cache_hit_that_does_not_unpack_again() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let store = tmp.path().join("store");
    let (builder, _) = image(&layout, &[vec![file("a", b"1", 0o644)]]);
    let first = materialize(&layout, "img", &store).unwrap();
    let marker = first.path.parent().unwrap().join("complete.json");
    let marker_mtime = fs::metadata(&marker).unwrap().modified().unwrap();
    // A file an unpack would never produce: it survives only if nothing is rebuilt.
    fs::write(first.path.join("sentinel"), b"from the first build").unwrap();
    // Layers are not even read on a hit: a corrupted layer goes unnoticed.
    let layer_digest = {
        let manifest: serde_json::Value =
            serde_json::from_slice(&fs::read(builder.blob_path(&first.digest)).unwrap()).unwrap();
        manifest["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    fs::write(builder.blob_path(&layer_digest), b"garbage").unwrap();

    let second = materialize(&layout, "img", &store).unwrap();

    assert_eq!(second, first);
    assert!(second.path.join("sentinel").exists());
    assert_eq!(
        fs::metadata(&marker).unwrap().modified().unwrap(),
        marker_mtime
    );
}

#[test]
fn build_directory_left_by_a_killed_builder_is_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let store = tmp.path().join("store");
    let (_, manifest) = image(&layout, &[vec![file("a", b"1", 0o644)]]);
    let hex = manifest.digest.strip_prefix("sha256:").unwrap();
    let stale = store.join(format!(".tmp-{hex}-dead01"));
    fs::create_dir_all(stale.join("rootfs/half-written")).unwrap();

    let got = materialize(&layout, "img", &store).unwrap();

    assert!(!stale.exists(), "stale build directory left behind");
    assert_eq!(fs::read(got.path.join("a")).unwrap(), b"1");
}

#[test]
fn reference_by_name_and_by_digest_give_the_same_rootfs() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let store = tmp.path().join("store");
    let (_, manifest) = image(&layout, &[vec![file("a", b"1", 0o644)]]);

    let by_name = materialize(&layout, "img", &store).unwrap();
    let by_digest = materialize(&layout, &manifest.digest, &store).unwrap();
    assert_eq!(by_name, by_digest);
    assert_eq!(by_digest.digest, manifest.digest);
}

#[test]
fn unknown_reference_lists_the_available_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let builder = LayoutBuilder::new(&layout).unwrap();
    let layer = builder
        .layer(&[file("a", b"1", 0o644)], "tar+gzip")
        .unwrap();
    let manifest = builder.manifest(&[layer]).unwrap();
    builder
        .write_index(&[
            (Some("alpine:3.20"), &manifest),
            (Some("latest"), &manifest),
        ])
        .unwrap();

    let err = materialize(&layout, "nginx", &tmp.path().join("store")).unwrap_err();
    let message = err.to_string();
    match &err {
        OciError::UnknownReference { available, .. } => assert_eq!(available.len(), 2),
        other => panic!("expected unknown reference, got {other}"),
    }
    for needle in ["'nginx'", "'alpine:3.20'", "'latest'", &manifest.digest] {
        assert!(message.contains(needle), "{needle} missing from: {message}");
    }
}

#[test]
fn image_index_resolves_to_this_hosts_platform() {
    let host_arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let other_arch = if host_arch == "s390x" {
        "amd64"
    } else {
        "s390x"
    };
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let builder = LayoutBuilder::new(&layout).unwrap();
    let image_for = |content: &[u8]| {
        let layer = builder
            .layer(&[file("arch", content, 0o644)], "tar+gzip")
            .unwrap();
        builder.manifest(&[layer]).unwrap()
    };
    let other = image_for(b"other");
    let host = image_for(b"host");
    let index = platform_index(
        &builder,
        &[(&other, "linux", other_arch), (&host, "linux", host_arch)],
    );
    builder.write_index(&[(Some("multi"), &index)]).unwrap();
    let store = tmp.path().join("store");

    let got = materialize(&layout, "multi", &store).unwrap();
    assert_eq!(
        got.digest, host.digest,
        "digest names the platform manifest"
    );
    assert_eq!(fs::read(got.path.join("arch")).unwrap(), b"host");
    // A platform manifest inside the index can be named by digest too.
    let direct = materialize(&layout, &other.digest, &store).unwrap();
    assert_eq!(fs::read(direct.path.join("arch")).unwrap(), b"other");
}

#[test]
fn image_index_without_this_platform_names_what_it_offers() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let builder = LayoutBuilder::new(&layout).unwrap();
    let layer = builder
        .layer(&[file("a", b"1", 0o644)], "tar+gzip")
        .unwrap();
    let manifest = builder.manifest(&[layer]).unwrap();
    let index = platform_index(&builder, &[(&manifest, "windows", "riscv64")]);
    builder.write_index(&[(Some("multi"), &index)]).unwrap();

    let err = materialize(&layout, "multi", &tmp.path().join("store")).unwrap_err();
    assert!(
        matches!(err, OciError::NoMatchingPlatform { .. }),
        "got {err}"
    );
    assert!(err.to_string().contains("windows/riscv64"), "{err}");
}

#[test]
fn zstd_layer_of_several_frames_unpacks_fully() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let builder = LayoutBuilder::new(&layout).unwrap();
    let big = vec![b'z'; 200 * 1024];
    let layer = builder
        .layer(
            &[
                file("first", b"1", 0o644),
                file("big", &big, 0o644),
                file("last", b"2", 0o644),
            ],
            "tar+zstd",
        )
        .unwrap();
    let manifest = builder.manifest(&[layer]).unwrap();
    builder.write_index(&[(Some("img"), &manifest)]).unwrap();

    let got = materialize(&layout, "img", &tmp.path().join("store")).unwrap();
    assert_eq!(fs::read(got.path.join("first")).unwrap(), b"1");
    assert_eq!(fs::read(got.path.join("big")).unwrap(), big);
    assert_eq!(fs::read(got.path.join("last")).unwrap(), b"2");
}

#[test]
fn device_nodes_are_skipped_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    image(
        &layout,
        &[vec![
            dir("dev"),
            Entry {
                path: "dev/null".into(),
                kind: EntryType::Char,
                ..Entry::default()
            },
        ]],
    );
    let store = tmp.path().join("store");
    let got = materialize(&layout, "img", &store).unwrap();

    assert!(fs::symlink_metadata(got.path.join("dev/null")).is_err());
    assert_eq!(got.skipped.len(), 1);
    assert!(got.skipped[0].starts_with("dev/null"), "{:?}", got.skipped);
    // The report survives a cache hit.
    assert_eq!(
        materialize(&layout, "img", &store).unwrap().skipped,
        got.skipped
    );
}

#[test]
fn concurrent_materializations_agree_and_leave_one_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let store = tmp.path().join("store");
    let files: Vec<(String, Vec<u8>)> = (0..200)
        .map(|i| {
            (
                format!("d{}/f{i}", i % 10),
                vec![b'a' + (i % 26) as u8; 4096],
            )
        })
        .collect();
    let entries: Vec<(&str, &[u8], u32)> = files
        .iter()
        .map(|(p, d)| (p.as_str(), d.as_slice(), 0o644))
        .collect();
    let reference = build_test_layout(&layout, &entries).unwrap();

    let results: Vec<MaterializedRootfs> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| materialize(&layout, &reference, &store).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    assert!(results.windows(2).all(|w| w[0] == w[1]));
    for (path, data) in &files {
        assert_eq!(&fs::read(results[0].path.join(path)).unwrap(), data);
    }
    let names: Vec<String> = fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(!names.iter().any(|n| n.starts_with(".tmp-")), "{names:?}");
    assert_eq!(names.iter().filter(|n| !n.starts_with(".lock-")).count(), 1);
}

#[test]
fn not_a_layout_says_how_to_make_one() {
    let tmp = tempfile::tempdir().unwrap();
    let err = materialize(tmp.path(), "img", &tmp.path().join("store")).unwrap_err();
    assert!(matches!(err, OciError::NotALayout { .. }), "got {err}");
    assert!(err.to_string().contains("oci-layout"), "{err}");
}

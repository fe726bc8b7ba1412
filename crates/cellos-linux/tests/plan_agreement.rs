//! One validator: the plan a Linux cell is built from refuses exactly the specs the core
//! validator refuses, with the same problems, and accepts every spec it accepts (on this
//! host, whose `/usr/share` and `/usr/lib` the corpus binds). Runs the agreement corpus
//! (`examples/agreement`), which covers every size unit, every reserved path and every
//! export kind, through `cellos_linux::plan::build`.

use std::path::{Path, PathBuf};

use cellos_core::spec::{parse_document, validate_execution_cell, Document, Problem};
use cellos_linux::error::LinuxError;
use cellos_linux::plan::{self, MountPlan, PlanContext, ResolvedRootfs};

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/agreement");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// The plan's verdict: its problems when it refuses the spec for a reason in the spec.
fn plan_problems(
    spec: &cellos_core::spec::ExecutionCellSpec,
) -> Result<Vec<MountPlan>, Vec<Problem>> {
    let context = PlanContext {
        build_dir: Path::new("/tmp"),
        rootfs: &ResolvedRootfs::Host,
        etc_mask: None,
        secret_delivery: spec.secret_delivery(),
        secret_keys: &spec.authority.secret_refs,
        expected_landlock_abi: None,
        seccomp: Vec::new(),
        telemetry: None,
    };
    match plan::build(spec, context) {
        Ok(config) => Ok(config.mounts),
        Err(LinuxError::Invalid { problems }) => Err(problems),
        Err(other) => panic!(
            "{}: refused for a reason outside the spec: {other}",
            spec.id
        ),
    }
}

#[test]
fn the_plan_and_the_validator_agree_on_every_corpus_spec() {
    let files = corpus();
    assert!(files.len() >= 20, "the corpus has {} specs", files.len());
    let mut planned = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read");
        let accept = text.lines().any(|l| l == "# verdict: accept");
        // A document the parser refuses never reaches either; both share that one parser.
        let Ok(Document::ExecutionCell(doc)) = parse_document(&text) else {
            assert!(
                !accept,
                "{}: the parser refuses an accepted spec",
                file.display()
            );
            continue;
        };
        let validated = validate_execution_cell(&doc);
        let built = plan_problems(&doc.spec);
        match (&validated, &built) {
            (Ok(()), Ok(_)) => {}
            (Err(v), Err(b)) => assert_eq!(v, b, "{}: different problems", file.display()),
            _ => panic!(
                "{}: validator says {validated:?}, the plan says {:?}",
                file.display(),
                built.as_ref().map(|_| "accepted")
            ),
        }
        planned += 1;
    }
    assert!(planned >= 20, "only {planned} specs reached the plan");
}

#[test]
fn every_size_unit_reaches_the_workspace_tmpfs_as_the_core_parses_it() {
    for (file, bytes) in [
        ("size-bytes-number", 1_048_576),
        ("size-bytes-string", 1_048_576),
        ("size-k", 512_000),
        ("size-upper-k", 512_000),
        ("size-m", 64_000_000),
        ("size-g", 1_000_000_000),
        ("size-t", 1_000_000_000_000),
        ("size-ki", 512 << 10),
        ("size-mi", 64 << 20),
        ("size-gi", 2 << 30),
        ("size-ti", 1 << 40),
        ("size-space", 64 << 20),
        ("size-default", cellos_core::spec::DEFAULT_WORKSPACE_BYTES),
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../../examples/agreement/{file}.yaml"));
        let text = std::fs::read_to_string(&path).expect("read");
        let Ok(Document::ExecutionCell(doc)) = parse_document(&text) else {
            panic!("{file}: not a cell");
        };
        let mounts = plan_problems(&doc.spec).unwrap_or_else(|p| panic!("{file}: {p:?}"));
        assert_eq!(
            mounts,
            [MountPlan::Tmpfs {
                target: "/work".into(),
                size_bytes: bytes
            }],
            "{file}"
        );
    }
}

#[test]
fn a_symlinked_source_is_refused_with_its_field_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let real = std::fs::canonicalize(dir.path())
        .expect("canonical")
        .join("real");
    std::fs::create_dir(&real).expect("mkdir");
    let link = real.with_file_name("link");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let text = format!(
        "apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec:\n  id: linked\n  run: {{argv: [/bin/true]}}\n  filesystem:\n    mounts:\n      - {{source: {}, target: /data}}\n",
        link.display()
    );
    let Ok(Document::ExecutionCell(doc)) = parse_document(&text) else {
        panic!("not a cell");
    };
    assert_eq!(
        validate_execution_cell(&doc),
        Ok(()),
        "the core cannot see the host"
    );
    let context = PlanContext {
        build_dir: Path::new("/tmp"),
        rootfs: &ResolvedRootfs::Host,
        etc_mask: None,
        secret_delivery: doc.spec.secret_delivery(),
        secret_keys: &[],
        expected_landlock_abi: None,
        seccomp: Vec::new(),
        telemetry: None,
    };
    let err = plan::build(&doc.spec, context).unwrap_err();
    assert!(matches!(err, LinuxError::Refused { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("refused: spec.filesystem.mounts[0].source: "),
        "{err}"
    );
    assert!(err.to_string().contains("goes through a symlink"), "{err}");
}

/// The plan of `mounts` (YAML flow list) in an image rootfs holding `usr/share/`, a file
/// `hello` and a symlink `bin -> usr/bin`.
fn plan_in_image(mounts: &str) -> Result<(), String> {
    let image = tempfile::tempdir().expect("tempdir");
    let image = std::fs::canonicalize(image.path()).expect("canonical");
    std::fs::create_dir_all(image.join("usr/share")).expect("mkdir");
    std::fs::write(image.join("hello"), "hi").expect("write");
    std::os::unix::fs::symlink("usr/bin", image.join("bin")).expect("symlink");
    let text = format!(
        "apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec:\n  id: points\n  run: {{argv: [/bin/true]}}\n  filesystem:\n    mounts: {mounts}\n    workspace: {{target: /work}}\n"
    );
    let Ok(Document::ExecutionCell(doc)) = parse_document(&text) else {
        panic!("not a cell: {text}");
    };
    assert_eq!(validate_execution_cell(&doc), Ok(()), "{text}");
    let rootfs = ResolvedRootfs::Dir(image);
    let context = PlanContext {
        build_dir: Path::new("/tmp"),
        rootfs: &rootfs,
        etc_mask: None,
        secret_delivery: doc.spec.secret_delivery(),
        secret_keys: &[],
        expected_landlock_abi: None,
        seccomp: Vec::new(),
        telemetry: None,
    };
    match plan::build(&doc.spec, context) {
        Ok(_) => Ok(()),
        Err(LinuxError::Refused { what }) => Err(what),
        Err(other) => panic!("{mounts}: unexpected {other}"),
    }
}

#[test]
fn a_mount_point_init_could_not_make_is_refused_by_the_plan_with_its_field() {
    // Creatable: in the root tmpfs, in the workspace tmpfs, or already there.
    for ok in [
        "[{source: /usr/share, target: /data/deep}]",
        "[{source: /usr/share, target: /work/inside}]",
        "[{source: /usr/share, target: /usr/share}]",
        "[{source: /usr/share, target: /usr}]",
    ] {
        assert_eq!(plan_in_image(ok), Ok(()), "{ok}");
    }
    let missing = plan_in_image("[{source: /usr/share, target: /usr/nope}]").unwrap_err();
    assert!(
        missing.starts_with(
            "spec.filesystem.mounts[0].target: '/usr/nope' is inside /usr, which is read-only in this cell, and does not exist there (it would be /"
        ),
        "{missing}"
    );
    let linked = plan_in_image("[{source: /usr/share, target: /bin/tool}]").unwrap_err();
    assert!(
        linked.starts_with("spec.filesystem.mounts[0].target: '/bin/tool' goes through /bin, a symlink in this cell's root (to usr/bin)"),
        "{linked}"
    );
    let under_file = plan_in_image("[{source: /usr/share, target: /hello/x}]").unwrap_err();
    assert!(
        under_file.contains("'/hello/x' is inside /hello"),
        "{under_file}"
    );
    let nested = plan_in_image(
        "[{source: /usr/share, target: /data}, {source: /usr/lib, target: /data/cellos-none}]",
    )
    .unwrap_err();
    assert!(
        nested.starts_with("spec.filesystem.mounts[1].target: '/data/cellos-none' is inside /data, which is read-only"),
        "{nested}"
    );
    let writable = plan_in_image(
        "[{source: /tmp, target: /data, readOnly: false}, {source: /usr/lib, target: /data/cellos-none}]",
    );
    assert_eq!(writable, Ok(()), "a writable bind takes new mount points");
}

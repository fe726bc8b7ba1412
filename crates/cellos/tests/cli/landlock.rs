//! The Landlock requirement of a cell (`filesystem.landlock.minAbi`) against this host's kernel,
//! and what the evidence says was enforced.
//!
//! A kernel without Landlock is simulated by running `cellos` under a seccomp filter that
//! answers `landlock_create_ruleset` with ENOSYS, as a kernel built without Landlock does; the
//! VM battery (scripts/vm/battery.sh) covers a kernel booted without it for real.

use std::collections::BTreeMap;
use std::process::{Command, Output};

use cellos_core::spec::{landlock_abi_kernel, HIGHEST_LANDLOCK_ABI};
use cellos_linux::landlock_rules::kernel_abi;
use seccompiler::{SeccompAction, SeccompFilter, TargetArch};
use serde_json::{json, Value};

use crate::support::{events, events_of, residue_of, sh, short_type, stderr, unique_id, Home};

/// This host's Landlock ABI; every test here needs one.
fn host_abi() -> u32 {
    kernel_abi().expect("these tests need a kernel with Landlock (see `cellos doctor`)")
}

/// A spec body running `true` with `filesystem.landlock.minAbi: min_abi`.
fn requiring(min_abi: u32) -> String {
    format!(
        "{}  filesystem:\n    landlock: {{minAbi: {min_abi}}}\n",
        sh("echo ran")
    )
}

/// The `cellos:` reason line of a failed run.
fn reason(out: &Output) -> String {
    let err = stderr(out);
    err.lines()
        .filter(|l| l.contains("Landlock"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The data of the cell's `isolation.v1.enforced` event.
fn enforced(home: &Home, id: &str) -> Value {
    let all = events(home);
    events_of(&all, id)
        .into_iter()
        .find(|e| short_type(e) == "isolation.v1.enforced")
        .unwrap_or_else(|| panic!("no isolation.v1.enforced for {id}"))["data"]
        .clone()
}

/// `cellos run` on a kernel that seems to have no Landlock.
fn run_without_landlock(mut cmd: Command) -> Output {
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> =
        [(libc::SYS_landlock_create_ruleset, Vec::new())]
            .into_iter()
            .collect();
    let program: seccompiler::BpfProgram = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        TargetArch::x86_64,
    )
    .and_then(TryInto::try_into)
    .expect("filter");
    std::thread::spawn(move || {
        // Filters are per thread and inherited by the processes it starts.
        seccompiler::apply_filter(&program).expect("install filter");
        cmd.output().expect("run cellos")
    })
    .join()
    .unwrap()
}

#[test]
fn a_spec_requiring_more_landlock_than_this_kernel_has_is_refused_before_anything_exists() {
    let home = Home::new();
    let id = unique_id("ll-above");
    let host = host_abi();
    if host < HIGHEST_LANDLOCK_ABI {
        let wanted = host + 1;
        let spec = home.spec(&id, &requiring(wanted));
        let out = home.run(&["run", spec.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
        let line = reason(&out);
        let release = landlock_abi_kernel(wanted).expect("a known ABI");
        for part in [
            format!("Landlock ABI {wanted}"),
            "spec.filesystem.landlock.minAbi".to_owned(),
            format!("this kernel has Landlock ABI {host}"),
            format!("Linux {release}"),
        ] {
            assert!(line.contains(&part), "{part:?} in {line}");
        }
        assert!(residue_of(&home, &id).is_empty());
    } else {
        // This kernel has every ABI CellOS applies: ask for the next one, which CellOS refuses
        // to promise at all.
        let wanted = HIGHEST_LANDLOCK_ABI + 1;
        let spec = home.spec(&id, &requiring(wanted));
        let out = home.run(&["run", spec.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
        let line = reason(&out);
        assert!(
            line.contains(&format!(
                "spec.filesystem.landlock.minAbi: Landlock ABI {wanted} is not supported"
            )),
            "{line}"
        );
        assert!(residue_of(&home, &id).is_empty());
    }
    let all = events(&home);
    let types: Vec<String> = events_of(&all, &id).iter().map(|e| short_type(e)).collect();
    assert!(
        !types.iter().any(|t| t == "lifecycle.v1.started"),
        "{types:?}"
    );
}

#[test]
fn a_cells_evidence_lists_exactly_the_rights_this_kernels_abi_leaves_unenforced() {
    let home = Home::new();
    let id = unique_id("ll-evidence");
    let spec = home.spec(&id, &sh("true"));
    let out = home.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let applied = host_abi().min(HIGHEST_LANDLOCK_ABI);
    let unenforced = match applied {
        1 => json!(["refer", "truncate", "ioctlDev"]),
        2 => json!(["truncate", "ioctlDev"]),
        3 | 4 => json!(["ioctlDev"]),
        _ => json!([]),
    };
    let data = enforced(&home, &id);
    assert_eq!(data["landlockAbi"], json!(applied), "{data}");
    assert_eq!(data["landlockEnforced"], json!(true), "{data}");
    assert_eq!(data["landlockMinAbi"], json!(1), "{data}");
    assert_eq!(data["landlockUnenforced"], unenforced, "{data}");
}

#[test]
fn without_landlock_a_cell_that_requires_it_is_refused_naming_landlock() {
    let home = Home::new();
    let id = unique_id("ll-none");
    let spec = home.spec(&id, &sh("echo ran"));
    let mut cmd = home.cellos();
    cmd.args(["run", spec.to_str().unwrap()]);
    let out = run_without_landlock(cmd);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    let line = reason(&out);
    for part in [
        "Landlock ABI 1",
        "this kernel has no Landlock",
        "Linux 5.13",
        "spec.filesystem.landlock.minAbi: 0",
    ] {
        assert!(line.contains(part), "{part:?} in {line}");
    }
    assert!(residue_of(&home, &id).is_empty());
}

#[test]
fn without_landlock_a_cell_with_landlock_optional_runs_and_its_evidence_says_so() {
    let home = Home::new();
    let id = unique_id("ll-optional");
    let spec = home.spec(&id, &requiring(0));
    let mut cmd = home.cellos();
    cmd.args(["run", spec.to_str().unwrap()]);
    let out = run_without_landlock(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ran");
    let data = enforced(&home, &id);
    assert_eq!(data["landlockAbi"], Value::Null, "{data}");
    assert_eq!(data["landlockEnforced"], json!(false), "{data}");
    assert_eq!(data["landlockMinAbi"], json!(0), "{data}");
    let unenforced = data["landlockUnenforced"].as_array().expect("a list");
    for right in [
        "execute",
        "writeFile",
        "readFile",
        "refer",
        "truncate",
        "ioctlDev",
    ] {
        assert!(unenforced.contains(&json!(right)), "{right} in {data}");
    }
    assert_eq!(unenforced.len(), 16, "{data}");
    // Its other layers still hold.
    let sha = data["seccompProfileSha256"].as_str().unwrap_or_default();
    assert_eq!(sha.len(), 64, "{data}");
    assert_eq!(data["noNewPrivs"], json!(true), "{data}");
}

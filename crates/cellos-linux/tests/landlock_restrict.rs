//! Landlock applied for real in a child just before exec: writes outside the plan fail with
//! EACCES, writes inside succeed, read-only stays read-only, and writable paths are not
//! executable unless also listed as read-exec.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cellos_linux::landlock_rules::{kernel_abi, restrict_self, LandlockPlan};

/// System hierarchies a shell needs to start.
fn system_read_exec() -> Vec<PathBuf> {
    [
        "/usr",
        "/bin",
        "/lib",
        "/lib64",
        "/etc",
        "/nonexistent-optional-path",
    ]
    .into_iter()
    .map(PathBuf::from)
    .collect()
}

/// errno of `open(path, flags, 0o644)` made after `restrict_self(plan)` in a child; 0 on success.
fn open_errno_in_child(plan: &LandlockPlan, path: &Path, flags: libc::c_int) -> i32 {
    let plan = plan.clone();
    let path = CString::new(path.as_os_str().as_bytes()).expect("no NUL in path");
    let mut cmd = Command::new("true");
    // SAFETY: the hook applies Landlock and makes one open call.
    unsafe {
        cmd.pre_exec(move || {
            restrict_self(&plan).map_err(|e| std::io::Error::other(e.to_string()))?;
            let fd = libc::open(path.as_ptr(), flags, 0o644);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Err(std::io::Error::from_raw_os_error(0))
        });
    }
    match cmd.spawn() {
        Ok(mut child) => panic!("hook did not report: {:?}", child.wait()),
        Err(e) => e.raw_os_error().expect("errno from the hook"),
    }
}

fn sh_restricted(plan: &LandlockPlan, script: &str) -> std::process::Output {
    let plan = plan.clone();
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script).stdin(Stdio::null());
    // SAFETY: the hook only applies Landlock.
    unsafe {
        cmd.pre_exec(move || {
            restrict_self(&plan)
                .map(|_| ())
                .map_err(|e| std::io::Error::other(e.to_string()))
        });
    }
    cmd.output().expect("run sh")
}

const CREATE: libc::c_int = libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC;

#[test]
fn writes_outside_the_plan_fail_with_eacces() {
    let inside = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    let plan = LandlockPlan {
        read_exec: system_read_exec(),
        read_only: Vec::new(),
        read_write: vec![inside.path().to_path_buf()],
    };
    let out_file = outside.path().join("f");
    // Control: without Landlock the same open works.
    std::fs::write(&out_file, b"").expect("write outside without Landlock");
    std::fs::remove_file(&out_file).expect("cleanup");

    assert_eq!(open_errno_in_child(&plan, &out_file, CREATE), libc::EACCES);
    assert!(!out_file.exists());
    assert_eq!(
        open_errno_in_child(&plan, &inside.path().join("f"), CREATE),
        0
    );
    assert!(inside.path().join("f").exists());
}

#[test]
fn a_shell_under_the_plan_writes_inside_only() {
    let inside = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    let plan = LandlockPlan {
        read_exec: system_read_exec(),
        read_only: vec![outside.path().to_path_buf()],
        read_write: vec![inside.path().to_path_buf()],
    };
    std::fs::write(outside.path().join("input"), b"hello").expect("seed input");
    let script = format!(
        "cat {o}/input > {i}/copy && echo ok; echo x > {o}/out",
        i = inside.path().display(),
        o = outside.path().display()
    );
    let out = sh_restricted(&plan, &script);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n", "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{out:?}"
    );
    assert!(!out.status.success());
    assert_eq!(
        std::fs::read(inside.path().join("copy")).expect("copy"),
        b"hello"
    );
    assert!(!outside.path().join("out").exists());
}

#[test]
fn writable_paths_are_not_executable_unless_listed_read_exec() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tool = dir.path().join("true");
    std::fs::copy("/bin/true", &tool).expect("copy /bin/true");
    let write_only = LandlockPlan {
        read_exec: system_read_exec(),
        read_only: Vec::new(),
        read_write: vec![dir.path().to_path_buf()],
    };
    let exec = |plan: &LandlockPlan| sh_restricted(plan, &format!("exec {}", tool.display()));
    let denied = exec(&write_only);
    assert!(!denied.status.success());
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("Permission denied"),
        "{denied:?}"
    );

    let mut both = write_only.clone();
    both.read_exec.push(dir.path().to_path_buf());
    assert!(exec(&both).status.success());
}

#[test]
fn restrict_self_reports_the_abi_it_applied() {
    let kernel = kernel_abi().expect("this host has Landlock");
    let plan = LandlockPlan {
        read_exec: system_read_exec(),
        ..LandlockPlan::default()
    };
    let mut cmd = Command::new("true");
    // SAFETY: the hook applies Landlock and reports the ABI through the exit path.
    unsafe {
        cmd.pre_exec(move || {
            let abi = restrict_self(&plan).map_err(|e| std::io::Error::other(e.to_string()))?;
            // Hand the ABI back as a fake errno (ABI numbers are small positive integers).
            Err(std::io::Error::from_raw_os_error(
                i32::try_from(abi.unwrap_or(0)).unwrap_or(0) + 1000,
            ))
        });
    }
    let err = cmd.spawn().expect_err("hook reports");
    let applied = err.raw_os_error().expect("errno") - 1000;
    assert_eq!(applied as u32, kernel.min(5));
}

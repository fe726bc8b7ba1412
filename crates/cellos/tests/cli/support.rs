//! Shared helpers for the CLI end-to-end tests: a private CELLOS_HOME per test and specs with
//! ids unique on this host (cgroups and run records are host-wide).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

pub struct Home {
    pub dir: tempfile::TempDir,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A cell id no other test (or concurrent test binary) uses.
pub fn unique_id(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl Home {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn cellos(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cellos"));
        cmd.env("CELLOS_HOME", self.path())
            .env_remove("CELLOS_SECRETS_DIR")
            .env_remove("CELLOS_SECRET_COMMAND");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cellos().args(args).output().expect("run cellos")
    }

    /// `cellos run --quiet spec` started in the background, its output discarded.
    pub fn start_run(&self, spec: &Path) -> Child {
        self.cellos()
            .args(["run", "--quiet"])
            .arg(spec)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start cellos run")
    }

    /// Write a spec whose `spec:` body is `body` (YAML, indented by two spaces) with `id`.
    pub fn spec(&self, id: &str, body: &str) -> PathBuf {
        let path = self.path().join(format!("{id}.yaml"));
        let text =
            format!("apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec:\n  id: {id}\n{body}");
        std::fs::write(&path, text).expect("write spec");
        path
    }
}

/// The binary `name` of workspace package `package`, next to `cellos` (where the composition
/// root looks for init and the telemetry agent). A workspace test run builds it already; a
/// run of this test target alone builds it here, once per binary.
pub fn built_binary(name: &str, package: &str) -> PathBuf {
    static BUILT: Mutex<Option<HashMap<String, Result<(), String>>>> = Mutex::new(None);
    let path = PathBuf::from(env!("CARGO_BIN_EXE_cellos")).with_file_name(name);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let result = built
        .get_or_insert_with(HashMap::new)
        .entry(name.to_owned())
        .or_insert_with(|| {
            if path.is_file() {
                return Ok(());
            }
            let status = Command::new(env!("CARGO"))
                .args(["build", "-p", package, "--bin", name])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .map_err(|e| format!("run cargo: {e}"))?;
            if !status.success() || !path.is_file() {
                return Err(format!(
                    "building {name} failed ({status}) or it is not at {}",
                    path.display()
                ));
            }
            Ok(())
        });
    if let Err(e) = result {
        panic!("{e}");
    }
    path
}

/// Processes on the host that live in a cgroup of `cell`.
pub fn processes_of(cell: &str) -> Vec<String> {
    let needle = format!("/cellos/{cell}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if let Ok(cg) = std::fs::read_to_string(entry.path().join("cgroup")) {
            if cg.contains(&needle) {
                found.push(name.to_string_lossy().into_owned());
            }
        }
    }
    found
}

/// A spec body whose workload is `/bin/sh -c script`.
pub fn sh(script: &str) -> String {
    format!(
        "  run:\n    argv: [\"/bin/sh\", \"-c\", {}]\n",
        serde_json::to_string(script).unwrap()
    )
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every event line of the log, parsed.
pub fn events(home: &Home) -> Vec<serde_json::Value> {
    let out = home.run(&["events", "--json"]);
    assert!(
        out.status.success(),
        "cellos events failed: {}",
        stderr(&out)
    );
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("event JSON"))
        .collect()
}

pub fn events_of<'a>(events: &'a [serde_json::Value], cell: &str) -> Vec<&'a serde_json::Value> {
    let subject = format!("urn:cellos:cell:{cell}");
    events
        .iter()
        .filter(|e| e["subject"] == subject.as_str())
        .collect()
}

pub fn short_type(event: &serde_json::Value) -> String {
    event["type"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("dev.cellos.events.cell.")
        .to_string()
}

/// Host-side traces a cell could leave: cgroup dirs, run records, live processes with its id.
pub fn residue_of(home: &Home, cell: &str) -> Vec<String> {
    let mut found = Vec::new();
    for hierarchy in ["memory", "pids", "cpu", "cpuacct", "freezer", "unified", ""] {
        let dir = Path::new("/sys/fs/cgroup")
            .join(hierarchy)
            .join("cellos")
            .join(cell);
        if dir.exists() {
            found.push(format!("cgroup {}", dir.display()));
        }
    }
    let record = home.path().join("run").join(format!("{cell}.json"));
    if record.exists() {
        found.push(format!("record {}", record.display()));
    }
    let telemetry = home.path().join("run").join(format!("{cell}.telemetry"));
    if telemetry.exists() {
        found.push(format!(
            "telemetry socket directory {}",
            telemetry.display()
        ));
    }
    found
}

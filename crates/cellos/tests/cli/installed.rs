//! Cells start wherever CellOS is installed: here, under a directory only host root may
//! search (mode 0700, as `/root` is on Debian), with the state directory beside it. The cell's
//! init and telemetry agent run as ids that cannot look anything up there, so both must be
//! reached through descriptors the supervisor opened: init exec'd (the first run, which
//! creates the signing key, and so must exec; and every telemetry cell, whose supervisor is
//! multi-threaded), init run in the clone (later plain runs), and the agent bound into a
//! telemetry cell.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};

use crate::support::{built_binary, events_of, short_type, stderr, stdout, unique_id};

/// The CLI, init and agent copied into `<0700 dir>/opt/cellos/bin`, and a state directory
/// `<0700 dir>/home` that does not exist yet (no signing key).
struct Install {
    /// Mode 0700; removed on drop.
    private: tempfile::TempDir,
    bin: PathBuf,
}

impl Install {
    fn new() -> Install {
        let private = tempfile::tempdir().unwrap();
        std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let bin = private.path().join("opt/cellos/bin");
        std::fs::create_dir_all(&bin).unwrap();
        let binaries = [
            PathBuf::from(env!("CARGO_BIN_EXE_cellos")),
            built_binary("cellos-cell-init", "cellos-linux"),
            built_binary("cellos-telemetry-agent", "cellos-telemetry-agent"),
        ];
        for source in binaries {
            let target = bin.join(source.file_name().unwrap());
            std::fs::copy(&source, &target).unwrap();
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Install { private, bin }
    }

    fn home(&self) -> PathBuf {
        self.private.path().join("home")
    }

    fn cellos(&self) -> Command {
        let mut cmd = Command::new(self.bin.join("cellos"));
        cmd.env("CELLOS_HOME", self.home())
            .env_remove("CELLOS_SECRETS_DIR");
        cmd
    }

    /// `cellos run` of a cell `id` whose workload is `/bin/sh -c script`; `extra` is more of
    /// the spec (YAML indented by two spaces).
    fn run(&self, id: &str, script: &str, extra: &str) -> Output {
        let spec = self.private.path().join(format!("{id}.yaml"));
        let text = format!(
            "apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec:\n  id: {id}\n{extra}  \
             run:\n    argv: [\"/bin/sh\", \"-c\", {}]\n",
            serde_json::to_string(script).unwrap()
        );
        std::fs::write(&spec, text).unwrap();
        self.cellos()
            .args(["run", spec.to_str().unwrap()])
            .output()
            .unwrap()
    }

    fn key_exists(&self) -> bool {
        self.home().join("keys").read_dir().is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().contains("ed25519"))
        })
    }
}

const TELEMETRY: &str = "  telemetry:\n    enabled: true\n";

/// Init's command line as the cell sees it, the workload's uid, and (with `agent`) whether
/// the telemetry agent runs beside it; then exit 7.
fn probe(agent: bool) -> String {
    let agent = if agent {
        "for i in $(seq 100); do \
           if grep -qs '^cellos-telemetry-agent' /proc/[0-9]*/cmdline; then echo agent running; \
           break; fi; sleep 0.05; done; "
    } else {
        ""
    };
    format!("echo init: $(tr '\\0' ' ' < /proc/1/cmdline); echo uid: $(id -u); {agent}exit 7")
}

/// The probe's lines, after checking the run ended with the workload's own status.
fn lines(out: &Output) -> Vec<String> {
    assert_eq!(out.status.code(), Some(7), "{}", stderr(out));
    stdout(out).lines().map(str::to_owned).collect()
}

#[test]
fn cells_start_from_an_install_under_a_0700_directory_by_both_init_paths() {
    let install = Install::new();
    assert_eq!(
        std::fs::metadata(install.private.path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    assert!(!install.key_exists());

    // First run: the signing key is created, so init is exec'd. A directory from under the
    // 0700 one is bound in read-only, and readable by the workload.
    let data = install.private.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("hello"), "from the host\n").unwrap();
    std::fs::set_permissions(data.join("hello"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let mount = format!(
        "  filesystem:\n    mounts:\n      - source: {}\n        target: /data\n        \
         readOnly: true\n",
        data.display()
    );
    let first = unique_id("p700-exec");
    let out = install.run(
        &first,
        &format!("cat /data/hello; {}", probe(false)),
        &mount,
    );
    assert!(install.key_exists(), "{}", stderr(&out));
    assert_eq!(
        lines(&out),
        [
            "from the host",
            "init: cellos-cell-init __cell-init",
            "uid: 1000"
        ],
        "{}",
        stderr(&out)
    );

    // The key exists: init runs in the clone (its command line shows only its name).
    let second = unique_id("p700-clone");
    let out = install.run(&second, &probe(false), "");
    assert_eq!(
        lines(&out),
        ["init: cellos-cell-init", "uid: 1000"],
        "{}",
        stderr(&out)
    );

    // A telemetry cell: the supervisor's telemetry thread runs before the clone, so init is
    // exec'd as by a multi-threaded supervisor, and the agent runs beside the workload.
    let third = unique_id("p700-tel");
    let out = install.run(&third, &probe(true), TELEMETRY);
    assert_eq!(
        lines(&out),
        [
            "init: cellos-cell-init __cell-init",
            "uid: 1000",
            "agent running"
        ],
        "{}",
        stderr(&out)
    );
    // The agent reached the host through its socket.
    let log = events_of_install(&install);
    let declared = events_of(&log, &third)
        .into_iter()
        .filter(|e| short_type(e) == "telemetry.v1.declared")
        .count();
    assert!(declared > 0, "no agent declaration from {third}");
}

#[test]
fn an_init_binary_the_cell_may_not_execute_is_named_with_the_errno_and_the_fix() {
    let install = Install::new();
    let init = install.bin.join("cellos-cell-init");
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o700)).unwrap();
    // No key yet: init is exec'd.
    let out = install.run(&unique_id("p700-noexec"), "exit 0", "");
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("exec the cell's init"), "{err}");
    assert!(err.contains("(os error 13)"), "{err}");
    assert!(
        err.contains(&format!("chmod o+x {}", init.display())),
        "{err}"
    );
    assert!(!err.contains("Broken pipe"), "{err}");
}

/// Every event of the install's log.
fn events_of_install(install: &Install) -> Vec<serde_json::Value> {
    let out = install
        .cellos()
        .args(["events", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

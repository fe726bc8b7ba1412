//! A networked cell's lifecycle runs no tool at all: links, addresses and routes are made
//! in-process over route netlink, the host table and the cell's ruleset over nf_tables
//! netlink. Proved with `strace -f -e trace=execve` of `cellos run`: only CellOS's own binaries
//! and the workload are executed.

use std::collections::BTreeSet;

use crate::cell::{authority, unique_id, Cells};
use crate::internet::{Internet, ALPHA};

/// Everything `cellos run` of a networked `/bin/true` cell may execute (basenames): CellOS's
/// own binaries and the workload.
const ALLOWED: &[&str] = &["cellos", "cellos-cell-init", "true"];

#[test]
fn cellos_run_of_a_networked_cell_executes_only_cellos_and_the_workload() {
    let net = Internet::new();
    let cells = Cells::new();
    let id = unique_id("eg-tools");
    let rules = [format!("{{ host: {ALPHA}, port: 443 }}")];
    let spec = cells.spec(&id, &["/bin/true"], &[], &authority(&rules, &[]));
    let trace = cells.path().join("execve.trace");
    let out = cells
        .cellos()
        .env("CELLOS_DNS_UPSTREAM", net.dns().to_string())
        .arg("run")
        .arg(&spec)
        .output_under_strace(&trace);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&trace).expect("read the strace log");
    let executed: BTreeSet<String> = text
        .lines()
        .filter(|l| l.contains("execve(\"") && !l.contains("ENOENT"))
        .filter_map(|l| l.split('"').nth(1))
        .map(|path| path.rsplit('/').next().unwrap_or(path).to_owned())
        .collect();
    // The trace saw the cell: its workload was executed.
    assert!(executed.contains("true"), "{executed:?}");
    let others: Vec<&String> = executed
        .iter()
        .filter(|p| !ALLOWED.contains(&p.as_str()))
        .collect();
    assert!(
        others.is_empty(),
        "executed {others:?}; everything executed: {executed:?}"
    );
}

/// `Command::output` of the command run by `strace -f -e trace=execve -o TRACE`.
trait UnderStrace {
    fn output_under_strace(&mut self, trace: &std::path::Path) -> std::process::Output;
}

impl UnderStrace for std::process::Command {
    fn output_under_strace(&mut self, trace: &std::path::Path) -> std::process::Output {
        let mut strace = std::process::Command::new("strace");
        strace
            .args(["-f", "-e", "trace=execve", "-o"])
            .arg(trace)
            .arg(self.get_program())
            .args(self.get_args());
        for (key, value) in self.get_envs() {
            match value {
                Some(v) => strace.env(key, v),
                None => strace.env_remove(key),
            };
        }
        strace
            .output()
            .expect("run strace (apt-get install strace)")
    }
}

//! A networked cell's lifecycle runs no networking tool: links, addresses and routes are made
//! in-process over route netlink. Proved with `strace -f -e trace=execve` of `cellos run`.

use std::collections::BTreeSet;

use crate::cell::{authority, unique_id, Cells};
use crate::internet::{Internet, ALPHA};

/// Programs `cellos run` of a networked cell must never execute (basenames). `nft` joins this
/// list once the host table and the cell's ruleset are loaded in-process too.
const FORBIDDEN_TOOLS: &[&str] = &["ip"];

#[test]
fn cellos_run_of_a_networked_cell_executes_no_ip_tool() {
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
    let forbidden: Vec<&String> = executed
        .iter()
        .filter(|p| FORBIDDEN_TOOLS.contains(&p.as_str()))
        .collect();
    assert!(
        forbidden.is_empty(),
        "executed {forbidden:?}; everything executed: {executed:?}"
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

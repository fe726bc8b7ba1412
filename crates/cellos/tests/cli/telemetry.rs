//! In-cell telemetry end to end: `cellos run` of cells with `telemetry.enabled`, whose events
//! (host-observed processes, guest declarations, silences, violations, the channel's report)
//! land sealed in the real event log, which verifies afterwards. Hostile workloads write raw
//! frames to `/run/cellos/telemetry.sock` themselves (python3, from the host rootfs).

use std::process::Output;

use serde_json::Value;

use crate::support::{
    built_binary, events, events_of, residue_of, short_type, stderr, stdout, unique_id, Home,
};

/// The agent binary next to `cellos`, where the composition root looks for it.
fn agent_installed() {
    built_binary("cellos-telemetry-agent", "cellos-telemetry-agent");
}

/// A telemetry cell running `argv`, with `extra` YAML (indented two spaces) after `run`.
fn spec_body(argv: &[&str], extra: &str) -> String {
    format!(
        "  telemetry:\n    enabled: true\n  run:\n    argv: {}\n{extra}",
        serde_json::to_string(argv).unwrap()
    )
}

struct TelemetryRun {
    out: Output,
    /// This cell's events, in log order.
    events: Vec<Value>,
}

impl TelemetryRun {
    fn of_type(&self, ty: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| short_type(e) == ty).collect()
    }

    fn declared(&self, probe_source: &str) -> Vec<&Value> {
        self.of_type("telemetry.v1.declared")
            .into_iter()
            .filter(|e| e["data"]["probeSource"] == probe_source)
            .collect()
    }

    /// The receiver's counters from `telemetry.v1.reported`.
    fn counters(&self) -> &Value {
        let reports = self.of_type("telemetry.v1.reported");
        assert_eq!(reports.len(), 1, "one report per cell: {:#?}", self.events);
        &reports[0]["data"]["receiver"]
    }

    fn rejections(&self) -> String {
        self.of_type("telemetry.v1.reported")[0]["data"]["rejections"].to_string()
    }

    fn run_id(&self) -> String {
        self.of_type("lifecycle.v1.started")[0]["data"]["runId"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

fn count(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("counter {key} missing in {v}"))
}

/// Run the cell, check it left nothing behind and that the whole log verifies.
fn run_cell(home: &Home, id: &str, body: &str, env: &[(&str, &str)]) -> TelemetryRun {
    agent_installed();
    let spec = home.spec(id, body);
    let mut cmd = home.cellos();
    cmd.args(["run", spec.to_str().unwrap()]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run cellos");
    let verified = home.run(&["verify"]);
    assert!(
        verified.status.success(),
        "the event log must verify: {}{}",
        stdout(&verified),
        stderr(&verified)
    );
    assert_eq!(residue_of(home, id), Vec::<String>::new());
    let all = events(home);
    let events = events_of(&all, id).into_iter().cloned().collect();
    TelemetryRun { out, events }
}

/// Python that speaks the wire format by hand (no CBOR library in the image): `frame(map)`,
/// `decl(source, detail, version=..., **extra_top_level_keys)` and `connect()`.
const PY_WIRE: &str = r#"
import os, socket, struct, sys, time
def h(major, n):
    if n < 24: return bytes([major << 5 | n])
    if n < 256: return bytes([major << 5 | 24, n])
    if n < 65536: return bytes([major << 5 | 25]) + struct.pack('>H', n)
    if n < 2**32: return bytes([major << 5 | 26]) + struct.pack('>I', n)
    return bytes([major << 5 | 27]) + struct.pack('>Q', n)
def c(v):
    if isinstance(v, int): return h(0, v)
    if isinstance(v, str):
        b = v.encode()
        return h(3, len(b)) + b
    return h(5, len(v)) + b''.join(c(k) + c(x) for k, x in v.items())
def frame(m):
    b = c(m)
    return struct.pack('<I', len(b)) + b
def decl(source, detail, version=256, **extra):
    m = {'content_version': version, 'probe_source': source, 'guest_pid': os.getpid(),
         'guest_comm': 'hostile', 'guest_monotonic_ns': time.monotonic_ns(), 'detail': detail}
    m.update(extra)
    return frame(m)
def connect():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect('/run/cellos/telemetry.sock')
    return s
def send_and_wait(s, data):
    # Wait until the host has read everything and closed its end.
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
    s.close()
"#;

fn python(script: &str) -> Vec<String> {
    vec![
        "/usr/bin/python3".to_owned(),
        "-c".to_owned(),
        format!("{PY_WIRE}\n{script}"),
    ]
}

fn python_body(script: &str) -> String {
    let argv = python(script);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    spec_body(&argv, "")
}

#[test]
fn spawned_children_are_observed_by_the_host_and_declared_by_the_agent() {
    let home = Home::new();
    let id = unique_id("tel-spawn");
    let run = run_cell(
        &home,
        &id,
        &spec_body(
            &["/bin/sh", "-c", "/bin/sleep 1 & /bin/sleep 1.2; wait"],
            "",
        ),
        &[],
    );
    assert_eq!(run.out.status.code(), Some(0), "{}", stderr(&run.out));
    let observed: Vec<&Value> = run
        .of_type("process.v1.spawned")
        .into_iter()
        .filter(|e| e["data"]["argv0"] == "/bin/sleep")
        .collect();
    assert_eq!(observed.len(), 2, "{:#?}", run.events);
    for exec in &observed {
        assert_eq!(exec["data"]["authority"], "observed");
        let ns_pid = exec["data"]["nsPid"].as_u64().expect("pid in the cell");
        let declared = run.declared("process.spawned");
        assert!(
            declared.iter().any(|d| d["data"]["guestPid"] == ns_pid
                && d["data"]["declaration"]["detail"]["argv0"] == "/bin/sleep"
                && d["data"]["authority"] == "declared"),
            "no agent declaration of /bin/sleep as cell pid {ns_pid}: {declared:#?}"
        );
    }
    let exits = run
        .of_type("process.v1.exited")
        .into_iter()
        .filter(|e| e["data"]["argv0"] == "/bin/sleep" && e["data"]["exitCode"] == 0)
        .count();
    assert_eq!(exits, 2);
    assert!(
        run.of_type("violation.v1.detected").is_empty(),
        "every process was declared: {:#?}",
        run.of_type("violation.v1.detected")
    );
    let summary = &run.of_type("compliance.v1.summary")[0]["data"]["counts"];
    assert!(count(summary, "processesSpawned") >= 2);
}

#[test]
fn a_forged_cell_id_is_dropped_and_attribution_comes_from_the_host() {
    let home = Home::new();
    let id = unique_id("tel-forge");
    let victim = unique_id("tel-victim");
    let script = format!(
        "send_and_wait(connect(), decl('custom.forged', {{'value': 'x', 'cell_id': '{victim}'}}, \
         cell_id='{victim}', run_id='forged-run', cellId='{victim}'))"
    );
    let run = run_cell(&home, &id, &python_body(&script), &[]);
    assert_eq!(run.out.status.code(), Some(0), "{}", stderr(&run.out));
    let declared = run.declared("custom.forged");
    assert_eq!(declared.len(), 1, "{:#?}", run.events);
    let d = declared[0];
    assert_eq!(d["subject"], format!("urn:cellos:cell:{id}"));
    assert_eq!(d["data"]["runId"], run.run_id());
    assert_eq!(d["data"]["declaration"]["droppedKeys"], 4);
    assert!(!d.to_string().contains(&victim), "{d}");
    assert!(!d.to_string().contains("forged-run"), "{d}");
    assert!(events_of(&events(&home), &victim).is_empty());
    assert_eq!(count(run.counters(), "droppedKeys"), 4);
}

#[test]
fn unknown_major_versions_are_rejected_and_reported() {
    let home = Home::new();
    let id = unique_id("tel-version");
    let script = "send_and_wait(connect(), \
         b''.join(decl('custom.future', {'value': 'v9'}, version=0x0900) for _ in range(3)) \
         + decl('custom.current', {'value': 'v1'}))";
    let run = run_cell(&home, &id, &python_body(script), &[]);
    assert_eq!(run.out.status.code(), Some(0), "{}", stderr(&run.out));
    assert!(run.declared("custom.future").is_empty());
    assert_eq!(run.declared("custom.current").len(), 1);
    assert_eq!(count(run.counters(), "versionRejected"), 3);
    assert!(run.rejections().contains("major"), "{}", run.rejections());
}

#[test]
fn truncated_and_oversized_frames_are_counted_and_reported_not_fatal() {
    let home = Home::new();
    let id = unique_id("tel-malformed");
    let script = "
# truncated: a length of 100 followed by 10 bytes, then the connection closes
send_and_wait(connect(), struct.pack('<I', 100) + b'0123456789')
# oversized: a length far above the cap
send_and_wait(connect(), struct.pack('<I', 1000000) + b'x' * 64)
# not CBOR at all, correctly framed
send_and_wait(connect(), struct.pack('<I', 4) + b'\\xff\\xff\\xff\\xff')
# and the channel still works
send_and_wait(connect(), decl('custom.after', {'value': 'ok'}))
";
    let run = run_cell(&home, &id, &python_body(script), &[]);
    assert_eq!(run.out.status.code(), Some(0), "{}", stderr(&run.out));
    let counters = run.counters();
    assert_eq!(count(counters, "malformed"), 3, "{counters}");
    assert!(
        count(counters, "connectionsClosedMalformed") >= 1,
        "{counters}"
    );
    assert_eq!(run.declared("custom.after").len(), 1);
    let rejections = run.rejections();
    assert!(
        rejections.contains("truncated") || rejections.contains("missing"),
        "{rejections}"
    );
}

#[test]
fn a_flood_of_frames_is_rate_limited_and_every_frame_is_counted() {
    let home = Home::new();
    let id = unique_id("tel-flood");
    let sent = 300_000;
    let script = format!(
        "one = decl('custom.flood', {{'value': 'x'}})
data = one * {sent}
start = time.monotonic()
send_and_wait(connect(), data)
print('sent %d frames at %.0f frames/s' % ({sent}, {sent} / (time.monotonic() - start)))"
    );
    let run = run_cell(&home, &id, &python_body(&script), &[]);
    assert_eq!(run.out.status.code(), Some(0), "{}", stderr(&run.out));
    // The rate the workload managed is a measurement, not a pass criterion.
    eprintln!("{}", stdout(&run.out).trim());
    let c = run.counters();
    let flood_delivered = run.declared("custom.flood").len() as u64;
    assert!(count(c, "rateLimited") > 0, "{c}");
    // Every flood frame was read and counted; each one that did not become an event is
    // counted as dropped (the agent's own frames compete for the same budget).
    assert!(count(c, "frames") >= sent, "{c}");
    assert!(
        count(c, "rateLimited") + count(c, "queueFull") >= sent - flood_delivered,
        "{c}"
    );
    let categories = [
        "delivered",
        "keepalives",
        "rateLimited",
        "queueFull",
        "malformed",
        "versionRejected",
    ];
    assert_eq!(
        categories.iter().map(|k| count(c, k)).sum::<u64>(),
        count(c, "frames"),
        "{c}"
    );
}

/// Kill the agent from inside the cell (same uid): its comm is `cellos-telemetr`.
const KILL_AGENT: &str = "for p in /proc/[0-9]*; do \
     if [ \"$(cat $p/comm 2>/dev/null)\" = cellos-telemetr ]; then kill -9 ${p#/proc/}; fi; \
     done";

#[test]
fn killing_the_agent_yields_exactly_one_agent_silenced() {
    let home = Home::new();
    let id = unique_id("tel-silence");
    // Three windows of silence after the kill: still one report for the one silence. The
    // agent sends a keep-alive every fifth of a window, so before the kill it is never silent.
    let script = format!("sleep 1; {KILL_AGENT}; sleep 6");
    let run = run_cell(
        &home,
        &id,
        &spec_body(&["/bin/sh", "-c", &script], ""),
        &[("CELLOS_TELEMETRY_SILENCE_MS", "2000")],
    );
    assert_eq!(run.out.status.code(), Some(0), "{}", stderr(&run.out));
    let killed = run
        .of_type("process.v1.exited")
        .into_iter()
        .any(|e| e["data"]["argv0"] == "cellos-telemetry-agent" && e["data"]["signal"] == 9);
    assert!(killed, "the host saw the agent killed: {:#?}", run.events);
    let silenced = run.of_type("telemetry.v1.agent_silenced");
    assert_eq!(silenced.len(), 1, "{silenced:#?}");
    assert_eq!(silenced[0]["data"]["windowMs"], 2000);
    assert_eq!(silenced[0]["data"]["runId"], run.run_id());
}

#[test]
fn declaring_an_unauthorised_egress_host_yields_a_violation() {
    let home = Home::new();
    let id = unique_id("tel-egress");
    let run = run_cell(
        &home,
        &id,
        &spec_body(
            &[
                "/run/cellos/bin/cellos-telemetry-agent",
                "declare",
                "net.intent",
                "evil.example.net:443",
            ],
            "",
        ),
        &[],
    );
    assert_eq!(run.out.status.code(), Some(0), "{}", stderr(&run.out));
    let declared = run.declared("net.intent");
    assert_eq!(declared.len(), 1, "{:#?}", run.events);
    assert_eq!(declared[0]["data"]["authority"], "declared");
    let violations = run.of_type("violation.v1.detected");
    assert!(
        violations.iter().any(|v| v["data"]["kind"] == "violation"
            && v["data"]["detail"]
                .as_str()
                .is_some_and(|d| d.contains("evil.example.net"))),
        "{violations:#?}"
    );
}

#[test]
fn a_process_hidden_from_the_agent_yields_a_discrepancy() {
    let home = Home::new();
    let id = unique_id("tel-hidden");
    // The workload silences its agent, then runs a process nobody declares.
    let script = format!("sleep 0.5; {KILL_AGENT}; /bin/sleep 1.5");
    let run = run_cell(&home, &id, &spec_body(&["/bin/sh", "-c", &script], ""), &[]);
    assert_eq!(run.out.status.code(), Some(0), "{}", stderr(&run.out));
    let hidden = run
        .of_type("process.v1.spawned")
        .into_iter()
        .any(|e| e["data"]["argv0"] == "/bin/sleep");
    assert!(
        hidden,
        "the host observed the hidden exec: {:#?}",
        run.events
    );
    let discrepancies: Vec<&Value> = run
        .of_type("violation.v1.detected")
        .into_iter()
        .filter(|v| v["data"]["kind"] == "discrepancy")
        .collect();
    assert!(
        discrepancies
            .iter()
            .any(|v| v["data"]["rule"] == "observedExecDeclared"
                && v["data"]["authority"] == "observed"
                && v["data"]["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("/bin/sleep"))),
        "{discrepancies:#?}"
    );
    let summary = &run.of_type("compliance.v1.summary")[0]["data"]["counts"];
    assert!(count(summary, "discrepancies") >= 1);
}

//! Observed vs declared: a process the host saw exec in the cell that the guest never declared.
//!
//! The host probe's execs are the record; the agent's `process.spawned` declarations are
//! matched to them by pid inside the cell's pid namespace and argv0. The agent polls `/proc`, so
//! it cannot see an image that lived shorter than its poll interval; only images that lived at
//! least `min_lifetime` (or are still running) must be declared, and each has `grace` to be.
//! A guest that hides a process it spawned produces a discrepancy.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cellos_core::authority::AuthorityKind;
use cellos_core::events::{ViolationData, ViolationKind};

use crate::hostprobe::{ObservedExec, ObservedExit};
use crate::wire::{GuestFrame, ProbeSource};

/// Rule name on discrepancies found here.
pub const RULE_OBSERVED_EXEC_DECLARED: &str = "observedExecDeclared";

/// Defaults fit an agent polling every 100 ms.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3);
pub const DEFAULT_MIN_LIFETIME: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
struct PendingExec {
    exec: ObservedExec,
    /// When this image stopped running (exit, or the next exec of the same pid).
    ended: Option<Instant>,
}

/// Matches host-observed execs against guest declarations for one cell.
#[derive(Debug, Clone)]
pub struct DiscrepancyDetector {
    grace: Duration,
    min_lifetime: Duration,
    /// Observed images not yet matched, by pid in the cell.
    pending: Vec<PendingExec>,
    /// Declared (ns pid, argv0) pairs not yet matched, with when they were declared.
    declared: HashMap<(u32, String), Instant>,
}

impl DiscrepancyDetector {
    pub fn new(grace: Duration, min_lifetime: Duration) -> Self {
        DiscrepancyDetector {
            grace,
            min_lifetime,
            pending: Vec::new(),
            declared: HashMap::new(),
        }
    }

    /// The host saw a process of the cell exec.
    pub fn observed_exec(&mut self, exec: ObservedExec) {
        // A new image on the same pid ends the previous one.
        for p in &mut self.pending {
            if p.exec.pid == exec.pid && p.ended.is_none() {
                p.ended = Some(exec.at);
            }
        }
        self.pending.push(PendingExec { exec, ended: None });
        self.match_declarations();
    }

    /// The host saw a process of the cell exit.
    pub fn observed_exit(&mut self, exit: &ObservedExit) {
        for p in &mut self.pending {
            if p.exec.pid == exit.pid && p.ended.is_none() {
                p.ended = Some(exit.at);
            }
        }
    }

    /// A guest frame arrived; `process.spawned` ones are declarations of execs.
    pub fn declared(&mut self, frame: &GuestFrame, at: Instant) {
        if frame.probe_source != ProbeSource::ProcessSpawned {
            return;
        }
        let argv0 = frame
            .detail
            .get("argv0")
            .cloned()
            .unwrap_or_else(|| frame.guest_comm.clone());
        self.declared.insert((frame.guest_pid, argv0), at);
        self.match_declarations();
    }

    fn match_declarations(&mut self) {
        let declared = &mut self.declared;
        self.pending.retain(|p| {
            let Some(ns_pid) = p.exec.ns_pid else {
                return true;
            };
            declared.remove(&(ns_pid, p.exec.argv0.clone())).is_none()
        });
        // Declarations with no observed exec yet wait for one; old ones are forgotten.
    }

    /// Discrepancies due at `now`: images that lived long enough to be seen, were observed
    /// more than `grace` ago, and were never declared. Each is reported once. Images too short
    /// for the agent to see are dropped silently.
    pub fn poll(&mut self, now: Instant) -> Vec<ViolationData> {
        let mut due = Vec::new();
        let (grace, min_lifetime) = (self.grace, self.min_lifetime);
        self.pending.retain(|p| {
            let lived = p.ended.unwrap_or(now).saturating_duration_since(p.exec.at);
            if p.ended.is_some() && lived < min_lifetime {
                return false;
            }
            if now.saturating_duration_since(p.exec.at) < grace || lived < min_lifetime {
                return true;
            }
            due.push(discrepancy(&p.exec, lived));
            false
        });
        let horizon = grace.saturating_mul(4);
        self.declared
            .retain(|_, at| now.saturating_duration_since(*at) < horizon);
        due
    }
}

impl Default for DiscrepancyDetector {
    fn default() -> Self {
        DiscrepancyDetector::new(DEFAULT_GRACE, DEFAULT_MIN_LIFETIME)
    }
}

fn discrepancy(exec: &ObservedExec, lived: Duration) -> ViolationData {
    let ns = exec
        .ns_pid
        .map_or_else(|| "unknown".to_owned(), |p| p.to_string());
    ViolationData {
        kind: ViolationKind::Discrepancy,
        rule: RULE_OBSERVED_EXEC_DECLARED.to_owned(),
        detail: format!(
            "host observed exec of {:?} (host pid {}, cell pid {ns}) that ran {} ms and the guest never declared",
            exec.argv0,
            exec.pid,
            lived.as_millis()
        ),
        authority: AuthorityKind::Observed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(pid: u32, ns: u32, argv0: &str, at: Instant) -> ObservedExec {
        ObservedExec {
            pid,
            ns_pid: Some(ns),
            argv0: argv0.into(),
            comm: argv0.into(),
            at,
            observed_at: time::OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn spawned(ns: u32, argv0: &str) -> GuestFrame {
        GuestFrame::new(ProbeSource::ProcessSpawned, ns, argv0, 0).with_detail("argv0", argv0)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_declared_exec_is_not_a_discrepancy_whichever_arrives_first() {
        let t0 = Instant::now();
        let mut d = DiscrepancyDetector::new(ms(1000), ms(200));
        d.observed_exec(exec(100, 5, "worker", t0));
        d.declared(&spawned(5, "worker"), t0 + ms(50));
        d.declared(&spawned(6, "late"), t0 + ms(60));
        d.observed_exec(exec(101, 6, "late", t0 + ms(70)));
        assert!(d.poll(t0 + ms(10_000)).is_empty());
    }

    #[test]
    fn a_hidden_long_lived_process_is_reported_once() {
        let t0 = Instant::now();
        let mut d = DiscrepancyDetector::new(ms(1000), ms(200));
        d.observed_exec(exec(100, 5, "miner", t0));
        d.declared(&spawned(5, "something-else"), t0 + ms(50));
        assert!(d.poll(t0 + ms(500)).is_empty(), "grace not over yet");
        let found = d.poll(t0 + ms(1500));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].kind, ViolationKind::Discrepancy);
        assert_eq!(found[0].authority, AuthorityKind::Observed);
        assert!(found[0].detail.contains("miner"));
        assert!(d.poll(t0 + ms(5000)).is_empty());
    }

    #[test]
    fn images_too_short_for_the_agent_to_see_are_not_discrepancies() {
        let t0 = Instant::now();
        let mut d = DiscrepancyDetector::new(ms(1000), ms(200));
        // `sh` replaced by `sleep` after 5 ms; `true` exits after 1 ms.
        d.observed_exec(exec(100, 5, "sh", t0));
        d.observed_exec(exec(100, 5, "sleep", t0 + ms(5)));
        d.observed_exec(exec(101, 6, "true", t0 + ms(6)));
        d.observed_exit(&ObservedExit {
            pid: 101,
            ns_pid: Some(6),
            argv0: "true".into(),
            exit_code: Some(0),
            signal: None,
            at: t0 + ms(7),
            observed_at: time::OffsetDateTime::UNIX_EPOCH,
        });
        d.declared(&spawned(5, "sleep"), t0 + ms(90));
        assert!(d.poll(t0 + ms(5000)).is_empty());
    }
}

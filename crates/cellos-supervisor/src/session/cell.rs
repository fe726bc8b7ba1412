//! One cell held by the registry: its backend cell, its exec surface, its evidence and its
//! clocks (TTL from creation, idle from the last exec or file operation).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cellos_core::ports::{Cell, CellSession, IsolationReport, TeardownReport};
use cellos_core::spec::SecretDeliveryMode;

use super::exec::RunningExec;
use super::{CellInfo, CellState};
use crate::evidence::Recorder;

/// A cell of the registry.
pub(crate) struct SessionCell {
    pub(crate) id: String,
    pub(crate) run_id: String,
    pub(crate) spec_hash: String,
    pub(crate) owner: String,
    pub(crate) session: bool,
    pub(crate) created: String,
    pub(crate) created_at: Instant,
    pub(crate) ttl: Option<Duration>,
    pub(crate) idle: Option<Duration>,
    pub(crate) isolation: IsolationReport,
    pub(crate) delivery: SecretDeliveryMode,
    pub(crate) delivered: Vec<(String, &'static str)>,
    /// The exec and file surface (session cells only).
    pub(crate) surface: Option<Arc<dyn CellSession>>,
    pub(crate) recorder: Arc<Mutex<Recorder>>,
    /// The backend cell until it is destroyed (taken by destroy).
    pub(crate) cell: Mutex<Option<Box<dyn Cell>>>,
    pub(crate) state: Mutex<Live>,
    pub(crate) exec_seq: AtomicU64,
    /// Limit counters already recorded as `limit.v1.hit`, by limit.
    pub(crate) limits_recorded: Arc<Mutex<BTreeMap<String, u64>>>,
}

/// What changes while the cell lives.
pub(crate) struct Live {
    pub(crate) state: CellState,
    pub(crate) last_activity: Instant,
    pub(crate) last_activity_rfc3339: String,
    pub(crate) execs: BTreeMap<u64, Arc<RunningExec>>,
    pub(crate) teardown: Option<TeardownReport>,
    /// The workload's status, once a cell with `run` ended.
    pub(crate) exit_status: Option<i32>,
    /// The kept output of a cell with `run`.
    pub(crate) workload: Option<Arc<super::exec_log::ExecLog>>,
}

pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl SessionCell {
    pub(crate) fn live(&self) -> MutexGuard<'_, Live> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Restart the idle clock.
    /// The exec and file surface, or why there is none.
    pub(crate) fn surface(&self) -> Result<&Arc<dyn CellSession>, super::SessionError> {
        self.surface
            .as_ref()
            .ok_or_else(|| super::SessionError::Conflict {
                what: format!(
                    "cell {:?} runs a workload (spec.run); execs and file operations are for \
                 session cells (a spec without run)",
                    self.id
                ),
            })
    }

    pub(crate) fn touch(&self) {
        let mut live = self.live();
        live.last_activity = Instant::now();
        live.last_activity_rfc3339 = now_rfc3339();
    }

    pub(crate) fn info(&self) -> CellInfo {
        let live = self.live();
        CellInfo {
            id: self.id.clone(),
            run_id: self.run_id.clone(),
            state: live.state,
            session: self.session,
            spec_hash: self.spec_hash.clone(),
            created: self.created.clone(),
            owner: self.owner.clone(),
            execs: self.exec_seq.load(Ordering::Relaxed),
            last_activity: live.last_activity_rfc3339.clone(),
            isolation: self.isolation.clone(),
            exit_status: live.exit_status,
            teardown: live.teardown.clone(),
        }
    }

    /// Why the cell should end now, if its TTL or idle timeout passed.
    pub(crate) fn expired(&self, now: Instant) -> Option<&'static str> {
        let live = self.live();
        if matches!(live.state, CellState::Destroyed) {
            return None;
        }
        if self.ttl.is_some_and(|ttl| now >= self.created_at + ttl) {
            return Some("lifetime.ttlSeconds ran out");
        }
        if !self.session {
            // A workload's driver enforces its TTL.
            return None;
        }
        let busy = live.execs.values().any(|e| !e.done());
        let idle_for = now.saturating_duration_since(live.last_activity);
        if !busy
            && live.state == CellState::Running
            && self.idle.is_some_and(|idle| idle_for >= idle)
        {
            return Some("lifetime.idleTimeoutSeconds passed with no exec or file operation");
        }
        None
    }

    /// Forget ended execs beyond the newest `keep`.
    pub(crate) fn trim_execs(live: &mut Live, keep: usize) {
        let ended: Vec<u64> = live
            .execs
            .iter()
            .filter(|(_, e)| e.done())
            .map(|(id, _)| *id)
            .collect();
        if ended.len() > keep {
            for id in &ended[..ended.len() - keep] {
                live.execs.remove(id);
            }
        }
    }
}

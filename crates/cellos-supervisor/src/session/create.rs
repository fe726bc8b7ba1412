//! Creating and destroying a registry cell: the same admission, secrets, evidence and teardown
//! as `cellos run`, with the API caller named on every event.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cellos_core::policy::{admit, Verdict};
use cellos_core::ports::{CellRequest, PortError, PortErrorKind};
use cellos_core::spec::{
    canonical_spec_hash, check_capabilities, validate_execution_cell, ExecutionCellDocument,
    PolicyPackDocument, Problem,
};

use super::cell::{now_rfc3339, Live, SessionCell};
use super::{session_outcome, Caller, CellState, SessionError, EXEC_END_WAIT};
use crate::lifecycle::{destroy_failed, never_created, Supervisor};

/// Admit `document` and create its cell, started: a session cell then serves execs.
pub(crate) fn create(
    supervisor: &Supervisor,
    policies: &[PolicyPackDocument],
    caller: &Caller,
    document: ExecutionCellDocument,
) -> Result<SessionCell, SessionError> {
    validate_execution_cell(&document).map_err(SessionError::Invalid)?;
    let spec = document.spec;
    check_capabilities(&spec, supervisor.capabilities()).map_err(SessionError::Unsupported)?;
    if !spec.is_session() {
        return Err(SessionError::Unsupported(vec![Problem {
            path: "spec.run".into(),
            message: "a server holds session cells (no run); drive them with execs, or run a \
                      workload to completion with `cellos run`"
                .into(),
        }]));
    }
    let run_id = uuid_like();
    let spec_hash = canonical_spec_hash(&spec);
    let mut recorder = supervisor.recorder(&spec.id, &run_id);
    recorder.set_actor(Some(&caller.subject));
    let decision = admit(&spec, policies);
    recorder.admission(&spec_hash, &decision);
    if decision.verdict == Verdict::Deny {
        recorder.flush().map_err(SessionError::Events)?;
        return Err(SessionError::Denied(decision));
    }
    let delivery = spec.secret_delivery();
    let secrets = match supervisor.resolve_secrets(&spec.id, &spec.authority.secret_refs) {
        Ok(secrets) => secrets,
        Err(err) => {
            let mut teardown = never_created(&spec.id);
            teardown.residue = supervisor.revoke_all(&spec.id).residue();
            let _ = recorder.finished(
                &[],
                delivery,
                cellos_core::events::Outcome::Failed,
                &teardown,
                Some(&err.to_string()),
            );
            return Err(SessionError::Backend(PortError::new(
                PortErrorKind::NotFound,
                err.to_string(),
            )));
        }
    };
    let delivered: Vec<(String, &'static str)> =
        secrets.iter().map(|(s, b)| (s.key.clone(), *b)).collect();
    if !delivered.is_empty() {
        recorder.secrets_materialized(&delivered, delivery);
    }
    let created = supervisor.backend().create(CellRequest {
        spec: &spec,
        spec_hash: &spec_hash,
        run_id: &run_id,
        secrets: secrets.into_iter().map(|(s, _)| s).collect(),
        secret_delivery: delivery,
        stdout: Box::new(std::io::sink()),
        stderr: Box::new(std::io::sink()),
        factory: supervisor.factory().clone(),
        evidence: recorder.observed(),
    });
    let mut cell = match created {
        Ok(cell) => cell,
        Err(err) => {
            let unrevoked = supervisor.revoke_all(&spec.id);
            let mut teardown = never_created(&spec.id);
            teardown.residue = unrevoked.residue();
            let _ = recorder.finished(
                &unrevoked.revoked(&delivered),
                delivery,
                cellos_core::events::Outcome::Failed,
                &teardown,
                Some(&err.to_string()),
            );
            return Err(SessionError::Backend(err));
        }
    };
    let started = recorder
        .started(&spec_hash, cell.isolation())
        .map_err(SessionError::Events)
        .and_then(|()| cell.start().map(drop).map_err(SessionError::Backend))
        .and_then(|()| {
            cell.session().ok_or_else(|| {
                SessionError::Backend(PortError::new(
                    PortErrorKind::MissingFeature,
                    "this cell backend offers no exec surface",
                ))
            })
        });
    let surface = match started {
        Ok(surface) => surface,
        Err(err) => {
            let mut teardown = cell
                .destroy()
                .unwrap_or_else(|e| destroy_failed(&spec.id, &e));
            let unrevoked = supervisor.revoke_all(&spec.id);
            teardown.residue.extend(unrevoked.residue());
            let _ = recorder.finished(
                &unrevoked.revoked(&delivered),
                delivery,
                cellos_core::events::Outcome::Failed,
                &teardown,
                Some(&err.to_string()),
            );
            return Err(err);
        }
    };
    recorder.set_actor(None);
    let lifetime = spec.lifetime.clone().unwrap_or_default();
    let now = now_rfc3339();
    Ok(SessionCell {
        id: spec.id.clone(),
        run_id,
        spec_hash,
        owner: caller.subject.clone(),
        session: true,
        created: now.clone(),
        created_at: Instant::now(),
        ttl: lifetime.ttl_seconds.map(Duration::from_secs),
        idle: lifetime.idle_timeout_seconds.map(Duration::from_secs),
        isolation: cell.isolation().clone(),
        delivery,
        delivered,
        surface,
        recorder: Arc::new(Mutex::new(recorder)),
        cell: Mutex::new(Some(cell)),
        state: Mutex::new(Live {
            state: CellState::Running,
            last_activity: Instant::now(),
            last_activity_rfc3339: now,
            execs: BTreeMap::new(),
            teardown: None,
        }),
        exec_seq: AtomicU64::new(0),
    })
}

/// Destroy `cell`: kill its execs (their ends are recorded first), tear it down, revoke its
/// secrets and record the end. Idempotent: a second call returns at once.
pub(crate) fn destroy(
    supervisor: &Supervisor,
    cell: &SessionCell,
    caller: &Caller,
    reason: Option<&str>,
) -> Result<(), SessionError> {
    // Taking the backend cell makes every other destroy of it a no-op.
    let Some(mut backend_cell) = cell.cell.lock().unwrap_or_else(|p| p.into_inner()).take() else {
        return Ok(());
    };
    let execs: Vec<_> = cell.live().execs.values().cloned().collect();
    for exec in execs.iter().filter(|e| !e.done()) {
        exec.killed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = exec.control.kill();
    }
    let deadline = Instant::now() + EXEC_END_WAIT;
    for exec in &execs {
        exec.wait_done(deadline.saturating_duration_since(Instant::now()));
    }
    let mut teardown = backend_cell
        .destroy()
        .unwrap_or_else(|e| destroy_failed(&cell.id, &e));
    let unrevoked = supervisor.revoke_all(&cell.id);
    teardown.residue.extend(unrevoked.residue());
    let revoked = unrevoked.revoked(&cell.delivered);
    let outcome = session_outcome(&teardown);
    let recorded = {
        let mut recorder = cell.recorder.lock().unwrap_or_else(|p| p.into_inner());
        recorder.set_actor(Some(&caller.subject));
        recorder.finished(&revoked, cell.delivery, outcome, &teardown, reason)
    };
    let mut live = cell.live();
    live.state = CellState::Destroyed;
    live.teardown = Some(teardown);
    drop(live);
    recorded.map_err(SessionError::Events)
}

/// A run id: unique per create (the cell id may be reused after destroy).
fn uuid_like() -> String {
    use std::sync::atomic::Ordering;
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("run-{nanos:x}-{}", N.fetch_add(1, Ordering::Relaxed))
}

//! The lifecycle of one cell, in order: admission → secrets → create → started → run →
//! completed → export → destroy → revoke → destroyed + compliance summary.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cellos_core::events::{EventFactory, Outcome};
use cellos_core::policy::{admit, AdmissionDecision, Verdict};
use cellos_core::ports::{
    Cell, CellBackend, CellRequest, DeliveredSecret, EventSink, ExportReceipt, LimitHit, PortError,
    PortErrorKind, Residue, SecretBroker, TeardownReport, UnverifiedResidue, WorkloadExit,
    WorkloadOutcome,
};
use cellos_core::spec::{
    canonical_spec_hash, check_capabilities, validate_execution_cell, Capabilities,
    ExecutionCellDocument, ExecutionCellSpec, ExportTargetKind, PolicyPackDocument, Problem,
};

use crate::evidence::Recorder;
use crate::exports::ExportRouter;

/// Exit status when `timeoutMs` or `ttlSeconds` ran out.
pub const EXIT_TIMEOUT: i32 = 124;
/// Exit status when the workload could not be executed (as shells and `env` do).
pub const EXIT_SPAWN_FAILED: i32 = 127;

/// The status a workload's end maps to: its code, 128+signal, 124 on timeout, 127 when it
/// could not be executed.
pub(crate) fn exit_status(exit: &WorkloadExit) -> i32 {
    match exit {
        WorkloadExit::Exited { code } => *code,
        WorkloadExit::Signaled { signal } => 128 + signal,
        WorkloadExit::TimedOut { .. } => EXIT_TIMEOUT,
        WorkloadExit::SpawnFailed { .. } => EXIT_SPAWN_FAILED,
    }
}

/// Why a cell did not run to completion. Every variant is a CellOS error (exit status 125).
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("invalid spec: {}", join_problems(.0))]
    Invalid(Vec<Problem>),
    /// The spec is valid but asks for what this build cannot serve (an export kind it has no
    /// sink for, ...); refused before anything is created.
    #[error("this build cannot serve the spec: {}", join_problems(.0))]
    Unsupported(Vec<Problem>),
    #[error("admission denied: {}", join_violations(.0))]
    Denied(AdmissionDecision),
    #[error("secret {key}: {source}")]
    Secret { key: String, source: PortError },
    #[error("cell backend: {0}")]
    Backend(PortError),
    #[error("event log: {0} (nothing runs without durable evidence)")]
    Events(PortError),
}

fn join_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn join_violations(decision: &AdmissionDecision) -> String {
    decision
        .violations
        .iter()
        .map(|v| format!("{} ({}/{}): {}", v.path, v.pack_id, v.rule, v.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// One run to perform.
pub struct RunRequest<'a> {
    pub document: &'a ExecutionCellDocument,
    pub policies: &'a [PolicyPackDocument],
    pub run_id: String,
    pub stdout: Box<dyn Write + Send>,
    pub stderr: Box<dyn Write + Send>,
    /// Called once the cell exists, before it starts: where a caller begins to forward
    /// signals to it, say. Threads started here, rather than before `run`, also let a Linux
    /// backend run the cell's init in its clone (it must be single-threaded to do so).
    pub on_created: Option<Box<dyn FnOnce() + 'a>>,
}

/// What happened to a cell that ran.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub cell_id: String,
    pub run_id: String,
    pub spec_hash: String,
    pub admission: AdmissionDecision,
    pub outcome: WorkloadOutcome,
    pub exports: Vec<ExportReceipt>,
    pub export_failures: Vec<String>,
    pub teardown: TeardownReport,
}

impl RunReport {
    /// The status `cellos run` exits with: the workload's code, 128+signal, 124 on timeout,
    /// 127 when the workload could not be executed.
    pub fn exit_code(&self) -> i32 {
        exit_status(&self.outcome.exit)
    }

    /// One line saying why the run ended, for stderr.
    pub fn reason(&self) -> String {
        let mut line = match &self.outcome.exit {
            WorkloadExit::Exited { code } => format!("workload exited with status {code}"),
            WorkloadExit::Signaled { signal } => format!("workload killed by signal {signal}"),
            WorkloadExit::TimedOut { limit } => format!("workload killed: {limit} ran out"),
            WorkloadExit::SpawnFailed { reason } => format!("workload could not start: {reason}"),
        };
        for hit in &self.outcome.limit_hits {
            line.push_str(&format!("; {} hit ({})", hit.limit, hit.mechanism));
        }
        if !self.export_failures.is_empty() {
            line.push_str(&format!(
                "; export failed: {}",
                self.export_failures.join(", ")
            ));
        }
        for residue in &self.teardown.residue {
            line.push_str(&format!("; RESIDUE {} {}", residue.class, residue.detail));
        }
        for unverified in &self.teardown.unverified {
            line.push_str(&format!(
                "; UNVERIFIED {}: {}",
                unverified.class, unverified.reason
            ));
        }
        line
    }

    pub(crate) fn outcome(&self) -> Outcome {
        if self.exit_code() == 0 && self.export_failures.is_empty() && self.teardown.residue_free()
        {
            Outcome::Succeeded
        } else {
            Outcome::Failed
        }
    }
}

/// Runs cells over the injected ports.
pub struct Supervisor {
    backend: Arc<dyn CellBackend>,
    sink: Arc<dyn EventSink>,
    factory: EventFactory,
    brokers: Vec<Arc<dyn SecretBroker>>,
    exports: Arc<dyn ExportRouter>,
    capabilities: Capabilities,
}

impl Supervisor {
    /// `brokers` are asked in order; the first that knows a key delivers it.
    pub fn new(
        backend: Arc<dyn CellBackend>,
        sink: Arc<dyn EventSink>,
        factory: EventFactory,
        brokers: Vec<Arc<dyn SecretBroker>>,
        exports: Arc<dyn ExportRouter>,
    ) -> Self {
        Self {
            backend,
            sink,
            factory,
            brokers,
            exports,
            capabilities: Capabilities::all(),
        }
    }

    /// What the composed adapters can serve; a spec asking for more is refused at admission,
    /// before anything is created. Without it every feature is assumed served (and an
    /// unservable export then fails at export time, after the workload ran).
    pub fn with_capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = capabilities;
        self
    }

    pub(crate) fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// Cells from now on come from `backend` (for a composition root whose choice of backend
    /// settings depends on what happened since it built this supervisor).
    pub fn with_backend(mut self, backend: Arc<dyn CellBackend>) -> Self {
        self.backend = backend;
        self
    }

    pub fn backend(&self) -> &Arc<dyn CellBackend> {
        &self.backend
    }

    pub(crate) fn recorder(&self, cell_id: &str, run_id: &str) -> Recorder {
        Recorder::new(&self.sink, &self.factory, cell_id, run_id)
    }

    /// Run one cell from spec to destroyed. An error means the workload never ran; the cell
    /// (if it was created) is destroyed and its secrets revoked before the error returns.
    pub fn run(&self, request: RunRequest<'_>) -> Result<RunReport, SupervisorError> {
        let RunRequest {
            document,
            policies,
            run_id,
            stdout,
            stderr,
            on_created,
        } = request;
        validate_execution_cell(document).map_err(SupervisorError::Invalid)?;
        let spec = &document.spec;
        check_capabilities(spec, &self.capabilities).map_err(SupervisorError::Unsupported)?;
        if spec.is_session() {
            return Err(SupervisorError::Unsupported(vec![Problem {
                path: "spec.run".into(),
                message: "required to run a cell to completion; a spec without run is a \
                          session cell: start `cellos serve` and use `cellos create`"
                    .into(),
            }]));
        }
        let cell_id = spec.id.as_str();
        let mut recorder = self.recorder(cell_id, &run_id);
        let Created {
            mut cell,
            spec_hash,
            decision,
            delivered,
            created,
        } = self.admit_and_create(spec, policies, &run_id, stdout, stderr, &mut recorder)?;
        if let Some(on_created) = on_created {
            on_created();
        }

        let ttl_deadline = spec
            .lifetime
            .as_ref()
            .and_then(|l| l.ttl_seconds)
            .map(|ttl| created + Duration::from_secs(ttl));
        let driven = self.drive(cell.as_mut(), spec, &spec_hash, ttl_deadline, &mut recorder);

        // Destroy and revoke run on every path once the cell exists.
        let (teardown, revoked) = self.tear_down(cell.as_mut(), &delivered);
        let delivery = spec.secret_delivery();
        let (outcome, exports, export_failures) = match driven {
            Ok(driven) => driven,
            Err(err) => {
                let _ = recorder.finished(
                    &revoked,
                    delivery,
                    Outcome::Failed,
                    &teardown,
                    Some(&err.to_string()),
                );
                return Err(err);
            }
        };
        let report = RunReport {
            cell_id: cell_id.to_string(),
            run_id: run_id.clone(),
            spec_hash,
            admission: decision,
            outcome,
            exports,
            export_failures,
            teardown,
        };
        recorder
            .finished(&revoked, delivery, report.outcome(), &report.teardown, None)
            .map_err(SupervisorError::Events)?;
        Ok(report)
    }

    /// admission → secrets → create, recorded as it goes. An error means no cell exists: what
    /// was delivered is revoked and the end recorded before it returns.
    pub(crate) fn admit_and_create(
        &self,
        spec: &ExecutionCellSpec,
        policies: &[PolicyPackDocument],
        run_id: &str,
        stdout: Box<dyn Write + Send>,
        stderr: Box<dyn Write + Send>,
        recorder: &mut Recorder,
    ) -> Result<Created, SupervisorError> {
        let cell_id = spec.id.as_str();
        let spec_hash = canonical_spec_hash(spec);
        let created = Instant::now();
        let decision = admit(spec, policies);
        recorder.admission(&spec_hash, &decision);
        if decision.verdict == Verdict::Deny {
            recorder.flush().map_err(SupervisorError::Events)?;
            return Err(SupervisorError::Denied(decision));
        }
        let delivery = spec.secret_delivery();
        let secrets = match self.resolve_secrets(cell_id, &spec.authority.secret_refs) {
            Ok(secrets) => secrets,
            Err(err) => {
                let mut teardown = never_created(cell_id);
                teardown.residue = self.revoke_all(cell_id).residue();
                let _ = recorder.finished(
                    &[],
                    delivery,
                    Outcome::Failed,
                    &teardown,
                    Some(&err.to_string()),
                );
                return Err(err);
            }
        };
        let delivered: Vec<(String, &'static str)> = secrets
            .iter()
            .map(|(s, broker)| (s.key.clone(), *broker))
            .collect();
        if !delivered.is_empty() {
            recorder.secrets_materialized(&delivered, delivery);
        }
        let cell = self.backend.create(CellRequest {
            spec,
            spec_hash: &spec_hash,
            run_id,
            secrets: secrets.into_iter().map(|(s, _)| s).collect(),
            secret_delivery: delivery,
            stdout,
            stderr,
            factory: self.factory.clone(),
            evidence: recorder.observed(),
        });
        match cell {
            Ok(cell) => Ok(Created {
                cell,
                spec_hash,
                decision,
                delivered,
                created,
            }),
            Err(err) => {
                let unrevoked = self.revoke_all(cell_id);
                let mut teardown = never_created(cell_id);
                teardown.residue = unrevoked.residue();
                let err = SupervisorError::Backend(err);
                let _ = recorder.finished(
                    &unrevoked.revoked(&delivered),
                    delivery,
                    Outcome::Failed,
                    &teardown,
                    Some(&err.to_string()),
                );
                Err(err)
            }
        }
    }

    /// destroy → revoke: the teardown (with any broker that could not revoke as residue) and
    /// the delivered secrets that were revoked.
    pub(crate) fn tear_down(
        &self,
        cell: &mut dyn Cell,
        delivered: &[(String, &'static str)],
    ) -> (TeardownReport, Vec<(String, &'static str)>) {
        let cell_id = cell.id().to_owned();
        let mut teardown = cell
            .destroy()
            .unwrap_or_else(|err| destroy_failed(&cell_id, &err));
        let unrevoked = self.revoke_all(&cell_id);
        teardown.residue.extend(unrevoked.residue());
        (teardown, unrevoked.revoked(delivered))
    }

    /// started → run → completed → export. The caller destroys the cell afterwards.
    pub(crate) fn drive(
        &self,
        cell: &mut dyn Cell,
        spec: &ExecutionCellSpec,
        spec_hash: &str,
        ttl_deadline: Option<Instant>,
        recorder: &mut Recorder,
    ) -> Result<(WorkloadOutcome, Vec<ExportReceipt>, Vec<String>), SupervisorError> {
        recorder
            .started(spec_hash, cell.isolation())
            .map_err(SupervisorError::Events)?;

        let exec = cell.start().map_err(SupervisorError::Backend)?;
        let timeout_deadline = spec.timeout_ms().map(|ms| exec + Duration::from_millis(ms));
        let deadline = match (timeout_deadline, ttl_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut outcome = cell.wait(deadline).map_err(SupervisorError::Backend)?;
        if let WorkloadExit::TimedOut { limit } = &mut outcome.exit {
            let by_ttl = match (timeout_deadline, ttl_deadline) {
                (Some(timeout), Some(ttl)) => ttl < timeout,
                (None, Some(_)) => true,
                _ => false,
            };
            *limit = if by_ttl { "ttlSeconds" } else { "timeoutMs" }.to_string();
            outcome.limit_hits.push(LimitHit {
                limit: limit.clone(),
                mechanism:
                    "supervisor deadline; SIGKILL of the cell's init tears down its pid namespace"
                        .to_string(),
                count: 1,
            });
        }
        recorder.completed(spec.argv(), &outcome);

        let mut receipts = Vec::new();
        let mut failures = Vec::new();
        let Some(export) = spec.export.as_ref().filter(|e| !e.artifacts.is_empty()) else {
            return Ok((outcome, receipts, failures));
        };
        // Barrier: the outcome is durable before anything leaves the cell.
        recorder.flush().map_err(SupervisorError::Events)?;
        for artifact in &export.artifacts {
            let target = artifact
                .target
                .as_ref()
                .and_then(|name| export.targets.iter().find(|t| &t.name == name));
            let target_kind = target.map_or(ExportTargetKind::LocalPath, |t| t.kind);
            let pushed = match self.exports.sink_for(target) {
                Ok(sink) => {
                    let destination = sink.destination_hint(&spec.id, &artifact.name);
                    cell.open_artifact(&artifact.path)
                        .and_then(|mut content| sink.push(&spec.id, &artifact.name, &mut content))
                        .map_err(|err| (err, Some(destination)))
                }
                Err(err) => Err((err, None)),
            };
            match pushed {
                Ok(receipt) => {
                    recorder
                        .export_completed(&receipt)
                        .map_err(SupervisorError::Events)?;
                    receipts.push(receipt);
                }
                Err((err, destination)) => {
                    recorder
                        .export_failed(
                            &artifact.name,
                            target_kind,
                            artifact.target.as_deref(),
                            destination.as_deref(),
                            &err,
                        )
                        .map_err(SupervisorError::Events)?;
                    failures.push(format!("{}: {}", artifact.name, err));
                }
            }
        }
        Ok((outcome, receipts, failures))
    }

    pub(crate) fn resolve_secrets(
        &self,
        cell_id: &str,
        keys: &[String],
    ) -> Result<Vec<(DeliveredSecret, &'static str)>, SupervisorError> {
        let mut out = Vec::with_capacity(keys.len());
        'keys: for key in keys {
            for broker in &self.brokers {
                match broker.resolve(key, cell_id) {
                    Ok(value) => {
                        let secret = DeliveredSecret {
                            key: key.clone(),
                            value,
                        };
                        out.push((secret, broker.name()));
                        continue 'keys;
                    }
                    Err(err) if err.kind == PortErrorKind::NotFound => continue,
                    Err(source) => {
                        return Err(SupervisorError::Secret {
                            key: key.clone(),
                            source,
                        })
                    }
                }
            }
            let asked: Vec<&str> = self.brokers.iter().map(|b| b.name()).collect();
            return Err(SupervisorError::Secret {
                key: key.clone(),
                source: PortError::new(
                    PortErrorKind::NotFound,
                    format!(
                        "no broker has it (asked: {}); put it in the secrets directory as a file named {key}, or set CELLOS_SECRET_{key}",
                        asked.join(", ")
                    ),
                ),
            });
        }
        Ok(out)
    }

    /// Revoke on every broker; a failing broker never stops the others. Returns the brokers
    /// that may still hold the cell's secrets, with why.
    pub(crate) fn revoke_all(&self, cell_id: &str) -> Unrevoked {
        let mut failed = Vec::new();
        for broker in &self.brokers {
            if let Err(err) = broker.revoke_for_cell(cell_id) {
                tracing::warn!(broker = broker.name(), %err, "secret revocation failed");
                failed.push((broker.name(), err));
            }
        }
        Unrevoked(failed)
    }
}

/// A cell that was admitted and created, not yet started.
pub(crate) struct Created {
    pub(crate) cell: Box<dyn Cell>,
    pub(crate) spec_hash: String,
    pub(crate) decision: AdmissionDecision,
    pub(crate) delivered: Vec<(String, &'static str)>,
    /// When admission began: the TTL counts from here.
    pub(crate) created: Instant,
}

/// Brokers whose revocation failed, with their errors.
pub(crate) struct Unrevoked(Vec<(&'static str, PortError)>);

impl Unrevoked {
    /// Each failed broker as residue of class `secret`: a grant that may still stand.
    pub(crate) fn residue(&self) -> Vec<Residue> {
        self.0
            .iter()
            .map(|(broker, err)| Residue {
                class: "secret".into(),
                detail: format!("broker {broker} could not revoke the cell's secrets: {err}"),
            })
            .collect()
    }

    /// The delivered secrets whose broker did revoke them: no `secrets.v1.revoked` claims a
    /// grant that may still stand.
    pub(crate) fn revoked(
        &self,
        delivered: &[(String, &'static str)],
    ) -> Vec<(String, &'static str)> {
        delivered
            .iter()
            .filter(|(_, broker)| !self.0.iter().any(|(failed, _)| failed == broker))
            .cloned()
            .collect()
    }
}

/// Teardown report for a cell whose destroy failed: nothing of the residue check ran, so
/// every class is unverified.
pub(crate) fn destroy_failed(cell_id: &str, err: &PortError) -> TeardownReport {
    TeardownReport {
        cell_id: cell_id.to_string(),
        destroyed: false,
        forced: true,
        unverified: vec![UnverifiedResidue {
            class: "all".into(),
            reason: format!("destroy failed, nothing was verified: {err}"),
        }],
        ..TeardownReport::default()
    }
}

/// Teardown report for a cell that failed before the backend created anything.
pub(crate) fn never_created(cell_id: &str) -> TeardownReport {
    TeardownReport {
        cell_id: cell_id.to_string(),
        ..TeardownReport::default()
    }
}

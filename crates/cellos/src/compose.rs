//! The composition root: picks the adapters for this machine and wires the supervisor.
//!
//! Embedded default: the Linux backend, the JSONL event log under CELLOS_HOME signed with the
//! host key, the file broker (CELLOS_HOME/secrets) then the env broker, and local exports.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cellos_adapters::event_log::{JsonlEventLog, LogConfig};
use cellos_adapters::export::{ExportSecrets, LocalExportSink, Outbox, RemoteExportSink};
use cellos_adapters::home::cellos_home;
use cellos_adapters::keys::KeyStore;
use cellos_adapters::secrets::{CommandSecretBroker, EnvSecretBroker, FileSecretBroker};
use cellos_core::events::EventFactory;
use cellos_core::integrity::key_material_held;
use cellos_core::ports::{EventSink, ExportSink, PortError, PortErrorKind, SecretBroker};
use cellos_core::spec::{Capabilities, ExecutionCellSpec, ExportTarget, ExportTargetKind};
use cellos_linux::backend::{InitMode, LinuxBackend, LinuxBackendConfig};
use cellos_linux::netscope::NetworkConfig;
use cellos_linux::telemetry;
use cellos_supervisor::{ExportRouter, Supervisor};

use crate::exit::Failure;

/// The state directory: `--home`/`CELLOS_HOME`, else the per-user default.
pub fn resolve_home(cli: Option<PathBuf>) -> Result<PathBuf, Failure> {
    match cli {
        Some(home) => Ok(home),
        None => cellos_home().map_err(|e| Failure::other(e.to_string())),
    }
}

/// This machine's name, for event sources.
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// The small dedicated init binary, installed next to `cellos`.
const INIT_BINARY: &str = "cellos-cell-init";

/// The Linux backend. The cell's init is `cellos-cell-init` when it is installed next to this
/// binary (a sixth of the size, so every cell starts faster), else this very binary
/// re-executed as `cellos __cell-init`. The in-cell telemetry agent is
/// `cellos-telemetry-agent` next to this binary (cells with `telemetry.enabled` are refused
/// without it); `CELLOS_TELEMETRY_SILENCE_MS` overrides its keep-alive window.
///
/// `init_mode` says how its cells' init starts: `cellos run` chooses with [`run_init_mode`];
/// commands that create no cell pass [`InitMode::Exec`]. `cellos serve`, a long-lived
/// multi-threaded server, must choose [`InitMode::Exec`]: the backend refuses to run init in
/// the clone of a multi-threaded process.
pub fn backend(
    home: &Path,
    network: NetworkConfig,
    init_mode: InitMode,
) -> Result<Arc<LinuxBackend>, Failure> {
    let exe = std::env::current_exe()
        .map_err(|e| Failure::cellos(format!("cannot locate the cellos executable: {e}")))?;
    let installed = |name: &str| installed_beside(&exe, name);
    let mut config = LinuxBackendConfig::new(home, installed(INIT_BINARY).unwrap_or(exe.clone()));
    config.network = network;
    config.init_mode = init_mode;
    config.telemetry.agent_exe = installed(telemetry::AGENT_BINARY);
    if let Some(silence) = telemetry_silence()? {
        config.telemetry.silence = silence;
    }
    let backend =
        LinuxBackend::new(config).map_err(|e| Failure::cellos(PortError::from(e).to_string()))?;
    Ok(Arc::new(backend))
}

/// What this build serves: local, `http` and `s3` exports, and telemetry when the agent is installed
/// next to this binary. `cellos validate` and admission refuse specs asking for more.
pub fn capabilities() -> Capabilities {
    let agent = std::env::current_exe()
        .ok()
        .and_then(|exe| installed_beside(&exe, telemetry::AGENT_BINARY));
    Capabilities {
        export_kinds: Exports::KINDS.into_iter().collect(),
        telemetry_agent: agent.is_some(),
    }
}

/// `name` in the directory of `exe`, if installed there.
fn installed_beside(exe: &Path, name: &str) -> Option<PathBuf> {
    exe.parent()
        .map(|dir| dir.join(name))
        .filter(|path| path.is_file())
}

/// Exports go to CELLOS_HOME/exports unless an artifact names a target; `http` and `s3`
/// targets are sent from the outbox in CELLOS_HOME/outbox, where what did not arrive is kept.
struct Exports {
    default: Arc<LocalExportSink>,
    outbox: Outbox,
    secrets: ExportSecrets,
}

impl Exports {
    /// The target kinds [`ExportRouter::sink_for`] has a sink for.
    const KINDS: [ExportTargetKind; 3] = [
        ExportTargetKind::LocalPath,
        ExportTargetKind::Http,
        ExportTargetKind::S3,
    ];
}

/// Where artifacts bound for `http` and `s3` targets wait until they have arrived.
pub fn outbox(home: &Path) -> Outbox {
    Outbox::new(home.join("outbox"))
}

impl ExportRouter for Exports {
    fn sink_for(&self, target: Option<&ExportTarget>) -> Result<Arc<dyn ExportSink>, PortError> {
        let Some(target) = target else {
            return Ok(self.default.clone());
        };
        match (target.kind, target.path.as_deref()) {
            (ExportTargetKind::LocalPath, Some(path)) => Ok(Arc::new(
                LocalExportSink::new(path)?.with_target_name(&target.name),
            )),
            (ExportTargetKind::LocalPath, None) => Err(PortError::new(
                PortErrorKind::Refused,
                format!("export target {:?} has no path", target.name),
            )),
            (ExportTargetKind::Http | ExportTargetKind::S3, _) => Ok(Arc::new(
                RemoteExportSink::new(target.clone(), self.outbox.clone(), self.secrets.clone())?,
            )),
        }
    }
}

/// The host's signed event log and a factory for events `component` appends to it, for
/// commands that record what they did outside a supervised run (`cellos pause`).
pub fn event_log(home: &Path, component: &str) -> Result<(JsonlEventLog, EventFactory), Failure> {
    let keys = KeyStore::new(home);
    let signer = keys
        .load_or_create_signer()
        .map_err(|e| Failure::cellos(format!("signing key: {e}")))?;
    let sink = JsonlEventLog::open(home, signer, LogConfig::default())
        .map_err(|e| Failure::cellos(e.to_string()))?;
    let factory = EventFactory::new(
        &hostname(),
        component,
        Arc::new(|| uuid::Uuid::new_v4().to_string()),
    );
    Ok((sink, factory))
}

/// How the cell of `cellos run` starts its init. The command runs one cell from one thread and
/// loads the signing key only at its first append, after the create, so init runs in the clone
/// ([`InitMode::InClone`], most of a millisecond per cell) unless this process rules that out
/// before the create; init is then exec'd:
/// - a telemetry cell: its runner thread starts before the clone;
/// - a process that holds the signing key: the first run creates it ([`deferred_log`]), and a
///   `gc` that reclaimed a cell signed its event.
pub fn run_init_mode(spec: &ExecutionCellSpec) -> InitMode {
    let telemetry = spec.telemetry.as_ref().is_some_and(|t| t.enabled);
    if telemetry || key_material_held() {
        InitMode::Exec
    } else {
        InitMode::InClone
    }
}

/// The host's signed event log, its key checked now (and created on first use) but loaded at
/// the first append, so that a cell created before it may run init in the clone.
pub fn deferred_log(home: &Path) -> Result<JsonlEventLog, Failure> {
    let keys = KeyStore::new(home);
    keys.check_signer()
        .map_err(|e| Failure::cellos(format!("signing key: {e}")))?;
    let load = Box::new(move || keys.load_or_create_signer().map_err(|e| e.to_string()));
    JsonlEventLog::open_deferred(home, load, LogConfig::default())
        .map_err(|e| Failure::cellos(e.to_string()))
}

/// `sink`: the [`deferred_log`]; `network`: address pool and DNS upstream of networked cells
/// (`cellos run` flags); `init_mode`: see [`backend`].
pub fn supervisor(
    home: &Path,
    sink: JsonlEventLog,
    secrets_dir: Option<PathBuf>,
    network: NetworkConfig,
    init_mode: InitMode,
) -> Result<Supervisor, Failure> {
    let factory = EventFactory::new(
        &hostname(),
        "supervisor",
        Arc::new(|| uuid::Uuid::new_v4().to_string()),
    );
    compose_supervisor(
        home,
        Arc::new(sink),
        factory,
        secrets_dir,
        backend(home, network, init_mode)?,
    )
}

/// Environment variable naming a host program that fetches secrets
/// ([`CommandSecretBroker`]'s protocol: `PROGRAM get KEY`, `PROGRAM revoke`).
pub const SECRET_COMMAND_ENV: &str = "CELLOS_SECRET_COMMAND";

/// The host's secret brokers, asked in order: the files of `secrets_dir` (default
/// CELLOS_HOME/secrets), then the program of `CELLOS_SECRET_COMMAND` when set, then
/// `CELLOS_SECRET_*` variables.
pub fn secret_brokers(home: &Path, secrets_dir: Option<PathBuf>) -> Vec<Arc<dyn SecretBroker>> {
    let secrets_dir = secrets_dir.unwrap_or_else(|| home.join("secrets"));
    let mut brokers: Vec<Arc<dyn SecretBroker>> =
        vec![Arc::new(FileSecretBroker::new(secrets_dir))];
    if let Some(program) = std::env::var_os(SECRET_COMMAND_ENV).filter(|p| !p.is_empty()) {
        brokers.push(Arc::new(CommandSecretBroker::new(PathBuf::from(program))));
    }
    brokers.push(Arc::new(EnvSecretBroker::new()));
    brokers
}

/// The supervisor over `sink` and `backend`, with the [`secret_brokers`] and
/// exports (local, and remote through the outbox).
fn compose_supervisor(
    home: &Path,
    sink: Arc<dyn EventSink>,
    factory: EventFactory,
    secrets_dir: Option<PathBuf>,
    backend: Arc<LinuxBackend>,
) -> Result<Supervisor, Failure> {
    let brokers = secret_brokers(home, secrets_dir);
    let exports = Exports {
        default: Arc::new(
            LocalExportSink::new(home.join("exports"))
                .map_err(|e| Failure::cellos(e.to_string()))?,
        ),
        outbox: outbox(home),
        secrets: ExportSecrets::new(brokers.clone()),
    };
    Ok(
        Supervisor::new(backend, sink, factory, brokers, Arc::new(exports))
            .with_capabilities(capabilities()),
    )
}

/// The supervisor of `cellos serve`: the signed log (opened with the key at once: init is
/// exec'd, so holding it cannot leak into a cell) passed through `wrap_sink`, which puts the
/// server's event feed in front of it, and a backend that always execs init.
pub fn server_supervisor(
    home: &Path,
    secrets_dir: Option<PathBuf>,
    network: NetworkConfig,
    wrap_sink: impl FnOnce(Arc<dyn EventSink>) -> Result<Arc<dyn EventSink>, Failure>,
) -> Result<Supervisor, Failure> {
    let (log, factory) = event_log(home, "supervisor")?;
    let sink = wrap_sink(Arc::new(log))?;
    // A multi-threaded server must never run init in a clone of itself.
    let backend = backend(home, network, InitMode::Exec)?;
    compose_supervisor(home, sink, factory, secrets_dir, backend)
}

/// `CELLOS_TELEMETRY_SILENCE_MS`, if set.
fn telemetry_silence() -> Result<Option<Duration>, Failure> {
    let Some(ms) = std::env::var_os(telemetry::SILENCE_ENV) else {
        return Ok(None);
    };
    let ms: u64 = ms.to_str().and_then(|s| s.parse().ok()).ok_or_else(|| {
        Failure::cellos(format!(
            "{} must be a number of milliseconds",
            telemetry::SILENCE_ENV
        ))
    })?;
    Ok(Some(Duration::from_millis(ms.max(1))))
}

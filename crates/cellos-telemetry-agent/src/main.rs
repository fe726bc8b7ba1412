//! `cellos-telemetry-agent`: the in-cell telemetry agent and the workload's declaration CLI.
//!
//! `cellos-telemetry-agent` runs beside the workload: it reports every process of
//! its pid namespace as `process.spawned` / `process.exited`, and sends a keep-alive every
//! interval. `cellos-telemetry-agent declare <probe_source> <value> [key=value ...]` sends one
//! declaration about the calling process and exits.
//!
//! The agent holds no keys and signs nothing: the host attributes frames by the socket they
//! arrive on. Its crate depends on the wire format only, so no host-side (signing) crate is
//! linked.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use cellos_telemetry_agent::{self as agent, ProcChange, ProcInfo, ProcScanner, SOCKET_ENV};
use cellos_telemetry_wire::{GuestFrame, ProbeSource, IN_CELL_SOCKET_PATH};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cellos-telemetry-agent",
    about = "CellOS in-cell telemetry agent"
)]
struct Cli {
    /// Telemetry socket inside the cell.
    #[arg(long, env = SOCKET_ENV, default_value = IN_CELL_SOCKET_PATH, global = true)]
    socket: PathBuf,
    #[command(flatten)]
    run: RunArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Send one declaration about the calling process and exit.
    Declare {
        /// net.intent, fs.intent, secret.intent or custom.<name>.
        probe_source: String,
        /// The host (`host` or `host:port`), path, secret name or value declared.
        value: String,
        /// Extra detail as key=value (e.g. protocol=udp, access=read).
        #[arg(value_parser = parse_key_value)]
        detail: Vec<(String, String)>,
    },
}

#[derive(clap::Args, Clone, Copy)]
struct RunArgs {
    /// Milliseconds between keep-alives (keep well under the host's silence window).
    #[arg(long, env = "CELLOS_TELEMETRY_KEEPALIVE_MS", default_value_t = 2000)]
    keepalive_ms: u64,
    /// Milliseconds between scans of /proc.
    #[arg(long, env = "CELLOS_TELEMETRY_POLL_MS", default_value_t = 100)]
    poll_ms: u64,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Declare {
            probe_source,
            value,
            detail,
        }) => declare(&cli.socket, &probe_source, &value, &detail),
        None => run(&cli.socket, cli.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("cellos-telemetry-agent: {message}");
            ExitCode::FAILURE
        }
    }
}

fn declare(
    socket: &Path,
    probe_source: &str,
    value: &str,
    detail: &[(String, String)],
) -> Result<(), String> {
    // The declaring process is the one that ran this command.
    let pid = std::os::unix::process::parent_id();
    let comm = ProcInfo::read(Path::new("/proc"), pid)
        .map(|p| p.comm)
        .unwrap_or_default();
    let frame =
        agent::declaration(probe_source, value, detail, pid, &comm).map_err(|e| e.to_string())?;
    let mut stream =
        UnixStream::connect(socket).map_err(|e| format!("connect {}: {e}", socket.display()))?;
    agent::send(&mut stream, &[frame]).map_err(|e| e.to_string())
}

fn connect(socket: &Path) -> Result<UnixStream, String> {
    // The host binds the socket before the workload starts; retry briefly anyway so a slow
    // bind mount does not lose the agent.
    let mut last = String::new();
    for _ in 0..50 {
        match UnixStream::connect(socket) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("connect {}: {last}", socket.display()))
}

fn run(socket: &Path, args: RunArgs) -> Result<(), String> {
    let keepalive = Duration::from_millis(args.keepalive_ms.max(1));
    let poll = Duration::from_millis(args.poll_ms.max(1));
    let me = std::process::id();
    let comm = ProcInfo::read(Path::new("/proc"), me)
        .map(|p| p.comm)
        .unwrap_or_else(|| "telemetry-agent".into());
    let mut stream = connect(socket)?;
    let mut scanner = ProcScanner::new("/proc");
    let mut next_keepalive = Instant::now();
    loop {
        let mut frames: Vec<GuestFrame> = Vec::new();
        if Instant::now() >= next_keepalive {
            frames.push(GuestFrame::new(
                ProbeSource::Keepalive,
                me,
                comm.as_str(),
                agent::monotonic_ns(),
            ));
            next_keepalive = Instant::now() + keepalive;
        }
        match scanner.scan() {
            Ok(changes) => frames.extend(changes.iter().map(|change| match change {
                ProcChange::Spawned(p) => p.spawned_frame(),
                ProcChange::Exited(p) => p.exited_frame(),
            })),
            Err(e) => eprintln!("cellos-telemetry-agent: scanning /proc: {e}"),
        }
        if !frames.is_empty() {
            if let Err(e) = agent::send(&mut stream, &frames) {
                eprintln!("cellos-telemetry-agent: {e}; reconnecting");
                stream = connect(socket)?;
                agent::send(&mut stream, &frames).map_err(|e| e.to_string())?;
            }
        }
        std::thread::sleep(poll);
    }
}

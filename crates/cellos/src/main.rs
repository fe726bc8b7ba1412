//! `cellos`: the command-line interface and composition root of CellOS.
//!
//! This is the only place that knows which adapters exist: it reads the environment, picks the
//! backend, event sink, secret brokers and export sinks, and hands them to the supervisor.

mod client;
mod commands;
mod compose;
mod exit;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::exit::Failure;

/// Run untrusted work in disposable, kernel-isolated cells, with signed evidence.
#[derive(Parser)]
#[command(name = "cellos", version, about)]
struct Cli {
    /// State directory (event log, keys, run records, exports, logs).
    /// Defaults to /var/lib/cellos for root and ~/.local/state/cellos otherwise.
    #[arg(long, env = "CELLOS_HOME", global = true)]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// How many signatures `verify` checks.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum SignatureMode {
    Every,
    Anchors,
}

#[derive(Subcommand)]
enum Command {
    /// Check spec, policy-pack and formation files; exit 2 listing every problem.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Check a spec against policy packs and print the decision.
    Admit {
        file: PathBuf,
        #[arg(long = "policy", required = true)]
        policies: Vec<PathBuf>,
        /// Print the decision as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema of the documents.
    Schema,
    /// Create the host signing key (Ed25519) if it does not exist, and print its key id.
    Keygen {
        /// Replace an existing key (the old public key stays trusted for verification).
        #[arg(long)]
        force: bool,
    },
    /// Verify the whole hash chain and every signature of an event log.
    Verify {
        /// Log directory or segment file (default: the event log under CELLOS_HOME).
        log: Option<PathBuf>,
        /// `every` checks each signature; `anchors` checks the chain link of every event and
        /// the last signature of each key run (each signature covers the whole chain before
        /// it), which is faster on large logs but does not catch a writer that signed
        /// intermediate events wrongly.
        #[arg(long, value_enum, default_value = "every")]
        signatures: SignatureMode,
    },
    /// Show events.
    Events {
        #[arg(long)]
        cell: Option<String>,
        /// Only events whose type starts with this (the `dev.cellos.events.cell.` prefix is optional).
        #[arg(long = "type")]
        type_prefix: Option<String>,
        /// Keep printing new events as they are appended.
        #[arg(long)]
        follow: bool,
        /// Print raw JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Fold an event log into per-cell state and print it as JSON.
    Project { log: Option<PathBuf> },
    /// Run a cell and exit with its workload's status (124 timeout, 125 CellOS error, 128+N signal).
    Run {
        spec: PathBuf,
        #[arg(long = "policy")]
        policies: Vec<PathBuf>,
        /// Directory of secret files for the file broker (default: CELLOS_HOME/secrets).
        #[arg(long, env = "CELLOS_SECRETS_DIR")]
        secrets_dir: Option<PathBuf>,
        /// Do not stream workload output to this terminal (it is still kept for `cellos logs`).
        #[arg(long)]
        quiet: bool,
        /// Resolver the DNS authority of a networked cell forwards allowed names to
        /// (default: the first nameserver of the host's /etc/resolv.conf).
        #[arg(long, env = "CELLOS_DNS_UPSTREAM", value_name = "IP:PORT")]
        dns_upstream: Option<std::net::SocketAddr>,
        /// IPv4 pool the /30 links of networked cells are leased from.
        #[arg(long, env = "CELLOS_NET_POOL", value_name = "CIDR",
              default_value = cellos_linux::netscope::pool::DEFAULT_POOL,
              value_parser = parse_pool)]
        net_pool: cellos_linux::netscope::AddressPool,
    },
    /// List cells on this host.
    Ps {
        #[arg(long)]
        json: bool,
    },
    /// Print the kept output of a cell.
    Logs { cell_id: String },
    /// Signal a running cell's workload (default SIGTERM).
    Kill {
        cell_id: String,
        #[arg(long, short = 's', default_value = "TERM")]
        signal: String,
    },
    /// Freeze every process of a running cell.
    Pause { cell_id: String },
    /// Thaw a paused cell.
    Resume { cell_id: String },
    /// Reclaim what crashed runs left behind (also done at every `cellos run`).
    Gc,
    /// Print what this host can enforce, and the fix for anything missing.
    Doctor {
        #[arg(long)]
        json: bool,
    },
}

/// `--net-pool`: an IPv4 network of at least one /30.
fn parse_pool(text: &str) -> Result<cellos_linux::netscope::AddressPool, String> {
    cellos_linux::netscope::AddressPool::parse(text).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    // The cell's init is this same binary, re-executed inside the new namespaces.
    cellos_linux::init::run_if_init();
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("cellos: {failure}");
            ExitCode::from(failure.code())
        }
    }
}

fn dispatch(cli: Cli) -> Result<u8, Failure> {
    let home = compose::resolve_home(cli.home)?;
    match cli.command {
        Command::Validate { files } => commands::spec::validate(&files),
        Command::Admit {
            file,
            policies,
            json,
        } => commands::spec::admit(&file, &policies, json),
        Command::Schema => commands::spec::schema(),
        Command::Keygen { force } => commands::log::keygen(&home, force),
        Command::Verify { log, signatures } => commands::log::verify(&home, log, signatures),
        Command::Events {
            cell,
            type_prefix,
            follow,
            json,
        } => commands::log::events(&home, cell, type_prefix, follow, json),
        Command::Project { log } => commands::log::project(&home, log),
        Command::Run {
            spec,
            policies,
            secrets_dir,
            quiet,
            dns_upstream,
            net_pool,
        } => {
            let network = cellos_linux::netscope::NetworkConfig {
                pool: net_pool,
                dns_upstream,
            };
            commands::cells::run(&home, &spec, &policies, secrets_dir, quiet, network)
        }
        Command::Ps { json } => commands::cells::ps(&home, json),
        Command::Logs { cell_id } => commands::cells::logs(&home, &cell_id),
        Command::Kill { cell_id, signal } => commands::cells::kill(&home, &cell_id, &signal),
        Command::Pause { cell_id } => commands::cells::pause(&home, &cell_id),
        Command::Resume { cell_id } => commands::cells::resume(&home, &cell_id),
        Command::Gc => commands::cells::gc(&home),
        Command::Doctor { json } => commands::cells::doctor(json),
    }
}

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

use cellos_linux::netscope::teardown::LinkTeardown;
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
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: Command,
}

/// Which `cellos serve` the client commands talk to.
#[derive(clap::Args)]
struct ClientArgs {
    /// Server to talk to: `unix:PATH` (default unix:CELLOS_HOME/cellos.sock),
    /// `https://HOST:PORT`, or `http://127.0.0.1:PORT` (plain http only to loopback).
    /// TCP servers get the bearer token from CELLOS_TOKEN or --token-file.
    #[arg(long, env = "CELLOS_SERVER", global = true, value_name = "ADDRESS")]
    server: Option<String>,
    /// File whose first line is the bearer token for a TCP server (else CELLOS_TOKEN).
    #[arg(long, global = true, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// PEM CA (or server certificate) an https server is verified against.
    #[arg(long, env = "CELLOS_CA_CERT", global = true, value_name = "PEM")]
    ca_cert: Option<PathBuf>,
}

impl ClientArgs {
    /// The server, resolved only by commands that use one (a bad CELLOS_SERVER must not
    /// break `cellos validate`).
    fn server(&self, home: &std::path::Path) -> Result<client::Server, Failure> {
        client::Server::configure(
            home,
            client::ServerOptions {
                server: self.server.as_deref(),
                token_file: self.token_file.as_deref(),
                ca_cert: self.ca_cert.as_deref(),
                token_env: std::env::var("CELLOS_TOKEN").ok(),
            },
        )
        .map_err(|e| Failure::invalid(e.to_string()))
    }
}

/// How many signatures `verify` checks.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum SignatureMode {
    Every,
    Anchors,
}

/// What `cellos serve` does with its cells when it stops.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum OnShutdownArg {
    /// Destroy every cell and verify nothing is left.
    Destroy,
    /// Leave cells running for a restarted server to reclaim.
    Keep,
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
        #[command(flatten)]
        network: NetworkArgs,
    },
    /// Serve the HTTP API: session cells, execs, files and events, on a Unix socket at
    /// CELLOS_HOME/cellos.sock (mode 0600) and on TCP with --listen tcp:ADDR.
    Serve {
        /// `unix:PATH` (replaces the default socket) or `tcp:HOST:PORT` (TLS unless loopback;
        /// always a bearer token). Repeatable.
        #[arg(long, value_name = "unix:PATH|tcp:ADDR", value_parser = parse_listen)]
        listen: Vec<cellos_server::Listen>,
        /// PEM certificate chain of the TCP listeners.
        #[arg(long, value_name = "PEM")]
        tls_cert: Option<PathBuf>,
        /// PEM private key of the TCP listeners.
        #[arg(long, value_name = "PEM")]
        tls_key: Option<PathBuf>,
        /// File holding the bearer token TCP callers must send (else CELLOS_TOKEN).
        #[arg(long, value_name = "PATH")]
        token_file: Option<PathBuf>,
        /// What happens to live cells at SIGTERM/SIGINT.
        #[arg(long, value_enum, default_value = "destroy")]
        on_shutdown: OnShutdownArg,
        /// Policy packs every cell is admitted against.
        #[arg(long = "policy")]
        policies: Vec<PathBuf>,
        /// Profiles file of the MCP endpoint at /mcp (default: the built-in ones).
        #[arg(long, value_name = "PATH")]
        mcp_profiles: Option<PathBuf>,
        /// Directory of secret files for the file broker (default: CELLOS_HOME/secrets).
        #[arg(long, env = "CELLOS_SECRETS_DIR")]
        secrets_dir: Option<PathBuf>,
        #[command(flatten)]
        network: NetworkArgs,
    },
    /// Serve MCP tools (sandbox_create, sandbox_exec, run, files, sandbox_destroy,
    /// sandbox_evidence) on stdio for a client that starts this command, or on streamable HTTP
    /// at http(s)://ADDR/mcp with --http. Every cell is destroyed when the server ends.
    Mcp {
        /// Serve streamable HTTP on this address instead of stdio (a bearer token always,
        /// from --token-file or CELLOS_TOKEN; TLS unless loopback).
        #[arg(long, value_name = "HOST:PORT")]
        http: Option<std::net::SocketAddr>,
        /// Profiles file: what agents may ask for (default: the built-in `python` profile,
        /// see examples/mcp/profiles.yaml).
        #[arg(long, value_name = "PATH")]
        profiles: Option<PathBuf>,
        /// PEM certificate chain of the --http listener.
        #[arg(long, value_name = "PEM")]
        tls_cert: Option<PathBuf>,
        /// PEM private key of the --http listener.
        #[arg(long, value_name = "PEM")]
        tls_key: Option<PathBuf>,
        /// File holding the bearer token --http callers must send (else CELLOS_TOKEN).
        #[arg(long, value_name = "PATH")]
        token_file: Option<PathBuf>,
        /// Policy packs every cell is admitted against (besides its profile's).
        #[arg(long = "policy")]
        policies: Vec<PathBuf>,
        /// Directory of secret files for the file broker (default: CELLOS_HOME/secrets).
        #[arg(long, env = "CELLOS_SECRETS_DIR")]
        secrets_dir: Option<PathBuf>,
        #[command(flatten)]
        network: NetworkArgs,
    },
    /// Create a cell on the server from a spec file and print its id (a spec without run is a
    /// session cell, driven with exec and cp until rm).
    Create { spec: PathBuf },
    /// Run a command in a server cell and exit with its status (124 timeout, 125 CellOS
    /// error, 127 cannot start, 128+N signal).
    Exec {
        cell_id: String,
        /// Forward this terminal's stdin to the command, live.
        #[arg(short, long)]
        interactive: bool,
        /// Give the command a terminal sized like this one (raw mode while it runs).
        #[arg(short, long)]
        tty: bool,
        /// Environment variable for the command (repeatable).
        #[arg(short, long = "env", value_name = "KEY=VAL", value_parser = commands::remote::parse_env)]
        env: Vec<(String, String)>,
        /// Working directory in the cell.
        #[arg(short, long = "workdir", value_name = "CWD")]
        workdir: Option<String>,
        /// Kill the command after this long (exit 124).
        #[arg(long, value_name = "N")]
        timeout_ms: Option<u64>,
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        argv: Vec<String>,
    },
    /// Copy one file between this host and a server cell: `ID:/path` is in the cell, `-` is
    /// stdin/stdout.
    Cp { src: String, dst: String },
    /// Destroy a server cell; exit 1 naming anything it left behind.
    Rm { cell_id: String },
    /// List cells on this host (and those of the server, if one answers).
    Ps {
        #[arg(long)]
        json: bool,
    },
    /// Print the kept output of a cell (with --exec: of one exec of a server cell).
    Logs {
        cell_id: String,
        /// Exec id (from the server) whose kept output to print.
        #[arg(long, value_name = "EXEC")]
        exec: Option<String>,
        /// With --exec: keep printing until the exec ends.
        #[arg(long, requires = "exec")]
        follow: bool,
    },
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
    /// API tokens for `cellos serve` on TCP.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Artifacts that did not reach their `http` or `s3` destination: they wait in the
    /// outbox until sent again.
    Export {
        #[command(subcommand)]
        command: ExportCommand,
    },
}

/// Where networked cells' links come from and where their DNS goes (`run`, `serve`, `mcp`).
#[derive(clap::Args)]
struct NetworkArgs {
    /// Resolver the DNS authority of a networked cell forwards allowed names to
    /// (default: the first nameserver of the host's /etc/resolv.conf).
    #[arg(long, env = "CELLOS_DNS_UPSTREAM", value_name = "IP:PORT")]
    dns_upstream: Option<std::net::SocketAddr>,
    /// IPv4 pool the /30 links of networked cells are leased from.
    #[arg(long, env = "CELLOS_NET_POOL", value_name = "CIDR",
          default_value = cellos_linux::netscope::pool::DEFAULT_POOL,
          value_parser = parse_pool)]
    net_pool: cellos_linux::netscope::AddressPool,
    /// IPv6 pool the /64 links of networked cells are leased from (a ULA /48 by default).
    #[arg(long, env = "CELLOS_NET_POOL6", value_name = "CIDR",
          default_value = cellos_linux::netscope::pool::DEFAULT_POOL6,
          value_parser = parse_pool6)]
    net_pool6: cellos_linux::netscope::AddressPool6,
}

impl NetworkArgs {
    /// The backend's network settings; `teardown` says how a veth's deletion finishes.
    fn config(
        self,
        teardown: cellos_linux::netscope::teardown::LinkTeardown,
    ) -> cellos_linux::netscope::NetworkConfig {
        cellos_linux::netscope::NetworkConfig {
            pool: self.net_pool,
            pool6: self.net_pool6,
            teardown,
            dns_upstream: self.dns_upstream,
        }
    }
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it (once; only its hash is kept).
    Create {
        /// Who the token speaks for, as the authorization policy names subjects.
        #[arg(long)]
        subject: String,
        /// Scopes this token carries (comma-separated); default: all its subject is granted.
        #[arg(long, value_delimiter = ',', value_parser = commands::token::parse_scope)]
        scopes: Option<Vec<cellos_core::spec::Scope>>,
        /// Lifetime: 30d, 12h, 45m, an RFC 3339 time, or never (default 90d).
        #[arg(long, value_parser = commands::token::parse_expiry)]
        expires: Option<commands::token::Expiry>,
    },
    /// List tokens (never their secrets).
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token; the server refuses it from the next request on.
    Revoke { id: String },
}

#[derive(Subcommand)]
enum ExportCommand {
    /// List the exports waiting in the outbox.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Send a waiting export again (with its target's retries) and record the outcome.
    Retry {
        /// Export id, as `cellos export ls` and the `export.v1.failed` reason give it.
        id: String,
        /// Directory of secret files for the file broker (default: CELLOS_HOME/secrets).
        #[arg(long, env = "CELLOS_SECRETS_DIR")]
        secrets_dir: Option<PathBuf>,
    },
}

/// `--net-pool`: an IPv4 network of at least one /30.
fn parse_pool(text: &str) -> Result<cellos_linux::netscope::AddressPool, String> {
    cellos_linux::netscope::AddressPool::parse(text).map_err(|e| e.to_string())
}

/// `--net-pool6`: an IPv6 network of at least one /64.
fn parse_pool6(text: &str) -> Result<cellos_linux::netscope::AddressPool6, String> {
    cellos_linux::netscope::AddressPool6::parse(text).map_err(|e| e.to_string())
}

/// `--listen`: `unix:PATH` or `tcp:HOST:PORT`.
fn parse_listen(text: &str) -> Result<cellos_server::Listen, String> {
    text.parse()
        .map_err(|e: cellos_server::ConfigError| e.to_string())
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
            network,
        } => {
            // The process exits with the workload's status; a veth's deletion finishes in a
            // detached process (see cellos_linux::netscope::teardown).
            let network = network.config(LinkTeardown::Detached);
            commands::cells::run(&home, &spec, &policies, secrets_dir, quiet, network)
        }
        Command::Serve {
            listen,
            tls_cert,
            tls_key,
            token_file,
            on_shutdown,
            policies,
            mcp_profiles,
            secrets_dir,
            network,
        } => commands::serve::serve(
            &home,
            commands::serve::ServeArgs {
                listen,
                tls_cert,
                tls_key,
                token_file,
                on_shutdown: match on_shutdown {
                    OnShutdownArg::Destroy => cellos_server::OnShutdown::Destroy,
                    OnShutdownArg::Keep => cellos_server::OnShutdown::Keep,
                },
                policies,
                mcp_profiles,
                secrets_dir,
                network: network.config(LinkTeardown::Thread),
            },
        ),
        Command::Mcp {
            http,
            profiles,
            tls_cert,
            tls_key,
            token_file,
            policies,
            secrets_dir,
            network,
        } => commands::mcp::mcp(
            &home,
            commands::mcp::McpArgs {
                http,
                tls_cert,
                tls_key,
                token_file,
                profiles,
                policies,
                secrets_dir,
                network: network.config(LinkTeardown::Thread),
            },
        ),
        Command::Create { spec } => commands::remote::create(&cli.client.server(&home)?, &spec),
        Command::Exec {
            cell_id,
            interactive,
            tty,
            env,
            workdir,
            timeout_ms,
            argv,
        } => commands::remote::exec(
            &cli.client.server(&home)?,
            commands::remote::ExecArgs {
                cell_id,
                interactive,
                tty,
                env,
                cwd: workdir,
                timeout_ms,
                argv,
            },
        ),
        Command::Cp { src, dst } => commands::remote::cp(&cli.client.server(&home)?, &src, &dst),
        Command::Rm { cell_id } => commands::remote::rm(&cli.client.server(&home)?, &cell_id),
        Command::Ps { json } => ps(&home, &cli.client, json),
        Command::Logs {
            cell_id,
            exec: Some(exec),
            follow,
        } => commands::remote::exec_logs(&cli.client.server(&home)?, &cell_id, &exec, follow),
        Command::Logs { cell_id, .. } => commands::cells::logs(&home, &cell_id),
        Command::Kill { cell_id, signal } => commands::cells::kill(&home, &cell_id, &signal),
        Command::Pause { cell_id } => freeze(&home, &cli.client, &cell_id, true),
        Command::Resume { cell_id } => freeze(&home, &cli.client, &cell_id, false),
        Command::Gc => commands::cells::gc(&home),
        Command::Doctor { json } => commands::cells::doctor(json),
        Command::Token {
            command:
                TokenCommand::Create {
                    subject,
                    scopes,
                    expires,
                },
        } => commands::token::create(&home, &subject, scopes, expires),
        Command::Token {
            command: TokenCommand::Ls { json },
        } => commands::token::ls(&home, json),
        Command::Token {
            command: TokenCommand::Revoke { id },
        } => commands::token::revoke(&home, &id),
        Command::Export {
            command: ExportCommand::Ls { json },
        } => commands::export::ls(&home, json),
        Command::Export {
            command: ExportCommand::Retry { id, secrets_dir },
        } => commands::export::retry(&home, &id, secrets_dir),
    }
}

/// `ps`: the local cells as before, then the server's if one answers. `--json` stays the
/// local list alone, so its shape does not depend on whether a server is up.
fn ps(home: &std::path::Path, client: &ClientArgs, json: bool) -> Result<u8, Failure> {
    let code = commands::cells::ps(home, json)?;
    if json {
        return Ok(code);
    }
    let server = client.server(home)?;
    if !server.worth_trying() {
        return Ok(code);
    }
    if let Some(cells) = commands::remote::list(&server)? {
        commands::remote::print_cells(&server, &cells);
    }
    Ok(code)
}

/// `pause`/`resume`: through the server when one is named or its socket exists and knows the
/// cell; otherwise (cells of `cellos run`) locally, as before.
fn freeze(
    home: &std::path::Path,
    client: &ClientArgs,
    cell_id: &str,
    paused: bool,
) -> Result<u8, Failure> {
    let server = client.server(home)?;
    if server.worth_trying() {
        if let Some(code) = commands::remote::freeze(&server, cell_id, paused)? {
            return Ok(code);
        }
    }
    match paused {
        true => commands::cells::pause(home, cell_id),
        false => commands::cells::resume(home, cell_id),
    }
}

//! `create`, `exec`, `cp`, `rm`, and the server side of `pause`, `resume`, `ps`, `logs`: cells
//! of a running `cellos serve`, reached through its HTTP API.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use futures_util::{SinkExt, StreamExt};
use hyper::Method;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::client::frames::{self, Channel, Exit, ExitKind, Frame};
use crate::client::http::{Body, ClientError};
use crate::client::{encode, Server};
use crate::commands::tty;
use crate::exit::Failure;

/// A server failure is a CellOS error (125), so it never passes for the workload's status.
impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure::cellos(e.to_string())
    }
}

/// Run one command's async work on a runtime of its own (a CLI makes a few calls; one
/// thread is plenty).
fn block_on<T>(work: impl Future<Output = Result<T, Failure>>) -> Result<T, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::cellos(format!("cannot start the I/O runtime: {e}")))?
        .block_on(work)
}

/// A cell as the server shows it (the fields the CLI prints; the rest is ignored).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CellInfo {
    pub id: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub created: String,
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub execs: u64,
    #[serde(default)]
    pub teardown: Option<Teardown>,
}

/// What destroying a cell removed and what it left.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Teardown {
    #[serde(default)]
    pub residue: Vec<Residue>,
    #[serde(default)]
    pub unverified: Vec<Unverified>,
}

#[derive(Debug, Deserialize)]
pub struct Residue {
    pub class: String,
    #[serde(default)]
    pub detail: String,
}

#[derive(Debug, Deserialize)]
pub struct Unverified {
    pub class: String,
    #[serde(default)]
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CellPage {
    cells: Vec<CellInfo>,
    next_cursor: Option<String>,
}

fn cell_path(id: &str) -> String {
    format!("/v1/cells/{}", encode(id))
}

// ---- create -------------------------------------------------------------------------------

/// The media type of a spec file: by extension, else by its first character.
fn spec_media_type(path: &Path, bytes: &[u8]) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => "application/json",
        Some("yaml" | "yml") => "application/yaml",
        _ if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') => "application/json",
        _ => "application/yaml",
    }
}

/// `cellos create SPEC`: the server creates a session cell; print its id.
pub fn create(server: &Server, spec: &Path) -> Result<u8, Failure> {
    let bytes =
        std::fs::read(spec).map_err(|e| Failure::invalid(format!("{}: {e}", spec.display())))?;
    let body = Body {
        content_type: spec_media_type(spec, &bytes),
        bytes: bytes.into(),
    };
    let cell: CellInfo = block_on(async {
        server
            .json(Method::POST, "/v1/cells", Some(body))
            .await
            .map_err(|e| Failure::cellos(format!("{}: {e}", spec.display())))
    })?;
    println!("{}", cell.id);
    Ok(0)
}

// ---- exec ---------------------------------------------------------------------------------

/// What `cellos exec` was asked to run.
pub struct ExecArgs {
    pub cell_id: String,
    pub interactive: bool,
    pub tty: bool,
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    pub timeout_ms: Option<u64>,
    pub argv: Vec<String>,
}

#[derive(Serialize)]
struct PtySize {
    rows: u16,
    cols: u16,
}

/// The exec request body, for both routes.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExecRequest<'a> {
    argv: &'a [String],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    env: BTreeMap<&'a str, &'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cwd: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<u64>,
    /// The command dies with this client: Ctrl-C here stops it there.
    kill_on_disconnect: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pty: Option<PtySize>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stdin: bool,
}

impl ExecArgs {
    fn request(&self) -> ExecRequest<'_> {
        ExecRequest {
            argv: &self.argv,
            env: self
                .env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            cwd: self.cwd.as_deref(),
            timeout_ms: self.timeout_ms,
            kill_on_disconnect: true,
            pty: self.tty.then(|| {
                let (rows, cols) = tty::size();
                PtySize { rows, cols }
            }),
            stdin: self.interactive,
        }
    }
}

/// `-e KEY=VAL`.
pub fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?}: write KEY=VALUE")),
    }
}

/// Writes output frames to this process's stdout/stderr as they come, and keeps the exit.
struct Terminal {
    argv0: String,
}

impl Terminal {
    /// Handle one frame; `Some` once the exit frame has come.
    fn show(&self, frame: Frame) -> Option<Exit> {
        match frame {
            Frame::Output { channel, data, .. } => {
                let _ = match channel {
                    Channel::Stdout => write_now(&mut std::io::stdout(), &data),
                    Channel::Stderr => write_now(&mut std::io::stderr(), &data),
                };
                None
            }
            Frame::Exit(exit) => {
                self.explain(&exit);
                Some(exit)
            }
            Frame::Started { .. } | Frame::Other(_) => None,
        }
    }

    /// A status the command did not choose itself gets a line saying why.
    fn explain(&self, exit: &Exit) {
        if exit.timed_out {
            eprintln!(
                "cellos: {}: timed out after {} ms",
                self.argv0, exit.duration_ms
            );
        } else if let ExitKind::SpawnFailed { reason } = &exit.exit {
            eprintln!("cellos: cannot start {}: {reason}", self.argv0);
        }
    }
}

fn write_now(out: &mut impl Write, data: &[u8]) -> std::io::Result<()> {
    out.write_all(data)?;
    out.flush()
}

fn no_exit_frame() -> Failure {
    Failure::cellos("the exec stream ended before its exit frame (did the server stop?)")
}

/// `cellos exec`: run a command in a server cell and exit with its status.
pub fn exec(server: &Server, args: ExecArgs) -> Result<u8, Failure> {
    let terminal = Terminal {
        argv0: args.argv.first().cloned().unwrap_or_default(),
    };
    let path = format!("{}/exec", cell_path(&args.cell_id));
    let exit = if args.interactive || args.tty {
        block_on(exec_ws(server, &args, &terminal))?
    } else {
        let body = Body::json(&args.request());
        block_on(async {
            Ok(server
                .frames(Method::POST, &path, Some(body), |f| terminal.show(f))
                .await?)
        })?
    };
    exit.map(|e| e.code()).ok_or_else(no_exit_frame)
}

/// Local input for an interactive exec.
enum Input {
    Stdin(Vec<u8>),
    Eof,
}

/// Read stdin on a plain thread (a blocking read cannot be cancelled, so it must not hold up
/// the runtime's shutdown) and hand chunks to the exec.
fn read_stdin() -> mpsc::Receiver<Input> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 8192];
        loop {
            let input = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => Input::Eof,
                Ok(n) => Input::Stdin(buf[..n].to_vec()),
            };
            let eof = matches!(input, Input::Eof);
            if tx.blocking_send(input).is_err() || eof {
                return;
            }
        }
    });
    rx
}

/// The WebSocket route: live stdin (`-i`), a PTY sized like this terminal (`-t`), resizes.
async fn exec_ws(
    server: &Server,
    args: &ExecArgs,
    terminal: &Terminal,
) -> Result<Option<Exit>, Failure> {
    let path = format!("{}/exec/ws", cell_path(&args.cell_id));
    let mut socket = server.websocket(&path).await?;
    let request = serde_json::to_string(&args.request())
        .map_err(|e| Failure::cellos(format!("cannot encode the exec request: {e}")))?;
    socket.send(Message::text(request)).await.map_err(ws_err)?;

    let mut stdin = args.interactive.then(read_stdin);
    let mut winch = match args.tty {
        true => Some(
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
                .map_err(|e| Failure::cellos(format!("cannot watch terminal resizes: {e}")))?,
        ),
        false => None,
    };
    // Raw only once the exec is under way, and restored when this returns (any way).
    let _raw = args.tty.then(tty::RawMode::enter).flatten();

    loop {
        tokio::select! {
            message = socket.next() => {
                let Some(message) = message else { return Ok(None) };
                let data = match message.map_err(ws_err)? {
                    Message::Text(text) => text.as_bytes().to_vec(),
                    Message::Close(_) => return Ok(None),
                    _ => continue,
                };
                if let Some(exit) = terminal.show(frames::decode(&data).map_err(ClientError::from)?) {
                    let _ = socket.close(None).await;
                    return Ok(Some(exit));
                }
            }
            input = recv(&mut stdin) => {
                let message = match input {
                    Some(Input::Stdin(bytes)) => Message::binary(bytes),
                    Some(Input::Eof) | None => {
                        stdin = None;
                        Message::text(r#"{"eof":true}"#)
                    }
                };
                socket.send(message).await.map_err(ws_err)?;
            }
            Some(()) = resized(&mut winch) => {
                let (rows, cols) = tty::size();
                let resize = serde_json::json!({"resize": {"rows": rows, "cols": cols}});
                socket.send(Message::text(resize.to_string())).await.map_err(ws_err)?;
            }
        }
    }
}

/// The next stdin chunk, or never if stdin is not forwarded (or already at EOF).
async fn recv(stdin: &mut Option<mpsc::Receiver<Input>>) -> Option<Input> {
    match stdin {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The next SIGWINCH, or never without a terminal.
async fn resized(winch: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match winch {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

fn ws_err(e: tokio_tungstenite::tungstenite::Error) -> Failure {
    ClientError::WebSocket(e.to_string()).into()
}

// ---- cp -----------------------------------------------------------------------------------

/// One side of `cellos cp`.
#[derive(Debug, PartialEq, Eq)]
enum Side {
    Cell { id: String, path: String },
    Local(PathBuf),
    Std,
}

const ONE_FILE: &str = "cp copies one file; use tar through exec for trees";

/// `ID:/path` is in a cell (an id has no `/`), `-` is stdin/stdout, the rest is local.
fn parse_side(text: &str) -> Result<Side, Failure> {
    if text == "-" {
        return Ok(Side::Std);
    }
    match text.split_once(':') {
        Some((id, path)) if !id.is_empty() && !id.contains('/') => {
            if !path.starts_with('/') {
                return Err(Failure::invalid(format!(
                    "{text:?}: a path in a cell is absolute (write {id}:/{path})"
                )));
            }
            Ok(Side::Cell {
                id: id.to_owned(),
                path: path.to_owned(),
            })
        }
        _ => Ok(Side::Local(PathBuf::from(text))),
    }
}

/// `cellos cp SRC DST`: one file between this host and a cell, either way.
pub fn cp(server: &Server, src: &str, dst: &str) -> Result<u8, Failure> {
    match (parse_side(src)?, parse_side(dst)?) {
        (Side::Cell { id, path }, local @ (Side::Local(_) | Side::Std)) => {
            block_on(download(server, &id, &path, local))
        }
        (local @ (Side::Local(_) | Side::Std), Side::Cell { id, path }) => {
            block_on(upload(server, local, &id, &path))
        }
        _ => Err(Failure::invalid(
            "cp copies between a cell and this host: one side is ID:/path, the other a local path or -",
        )),
    }
}

fn files_query(id: &str, route: &str, path: &str) -> String {
    format!("{}/files{route}?path={}", cell_path(id), encode(path))
}

async fn download(server: &Server, id: &str, path: &str, to: Side) -> Result<u8, Failure> {
    let stat: serde_json::Value = server
        .json(Method::GET, &files_query(id, "/stat", path), None)
        .await?;
    if stat["kind"].as_str() == Some("directory") {
        return Err(Failure::invalid(format!(
            "{id}:{path} is a directory: {ONE_FILE}"
        )));
    }
    let bytes = server
        .call(Method::GET, &files_query(id, "", path), None)
        .await?;
    let Side::Local(local) = to else {
        write_now(&mut std::io::stdout(), &bytes)
            .map_err(|e| Failure::other(format!("stdout: {e}")))?;
        return Ok(0);
    };
    let target = match local.is_dir() {
        true => local.join(base_name(path)?),
        false => local,
    };
    std::fs::write(&target, &bytes)
        .map_err(|e| Failure::other(format!("{}: {e}", target.display())))?;
    if let Some(mode) = stat["mode"]
        .as_u64()
        .and_then(|m| u32::try_from(m & 0o7777).ok())
    {
        let _ = std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode));
    }
    Ok(0)
}

/// The last component of a path in a cell, for copying into a local directory.
fn base_name(path: &str) -> Result<&str, Failure> {
    match path.trim_end_matches('/').rsplit('/').next() {
        Some(name) if !name.is_empty() => Ok(name),
        _ => Err(Failure::invalid(format!(
            "{path:?} names no file: {ONE_FILE}"
        ))),
    }
}

/// What to upload.
struct LocalFile {
    bytes: Vec<u8>,
    /// Permission bits to give the file in the cell (none for stdin: the server's default).
    mode: Option<u32>,
    /// File name, for a cell path ending in `/`.
    name: Option<String>,
}

fn read_local(from: &Side) -> Result<LocalFile, Failure> {
    let Side::Local(path) = from else {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| Failure::other(format!("stdin: {e}")))?;
        return Ok(LocalFile {
            bytes,
            mode: None,
            name: None,
        });
    };
    let io = |e: std::io::Error| Failure::other(format!("{}: {e}", path.display()));
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_dir() {
        return Err(Failure::invalid(format!(
            "{} is a directory: {ONE_FILE}",
            path.display()
        )));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    Ok(LocalFile {
        bytes,
        mode: Some(meta.permissions().mode() & 0o7777),
        name,
    })
}

async fn upload(server: &Server, from: Side, id: &str, path: &str) -> Result<u8, Failure> {
    let LocalFile { bytes, mode, name } = read_local(&from)?;
    let path = match (path.ends_with('/'), name) {
        (true, Some(name)) => format!("{path}{name}"),
        (true, None) => {
            return Err(Failure::invalid(format!(
                "{id}:{path} is a directory; name the file to write stdin to"
            )))
        }
        (false, _) => path.to_owned(),
    };
    let mut query = files_query(id, "", &path);
    if let Some(mode) = mode {
        query.push_str(&format!("&mode={mode:04o}"));
    }
    let body = Body {
        content_type: "application/octet-stream",
        bytes: bytes.into(),
    };
    let _: serde_json::Value = server.json(Method::PUT, &query, Some(body)).await?;
    Ok(0)
}

// ---- rm, pause, resume --------------------------------------------------------------------

/// `cellos rm ID`: destroy a server cell; anything left behind fails the status and is named.
pub fn rm(server: &Server, id: &str) -> Result<u8, Failure> {
    let cell: CellInfo =
        block_on(async { Ok(server.json(Method::DELETE, &cell_path(id), None).await?) })?;
    println!("{}", cell.id);
    let teardown = cell.teardown.unwrap_or_default();
    let mut left: Vec<String> = teardown
        .residue
        .iter()
        .map(|r| format!("{} {}", r.class, r.detail).trim().to_owned())
        .collect();
    left.extend(
        teardown
            .unverified
            .iter()
            .map(|u| format!("{} (unverified: {})", u.class, u.reason)),
    );
    if left.is_empty() {
        return Ok(0);
    }
    Err(Failure::other(format!(
        "{}: destroyed, but left behind: {}",
        cell.id,
        left.join(", ")
    )))
}

/// Pause or resume a server cell. `Ok(None)` means this server does not know the cell (or no
/// server answers on the default socket): the caller falls back to local cells.
pub fn freeze(server: &Server, id: &str, paused: bool) -> Result<Option<u8>, Failure> {
    let verb = if paused { "pause" } else { "resume" };
    let path = format!("{}/{verb}", cell_path(id));
    let result: Result<CellInfo, ClientError> =
        block_on(async { Ok(server.json(Method::POST, &path, None).await) })?;
    match result {
        Ok(cell) => {
            println!("{verb}d {} (server)", cell.id);
            Ok(Some(0))
        }
        Err(e) if !server.explicit && falls_back(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Whether a failure on the default socket means "not the server's cell" rather than an error.
fn falls_back(e: &ClientError) -> bool {
    matches!(e, ClientError::Unreachable { .. }) || e.slug() == Some("not-found")
}

// ---- ps, logs -----------------------------------------------------------------------------

/// Every cell of the server, following `nextCursor`; `None` if the default socket does not
/// answer or answers with an error (an explicitly named server must answer).
pub fn list(server: &Server) -> Result<Option<Vec<CellInfo>>, Failure> {
    block_on(async {
        let mut cells = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = "/v1/cells?limit=100".to_owned();
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={}", encode(c)));
            }
            let page: CellPage = match server.json(Method::GET, &path, None).await {
                Ok(page) => page,
                Err(e) if server.explicit => return Err(e.into()),
                // The local listing is already out; a stale socket must not fail it.
                Err(ClientError::Unreachable { .. }) => return Ok(None),
                Err(e) => {
                    eprintln!("cellos: server cells not listed: {e}");
                    return Ok(None);
                }
            };
            cells.extend(page.cells);
            match page.next_cursor {
                Some(next) if !next.is_empty() && cursor.as_ref() != Some(&next) => {
                    cursor = Some(next)
                }
                _ => return Ok(Some(cells)),
            }
        }
    })
}

/// The server's cells as a table after the local one.
pub fn print_cells(server: &Server, cells: &[CellInfo]) {
    println!();
    println!("cells of the server at {}:", server.address);
    println!(
        "{:<24} {:<10} {:>6} {:<26} OWNER",
        "CELL", "STATE", "EXECS", "CREATED"
    );
    for cell in cells {
        println!(
            "{:<24} {:<10} {:>6} {:<26} {}",
            cell.id, cell.state, cell.execs, cell.created, cell.owner
        );
    }
}

/// `cellos logs ID --exec EXEC`: the kept output of one exec of a server cell.
pub fn exec_logs(server: &Server, id: &str, exec: &str, follow: bool) -> Result<u8, Failure> {
    let mut path = format!("{}/execs/{}?offset=0", cell_path(id), encode(exec));
    if follow {
        path.push_str("&follow=true");
    }
    let terminal = Terminal {
        argv0: exec.to_owned(),
    };
    block_on(async {
        server
            .frames(Method::GET, &path, None, |f| terminal.show(f))
            .await?;
        Ok(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cp_sides_are_cells_locals_or_std() {
        assert_eq!(
            parse_side("c1:/etc/hosts").unwrap(),
            Side::Cell {
                id: "c1".into(),
                path: "/etc/hosts".into()
            }
        );
        assert_eq!(parse_side("./a:b").unwrap(), Side::Local("./a:b".into()));
        assert_eq!(parse_side("/tmp/x").unwrap(), Side::Local("/tmp/x".into()));
        assert_eq!(parse_side("-").unwrap(), Side::Std);
        let err = parse_side("c1:etc").unwrap_err();
        assert_eq!(err.code(), 2);
        assert!(err.to_string().contains("c1:/etc"), "{err}");
    }

    #[test]
    fn cp_between_two_cells_or_two_locals_is_a_usage_error() {
        let server = Server::configure(
            Path::new("/nonexistent"),
            crate::client::ServerOptions {
                server: None,
                token_file: None,
                ca_cert: None,
                token_env: None,
            },
        )
        .unwrap();
        assert_eq!(cp(&server, "a:/x", "b:/y").unwrap_err().code(), 2);
        assert_eq!(cp(&server, "/x", "/y").unwrap_err().code(), 2);
        let dir = tempfile::tempdir().unwrap();
        let err = cp(&server, dir.path().to_str().unwrap(), "c:/x").unwrap_err();
        assert!(err.to_string().contains(ONE_FILE), "{err}");
    }

    #[test]
    fn media_type_follows_extension_then_content() {
        assert_eq!(
            spec_media_type(Path::new("a.yml"), b"{"),
            "application/yaml"
        );
        assert_eq!(
            spec_media_type(Path::new("a.json"), b""),
            "application/json"
        );
        assert_eq!(
            spec_media_type(Path::new("a"), b"  {\"x\":1}"),
            "application/json"
        );
        assert_eq!(
            spec_media_type(Path::new("a"), b"apiVersion: x"),
            "application/yaml"
        );
    }

    #[test]
    fn env_pairs_need_a_key() {
        assert_eq!(parse_env("A=b=c").unwrap(), ("A".into(), "b=c".into()));
        assert!(parse_env("=x").is_err());
        assert!(parse_env("A").is_err());
    }

    #[test]
    fn the_exec_request_has_the_contract_field_names() {
        let args = ExecArgs {
            cell_id: "c".into(),
            interactive: false,
            tty: false,
            env: vec![("K".into(), "V".into())],
            cwd: Some("/w".into()),
            timeout_ms: Some(5),
            argv: vec!["ls".into()],
        };
        let json = serde_json::to_value(args.request()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"argv":["ls"],"env":{"K":"V"},"cwd":"/w","timeoutMs":5,"killOnDisconnect":true})
        );
    }
}

//! Execs: start one and stream its output as NDJSON, re-read kept output from an offset,
//! kill one, or drive one interactively over a WebSocket.
//!
//! Output is read from the exec's kept log ([`ExecLog`]) on a blocking thread, so a client
//! that disconnects loses nothing it can ask for again: the exec runs on (unless
//! `killOnDisconnect`) and `GET .../execs/{exec}?offset=N` resumes where it left off.

use std::convert::Infallible;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use cellos_core::session::ExecRequest;
use cellos_supervisor::{Caller, ExecLog, ExecOutcome, ExecRead, ExecStarted, Frame, Stream};
use serde::Deserialize;
use tokio::sync::mpsc;
use utoipa::{IntoParams, ToSchema};

use super::{blocking, body, json_body, parse_json, ApiPath, ApiQuery, Shared};
use crate::auth::Authed;
use crate::dto::{ExecBody, ExecFrame, PtySizeDto, WsExecBody};
use crate::problem::{ApiProblem, ApiResult};

/// Media type of exec streams.
pub const NDJSON: &str = "application/x-ndjson";
/// Most output bytes one frame batch carries.
const CHUNK: usize = 64 << 10;
/// How long a follower waits for output before checking whether its client is still there.
const POLL: Duration = Duration::from_millis(500);
/// Frames buffered between the reading thread and the connection.
const QUEUE: usize = 64;

/// One output frame as the API sends it: UTF-8 text as `data`, anything else as base64.
fn output_frame(frame: &Frame) -> ExecFrame {
    let (data, data_base64) = match std::str::from_utf8(&frame.data) {
        Ok(text) => (Some(text.to_owned()), None),
        Err(_) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(&frame.data)),
        ),
    };
    match frame.stream {
        Stream::Stdout => ExecFrame::Stdout {
            offset: frame.offset,
            data,
            data_base64,
        },
        Stream::Stderr => ExecFrame::Stderr {
            offset: frame.offset,
            data,
            data_base64,
        },
    }
}

fn exit_frame(outcome: &ExecOutcome) -> ExecFrame {
    ExecFrame::Exit {
        status: outcome.status(),
        exit: outcome.exit.clone().into(),
        timed_out: outcome.timed_out,
        killed: outcome.killed,
        duration_ms: outcome.duration_ms,
        stdout_bytes: outcome.stdout_bytes,
        stderr_bytes: outcome.stderr_bytes,
    }
}

/// The frames of one read from `asked`: a gap first if output before the kept window was
/// dropped, the output, and the exit once every byte was read.
fn frames_of(read: &ExecRead, asked: u64) -> Vec<ExecFrame> {
    let mut frames = Vec::with_capacity(read.frames.len() + 2);
    if read.first_kept > asked {
        frames.push(ExecFrame::Gap {
            from: asked,
            to: read.first_kept,
        });
    }
    frames.extend(read.frames.iter().map(output_frame));
    if let Some(outcome) = &read.outcome {
        frames.push(exit_frame(outcome));
    }
    frames
}

/// How a follow ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowEnd {
    /// The exit frame was delivered.
    Exited(ExecOutcome),
    /// Not following, and everything kept so far was delivered.
    CaughtUp,
    /// The client went away.
    Disconnected,
}

/// Deliver the kept output from `offset` to `send` (false when the client is gone),
/// following until the exit when `follow`. Blocking: run it on a blocking thread.
pub fn follow(
    log: &ExecLog,
    mut offset: u64,
    follow: bool,
    mut send: impl FnMut(ExecFrame) -> bool,
    is_closed: impl Fn() -> bool,
) -> FollowEnd {
    loop {
        let read = log.read(offset, CHUNK, follow.then_some(POLL));
        for frame in frames_of(&read, offset) {
            if !send(frame) {
                return FollowEnd::Disconnected;
            }
        }
        if let Some(outcome) = read.outcome {
            return FollowEnd::Exited(outcome);
        }
        if !follow && read.frames.is_empty() {
            return FollowEnd::CaughtUp;
        }
        if is_closed() {
            return FollowEnd::Disconnected;
        }
        offset = read.next;
    }
}

/// One NDJSON line.
fn ndjson_line(frame: &ExecFrame) -> Bytes {
    let mut line = serde_json::to_vec(frame).unwrap_or_else(|_| b"{}".to_vec());
    line.push(b'\n');
    Bytes::from(line)
}

/// A streaming NDJSON response fed by `rx`.
fn ndjson_response(rx: mpsc::Receiver<Bytes>) -> Response {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|line| (Ok::<_, Infallible>(line), rx))
    });
    let mut response = Body::from_stream(stream).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
    response
}

/// What to do when an exec's client disconnects.
struct OnDisconnect {
    state: Shared,
    caller: Caller,
    cell: String,
    kill: bool,
}

impl OnDisconnect {
    /// Kill the exec if asked to (blocking).
    fn apply(&self, exec_id: &str) {
        if !self.kill {
            return;
        }
        if let Err(e) = self
            .state
            .sessions
            .kill_exec(&self.caller, &self.cell, exec_id)
        {
            tracing::debug!("kill of exec {exec_id} after disconnect: {e}");
        }
    }
}

/// Follow a started exec on a blocking thread into `tx`, recording its duration.
fn spawn_follower(
    log: Arc<ExecLog>,
    offset: u64,
    tx: mpsc::Sender<Bytes>,
    metrics: Option<(Shared, OnDisconnect)>,
) {
    tokio::task::spawn_blocking(move || {
        let closed = tx.clone();
        let end = follow(
            &log,
            offset,
            true,
            |frame| tx.blocking_send(ndjson_line(&frame)).is_ok(),
            || closed.is_closed(),
        );
        let Some((state, on_disconnect)) = metrics else {
            return;
        };
        match end {
            FollowEnd::Exited(outcome) => state
                .metrics
                .exec_seconds
                .observe(outcome.duration_ms as f64 / 1000.0),
            FollowEnd::Disconnected => on_disconnect.apply(log.id()),
            FollowEnd::CaughtUp => {}
        }
    });
}

/// Write `text` to the exec's stdin, then close it. Detached: an exec that never reads
/// stdin must not hold up its output.
fn feed_stdin(stdin: Option<Box<dyn Write + Send>>, text: Option<String>) {
    let (Some(mut stdin), Some(text)) = (stdin, text) else {
        return;
    };
    tokio::task::spawn_blocking(move || {
        if let Err(e) = stdin
            .write_all(text.as_bytes())
            .and_then(|()| stdin.flush())
        {
            tracing::debug!("exec stdin: {e}");
        }
    });
}

/// Refuse a malformed exec before it reaches the cell.
fn check_request(request: &ExecRequest) -> ApiResult<()> {
    let problems = request.problems();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ApiProblem::bad_request(problems.join("; ")))
    }
}

async fn start_exec(
    state: &Shared,
    caller: &Caller,
    cell: &str,
    request: ExecRequest,
) -> ApiResult<ExecStarted> {
    check_request(&request)?;
    let (sessions, caller, cell) = (state.sessions.clone(), caller.clone(), cell.to_owned());
    blocking(move || sessions.exec(&caller, &cell, request)).await
}

/// Run a command in the cell and stream its output.
#[utoipa::path(post, path = "/v1/cells/{id}/exec", operation_id = "startExec", tag = "exec", params(("id" = String, Path)),
    request_body(content = ExecBody, content_type = "application/json"),
    responses(
        (status = 200, description = "NDJSON frames: started, stdout/stderr, exit", body = ExecFrame, content_type = "application/x-ndjson"),
        (status = 400, body = ApiProblem, content_type = "application/problem+json"),
        (status = 403, description = "refused", body = ApiProblem, content_type = "application/problem+json"),
        (status = 404, body = ApiProblem, content_type = "application/problem+json"),
        (status = 409, description = "the cell is paused or has ended", body = ApiProblem, content_type = "application/problem+json"),
        (status = 413, body = ApiProblem, content_type = "application/problem+json"),
        (status = 415, body = ApiProblem, content_type = "application/problem+json")))]
pub async fn start(
    State(state): State<Shared>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let exec: ExecBody = json_body(&headers, &body(raw)?)?;
    let started = start_exec(&state, &caller, &id, exec.request()).await?;
    feed_stdin(started.stdin, exec.stdin);
    let (tx, rx) = mpsc::channel(QUEUE);
    let _ = tx.try_send(ndjson_line(&ExecFrame::Started {
        exec_id: started.id.clone(),
    }));
    let on_disconnect = OnDisconnect {
        state: state.clone(),
        caller,
        cell: id,
        kill: exec.kill_on_disconnect,
    };
    spawn_follower(started.log, 0, tx, Some((state, on_disconnect)));
    Ok(ndjson_response(rx))
}

/// Where `GET .../execs/{exec}` starts and whether it follows.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RereadQuery {
    /// Offset (both streams counted together) to read from; default 0.
    offset: Option<u64>,
    /// Keep streaming until the exit (default false: what is kept now, then end).
    follow: Option<bool>,
}

/// Re-read the kept output of an exec, running or ended.
#[utoipa::path(get, path = "/v1/cells/{id}/execs/{exec}", operation_id = "readExec", tag = "exec",
    params(("id" = String, Path), ("exec" = String, Path), RereadQuery),
    responses(
        (status = 200, description = "NDJSON frames: gap (if output was dropped), stdout/stderr, exit once ended", body = ExecFrame, content_type = "application/x-ndjson"),
        (status = 400, body = ApiProblem, content_type = "application/problem+json"),
        (status = 404, body = ApiProblem, content_type = "application/problem+json")))]
pub async fn reread(
    State(state): State<Shared>,
    _caller: Authed,
    ApiPath((id, exec)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<RereadQuery>,
) -> ApiResult<Response> {
    let sessions = state.sessions.clone();
    let log = blocking(move || sessions.exec_log(&id, &exec)).await?;
    let (offset, following) = (query.offset.unwrap_or(0), query.follow.unwrap_or(false));
    let (tx, rx) = mpsc::channel(QUEUE);
    if following {
        spawn_follower(log, offset, tx, None);
    } else {
        tokio::task::spawn_blocking(move || {
            let closed = tx.clone();
            follow(
                &log,
                offset,
                false,
                |frame| tx.blocking_send(ndjson_line(&frame)).is_ok(),
                || closed.is_closed(),
            )
        });
    }
    Ok(ndjson_response(rx))
}

/// Kill a running exec's whole process tree.
#[utoipa::path(post, path = "/v1/cells/{id}/execs/{exec}/kill", operation_id = "killExec", tag = "exec",
    params(("id" = String, Path), ("exec" = String, Path)),
    responses((status = 204, description = "Killed"),
        (status = 403, description = "refused", body = ApiProblem, content_type = "application/problem+json"),
        (status = 404, body = ApiProblem, content_type = "application/problem+json"),
        (status = 409, body = ApiProblem, content_type = "application/problem+json")))]
pub async fn kill(
    State(state): State<Shared>,
    Authed(caller): Authed,
    ApiPath((id, exec)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let sessions = state.sessions.clone();
    blocking(move || sessions.kill_exec(&caller, &id, &exec)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A control message of the WebSocket exec protocol.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WsControl {
    /// Set the terminal size (PTY execs).
    pub resize: Option<PtySizeDto>,
    /// Close the exec's stdin.
    pub eof: Option<bool>,
}

/// Run a command interactively: the first text message is the exec (JSON), then binary
/// messages are stdin, text messages are controls; the server sends the exec frames as text
/// messages and closes after the exit frame.
///
/// The handshake headers are those of RFC 6455 (HTTP/1.1); a request without them is a
/// `bad-request`. Any cell id is upgraded: an unknown cell, like any exec the cell refuses,
/// is an error frame carrying the problem.
#[utoipa::path(get, path = "/v1/cells/{id}/exec/ws", operation_id = "execWebSocket", tag = "exec",
    params(("id" = String, Path),
        ("Connection" = String, Header, pattern = "[Uu][Pp][Gg][Rr][Aa][Dd][Ee]", description = "Must include `upgrade`"),
        ("Upgrade" = String, Header, pattern = "^[Ww][Ee][Bb][Ss][Oo][Cc][Kk][Ee][Tt]$", description = "`websocket`"),
        ("Sec-WebSocket-Version" = String, Header, pattern = "^13$", description = "`13`"),
        ("Sec-WebSocket-Key" = String, Header, description = "The client's handshake nonce")),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol (no body): the first client message is a WsExecBody; the server's messages are ExecFrame JSON"),
        (status = 400, description = "not a WebSocket handshake", body = ApiProblem, content_type = "application/problem+json")))]
pub async fn websocket(
    State(state): State<Shared>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<String>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let upgrade = upgrade.map_err(|e| ApiProblem::bad_request(e.body_text()))?;
    let limit = state.limits.json_body;
    Ok(upgrade
        .max_message_size(limit.max(super::MIN_WS_MESSAGE))
        .on_upgrade(move |socket| ws_session(state, caller, id, socket)))
}

async fn send_frame(socket: &mut WebSocket, frame: &ExecFrame) -> bool {
    let text = serde_json::to_string(frame).unwrap_or_else(|_| "{}".to_owned());
    socket.send(Message::Text(text.into())).await.is_ok()
}

async fn ws_fail(mut socket: WebSocket, problem: ApiProblem) {
    let _ = send_frame(&mut socket, &ExecFrame::Error { problem }).await;
    let _ = socket.send(Message::Close(None)).await;
}

/// The first message: the exec to run.
async fn ws_request(socket: &mut WebSocket) -> Result<WsExecBody, ApiProblem> {
    match socket.recv().await {
        Some(Ok(Message::Text(text))) => parse_json(text.as_bytes()),
        Some(Ok(_)) => Err(ApiProblem::bad_request(
            "the first message must be the exec as JSON text",
        )),
        _ => Err(ApiProblem::bad_request(
            "the client closed before sending the exec",
        )),
    }
}

/// A blocking writer of stdin chunks; dropping the sender closes stdin.
fn stdin_writer(stdin: Option<Box<dyn Write + Send>>) -> Option<mpsc::Sender<Vec<u8>>> {
    let mut stdin = stdin?;
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(QUEUE);
    tokio::task::spawn_blocking(move || {
        while let Some(chunk) = rx.blocking_recv() {
            if stdin
                .write_all(&chunk)
                .and_then(|()| stdin.flush())
                .is_err()
            {
                break;
            }
        }
    });
    Some(tx)
}

async fn ws_session(state: Shared, caller: Caller, cell: String, mut socket: WebSocket) {
    let exec = match ws_request(&mut socket).await {
        Ok(exec) => exec,
        Err(problem) => return ws_fail(socket, problem).await,
    };
    let started = match start_exec(&state, &caller, &cell, exec.request()).await {
        Ok(started) => started,
        Err(problem) => return ws_fail(socket, problem).await,
    };
    let exec_id = started.id.clone();
    if !send_frame(
        &mut socket,
        &ExecFrame::Started {
            exec_id: exec_id.clone(),
        },
    )
    .await
    {
        return;
    }
    let mut stdin = stdin_writer(started.stdin);
    let (tx, mut frames) = mpsc::channel(QUEUE);
    let on_disconnect = OnDisconnect {
        state: state.clone(),
        caller,
        cell: cell.clone(),
        kill: exec.kill_on_disconnect,
    };
    spawn_follower(started.log, 0, tx, Some((state.clone(), on_disconnect)));
    loop {
        tokio::select! {
            line = frames.recv() => {
                let Some(line) = line else { break };
                let text = String::from_utf8_lossy(line.trim_ascii_end()).into_owned();
                if socket.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
            message = socket.recv() => match message {
                Some(Ok(Message::Binary(bytes))) => {
                    if let Some(tx) = &stdin {
                        let _ = tx.send(bytes.to_vec()).await;
                    }
                }
                Some(Ok(Message::Text(text))) => {
                    if let Err(problem) = ws_control(&state, &cell, &exec_id, text.as_bytes(), &mut stdin).await {
                        let _ = send_frame(&mut socket, &ExecFrame::Error { problem }).await;
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            },
        }
    }
    // The follower ends on its own: it sees the queue closed (and kills on disconnect if
    // asked), or it already delivered the exit.
    drop(frames);
    let _ = socket.send(Message::Close(None)).await;
}

/// Apply one control message: a resize or the end of stdin.
async fn ws_control(
    state: &Shared,
    cell: &str,
    exec_id: &str,
    text: &[u8],
    stdin: &mut Option<mpsc::Sender<Vec<u8>>>,
) -> ApiResult<()> {
    let control: WsControl = parse_json(text)?;
    if control.eof == Some(true) {
        *stdin = None;
    }
    if let Some(size) = control.resize {
        let (sessions, cell, exec_id) =
            (state.sessions.clone(), cell.to_owned(), exec_id.to_owned());
        blocking(move || sessions.resize_exec(&cell, &exec_id, size.into())).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellos_core::session::ExecExit;

    #[test]
    fn output_is_text_when_utf8_and_base64_otherwise() {
        let log = ExecLog::new("e1", 1 << 20);
        log.push(Stream::Stdout, b"hi\n");
        log.push(Stream::Stderr, &[0xff, 0xfe]);
        log.finish(ExecOutcome {
            exit: ExecExit::Exited { code: 0 },
            timed_out: false,
            killed: false,
            duration_ms: 5,
            stdout_bytes: 3,
            stderr_bytes: 2,
        });
        let mut lines = Vec::new();
        let end = follow(
            &log,
            0,
            true,
            |f| {
                lines.push(serde_json::to_value(&f).unwrap_or_default());
                true
            },
            || false,
        );
        assert!(matches!(end, FollowEnd::Exited(_)));
        assert_eq!(lines[0]["data"], "hi\n");
        assert_eq!(lines[1]["type"], "stderr");
        assert_eq!(lines[1]["dataBase64"], "//4=");
        assert_eq!(lines[2]["type"], "exit");
        assert_eq!(lines[2]["status"], 0);
    }

    #[test]
    fn a_reread_before_the_kept_window_starts_with_a_gap() {
        let log = ExecLog::new("e1", 4);
        log.push(Stream::Stdout, b"0123");
        log.push(Stream::Stdout, b"4567");
        let mut frames = Vec::new();
        let end = follow(
            &log,
            0,
            false,
            |f| {
                frames.push(f);
                true
            },
            || false,
        );
        assert_eq!(end, FollowEnd::CaughtUp);
        assert_eq!(frames[0], ExecFrame::Gap { from: 0, to: 4 });
    }
}

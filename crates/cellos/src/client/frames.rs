//! Exec frames: the JSON objects the server streams for an exec, one per NDJSON line (or per
//! WebSocket text message), ending with the exit frame.

use base64::Engine;
use serde::Deserialize;

/// Longest NDJSON line accepted; a longer one means the stream is not what we think it is.
const MAX_LINE: usize = 16 << 20;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("bad exec frame from the server ({reason}): {snippet}")]
    Json { reason: String, snippet: String },
    #[error("bad exec frame from the server: dataBase64 is not base64 ({0})")]
    Base64(String),
    #[error("bad exec frame from the server: an output frame has neither data nor dataBase64")]
    NoData,
    #[error("the exec stream ended in the middle of a frame: {0}")]
    Truncated(String),
    #[error("an exec frame is longer than {MAX_LINE} bytes")]
    TooLong,
}

/// How the command ended.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum ExitKind {
    Exited { code: i32 },
    Signaled { signal: i32 },
    SpawnFailed { reason: String },
}

/// The last frame of an exec.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Exit {
    /// The status to exit with (124 timeout, 127 spawn failure, 128+N signal).
    pub status: i32,
    pub exit: ExitKind,
    #[serde(default)]
    pub timed_out: bool,
    #[serde(default)]
    pub duration_ms: u64,
    #[serde(default)]
    pub stdout_bytes: u64,
    #[serde(default)]
    pub stderr_bytes: u64,
}

impl Exit {
    /// The process exit status, clamped to what a process can return.
    pub fn code(&self) -> u8 {
        u8::try_from(self.status.clamp(0, 255)).unwrap_or(u8::MAX)
    }
}

/// Which output stream a chunk belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Stdout,
    Stderr,
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Started {
        exec_id: String,
    },
    Output {
        channel: Channel,
        offset: u64,
        data: Vec<u8>,
    },
    Exit(Exit),
    /// A frame type this client does not know (a newer server); skipped, not fatal.
    Other(String),
}

/// The wire shape, before `data`/`dataBase64` is resolved into bytes.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    #[serde(rename = "type")]
    kind: String,
    exec_id: Option<String>,
    offset: Option<u64>,
    data: Option<String>,
    data_base64: Option<String>,
}

/// Decode one frame (one NDJSON line or one WebSocket text message).
pub fn decode(line: &[u8]) -> Result<Frame, FrameError> {
    let json_err = |e: serde_json::Error| FrameError::Json {
        reason: e.to_string(),
        snippet: snippet(line),
    };
    let wire: Wire = serde_json::from_slice(line).map_err(json_err)?;
    match wire.kind.as_str() {
        "started" => Ok(Frame::Started {
            exec_id: wire.exec_id.unwrap_or_default(),
        }),
        "stdout" | "stderr" => {
            let channel = match wire.kind.as_str() {
                "stdout" => Channel::Stdout,
                _ => Channel::Stderr,
            };
            let data = match (wire.data, wire.data_base64) {
                (Some(text), _) => text.into_bytes(),
                (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                    .decode(b64.as_bytes())
                    .map_err(|e| FrameError::Base64(e.to_string()))?,
                (None, None) => return Err(FrameError::NoData),
            };
            Ok(Frame::Output {
                channel,
                offset: wire.offset.unwrap_or_default(),
                data,
            })
        }
        "exit" => serde_json::from_slice(line)
            .map(Frame::Exit)
            .map_err(json_err),
        other => Ok(Frame::Other(other.to_owned())),
    }
}

/// Splits an NDJSON byte stream into lines, whatever the chunking of the transport.
#[derive(Default)]
pub struct Lines {
    buffer: Vec<u8>,
}

impl Lines {
    /// Add a chunk; return the frames of every line it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Frame>, FrameError> {
        self.buffer.extend_from_slice(chunk);
        let mut frames = Vec::new();
        while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = trim(&line);
            if !line.is_empty() {
                frames.push(decode(line)?);
            }
        }
        if self.buffer.len() > MAX_LINE {
            return Err(FrameError::TooLong);
        }
        Ok(frames)
    }

    /// The stream ended: a last line without its newline is still a frame if it parses.
    pub fn finish(&mut self) -> Result<Option<Frame>, FrameError> {
        let rest = std::mem::take(&mut self.buffer);
        let rest = trim(&rest);
        if rest.is_empty() {
            return Ok(None);
        }
        decode(rest)
            .map(Some)
            .map_err(|_| FrameError::Truncated(snippet(rest)))
    }
}

fn trim(line: &[u8]) -> &[u8] {
    let start = line
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(line.len());
    let end = line
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &line[start..end.max(start)]
}

/// The start of a bad frame, for the error message.
fn snippet(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let mut out: String = text.chars().take(80).collect();
    if text.chars().count() > 80 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_exec_decodes_in_order_across_chunk_boundaries() {
        let stream = concat!(
            r#"{"type":"started","execId":"e1"}"#,
            "\n",
            r#"{"type":"stdout","offset":0,"data":"hé\n"}"#,
            "\n\n",
            r#"{"type":"stderr","offset":0,"dataBase64":"/wA="}"#,
            "\n",
            r#"{"type":"exit","status":3,"exit":{"kind":"exited","code":3},"timedOut":false,"durationMs":5,"stdoutBytes":4,"stderrBytes":2}"#,
            "\n"
        )
        .as_bytes();
        let mut lines = Lines::default();
        let mut frames = Vec::new();
        for chunk in stream.chunks(7) {
            frames.extend(lines.push(chunk).unwrap());
        }
        assert_eq!(lines.finish().unwrap(), None);
        assert_eq!(frames.len(), 4);
        assert_eq!(
            frames[0],
            Frame::Started {
                exec_id: "e1".into()
            }
        );
        assert_eq!(
            frames[1],
            Frame::Output {
                channel: Channel::Stdout,
                offset: 0,
                data: "hé\n".as_bytes().to_vec()
            }
        );
        assert_eq!(
            frames[2],
            Frame::Output {
                channel: Channel::Stderr,
                offset: 0,
                data: vec![0xff, 0]
            }
        );
        let Frame::Exit(exit) = &frames[3] else {
            panic!("{frames:?}")
        };
        assert_eq!(exit.code(), 3);
        assert_eq!(exit.exit, ExitKind::Exited { code: 3 });
    }

    #[test]
    fn signal_timeout_and_spawn_failure_exits_decode() {
        let f = decode(br#"{"type":"exit","status":137,"exit":{"kind":"signaled","signal":9},"timedOut":false}"#).unwrap();
        assert!(matches!(
            f,
            Frame::Exit(Exit {
                status: 137,
                exit: ExitKind::Signaled { signal: 9 },
                ..
            })
        ));
        let f = decode(br#"{"type":"exit","status":127,"exit":{"kind":"spawnFailed","reason":"no such file"}}"#).unwrap();
        assert!(matches!(
            f,
            Frame::Exit(Exit {
                exit: ExitKind::SpawnFailed { .. },
                ..
            })
        ));
        let f = decode(br#"{"type":"exit","status":124,"exit":{"kind":"signaled","signal":9},"timedOut":true}"#).unwrap();
        assert!(matches!(
            f,
            Frame::Exit(Exit {
                timed_out: true,
                ..
            })
        ));
        let Frame::Exit(e) =
            decode(br#"{"type":"exit","status":300,"exit":{"kind":"exited","code":44}}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(e.code(), 255);
    }

    #[test]
    fn garbage_and_truncated_frames_are_clear_errors() {
        let err = decode(b"<html>").unwrap_err().to_string();
        assert!(err.starts_with("bad exec frame from the server"), "{err}");
        assert!(err.contains("<html>"), "{err}");
        let err = decode(br#"{"type":"stdout","offset":0,"dataBase64":"!!"}"#).unwrap_err();
        assert!(matches!(err, FrameError::Base64(_)), "{err}");
        let err = decode(br#"{"type":"stdout","offset":0}"#).unwrap_err();
        assert!(matches!(err, FrameError::NoData), "{err}");
        let err = decode(br#"{"type":"exit","status":1}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("exit"), "{err}");

        let mut lines = Lines::default();
        assert!(lines
            .push(br#"{"type":"started","execId":"e1"}"#)
            .unwrap()
            .is_empty());
        assert!(matches!(lines.finish(), Ok(Some(Frame::Started { .. }))));
        assert!(lines.push(br#"{"type":"stdout","off"#).unwrap().is_empty());
        let err = lines.finish().unwrap_err().to_string();
        assert!(err.contains("ended in the middle of a frame"), "{err}");
    }

    #[test]
    fn unknown_frame_types_are_skipped() {
        assert_eq!(
            decode(br#"{"type":"heartbeat"}"#).unwrap(),
            Frame::Other("heartbeat".into())
        );
    }
}

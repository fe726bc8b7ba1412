//! `CommandSecretBroker`: a host program fetches each secret, as git credential helpers do —
//! for vaults and cloud secret managers whose client is a command.
//!
//! Protocol, one run per call:
//! - `PROGRAM get KEY` with `CELLOS_CELL_ID` in its environment prints the value on stdout and
//!   exits 0 (one trailing newline is dropped); exit 2 means "not found" (the next broker is
//!   asked), any other failure is an error that quotes the first line of its stderr.
//! - `PROGRAM revoke` with `CELLOS_CELL_ID` runs after the cell's teardown, so a program
//!   that issued a lease or token can end it; its failure is reported.
//!
//! The program runs with no stdin, a time limit ([`CommandSecretBroker::DEFAULT_TIMEOUT`])
//! and a size cap on its output; its stdout never appears in an error or a log.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cellos_core::ports::{PortError, PortErrorKind, SecretBroker, SecretValue};
use zeroize::Zeroizing;

use super::key::validate_secret_key;

/// Exit status of `get` meaning "this program does not hold that key".
pub const NOT_FOUND_STATUS: i32 = 2;

/// Runs a host program for each secret.
#[derive(Debug, Clone)]
pub struct CommandSecretBroker {
    program: PathBuf,
    timeout: Duration,
    max_bytes: usize,
}

/// What one run of the program produced.
struct Ran {
    status: Option<i32>,
    stdout: Zeroizing<Vec<u8>>,
    stderr: String,
}

impl CommandSecretBroker {
    /// Time limit of one run.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Largest value accepted: 1 MiB.
    pub const DEFAULT_MAX_BYTES: usize = 1 << 20;

    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            timeout: Self::DEFAULT_TIMEOUT,
            max_bytes: Self::DEFAULT_MAX_BYTES,
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn run(&self, args: &[&str], cell_id: &str) -> Result<Ran, PortError> {
        let shown = self.program.display();
        let mut child = Command::new(&self.program)
            .args(args)
            .env("CELLOS_CELL_ID", cell_id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                PortError::new(
                    PortErrorKind::NotFound,
                    format!("cannot run the secret command {shown}: {e}; fix --secret-command"),
                )
            })?;
        let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
        let cap = self.max_bytes as u64 + 1;
        let reader = std::thread::spawn(move || {
            let mut stdout = Zeroizing::new(Vec::new());
            if let Some(out) = out.as_mut() {
                let _ = out.take(cap).read_to_end(&mut stdout);
                // Drain the rest so an oversized writer finishes and is reported as such.
                let _ = std::io::copy(out, &mut std::io::sink());
            }
            let mut stderr = Vec::new();
            if let Some(err) = err.as_mut() {
                let _ = err.take(64 * 1024).read_to_end(&mut stderr);
            }
            (stdout, stderr)
        });
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(PortError::new(
                        PortErrorKind::Io,
                        format!(
                            "the secret command {shown} did not finish within {} s",
                            self.timeout.as_secs()
                        ),
                    ));
                }
                Err(e) => {
                    return Err(PortError::new(
                        PortErrorKind::Io,
                        format!("wait for the secret command {shown}: {e}"),
                    ))
                }
            }
        };
        let (stdout, stderr) = reader.join().unwrap_or_default();
        if stdout.len() > self.max_bytes {
            return Err(PortError::new(
                PortErrorKind::TooLarge,
                format!(
                    "the secret command {shown} printed more than {} bytes",
                    self.max_bytes
                ),
            ));
        }
        let stderr = String::from_utf8_lossy(&stderr)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        Ok(Ran {
            status: status.code(),
            stdout,
            stderr,
        })
    }
}

impl SecretBroker for CommandSecretBroker {
    fn name(&self) -> &'static str {
        "command"
    }

    fn resolve(&self, key: &str, cell_id: &str) -> Result<SecretValue, PortError> {
        validate_secret_key(key)?;
        let ran = self.run(&["get", key], cell_id)?;
        match ran.status {
            Some(0) => {
                let mut value = ran.stdout;
                if value.last() == Some(&b'\n') {
                    value.pop();
                }
                Ok(SecretValue::new(std::mem::take(&mut *value)))
            }
            Some(NOT_FOUND_STATUS) => Err(PortError::new(
                PortErrorKind::NotFound,
                format!("the secret command does not hold {key}"),
            )),
            status => Err(PortError::new(
                PortErrorKind::Io,
                format!(
                    "the secret command failed for {key} ({}): {}",
                    status.map_or("killed by a signal".into(), |s| format!("exit {s}")),
                    ran.stderr
                ),
            )),
        }
    }

    fn revoke_for_cell(&self, cell_id: &str) -> Result<(), PortError> {
        let ran = self.run(&["revoke"], cell_id)?;
        match ran.status {
            Some(0) => Ok(()),
            status => Err(PortError::new(
                PortErrorKind::Io,
                format!(
                    "the secret command could not revoke for cell {cell_id} ({}): {}",
                    status.map_or("killed by a signal".into(), |s| format!("exit {s}")),
                    ran.stderr
                ),
            )),
        }
    }
}

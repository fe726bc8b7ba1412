//! Failures of the CLI itself, each with its exit status and a one-line reason.

use std::fmt;

/// A command that could not do its job. Printed as one line on stderr; never a backtrace.
#[derive(Debug)]
pub struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    /// Bad input (invalid documents, unverifiable logs): exit 2.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: message.into(),
        }
    }

    /// A CellOS error around a run (admission denied, missing kernel feature): exit 125.
    pub fn cellos(message: impl Into<String>) -> Self {
        Self {
            code: 125,
            message: message.into(),
        }
    }

    /// Any other operational failure: exit 1.
    pub fn other(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: message.into(),
        }
    }

    pub fn code(&self) -> u8 {
        self.code
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

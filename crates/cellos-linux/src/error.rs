//! The one error type of the Linux backend.
//!
//! Every variant carries enough context to act on: which kernel feature or path failed and,
//! where there is one, the fix. Callers above L2 see it as a [`PortError`] whose kind lets the
//! supervisor fail closed (`MissingFeature`) without string matching.

use std::path::PathBuf;

use cellos_core::ports::{PortError, PortErrorKind};
use cellos_core::spec::Problem;

use crate::clone::InCloneRefusal;
use crate::refusal::{Refusal, Step};

#[derive(Debug, thiserror::Error)]
pub enum LinuxError {
    /// The host lacks a kernel feature a requested protection needs; we fail closed.
    #[error("{feature} not available: {fix}")]
    MissingFeature { feature: String, fix: String },

    /// A system call or file operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    /// A cgroup file or directory operation failed.
    #[error("cgroup {}: {source}", path.display())]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The spec breaks rules of the spec language: the very problems `cellos validate` reports.
    #[error("invalid spec: {}", join_problems(problems))]
    Invalid { problems: Vec<Problem> },

    /// The request is refused (escape attempt, invalid name, ...).
    #[error("refused: {what}")]
    Refused { what: String },

    /// A named thing (cell, path, process) does not exist.
    #[error("not found: {what}")]
    NotFound { what: String },

    /// A protection could not be set up for a reason other than a missing feature.
    #[error("{what}: {detail}")]
    Setup { what: String, detail: String },

    /// The cell's init could not set the cell up; `missing_feature` keeps the kind of the
    /// error it had in init (the message is its text).
    #[error("cell init: {message}")]
    InitFailed {
        message: String,
        missing_feature: bool,
    },

    /// The kernel refused a mount-API or namespace step (call, cause and fix in the message).
    #[error(transparent)]
    Kernel(#[from] Refusal),

    /// The backend's [`InitMode`](crate::clone::InitMode) does not suit this process.
    #[error(transparent)]
    InClone(#[from] InCloneRefusal),
}

impl LinuxError {
    /// Shorthand for [`LinuxError::Io`] from an `std::io::Error`.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        LinuxError::Io {
            what: what.into(),
            source,
        }
    }

    /// Shorthand for [`LinuxError::Io`] from a raw errno (nix / rustix / libc results).
    pub fn errno(what: impl Into<String>, errno: i32) -> Self {
        LinuxError::Io {
            what: what.into(),
            source: std::io::Error::from_raw_os_error(errno),
        }
    }

    /// Shorthand for [`LinuxError::Io`] from the calling thread's last OS error.
    pub fn last_os_error(what: impl Into<String>) -> Self {
        LinuxError::Io {
            what: what.into(),
            source: std::io::Error::last_os_error(),
        }
    }

    /// Shorthand for [`LinuxError::Kernel`]: `step` on `target` refused with `errno`.
    pub fn kernel(step: Step, target: impl Into<String>, errno: rustix::io::Errno) -> Self {
        LinuxError::Kernel(Refusal::from_errno(step, target, errno))
    }

    /// Shorthand for [`LinuxError::MissingFeature`].
    pub fn missing(feature: impl Into<String>, fix: impl Into<String>) -> Self {
        LinuxError::MissingFeature {
            feature: feature.into(),
            fix: fix.into(),
        }
    }

    /// The port-level kind of this error.
    pub fn kind(&self) -> PortErrorKind {
        match self {
            LinuxError::MissingFeature { .. } => PortErrorKind::MissingFeature,
            LinuxError::Kernel(r) if r.is_missing_feature() => PortErrorKind::MissingFeature,
            LinuxError::InitFailed {
                missing_feature: true,
                ..
            } => PortErrorKind::MissingFeature,
            LinuxError::Refused { .. } | LinuxError::Invalid { .. } | LinuxError::InClone(_) => {
                PortErrorKind::Refused
            }
            LinuxError::NotFound { .. } => PortErrorKind::NotFound,
            LinuxError::Io { source, .. } | LinuxError::Cgroup { source, .. }
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                PortErrorKind::NotFound
            }
            LinuxError::Io { .. }
            | LinuxError::Cgroup { .. }
            | LinuxError::Setup { .. }
            | LinuxError::InitFailed { .. }
            | LinuxError::Kernel(_) => PortErrorKind::Io,
        }
    }
}

/// `path: message; path: message`, as the supervisor and `cellos validate` print problems.
fn join_problems(problems: &[Problem]) -> String {
    let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
    list.join("; ")
}

/// The port error names the kind itself (`refused: ...`), so the message leaves out the
/// variant's own prefix instead of saying it twice.
impl From<LinuxError> for PortError {
    fn from(err: LinuxError) -> Self {
        let kind = err.kind();
        let message = match err {
            LinuxError::Refused { what } | LinuxError::NotFound { what } => what,
            other => other.to_string(),
        };
        PortError::new(kind, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_feature_maps_to_missing_feature_kind_and_names_fix() {
        let err = LinuxError::missing(
            "cgroup controller 'pids'",
            "enable it with cgroup_enable=pids",
        );
        let port: PortError = err.into();
        assert_eq!(port.kind, PortErrorKind::MissingFeature);
        assert!(port.message.contains("'pids'"));
        assert!(port.message.contains("cgroup_enable=pids"));
    }

    #[test]
    fn io_not_found_maps_to_not_found_kind() {
        let err = LinuxError::io(
            "open /x",
            std::io::Error::from(std::io::ErrorKind::NotFound),
        );
        assert_eq!(PortError::from(err).kind, PortErrorKind::NotFound);
        let err = LinuxError::errno("write /x", libc::EBUSY);
        assert_eq!(PortError::from(err).kind, PortErrorKind::Io);
    }

    #[test]
    fn refused_maps_to_refused_kind() {
        let err = LinuxError::Refused {
            what: "cell id '../x'".into(),
        };
        let port = PortError::from(err);
        assert_eq!(port.kind, PortErrorKind::Refused);
        assert_eq!(port.to_string(), "refused: cell id '../x'");
    }

    #[test]
    fn a_not_found_port_error_says_not_found_once() {
        let err = LinuxError::NotFound {
            what: "cell 'gone'".into(),
        };
        assert_eq!(PortError::from(err).to_string(), "not found: cell 'gone'");
    }
}

//! Errors of file operations inside a cell. Every message names the cell path and, where there
//! is one, the fix.

use cellos_core::ports::{PortError, PortErrorKind};
use cellos_core::session::FileKind;

#[derive(Debug, thiserror::Error)]
pub enum CellFsError {
    #[error(
        "`{path}`: resolving it would leave the cell (a magic link such as /proc/*/root or \
         /proc/*/fd/*, or a symlink loop); refused. Use a path that stays inside the cell"
    )]
    Escape { path: String },

    #[error("`{path}` does not exist in the cell{hint}")]
    NotFound { path: String, hint: &'static str },

    #[error("`{path}`: a component of the path is not a directory")]
    NotADirectory { path: String },

    #[error("`{path}` is a directory; {hint}")]
    IsADirectory { path: String, hint: &'static str },

    #[error(
        "`{path}` is a symbolic link (to `{target}`); the last component of a path is never \
         followed. Use the target path instead"
    )]
    IsASymlink { path: String, target: String },

    #[error("`{path}` is not a regular file (it is {kind:?}); only regular files can be read")]
    NotARegularFile { path: String, kind: FileKind },

    #[error("`{path}` already exists; pass parents to accept an existing directory")]
    AlreadyExists { path: String },

    #[error("directory `{path}` is not empty; pass recursive to remove it with its contents")]
    DirectoryNotEmpty { path: String },

    #[error("`{path}` is on a read-only mount of the cell; write under a writable mount such as the workspace")]
    ReadOnly { path: String },

    #[error(
        "`{path}`: permission denied for the cell's workload user; file operations run with the \
         workload's uid/gid, so change the file's ownership or mode inside the cell"
    )]
    PermissionDenied { path: String },

    #[error(
        "`{path}` is larger than the limit of {limit} bytes; raise the limit or split the file"
    )]
    TooLarge { path: String, limit: u64 },

    #[error("invalid cell path `{path}`: {reason}")]
    InvalidPath { path: String, reason: String },

    #[error("`{path}`: mode {mode:#o} is not allowed; give only permission bits (at most 0o777)")]
    InvalidMode { path: String, mode: u32 },

    #[error("`{path}`: {op} failed: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl CellFsError {
    pub(crate) fn invalid(path: &str, reason: impl Into<String>) -> Self {
        CellFsError::InvalidPath {
            path: shorten(path),
            reason: reason.into(),
        }
    }

    /// Map an errno from operation `op` on `path` to the matching variant. ELOOP and EXDEV come
    /// from `openat2` refusing a magic link or an escape from the root.
    pub(crate) fn from_errno(op: &'static str, path: &str, err: rustix::io::Errno) -> Self {
        use rustix::io::Errno;
        let path = shorten(path);
        match err {
            Errno::LOOP | Errno::XDEV => CellFsError::Escape { path },
            Errno::NOENT => CellFsError::NotFound { path, hint: "" },
            Errno::NOTDIR => CellFsError::NotADirectory { path },
            Errno::ROFS => CellFsError::ReadOnly { path },
            Errno::ACCESS | Errno::PERM => CellFsError::PermissionDenied { path },
            Errno::NAMETOOLONG => CellFsError::InvalidPath {
                path,
                reason: "name too long for the kernel".into(),
            },
            Errno::EXIST => CellFsError::AlreadyExists { path },
            Errno::NOTEMPTY => CellFsError::DirectoryNotEmpty { path },
            Errno::ISDIR => CellFsError::IsADirectory {
                path,
                hint: "name a file instead",
            },
            other => CellFsError::Io {
                op,
                path,
                source: std::io::Error::from_raw_os_error(other.raw_os_error()),
            },
        }
    }
}

/// Paths in messages are cut to a readable length (an over-long path is itself an error).
fn shorten(path: &str) -> String {
    const MAX: usize = 512;
    if path.len() <= MAX {
        return path.to_string();
    }
    let mut end = MAX;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &path[..end], path.len())
}

impl From<CellFsError> for PortError {
    fn from(e: CellFsError) -> Self {
        let kind = match &e {
            CellFsError::NotFound { .. } => PortErrorKind::NotFound,
            CellFsError::TooLarge { .. } => PortErrorKind::TooLarge,
            CellFsError::Io { .. } => PortErrorKind::Io,
            CellFsError::Escape { .. }
            | CellFsError::NotADirectory { .. }
            | CellFsError::IsADirectory { .. }
            | CellFsError::IsASymlink { .. }
            | CellFsError::NotARegularFile { .. }
            | CellFsError::AlreadyExists { .. }
            | CellFsError::DirectoryNotEmpty { .. }
            | CellFsError::ReadOnly { .. }
            | CellFsError::PermissionDenied { .. }
            | CellFsError::InvalidPath { .. }
            | CellFsError::InvalidMode { .. } => PortErrorKind::Refused,
        };
        PortError::new(kind, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_error_kinds() {
        let p = |e: CellFsError| PortError::from(e).kind;
        assert_eq!(
            p(CellFsError::Escape { path: "/a".into() }),
            PortErrorKind::Refused
        );
        assert_eq!(
            p(CellFsError::ReadOnly { path: "/a".into() }),
            PortErrorKind::Refused
        );
        assert_eq!(
            p(CellFsError::PermissionDenied { path: "/a".into() }),
            PortErrorKind::Refused
        );
        assert_eq!(
            p(CellFsError::invalid("a", "relative")),
            PortErrorKind::Refused
        );
        assert_eq!(
            p(CellFsError::NotFound {
                path: "/a".into(),
                hint: ""
            }),
            PortErrorKind::NotFound
        );
        assert_eq!(
            p(CellFsError::TooLarge {
                path: "/a".into(),
                limit: 1
            }),
            PortErrorKind::TooLarge
        );
        let io = CellFsError::Io {
            op: "fsync",
            path: "/a".into(),
            source: std::io::Error::other("x"),
        };
        assert_eq!(p(io), PortErrorKind::Io);
    }

    #[test]
    fn messages_name_the_path() {
        let e = CellFsError::from_errno("open", "/workspace/x", rustix::io::Errno::ROFS);
        assert!(e.to_string().contains("/workspace/x"));
        assert!(matches!(e, CellFsError::ReadOnly { .. }));
        let long = "/".to_string() + &"a".repeat(5000);
        let e = CellFsError::invalid(&long, "too long");
        assert!(e.to_string().len() < 700);
    }
}

//! Paths inside a cell: the one place that says which are acceptable and what they mean.
//!
//! Both the validator and the Linux plan call these, so a target the validator accepts is
//! exactly a target the plan mounts, normalised the same way.

/// Mount and workspace targets may not cover these: they belong to the cell's kernel view,
/// to the secret tmpfs or to init's own binds (`/run/cellos`), and a bind over them would hide
/// or replace what the runtime sets up.
pub const RESERVED_TARGETS: [&str; 5] = ["/proc", "/dev", "/sys", "/run/secrets", "/run/cellos"];

/// Why a text is not an acceptable path inside a cell.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("must not contain NUL bytes")]
    Nul,
    #[error("must be absolute and must not contain '..'")]
    NotAbsolute,
    #[error("must not be '/' or inside /proc, /dev, /sys, /run/secrets or /run/cellos (the cell's init provides them); choose another target")]
    Reserved,
}

/// An absolute path without `..` or NUL, in normal form (see [`normalize_path`]).
pub fn absolute_path(path: &str) -> Result<String, PathError> {
    if path.contains('\0') {
        Err(PathError::Nul)
    } else if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
        Err(PathError::NotAbsolute)
    } else {
        Ok(normalize_path(path))
    }
}

/// A mount or workspace target: an [`absolute_path`] that is neither `/` nor inside one of
/// the [`RESERVED_TARGETS`]. Returns its normal form.
pub fn cell_target(target: &str) -> Result<String, PathError> {
    let normal = absolute_path(target)?;
    let reserved = RESERVED_TARGETS
        .iter()
        .any(|root| normal == *root || normal.starts_with(&format!("{root}/")));
    if normal == "/" || reserved {
        Err(PathError::Reserved)
    } else {
        Ok(normal)
    }
}

/// `/a//b/./c/` and `/a/b/c` name the same directory; targets are compared in this form.
pub fn normalize_path(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

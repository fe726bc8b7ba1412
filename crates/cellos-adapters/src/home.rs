//! Where CellOS keeps its state on this machine (event log, keys, ...).

use std::path::PathBuf;

/// Environment variable that overrides the state directory.
pub const HOME_ENV: &str = "CELLOS_HOME";
/// State directory when running as root.
pub const SYSTEM_HOME: &str = "/var/lib/cellos";

#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error(
        "cannot find a state directory: HOME is not set; set CELLOS_HOME to a writable directory"
    )]
    NoHome,
}

/// `$CELLOS_HOME` if set; otherwise `/var/lib/cellos` for root and
/// `$XDG_STATE_HOME/cellos` (default `~/.local/state/cellos`) for everyone else.
pub fn cellos_home() -> Result<PathBuf, HomeError> {
    if let Some(home) = std::env::var_os(HOME_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    if rustix::process::geteuid().is_root() {
        return Ok(PathBuf::from(SYSTEM_HOME));
    }
    if let Some(state) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(state).join("cellos"));
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|home| PathBuf::from(home).join(".local/state/cellos"))
        .ok_or(HomeError::NoHome)
}

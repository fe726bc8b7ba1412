//! The local terminal during `cellos exec -t`: its size, and raw mode that is always undone.

use rustix::termios::{isatty, tcgetattr, tcgetwinsize, tcsetattr, OptionalActions, Termios};

/// Rows and columns used when stdout is not a terminal (or will not say).
const DEFAULT_SIZE: (u16, u16) = (24, 80);

/// The size of the terminal on stdout, as `(rows, cols)`.
pub fn size() -> (u16, u16) {
    match tcgetwinsize(std::io::stdout()) {
        Ok(w) if w.ws_row > 0 && w.ws_col > 0 => (w.ws_row, w.ws_col),
        _ => DEFAULT_SIZE,
    }
}

/// Raw mode on stdin for as long as this lives: keys (Ctrl-C included) go to the cell's
/// terminal, not to this process. Dropping it restores the saved settings, so an error or a
/// panic does not leave the user's terminal raw.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Enter raw mode if stdin is a terminal; `None` (and nothing changed) otherwise.
    pub fn enter() -> Option<Self> {
        let stdin = std::io::stdin();
        if !isatty(&stdin) {
            return None;
        }
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(&stdin, OptionalActions::Now, &raw).ok()?;
        Some(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(std::io::stdin(), OptionalActions::Now, &self.saved);
    }
}

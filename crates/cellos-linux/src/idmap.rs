//! The cell's uid/gid maps, written by the supervisor (root in the initial user namespace).
//!
//! Cell ids `0..65536` map onto an unprivileged host range starting at `uid_base`: root in the
//! cell is an ordinary host uid, so a process that escaped every other layer would still hold
//! no host privilege. The parent writes the maps (instead of the child) because only a process
//! with `CAP_SETUID` in the parent namespace may map a range other than its own uid.

use std::fs::OpenOptions;
use std::io::Write;

use crate::error::LinuxError;

/// Size of the id range each cell maps (one full 16-bit range, as container runtimes do).
pub const CELL_ID_RANGE: u32 = 65536;

/// One `inside outside count` line of a uid or gid map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

impl IdMap {
    /// Cell `0..65536` onto host `base..base+65536`.
    pub fn cell_range(base: u32) -> Result<IdMap, LinuxError> {
        if base == 0 || base.checked_add(CELL_ID_RANGE).is_none() {
            return Err(LinuxError::Refused {
                what: format!(
                    "uid base {base}: the cell's ids need an unprivileged host range \
                     (base > 0 and base + {CELL_ID_RANGE} <= 2^32)"
                ),
            });
        }
        Ok(IdMap {
            inside: 0,
            outside: base,
            count: CELL_ID_RANGE,
        })
    }

    /// The map line as the kernel expects it (and as evidence records it).
    pub fn line(&self) -> String {
        format!("{} {} {}", self.inside, self.outside, self.count)
    }

    /// Host id of `inside`, if mapped.
    pub fn to_host(&self, inside: u32) -> Option<u32> {
        (inside >= self.inside && inside - self.inside < self.count)
            .then(|| self.outside + (inside - self.inside))
    }
}

/// Write `/proc/<pid>/uid_map` and `gid_map` (one `write` each, as the kernel requires).
pub fn write_maps(pid: i32, map: &IdMap) -> Result<(), LinuxError> {
    let line = format!("{}\n", map.line());
    for file in ["uid_map", "gid_map"] {
        let path = format!("/proc/{pid}/{file}");
        let mut f = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| LinuxError::io(format!("open {path}"), e))?;
        f.write_all(line.as_bytes())
            .map_err(|e| LinuxError::io(format!("write {path} ({})", map.line()), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cell_range_maps_root_to_the_base() {
        let map = IdMap::cell_range(200_000).unwrap();
        assert_eq!(map.line(), "0 200000 65536");
        assert_eq!(map.to_host(0), Some(200_000));
        assert_eq!(map.to_host(1000), Some(201_000));
        assert_eq!(map.to_host(65536), None);
        assert!(IdMap::cell_range(0).is_err());
        assert!(IdMap::cell_range(u32::MAX - 10).is_err());
    }
}

//! Learning where a segment's chain stands by reading its last line, and repairing a torn
//! final line left by a writer that died mid-append.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

const BLOCK: u64 = 64 * 1024;

/// The end of a segment as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tail {
    /// The last complete line, without its newline.
    pub last_line: Option<String>,
    /// Length of the segment up to and including the last newline. Bytes after it are a
    /// torn append that was never acknowledged (its writer never reached fsync's return).
    pub complete_len: u64,
}

/// Position of the last `\n` in `[0, end)`.
fn last_newline_before(file: &File, end: u64) -> io::Result<Option<u64>> {
    let mut block_end = end;
    let mut buffer = vec![0u8; BLOCK as usize];
    while block_end > 0 {
        let block_start = block_end.saturating_sub(BLOCK);
        let len = (block_end - block_start) as usize;
        file.read_exact_at(&mut buffer[..len], block_start)?;
        if let Some(i) = buffer[..len].iter().rposition(|&b| b == b'\n') {
            return Ok(Some(block_start + i as u64));
        }
        block_end = block_start;
    }
    Ok(None)
}

/// Read the end of a segment of `size` bytes.
pub fn read_tail(file: &File, size: u64) -> io::Result<Tail> {
    let Some(last_newline) = last_newline_before(file, size)? else {
        return Ok(Tail {
            last_line: None,
            complete_len: 0,
        });
    };
    let start = last_newline_before(file, last_newline)?.map_or(0, |p| p + 1);
    let mut line = vec![0u8; (last_newline - start) as usize];
    file.read_exact_at(&mut line, start)?;
    let line =
        String::from_utf8(line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(Tail {
        last_line: Some(line),
        complete_len: last_newline + 1,
    })
}

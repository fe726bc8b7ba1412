//! File content as it crosses a tool call: UTF-8 text or base64, and a large file in parts.

use base64::Engine;
use cellos_core::session::FileStat;
use serde::Serialize;

use crate::args::Encoding;
use crate::error::ToolError;

/// Largest part of a file one `sandbox_read_file` returns.
pub const MAX_READ_BYTES: u64 = 1 << 20;

/// The bytes a write carries.
pub fn decode(content: &str, encoding: Encoding, field: &str) -> Result<Vec<u8>, ToolError> {
    match encoding {
        Encoding::Text => Ok(content.as_bytes().to_vec()),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(content.trim())
            .map_err(|e| {
                ToolError::BadArgument(format!(
                    "{field}: not valid base64 ({e}); send standard base64, or encoding \"text\""
                ))
            }),
    }
}

/// What `sandbox_read_file` returns.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FilePart {
    pub path: String,
    /// The file's whole size.
    pub size: u64,
    pub offset: u64,
    /// Bytes in `content`.
    pub length: u64,
    pub encoding: &'static str,
    pub content: String,
    /// Says what is left and how to read it, when the part ends before the file does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<String>,
}

/// The part `[offset, offset + length)` of a file read whole.
pub fn part(
    stat: &FileStat,
    bytes: &[u8],
    encoding: Encoding,
    offset: Option<u64>,
    length: Option<u64>,
) -> Result<FilePart, ToolError> {
    let total = bytes.len() as u64;
    let offset = offset.unwrap_or(0);
    if offset > total {
        return Err(ToolError::BadArgument(format!(
            "offset: {offset} is past the end of {} ({total} bytes)",
            stat.path
        )));
    }
    let length = length
        .unwrap_or(MAX_READ_BYTES)
        .min(MAX_READ_BYTES)
        .min(total - offset);
    let end = offset + length;
    let slice = &bytes[offset as usize..end as usize];
    let content = match encoding {
        Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(slice),
        Encoding::Text => std::str::from_utf8(slice)
            .map_err(|e| {
                ToolError::BadArgument(format!(
                    "{} is not UTF-8 text at byte {} (read it with encoding \"base64\")",
                    stat.path,
                    offset + e.valid_up_to() as u64
                ))
            })?
            .to_owned(),
    };
    let truncated = (end < total).then(|| {
        format!(
            "{} of {total} bytes not returned; read on with offset {end} (at most {MAX_READ_BYTES} \
             bytes per call)",
            total - end
        )
    });
    Ok(FilePart {
        path: stat.path.clone(),
        size: total,
        offset,
        length,
        encoding: match encoding {
            Encoding::Text => "text",
            Encoding::Base64 => "base64",
        },
        content,
        truncated,
    })
}

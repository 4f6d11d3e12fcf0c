//! Files with errors that name them: reading, and writing so that a crash never leaves a
//! half-written file (write a temporary file in the same folder, flush it to disk, then rename
//! it over the target).

use std::io::Write;
use std::path::Path;

use crate::{Error, Result};

/// The bytes of the file at `path`; an error naming it.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The text of the file at `path`; an error naming it.
pub fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Atomically replaces `path` with `bytes`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::InvalidInput(format!("{} is not a file path", path.display())))?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    {
        // Closed at the end of this block, before the rename.
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        file.write_all(bytes)
            .and_then(|_| file.sync_all())
            .map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}

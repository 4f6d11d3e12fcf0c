//! The crate's error type: every failure names what went wrong and where.

use std::path::PathBuf;

/// Errors raised by the tinylora core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A backend name that is not one of the supported ones.
    #[error("unknown backend `{0}`: expected one of cpu, wgpu")]
    UnknownBackend(String),
    /// The backend exists but could not be started (no adapter, driver missing, ...).
    #[error("could not start the {backend} backend: {reason}")]
    BackendInit {
        /// The backend that failed.
        backend: &'static str,
        /// What the backend reported.
        reason: String,
    },
    /// Reading a tensor back from the device failed.
    #[error("reading a tensor back from the device failed: {0}")]
    Readback(String),
    /// An argument or input that cannot be used (empty prompt, token outside the vocabulary...).
    #[error("{0}")]
    InvalidInput(String),
    /// A rollout engine (a server sampling completions) failed, or answered something the
    /// trainer cannot trust.
    #[error("rollout engine: {0}")]
    Engine(String),
    /// Training produced a non-finite loss or gradient; nothing was updated.
    #[error("training diverged: {0}")]
    Diverged(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A file was read but its content is not what it should be.
    #[error("{path}: {reason}")]
    BadFile {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Result alias for the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

//! One error type for the core library.
//!
//! Variants separate the caller's mistakes (bad input files, unknown ids, invalid
//! arguments) from problems with a stored model, so the binaries can map each to a CLI
//! message or a gRPC status in one place without inspecting strings.

use std::path::{Path, PathBuf};

/// Errors raised by the core library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A row of an input file is malformed. `line` is 1-based and counts the header.
    #[error("{file}:{line}: {message}")]
    InvalidRow {
        file: String,
        line: u64,
        message: String,
    },
    /// An input file as a whole is unusable (missing header column, empty, unreadable).
    #[error("{file}: {message}")]
    InvalidFile { file: String, message: String },
    /// A stored model is missing, partial, corrupt or of an unsupported format.
    #[error("model file {path}: {message}")]
    Model { path: PathBuf, message: String },
    /// A caller passed an argument outside its domain.
    #[error("invalid argument `{field}`: {message}")]
    InvalidArgument { field: &'static str, message: String },
    /// A requested entity does not exist in the model.
    #[error("{0}")]
    NotFound(String),
    /// An I/O error with the path it happened on. The cause is part of the message
    /// (not a chained source) so it is shown once in every rendering.
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
}

/// Result alias for the core library.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn model(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Error::Model {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
        }
    }

    pub fn io(path: impl AsRef<Path>, cause: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            cause,
        }
    }

    pub fn invalid_argument(field: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field,
            message: message.into(),
        }
    }

    pub fn invalid_file(file: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Error::InvalidFile {
            file: file.as_ref().display().to_string(),
            message: message.into(),
        }
    }
}

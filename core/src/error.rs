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
        /// The file's path or name, as given to the reader.
        file: String,
        /// 1-based line of the bad row; the header is line 1.
        line: u64,
        /// What is wrong with the row.
        message: String,
    },
    /// An input file as a whole is unusable (missing header column, empty, unreadable).
    #[error("{file}: {message}")]
    InvalidFile {
        /// The file's path or name.
        file: String,
        /// Why the file cannot be used.
        message: String,
    },
    /// A stored model is missing, partial, corrupt or of an unsupported format.
    #[error("model file {path}: {message}")]
    Model {
        /// The model file, version directory or root the problem was found in.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A caller passed an argument outside its domain.
    #[error("invalid argument `{field}`: {message}")]
    InvalidArgument {
        /// The argument's name as the API spells it (e.g. `k`, `user_id`).
        field: &'static str,
        /// Why the value is out of its domain.
        message: String,
    },
    /// A requested entity does not exist in the model.
    #[error("{0}")]
    NotFound(String),
    /// The request is well formed but the model cannot answer it (e.g. a time window on
    /// data without unix timestamps).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller cancelled the work (see [`crate::cancel::Cancel`]).
    #[error("cancelled: nobody waits for the answer any more")]
    Cancelled,
    /// An I/O error with the path it happened on. The cause is part of the message
    /// (not a chained source) so it is shown once in every rendering.
    #[error("{path}: {cause}")]
    Io {
        /// The path the operation failed on.
        path: PathBuf,
        /// The underlying I/O error.
        cause: std::io::Error,
    },
}

/// Result alias for the core library.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A [`Error::Model`] about the model file or directory at `path`.
    pub fn model(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Error::Model {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
        }
    }

    /// An [`Error::Io`] for an operation on `path` that failed with `cause`.
    pub fn io(path: impl AsRef<Path>, cause: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            cause,
        }
    }

    /// An [`Error::InvalidArgument`] for `field`, named as the API spells it.
    pub fn invalid_argument(field: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field,
            message: message.into(),
        }
    }

    /// An [`Error::InvalidFile`] for the input file `file`.
    pub fn invalid_file(file: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Error::InvalidFile {
            file: file.as_ref().display().to_string(),
            message: message.into(),
        }
    }
}

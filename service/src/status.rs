//! The one place errors become gRPC statuses.
//!
//! Handlers return [`ApiError`] through `?` (core errors convert into it), and its single
//! `From<ApiError> for Status` picks the code: the caller's mistakes keep their message
//! (it names the field or the missing id), our own failures are logged with their cause
//! and answered with a generic message, so no internal detail (paths, panics) reaches a
//! client.

use affinity_core::Error;
use tonic::Status;

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// An error from the engine: a bad query, an unknown id, or an internal failure.
    #[error(transparent)]
    Core(#[from] Error),
    /// No model is loaded yet.
    #[error("no model loaded yet; retry when the health check reports SERVING")]
    NotReady,
    /// A scoring task did not complete (it panicked or was cancelled).
    #[error("scoring task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// A new model version could not be loaded; the old one keeps serving.
    #[error("reload refused, the current version keeps serving: {0}")]
    Reload(String),
    /// Ingest is off or the event log cannot take writes; reads keep serving.
    #[error("ingest unavailable: {0}")]
    IngestOff(String),
    /// A client stream sent nothing for too long and was closed (it held a slot of the
    /// concurrency limit).
    #[error("no batch for {0} s: the stream is closed; open a new one to send more")]
    Idle(u64),
}

impl From<crate::ingest::IngestError> for ApiError {
    fn from(e: crate::ingest::IngestError) -> ApiError {
        ApiError::IngestOff(e.to_string())
    }
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Status {
        match &err {
            ApiError::Core(Error::InvalidArgument { .. }) => Status::invalid_argument(err.to_string()),
            ApiError::Core(Error::NotFound(_)) => Status::not_found(err.to_string()),
            ApiError::Core(Error::Cancelled) => Status::cancelled(err.to_string()),
            ApiError::NotReady | ApiError::IngestOff(_) => Status::unavailable(err.to_string()),
            ApiError::Idle(_) => Status::deadline_exceeded(err.to_string()),
            ApiError::Reload(_) | ApiError::Core(Error::FailedPrecondition(_)) => Status::failed_precondition(err.to_string()),
            ApiError::Core(_) | ApiError::Task(_) => {
                tracing::error!(cause = %err, "internal error");
                Status::internal("internal error; the server log has the cause")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn status(e: impl Into<ApiError>) -> Status {
        Status::from(e.into())
    }

    #[test]
    fn codes_and_messages() {
        let s = status(Error::invalid_argument("k", "bad"));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains("`k`"), "{}", s.message());
        assert_eq!(status(Error::NotFound("item `x` is unknown".into())).code(), Code::NotFound);
        assert_eq!(status(ApiError::NotReady).code(), Code::Unavailable);
        assert_eq!(status(Error::FailedPrecondition("no times".into())).code(), Code::FailedPrecondition);
        let internal = status(Error::model("/secret/path/items.bin", "checksum mismatch"));
        assert_eq!(internal.code(), Code::Internal);
        assert!(!internal.message().contains("/secret"), "internal details stay in the log: {}", internal.message());
    }
}

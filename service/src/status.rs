//! Mapping of core errors to gRPC statuses, in one place.

use affinity_core::Error;
use tonic::{Code, Status};

/// Converts a core error into the status a client should see.
pub fn to_status(err: Error) -> Status {
    let code = match &err {
        Error::InvalidArgument { .. } => Code::InvalidArgument,
        Error::NotFound(_) => Code::NotFound,
        Error::InvalidRow { .. } | Error::InvalidFile { .. } => Code::InvalidArgument,
        Error::Model { .. } | Error::Io { .. } => Code::Internal,
    };
    Status::new(code, err.to_string())
}

/// The status for a request that arrives before a model is loaded.
pub fn no_model() -> Status {
    Status::unavailable("no model loaded yet; retry when the health check reports SERVING")
}

/// The status for a scoring task that failed to complete (it panicked or was cancelled).
pub fn task_failed(err: tokio::task::JoinError) -> Status {
    tracing::error!(cause = %err, "scoring task failed");
    Status::internal("internal error while scoring the request")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(to_status(Error::invalid_argument("k", "bad")).code(), Code::InvalidArgument);
        assert_eq!(to_status(Error::NotFound("x".into())).code(), Code::NotFound);
        assert_eq!(to_status(Error::model("f", "m")).code(), Code::Internal);
        assert!(to_status(Error::invalid_argument("k", "bad")).message().contains("`k`"));
    }
}

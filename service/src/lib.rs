//! affinity-service: the gRPC face of affinity.
//!
//! # Layout
//! - [`proto`]: code generated from `proto/affinity/v1/recommender.proto`.
//! - [`status`]: the one place core errors become gRPC statuses.
//! - [`api`]: the `affinity.v1.Recommender` implementation (thin: validate, score off
//!   the async runtime, convert).
//! - [`server`]: wiring — model loading, health, reflection, graceful shutdown.
//! - [`demo`]: the `--demo` model and the `--smoke` self-check.
//!
//! The binaries `affinity-server` and `affinity-client` sit on top of this library.

pub mod api;
pub mod demo;
pub mod server;
pub mod status;

/// Generated protobuf and gRPC code.
pub mod proto {
    tonic::include_proto!("affinity.v1");

    /// Encoded descriptors for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("affinity_descriptor");
}

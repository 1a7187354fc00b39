//! Code generated from `proto/affinity/v1/recommender.proto` (see `build.rs`). Proto types
//! stay in this module and in the conversions of [`crate::api`].

tonic::include_proto!("affinity.v1");

/// Encoded descriptors for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("affinity_descriptor");

//! affinity-core: the model format and algorithms shared by the affinity trainer and
//! server. It knows nothing of async runtimes or gRPC.
//!
//! # Layout
//! - [`data`]: canonical CSV files (events, items, users, social) and their validation.
//! - [`import`]: converters from public research data sets to the canonical form.
//! - [`interactions`]: events → weighted, time-decayed user–item matrix.
//! - [`als`]: implicit ALS collaborative embeddings and user fold-in.
//! - [`content`]: content embeddings from catalogue features.
//! - [`neighbors`]: item-to-item co-occurrence and transition neighbours.
//! - [`ann`]: HNSW indexes (hnsw_rs) over unit vectors, MIPS transform.
//! - [`params`]: every training and serving parameter, serialisable.
//! - [`train`]: the pipeline from a data set to a [`model::Model`].
//! - [`model`]: the in-memory model and its versioned, checksummed directory.
//! - [`recommend`]: personalised recommendations and similar items.
//! - [`split`]: random, leave-one-out and temporal splits and their files.
//! - [`tune`]: hyper-parameter search spaces (validation only).
//! - [`eval`]: metrics and baselines (Pop, ItemKNN, EASE) for offline evaluation.
//! - [`demo`]: a deterministic synthetic store for demos and smoke tests.

pub mod als;
pub mod baselines;
pub mod ann;
pub mod content;
pub mod data;
pub mod demo;
pub mod error;
pub mod eval;
pub mod import;
pub mod interactions;
pub mod linalg;
pub mod model;
pub mod neighbors;
pub mod params;
pub mod recommend;
pub mod split;
pub mod train;
pub mod tune;

pub use error::{Error, Result};

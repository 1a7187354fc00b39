//! affinity-core: the engine that both the trainer and the server run. It fits a model
//! from canonical data, stores and loads it, and scores it. It knows nothing of async
//! runtimes, gRPC, command lines or offline evaluation (that is `affinity-lab`).
//!
//! # Layout
//! - [`ids`]: item / user index newtypes, the id ↔ index map, a stable hash.
//! - [`data`]: the canonical CSV files (events, items, users, social) and their validation.
//! - [`error`]: the one error type, separating the caller's mistakes from ours.
//! - Fitting, one module per stage: [`interactions`] (events → weighted user–item
//!   matrix), [`als`] (implicit ALS embeddings and user fold-in), [`content`] (catalogue
//!   embeddings), [`neighbors`] (co-occurrence and transition neighbours), [`ann`]
//!   (HNSW indexes), with [`linalg`] kernels under them; [`train`] runs them in order.
//! - [`params`]: every training parameter, serialisable; [`settings`]: the serving
//!   settings scoring takes as a separate value.
//! - [`model`]: the in-memory model; [`model::format`]: its versioned, checksummed
//!   directory (the trainer ↔ server contract).
//! - [`activity`]: each user's activity summarised at training time, and the profile
//!   built on it (RFM, lifecycle stage, churn risk).
//! - [`repeat`]: whether users come back to items they had, learned per item, category
//!   and user, and the seen-items policy built on it.
//! - [`recommend`]: queries, their validation, and scoring (recommendations, similar items);
//!   [`rules`]: business rules on them (filters, promotions, diversity);
//!   [`segments`]: user segments and their popularity (cold start by attributes);
//!   [`trending`]: popularity in time windows and trends;
//!   [`cancel`]: the flag that stops scoring nobody waits for; [`memo`]: stored users'
//!   rankings kept between requests.
//! - [`demo`]: a deterministic synthetic store for the demo server and tests.
//!
//! Dependencies point one way: fitting modules know nothing of `model`, `model` knows
//! nothing of `recommend`, and nothing here depends on a binary or on the lab.

#![warn(missing_docs)]

pub mod activity;
pub mod als;
pub mod ann;
pub mod cancel;
pub mod communities;
pub mod content;
pub mod data;
pub mod demo;
mod explore;
pub mod error;
pub mod ids;
pub mod influence;
pub mod group;
pub mod interactions;
pub mod linalg;
pub mod memo;
pub mod model;
pub mod neighbors;
pub mod params;
pub mod recommend;
pub mod repeat;
pub mod rules;
pub mod segments;
pub mod settings;
pub mod social;
#[cfg(test)]
mod testing;
pub mod train;
pub mod trending;

pub use error::{Error, Result};
pub use ids::{ItemIdx, UserIdx};

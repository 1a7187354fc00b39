//! affinity-service: the gRPC face of affinity.
//!
//! # Layout
//! - [`proto`]: code generated from `proto/affinity/v1/recommender.proto`.
//! - [`state`]: [`state::ServerState`], what every handler shares: the live model and
//!   the settings it is scored with.
//! - [`api`]: the `affinity.v1.Recommender` service; one file per RPC holds its wire
//!   conversions (`TryFrom` into the engine's query types, `From` back).
//! - [`status`]: the one place errors become gRPC statuses.
//! - [`server`]: the shell — `run(listener, state, shutdown)`, health, reflection.
//! - [`demo`]: the `--demo` model.
//! - [`client`]: client-side helpers (connect, wait for SERVING) for the client binary,
//!   tests and benchmarks.
//!
//! The binaries `affinity-server` and `affinity-client` sit on top. This crate depends on
//! the engine (`affinity-core`) only, never on the offline lab.

pub mod api;
pub mod client;
pub mod demo;
pub mod proto;
pub mod server;
pub mod state;
pub mod status;

pub use server::run;

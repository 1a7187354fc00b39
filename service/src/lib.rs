//! affinity-service: the gRPC face of affinity.
//!
//! # Layout
//! - [`proto`]: code generated from `proto/affinity/v1/recommender.proto`.
//! - [`state`]: [`state::ServerState`], what every handler shares: the live model and
//!   the settings it is scored with, the event log, the users' live state.
//! - [`ingest`]: events made durable in the event log (one writer thread, group commit)
//!   before they are acknowledged.
//! - [`live`]: what users did since the model was trained, bounded in memory.
//! - [`catalogue`]: catalogue changes made while serving, re-applied to every model
//!   installed later.
//! - [`api`]: the `affinity.v1.Recommender` service; one file per RPC holds its wire
//!   conversions (`TryFrom` into the engine's query types, `From` back).
//! - [`status`]: the one place errors become gRPC statuses.
//! - [`gate`]: the tower layer in front of every RPC: API keys and roles, the
//!   concurrency limit, the per-RPC span, and Prometheus metrics.
//! - [`config`]: the server's typed configuration (file, environment, flags).
//! - [`server`]: the shell — `run(listener, state, shutdown)`, health, reflection.
//! - [`telemetry`]: optional OpenTelemetry export of the spans (feature `otel`).
//! - [`demo`]: the `--demo` model.
//! - [`client`]: client-side helpers (connect, wait for SERVING) for the client binary,
//!   tests and benchmarks.
//!
//! The binaries `affinity-server` and `affinity-client` sit on top. This crate depends on
//! the engine (`affinity-core`) and the event log (`affinity-eventlog`), never on the
//! offline lab.

pub mod api;
pub mod catalogue;
pub mod client;
pub mod config;
pub mod demo;
pub mod gate;
pub mod ingest;
pub mod live;
pub mod proto;
pub mod recent;
pub mod server;
pub mod social;
pub mod state;
pub mod status;
pub mod telemetry;

pub use server::run;

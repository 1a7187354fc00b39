//! affinity-lab: the offline side of affinity, for ML engineers and benchmarks.
//!
//! It turns public data sets into canonical files, splits them, scores rankers on the
//! held-out part, fits the baselines affinity is compared with, and draws the parameter
//! candidates `tune` searches. The trainer and the benchmarks use it; the server never
//! does (a test in the service crate checks that its dependency tree stays free of it).
//!
//! # Layout
//! - [`import`]: converters from MovieLens, LastFM, FilmTrust and sequence files.
//! - [`split`]: random, leave-one-out and temporal splits, their files, scoring targets.
//! - [`rank`]: the [`rank::Ranker`] trait and affinity's ranker, which calls the
//!   engine's serving code path.
//! - [`eval`]: ranking metrics and scoring a ranker on a target.
//! - [`baselines`]: Pop, ItemKNN and EASE.
//! - [`tune`]: search spaces for affinity and the baselines.
//! - [`autotune`]: `train`'s own search: carve a validation slice, search, report.
//! - [`synth`]: synthetic stores with planted structure (repeat-purchase cycles).
//!
//! Dependencies inside the crate point one way: `eval` and `baselines` use `rank`
//! and `split`; nothing uses `eval` but the binaries.

pub mod autotune;
pub mod baselines;
pub mod eval;
pub mod import;
pub mod rank;
pub mod split;
pub mod synth;
pub mod tune;

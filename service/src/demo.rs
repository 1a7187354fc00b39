//! `--demo`: a model with no external data.
//!
//! Trains on the deterministic synthetic store from `affinity_core::demo` with default
//! parameters (no tuning) through the same pipeline as the trainer, and publishes it the
//! way the trainer does, so the server then loads it through its normal path. The check
//! that a running demo server answers sensibly is `affinity-client smoke`.

use std::path::{Path, PathBuf};

use affinity_core::data::TimeKind;
use affinity_core::demo::{generate, DemoSize, DEMO_SEED};
use affinity_core::model::format;
use affinity_core::model::publish::Retention;
use affinity_core::params::TrainParams;
use affinity_core::train::{train, NoProgress};
use anyhow::{Context, Result};

/// Returns a model under `root`, training the demo one if none is there yet.
pub fn prepare_model(root: &Path) -> Result<PathBuf> {
    if let Ok(dir) = format::resolve(root) {
        return Ok(dir);
    }
    let data = generate(DemoSize::default(), DEMO_SEED);
    let mut m = train(&data, TimeKind::Unix, &TrainParams::default(), &NoProgress);
    let dir = format::save(&mut m, root, Retention::default()).with_context(|| format!("cannot write the demo model to {}", root.display()))?;
    Ok(dir)
}

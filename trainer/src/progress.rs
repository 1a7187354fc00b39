//! Progress bars for long training steps, on stderr (hidden when it is not a terminal),
//! and each step's wall time as a tracing event (`RUST_LOG=info` shows where time goes).

use affinity_core::train::Progress;
use indicatif::{ProgressBar, ProgressStyle};
use std::sync::Mutex;
use std::time::Instant;

/// Shows one bar per training step.
#[derive(Default)]
pub struct Bars {
    current: Mutex<Option<(ProgressBar, String, Instant)>>,
}

impl Progress for Bars {
    fn begin(&self, step: &str, total: u64) {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{msg:32} [{bar:30}] {pos}/{len} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message(step.to_string());
        if let Ok(mut cur) = self.current.lock() {
            *cur = Some((bar, step.to_string(), Instant::now()));
        }
    }

    fn advance(&self) {
        if let Ok(cur) = self.current.lock() {
            if let Some((bar, _, _)) = cur.as_ref() {
                bar.inc(1);
            }
        }
    }

    fn finish(&self) {
        if let Ok(mut cur) = self.current.lock() {
            if let Some((bar, step, started)) = cur.take() {
                bar.finish();
                tracing::info!(step = %step, seconds = started.elapsed().as_secs_f64(), "training step done");
            }
        }
    }
}

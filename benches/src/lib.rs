//! What the benchmark binaries share: sequential request timing into a latency row, and
//! a demo model root with an empty event log.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;
use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency of one kind of request, in microseconds.
#[derive(Serialize, Debug)]
pub struct Row {
    pub method: String,
    pub requests: usize,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
    pub throughput_rps: f64,
}

/// The row of `h` (nanoseconds) over `wall`.
pub fn summarise(method: &str, h: &Histogram<u64>, wall: Duration) -> Row {
    let us = |v: u64| v as f64 / 1_000.0;
    Row {
        method: method.to_string(),
        requests: h.len() as usize,
        p50_us: us(h.value_at_quantile(0.50)),
        p90_us: us(h.value_at_quantile(0.90)),
        p99_us: us(h.value_at_quantile(0.99)),
        p999_us: us(h.value_at_quantile(0.999)),
        max_us: us(h.max()),
        mean_us: h.mean() / 1_000.0,
        throughput_rps: h.len() as f64 / wall.as_secs_f64(),
    }
}

/// Sends `warmup + requests` sequential calls and summarises the latency of the last
/// `requests` (each call's future is built before its timer starts).
pub async fn time_calls<F, Fut>(method: &str, warmup: usize, requests: usize, mut call: F) -> Result<Row>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let mut wall = Instant::now();
    for n in 0..warmup + requests {
        if n == warmup {
            hist.reset();
            wall = Instant::now();
        }
        let pending = call();
        let t = Instant::now();
        pending.await?;
        hist.record(t.elapsed().as_nanos() as u64)?;
    }
    Ok(summarise(method, &hist, wall.elapsed()))
}

/// Prints rows as a table.
pub fn print_rows(rows: &[Row]) {
    println!(
        "{:<34} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}",
        "method", "requests", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "max µs", "mean µs", "req/s"
    );
    for r in rows {
        println!(
            "{:<34} {:>8} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>10.0}",
            r.method, r.requests, r.p50_us, r.p90_us, r.p99_us, r.p999_us, r.max_us, r.mean_us, r.throughput_rps
        );
    }
}

/// `work/model`: the demo model, its event log emptied (the ingest and crash benchmarks
/// start from no events).
pub fn demo_root_without_events(work: &Path) -> Result<PathBuf> {
    let root = work.join("model");
    let _ = std::fs::remove_dir_all(root.join("events"));
    std::fs::create_dir_all(work)?;
    affinity_service::demo::prepare_model(&root)?;
    Ok(root)
}

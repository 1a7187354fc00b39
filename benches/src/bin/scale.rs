//! Scale: what a power-law store of a given size costs to train, store, load and query.
//!
//! Generates a store with [`affinity_lab::synth::power_law_store`] (`--items`, `--users`,
//! `--events`), trains it with the default parameters (embeddings learned from the
//! generated log, not synthetic vectors), and measures: generation and training time,
//! peak resident memory after each (VmHWM), model size on disk, load time and the
//! resident memory the loaded model adds, and — for `--queries` real user vectors — the
//! time of an exact `Recommend` against one through the HNSW index at several `ef`, with
//! the index's recall@10 against exact scoring (with and without a category filter).
//! Prints tables and writes JSON. Linux only (it reads `/proc`).
//!
//! ```text
//! cargo run --release -p affinity-benches --bin scale                      # 100k items
//! cargo run --release -p affinity-benches --bin scale -- --items 1000000 --users 1000000 --events 10000000
//! cargo run --release -p affinity-benches --bin scale -- --items 150000 --users 1500000 --events 10000000 --tune
//! cargo run --release -p affinity-benches --bin scale -- --items 150000 --users 1500000 --events 10000000 --write-csv /tmp/store
//! ```
//!
//! `--tune` first searches parameters with the trainer's default budget, as `affinity-trainer
//! train` does; `--write-csv` writes the store for timing the trainer itself on it.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

use affinity_core::data::TimeKind;
use affinity_core::model::format;
use affinity_core::model::publish::Retention;
use affinity_core::params::TrainParams;
use affinity_core::recommend::RecommendQuery;
use affinity_core::rules::Rules;
use affinity_core::settings::ServingSettings;
use affinity_core::train::{train, Progress};
use affinity_lab::autotune::{autotune, Budget};
use affinity_lab::synth::{power_law_store, PowerLawSize};
use anyhow::Result;
use clap::Parser;
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(about = "Train, store, load and query a power-law store of a given size")]
struct Args {
    #[arg(long, default_value_t = 100_000)]
    items: usize,
    #[arg(long, default_value_t = 100_000)]
    users: usize,
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    #[arg(long, default_value_t = 100)]
    items_per_category: usize,
    /// Users whose vectors query the index.
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// HNSW search list sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "10,20,50,100,200,400")]
    ef: Vec<usize>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Tune first with the trainer's default budget (what `affinity-trainer train` does).
    #[arg(long)]
    tune: bool,
    /// Only write the generated store as `events.csv` and `items.csv` into this folder
    /// (for timing `affinity-trainer train` on it) and stop.
    #[arg(long)]
    write_csv: Option<PathBuf>,
    /// Publish the model under this root and keep it (for `load --model ROOT`); a
    /// temporary folder otherwise.
    #[arg(long)]
    model_root: Option<PathBuf>,
    /// Skip generating and training: load the model under this root (one published by
    /// `--model-root` or the trainer) and measure its load and queries.
    #[arg(long, conflicts_with_all = ["tune", "write_csv", "model_root"])]
    load: Option<PathBuf>,
    /// With `--load`: publish the loaded model again under this root, in this build's
    /// format, and stop (measures an older build's model in the current format without
    /// retraining it).
    #[arg(long, requires = "load")]
    resave: Option<PathBuf>,
    /// Where to write the JSON results.
    #[arg(long, default_value = "benches/results/scale.json")]
    json: PathBuf,
}

#[derive(Serialize, Debug)]
struct EfRow {
    ef: usize,
    filtered: bool,
    recall_at_10: f64,
    exact_us: f64,
    ann_us: f64,
    speedup: f64,
}

#[derive(Serialize, Debug)]
struct Report {
    items: usize,
    users: usize,
    events: usize,
    generate_s: f64,
    tune_s: f64,
    train_s: f64,
    steps: Vec<(String, f64)>,
    peak_rss_after_generate_mib: f64,
    peak_rss_after_train_mib: f64,
    model_bytes: u64,
    load_s: f64,
    loaded_rss_mib: f64,
    /// Peak resident memory while loading, above what was resident before.
    load_peak_rss_mib: f64,
    /// Peak resident memory while a second copy loads beside the first (a hot reload),
    /// above what was resident before the first.
    reload_peak_rss_mib: f64,
    rss_per_million_items_mib: f64,
    ef: Vec<EfRow>,
}

/// A `/proc/self/status` field in MiB.
fn status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// Times each training step and prints it with the peak resident memory so far.
#[derive(Default)]
struct Steps {
    current: std::sync::Mutex<Option<(String, Instant)>>,
    done: std::sync::Mutex<Vec<(String, f64)>>,
}

impl Progress for Steps {
    fn begin(&self, step: &str, _: u64) {
        if let Ok(mut c) = self.current.lock() {
            *c = Some((step.to_string(), Instant::now()));
        }
    }
    fn advance(&self) {}
    fn finish(&self) {
        let Some((step, t)) = self.current.lock().ok().and_then(|mut c| c.take()) else { return };
        let s = t.elapsed().as_secs_f64();
        eprintln!("  {step}: {s:.1} s (peak RSS {:.0} MiB)", status_mib("VmHWM:"));
        if let Ok(mut d) = self.done.lock() {
            d.push((step, s));
        }
    }
}

/// What generating and training a store produced: the published model and its costs.
#[derive(Default)]
struct Trained {
    dir: PathBuf,
    generate_s: f64,
    tune_s: f64,
    train_s: f64,
    hwm_generate: f64,
    hwm_train: f64,
    steps: Vec<(String, f64)>,
    model_bytes: u64,
    /// Keeps a temporary model root alive until the measurements are done.
    _temporary: Option<tempfile::TempDir>,
}

/// Generates the store and trains and publishes it; `None` when told only to write it
/// out as CSV.
fn generate_and_train(args: &Args) -> Result<Option<Trained>> {
    let t = Instant::now();
    let data = power_law_store(
        PowerLawSize { items: args.items, users: args.users, events: args.events, items_per_category: args.items_per_category },
        args.seed,
    );
    let generate_s = t.elapsed().as_secs_f64();
    let hwm_generate = status_mib("VmHWM:");
    if let Some(dir) = &args.write_csv {
        std::fs::create_dir_all(dir)?;
        affinity_core::data::write_events(&dir.join("events.csv"), &data.events)?;
        affinity_core::data::write_items(&dir.join("items.csv"), &data.items)?;
        println!("wrote {} events and {} items to {}", data.events.len(), data.items.len(), dir.display());
        return Ok(None);
    }
    eprintln!("generated {} events in {generate_s:.1} s; training …", data.events.len());
    let steps = Steps::default();
    let t = Instant::now();
    let params = if args.tune {
        let (params, report) = autotune(&data, TimeKind::Unix, &TrainParams::default(), &Budget::default(), &steps);
        eprintln!("tuned: {} fits, stopped by {}, NDCG@10 {:.4}", report.fits, report.stopped_by, report.best_ndcg10);
        params
    } else {
        TrainParams::default()
    };
    let tune_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut m = train(&data, TimeKind::Unix, &params, &steps);
    let train_s = t.elapsed().as_secs_f64();
    let hwm_train = status_mib("VmHWM:");
    drop(data);
    let temporary = tempfile::tempdir()?;
    let root = args.model_root.clone().unwrap_or_else(|| temporary.path().to_path_buf());
    let dir = format::save(&mut m, &root, Retention::default())?;
    let model_bytes: u64 = std::fs::read_dir(&dir)?.filter_map(|e| e.ok()?.metadata().ok()).map(|md| md.len()).sum();
    drop(m);
    // Hand freed memory back, so the load's footprint shows in RSS.
    // SAFETY: malloc_trim only releases free heap pages; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
    Ok(Some(Trained {
        dir,
        generate_s,
        tune_s,
        train_s,
        hwm_generate,
        hwm_train,
        steps: steps.done.into_inner().unwrap_or_default(),
        model_bytes,
        _temporary: Some(temporary),
    }))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let trained = match &args.load {
        Some(root) => Trained { dir: format::resolve(root)?, ..Trained::default() },
        None => match generate_and_train(&args)? {
            Some(trained) => trained,
            None => return Ok(()),
        },
    };
    let Trained { dir, generate_s, tune_s, train_s, hwm_generate, hwm_train, steps, model_bytes, _temporary } = trained;
    let model_bytes = if args.load.is_some() { std::fs::read_dir(&dir)?.filter_map(|e| e.ok()?.metadata().ok()).map(|md| md.len()).sum() } else { model_bytes };
    let rss_before = status_mib("VmRSS:");
    // Reset the peak (VmHWM) to the current size, so the next reading is the load's peak.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let t = Instant::now();
    let mut m = format::load(&dir)?;
    let load_s = t.elapsed().as_secs_f64();
    if let Some(root) = &args.resave {
        let dir = format::save(&mut m, root, affinity_core::model::publish::Retention::default())?;
        eprintln!("loaded in {load_s:.2} s; published again as {}", dir.display());
        return Ok(());
    }
    let loaded_rss = status_mib("VmRSS:") - rss_before;
    let load_peak = status_mib("VmHWM:") - rss_before;
    // A hot reload: the next version loads while the live one still serves.
    let reload_peak = {
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let next = format::load(&dir)?;
        let peak = status_mib("VmHWM:") - rss_before;
        drop(next);
        peak
    };
    eprintln!("trained in {train_s:.1} s; {model_bytes} bytes on disk; loaded in {load_s:.2} s (+{loaded_rss:.0} MiB)");

    let exact = ServingSettings::from_params(&m.manifest().params).exact();
    if let Some(c) = m.calibrate_ef() {
        let at = |ef: usize| c.recall_at_10.iter().find(|x| x.0 == ef).map_or(f64::NAN, |x| x.1);
        eprintln!("calibration (the trainer's choice of ef): ef {} (index recall@10 {:.3}); ladder {:?}", c.ef_search, at(c.ef_search), c.recall_at_10);
    }
    m.ensure_indexes(&exact.ann());
    let users: Vec<String> = m.user_ids().iter().step_by((m.n_users() / args.queries.max(1)).max(1)).take(args.queries).cloned().collect();
    let category = m.items()[0].category.clone();
    let mut rows = Vec::new();
    for filtered in [false, true] {
        let query = |u: &String| {
            let mut q = RecommendQuery::for_user(u.clone(), 10);
            if filtered {
                q.rules = Rules { include_categories: vec![category.clone()], ..Rules::default() };
            }
            q
        };
        let t = Instant::now();
        let truth: Vec<HashSet<u32>> = users.iter().map(|u| m.recommend(&query(u), &exact).map(|r| r.items.iter().map(|s| s.item.0).collect()).unwrap_or_default()).collect();
        let exact_us = t.elapsed().as_secs_f64() * 1e6 / users.len().max(1) as f64;
        for &ef in &args.ef {
            let ann = ServingSettings { ef_search: ef, ..exact.ann() };
            let t = Instant::now();
            let got: Vec<HashSet<u32>> = users.iter().map(|u| m.recommend(&query(u), &ann).map(|r| r.items.iter().map(|s| s.item.0).collect()).unwrap_or_default()).collect();
            let ann_us = t.elapsed().as_secs_f64() * 1e6 / users.len().max(1) as f64;
            let (hit, all) = truth.iter().zip(&got).fold((0usize, 0usize), |(h, a), (t, g)| (h + t.intersection(g).count(), a + t.len()));
            rows.push(EfRow { ef, filtered, recall_at_10: hit as f64 / all.max(1) as f64, exact_us, ann_us, speedup: exact_us / ann_us });
        }
    }
    let report = Report {
        items: m.n_items(),
        users: m.n_users(),
        events: m.manifest().counts.events,
        generate_s,
        tune_s,
        train_s,
        steps,
        peak_rss_after_generate_mib: hwm_generate,
        peak_rss_after_train_mib: hwm_train,
        model_bytes,
        load_s,
        loaded_rss_mib: loaded_rss,
        load_peak_rss_mib: load_peak,
        reload_peak_rss_mib: reload_peak,
        rss_per_million_items_mib: loaded_rss / (m.n_items() as f64 / 1e6),
        ef: rows,
    };
    println!(
        "{} items · {} users · {} events: generate {:.1} s, tune {:.1} s, train {:.1} s (peak RSS {:.0} MiB), model {:.1} MiB on disk, load {:.2} s (+{:.0} MiB resident, peak +{:.0} MiB while loading, +{:.0} MiB while reloading beside it, {:.0} MiB per million items)",
        report.items,
        report.users,
        report.events,
        report.generate_s,
        report.tune_s,
        report.train_s,
        report.peak_rss_after_train_mib,
        report.model_bytes as f64 / 1048576.0,
        report.load_s,
        report.loaded_rss_mib,
        report.load_peak_rss_mib,
        report.reload_peak_rss_mib,
        report.rss_per_million_items_mib
    );
    println!("{:>5} {:>9} {:>10} {:>10} {:>10} {:>9}", "ef", "filtered", "recall@10", "exact µs", "ann µs", "speed-up");
    for r in &report.ef {
        println!("{:>5} {:>9} {:>10.4} {:>10.0} {:>10.0} {:>8.1}×", r.ef, r.filtered, r.recall_at_10, r.exact_us, r.ann_us, r.speedup);
    }
    if let Some(parent) = args.json.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)?;
    println!("json: {}", args.json.display());
    Ok(())
}

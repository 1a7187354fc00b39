//! Load generator: throughput and latency under concurrency, against the no-op that tonic
//! itself manages on the same machine at the same moment.
//!
//! Serves a model (MovieLens-100K trained with defaults, or `--model`) with the real
//! server code on a loopback port — in this process on its own runtime, or an external
//! server with `--addr` — and drives it with a tonic client:
//!
//! - **closed loop**: `--concurrency` callers over `--connections` HTTP/2 connections,
//!   each sending its next request as soon as the last one answers: the maximum
//!   sustainable rate;
//! - **open loop**: requests at a fixed `--rate` (default: half the closed loop's
//!   `Recommend` rate), each timed from when it was *due*, not when it went out, so a
//!   stall counts against every request it delayed (coordinated-omission correction);
//!
//! for each workload: the health `Check` (the no-op: same connections, concurrency and
//! server layers), `Recommend`, `SimilarItems`, and a mix (`--mix`, default 80% Recommend
//! / 20% SimilarItems). Users and items are drawn with popularity skew (Zipf over
//! activity rank, exponent `--zipf`). Each run warms up, then measures for `--seconds`.
//! Reports QPS, p50 / p90 / p99 / p99.9 / max and errors by status, every throughput also
//! as a ratio to `Check` in the same run; with `h2load` (Debian `nghttp2-client`) on the
//! PATH, the same `Check` and `Recommend` are also driven by it as an independent
//! generator. Prints a table and writes JSON; loopback only; stops by itself.
//!
//! ```text
//! cargo run --release -p affinity-benches --bin load
//! ```

// The allocator the server binary runs with (see `affinity-server`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use affinity_core::data::TimeKind;
use affinity_core::model::format;
use affinity_core::model::publish::Retention;
use affinity_core::params::TrainParams;
use affinity_core::train::{train, NoProgress};
use affinity_lab::import::{self, Source};
use affinity_service::client::{connect, wait_serving, ApiKey, Keyed};
use affinity_service::gate::keys::KeyStore;
use affinity_service::proto::recommend_request::Subject;
use affinity_service::proto::recommender_client::RecommenderClient;
use affinity_service::proto::{self, similar_items_request::Mode};
use affinity_service::server;
use affinity_service::state::{ServerState, SettingsOverrides};
use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use prost::Message;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tonic::service::interceptor::InterceptedService;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

#[derive(Parser, Debug)]
#[command(about = "Closed- and open-loop load against the server, with the health Check as the no-op")]
struct Args {
    /// MovieLens-100K folder (the default model is trained on it).
    #[arg(long, default_value = "../shared/datasets/movielens-100k")]
    dataset: PathBuf,
    /// Serve this model root or version instead of training one.
    #[arg(long, conflicts_with = "addr")]
    model: Option<PathBuf>,
    /// Drive a server already running at this address (loopback) instead of one in
    /// this process; users and items are then read from `--model-ids`.
    #[arg(long)]
    addr: Option<String>,
    /// Concurrent callers in the closed loop (and the most requests in flight in the
    /// open loop, beyond which requests count as dropped).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// HTTP/2 connections the callers share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Open-loop rate in requests/s (default: half of each workload's closed-loop rate,
    /// and Recommend's for the no-op).
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds measured per run.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seconds of warm-up before each run.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Which loops to run.
    #[arg(long, value_enum, default_value_t = Loops::Both)]
    loops: Loops,
    /// Which workloads to run, in this order (the no-op first, so ratios have it).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Workload::Check, Workload::Recommend, Workload::Similar, Workload::Mix])]
    workloads: Vec<Workload>,
    /// Share of Recommend in the mixed workload (the rest SimilarItems).
    #[arg(long, default_value_t = 0.8)]
    mix: f64,
    /// Zipf exponent of the user and item draws over activity rank (0: uniform).
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    /// Items per Recommend / SimilarItems answer.
    #[arg(long, default_value_t = 10)]
    k: u32,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Skip the h2load runs even when h2load is installed.
    #[arg(long)]
    no_h2load: bool,
    /// Worker threads of the load generator's runtime (default: one per core, as the
    /// server's).
    #[arg(long)]
    load_threads: Option<usize>,
    /// Stored users whose rankings the in-process server keeps between requests
    /// (default: the server's; 0 scores every request afresh).
    #[arg(long)]
    ranking_memo_users: Option<usize>,
    /// HNSW search list size for the in-process server (default: the model's own).
    #[arg(long)]
    ef_search: Option<usize>,
    /// Serve in-process with every operations layer on: an API key required (and sent by
    /// every caller), a concurrency limit of 1,024, the metrics endpoint, and JSON logs at
    /// info (written to a sink), so the run measures their cost.
    #[arg(long, conflicts_with = "addr")]
    operations: bool,
    /// API key every caller sends (for `--addr` servers that require one).
    #[arg(long)]
    api_key: Option<String>,
    /// Where to write the JSON results.
    #[arg(long, default_value = "benches/results/load.json")]
    json: PathBuf,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
enum Loops {
    Closed,
    Open,
    Both,
}

/// What one request is.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Serialize)]
enum Workload {
    Check,
    Recommend,
    Similar,
    Mix,
}

impl Workload {
    fn label(self) -> &'static str {
        match self {
            Workload::Check => "Check (no-op)",
            Workload::Recommend => "Recommend",
            Workload::Similar => "SimilarItems",
            Workload::Mix => "mix",
        }
    }
}

/// One measured run.
#[derive(Serialize, Debug)]
struct RunRow {
    generator: String,
    mode: String,
    workload: String,
    concurrency: usize,
    connections: usize,
    /// Offered rate (open loop).
    rate: Option<f64>,
    requests: u64,
    qps: f64,
    /// This run's QPS over the closed-loop Check's.
    ratio_to_check: Option<f64>,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    /// Errors by gRPC status (and `dropped` for open-loop requests never sent).
    errors: BTreeMap<String, u64>,
}

/// Draws ranks 0..n with probability ∝ 1 / (rank + 1)^s.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Zipf {
        let mut total = 0.0;
        let cdf = (0..n)
            .map(|r| {
                total += 1.0 / ((r + 1) as f64).powf(s);
                total
            })
            .collect::<Vec<_>>();
        Zipf { cdf: cdf.into_iter().map(|c| c / total).collect() }
    }

    fn draw(&self, rng: &mut impl Rng) -> usize {
        let x: f64 = rng.gen();
        self.cdf.partition_point(|&c| c < x).min(self.cdf.len() - 1)
    }
}

/// Users and items by activity, most active first, with their draws.
struct Population {
    users: Vec<String>,
    items: Vec<String>,
    user_draw: Zipf,
    item_draw: Zipf,
}

impl Population {
    fn new(users: Vec<String>, items: Vec<String>, s: f64) -> Population {
        let (user_draw, item_draw) = (Zipf::new(users.len(), s), Zipf::new(items.len(), s));
        Population { users, items, user_draw, item_draw }
    }
}

/// The clients of one connection.
#[derive(Clone)]
struct Clients {
    rec: RecommenderClient<Keyed>,
    health: HealthClient<Keyed>,
}

/// Sends one request of `workload` (a mix draws its kind), returning its status.
async fn send(c: &mut Clients, workload: Workload, pop: &Population, k: u32, mix: f64, rng: &mut impl Rng) -> Result<(), tonic::Code> {
    let kind = match workload {
        Workload::Mix if rng.gen_bool(mix.clamp(0.0, 1.0)) => Workload::Recommend,
        Workload::Mix => Workload::Similar,
        other => other,
    };
    let code = |s: tonic::Status| s.code();
    match kind {
        Workload::Check => c.health.check(HealthCheckRequest { service: String::new() }).await.map(drop).map_err(code),
        Workload::Recommend => {
            let user = pop.users[pop.user_draw.draw(rng)].clone();
            let req = proto::RecommendRequest { subject: Some(Subject::UserId(user)), k, ..Default::default() };
            c.rec.recommend(req).await.map(drop).map_err(code)
        }
        _ => {
            let item = pop.items[pop.item_draw.draw(rng)].clone();
            let req = proto::SimilarItemsRequest { item_id: item, k, mode: Mode::Blend as i32, rules: None };
            c.rec.similar_items(req).await.map(drop).map_err(code)
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1_000, 120_000_000_000, 3).expect("valid histogram bounds")
}

/// What a run collects.
struct Tally {
    hist: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally { hist: histogram(), errors: BTreeMap::new() }
    }

    fn record(&mut self, nanos: u64, outcome: Result<(), tonic::Code>) {
        let _ = self.hist.record(nanos.max(1_000));
        if let Err(code) = outcome {
            *self.errors.entry(format!("{code:?}")).or_default() += 1;
        }
    }

    fn merge(&mut self, other: Tally) {
        let _ = self.hist.add(&other.hist);
        for (code, n) in other.errors {
            *self.errors.entry(code).or_default() += n;
        }
    }
}

struct RunSpec<'a> {
    workload: Workload,
    clients: &'a [Clients],
    pop: &'a Arc<Population>,
    args: &'a Args,
}

fn row(spec: &RunSpec<'_>, mode: &str, rate: Option<f64>, tally: &Tally, wall: Duration) -> RunRow {
    let us = |v: u64| v as f64 / 1_000.0;
    let h = &tally.hist;
    RunRow {
        generator: "affinity-load".into(),
        mode: mode.into(),
        workload: spec.workload.label().into(),
        concurrency: spec.args.concurrency,
        connections: spec.clients.len(),
        rate,
        requests: h.len(),
        qps: h.len() as f64 / wall.as_secs_f64(),
        ratio_to_check: None,
        p50_us: us(h.value_at_quantile(0.50)),
        p90_us: us(h.value_at_quantile(0.90)),
        p99_us: us(h.value_at_quantile(0.99)),
        p999_us: us(h.value_at_quantile(0.999)),
        max_us: us(h.max()),
        errors: tally.errors.clone(),
    }
}

/// `concurrency` callers, each sending its next request when the last answers.
async fn closed_loop(spec: &RunSpec<'_>) -> Result<RunRow> {
    let args = spec.args;
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for n in 0..args.concurrency {
        let mut c = spec.clients[n % spec.clients.len()].clone();
        let (pop, measuring, stop) = (Arc::clone(spec.pop), Arc::clone(&measuring), Arc::clone(&stop));
        let (workload, k, mix) = (spec.workload, args.k, args.mix);
        let seed = args.seed + n as u64;
        tasks.push(tokio::spawn(async move {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut tally = Tally::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let outcome = send(&mut c, workload, &pop, k, mix, &mut rng).await;
                if measuring.load(Ordering::Relaxed) {
                    tally.record(t.elapsed().as_nanos() as u64, outcome);
                }
            }
            tally
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let wall = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut tally = Tally::new();
    for t in tasks {
        tally.merge(t.await?);
    }
    Ok(row(spec, "closed", None, &tally, wall))
}

/// Requests at a fixed rate, each timed from when it was due.
async fn open_loop(spec: &RunSpec<'_>, rate: f64) -> Result<RunRow> {
    let args = spec.args;
    let tally = Arc::new(Mutex::new(Tally::new()));
    let in_flight = Arc::new(AtomicU64::new(0));
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let warm = (args.warmup * rate) as u64;
    let total = warm + (args.seconds * rate) as u64;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
    // The schedule is kept by a thread of its own: the runtime's timer ticks once a
    // millisecond, which would release requests in bursts up to a millisecond after they
    // were due and count that wait as latency. A thread's sleep wakes within tens of
    // microseconds; it hands each request over when due.
    let (due_tx, mut due_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let pacer = std::thread::spawn(move || {
        let start = Instant::now();
        for n in 0..total {
            let due = start + interval.mul_f64(n as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if due_tx.send((n, due)).is_err() {
                break;
            }
        }
    });
    let mut measured_from = Instant::now();
    let mut dropped = 0u64;
    let mut handles = Vec::new();
    while let Some((n, due)) = due_rx.recv().await {
        if n == warm {
            measured_from = Instant::now();
        }
        if in_flight.load(Ordering::Relaxed) >= args.concurrency.max(1) as u64 * 16 {
            dropped += u64::from(n >= warm);
            continue;
        }
        let mut c = spec.clients[n as usize % spec.clients.len()].clone();
        let (pop, tally, in_flight) = (Arc::clone(spec.pop), Arc::clone(&tally), Arc::clone(&in_flight));
        let (workload, k, mix) = (spec.workload, args.k, args.mix);
        let mut req_rng = rand_chacha::ChaCha8Rng::seed_from_u64(rng.gen());
        in_flight.fetch_add(1, Ordering::Relaxed);
        handles.push(tokio::spawn(async move {
            let outcome = send(&mut c, workload, &pop, k, mix, &mut req_rng).await;
            let nanos = due.elapsed().as_nanos() as u64;
            in_flight.fetch_sub(1, Ordering::Relaxed);
            if n >= warm {
                tally.lock().unwrap_or_else(|p| p.into_inner()).record(nanos, outcome);
            }
        }));
        if handles.len() >= 4096 {
            handles.retain(|h| !h.is_finished());
        }
    }
    for h in handles {
        h.await?;
    }
    pacer.join().map_err(|_| anyhow::anyhow!("the pacing thread panicked"))?;
    let wall = measured_from.elapsed();
    let mut tally = std::mem::replace(&mut *tally.lock().unwrap_or_else(|p| p.into_inner()), Tally::new());
    if dropped > 0 {
        tally.errors.insert("dropped".into(), dropped);
    }
    Ok(row(spec, "open", Some(rate), &tally, wall))
}

/// A gRPC message as an HTTP/2 body: uncompressed flag, length, bytes.
fn grpc_frame(msg: &impl Message) -> Vec<u8> {
    let body = msg.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
    framed.extend_from_slice(&body);
    framed
}

/// Runs h2load against `path` posting `body` for `seconds`; parses its summary.
fn h2load(addr: &str, path: &str, body: &[u8], args: &Args, key: Option<&str>, work: &Path) -> Result<Option<RunRow>> {
    let file = work.join(format!("h2load-{}.bin", path.rsplit('/').next().unwrap_or("body")));
    std::fs::write(&file, body)?;
    let url = format!("{}{path}", addr.trim_end_matches('/'));
    let per_conn = args.concurrency.div_ceil(args.connections.max(1));
    let out = std::process::Command::new("h2load")
        .args(["-c", &args.connections.to_string(), "-m", &per_conn.to_string(), "-t", "1"])
        .args(["-D", &format!("{}", args.seconds.max(1.0) as u64), "--warm-up-time", &format!("{}", args.warmup.max(1.0) as u64)])
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .args(key.iter().flat_map(|k| ["-H".to_string(), format!("authorization: Bearer {k}")]))
        .arg("-d")
        .arg(&file)
        .arg(&url)
        .output()
        .context("cannot run h2load")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        bail!("h2load failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    // "finished in 10.00s, 36412.30 req/s, …" and "requests: N total, N started, N done, N succeeded, N failed, N errored"
    let rps = text
        .lines()
        .find(|l| l.starts_with("finished in"))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|s| s.trim_end_matches(" req/s").parse::<f64>().ok());
    let field = |line: &str, name: &str| -> Option<u64> {
        line.split(", ").find(|p| p.ends_with(name)).and_then(|p| p.split_whitespace().next()).and_then(|n| n.parse().ok())
    };
    let requests_line = text.lines().find(|l| l.starts_with("requests:")).unwrap_or("");
    let succeeded = field(requests_line, "succeeded").unwrap_or(0);
    let failed = field(requests_line, "failed").unwrap_or(0) + field(requests_line, "errored").unwrap_or(0);
    // "time for request:   min   max   mean   sd   +/- sd"
    let mean_us = text.lines().find(|l| l.trim_start().starts_with("time for request:")).and_then(|l| {
        let v: Vec<&str> = l.split_whitespace().collect();
        v.get(5).map(|m| parse_h2load_time(m))
    });
    let max_us = text.lines().find(|l| l.trim_start().starts_with("time for request:")).and_then(|l| {
        let v: Vec<&str> = l.split_whitespace().collect();
        v.get(4).map(|m| parse_h2load_time(m))
    });
    let Some(qps) = rps else { return Ok(None) };
    let mut errors = BTreeMap::new();
    if failed > 0 {
        errors.insert("failed".to_string(), failed);
    }
    Ok(Some(RunRow {
        generator: "h2load".into(),
        mode: "closed".into(),
        workload: if path.ends_with("Check") { Workload::Check.label() } else { Workload::Recommend.label() }.into(),
        concurrency: per_conn * args.connections.max(1),
        connections: args.connections,
        rate: None,
        requests: succeeded,
        qps,
        ratio_to_check: None,
        // h2load reports min / max / mean / sd, not percentiles: mean stands in p50's column.
        p50_us: mean_us.unwrap_or(f64::NAN),
        p90_us: f64::NAN,
        p99_us: f64::NAN,
        p999_us: f64::NAN,
        max_us: max_us.unwrap_or(f64::NAN),
        errors,
    }))
}

/// "1.23ms", "850us", "2.1s" → microseconds.
fn parse_h2load_time(s: &str) -> f64 {
    let (num, scale) = if let Some(v) = s.strip_suffix("us") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1_000.0)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1_000_000.0)
    } else {
        (s, 1.0)
    };
    num.parse::<f64>().map_or(f64::NAN, |v| v * scale)
}

fn print(rows: &[RunRow]) {
    println!(
        "{:<13} {:<6} {:<14} {:>5} {:>9} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}  errors",
        "generator", "mode", "workload", "conc", "rate", "req/s", "×Check", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "max µs"
    );
    for r in rows {
        let errors = if r.errors.is_empty() { "-".to_string() } else { r.errors.iter().map(|(c, n)| format!("{c}:{n}")).collect::<Vec<_>>().join(" ") };
        println!(
            "{:<13} {:<6} {:<14} {:>5} {:>9} {:>9.0} {:>7} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0}  {errors}",
            r.generator,
            r.mode,
            r.workload,
            r.concurrency,
            r.rate.map_or("-".to_string(), |x| format!("{x:.0}")),
            r.qps,
            r.ratio_to_check.map_or("-".to_string(), |x| format!("{:.0}%", x * 100.0)),
            r.p50_us,
            r.p90_us,
            r.p99_us,
            r.p999_us,
            r.max_us
        );
    }
}

/// The model to serve: `--model`, or MovieLens-100K trained with defaults under `work`.
fn model_root(args: &Args, work: &Path) -> Result<PathBuf> {
    if let Some(m) = &args.model {
        return Ok(m.clone());
    }
    let data = import::import(Source::MovieLens, &args.dataset).with_context(|| format!("cannot import {}", args.dataset.display()))?;
    eprintln!("training on {} MovieLens events …", data.events.len());
    let mut m = train(&data, TimeKind::Unix, &TrainParams::default(), &NoProgress);
    let root = work.join("model");
    format::save(&mut m, &root, Retention::default())?;
    Ok(root)
}

/// Users by history length and items by popularity, most active first.
fn population(root: &Path, zipf: f64) -> Result<Population> {
    let m = format::load(root)?;
    let mut users: Vec<(usize, String)> = m.user_ids().iter().enumerate().map(|(u, id)| (m.histories()[u].len(), id.clone())).collect();
    users.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let items: Vec<String> = m.popular_order().iter().filter(|&&i| m.has_collab(i)).map(|&i| m.item_id(i).to_string()).collect();
    Ok(Population::new(users.into_iter().map(|u| u.1).collect(), items, zipf))
}

/// The key callers send under `--operations`.
const OPERATIONS_KEY: &str = "load-bench-read-key-0123456789";

/// Server options with every operations layer on (see `--operations`); installs a JSON
/// log subscriber at info that writes to a sink.
fn operations_on(rt: &tokio::runtime::Runtime) -> Result<server::Options> {
    tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_env_filter(tracing_subscriber::EnvFilter::new("info,hnsw_rs=warn"))
        .with_writer(std::io::sink)
        .init();
    let keys = KeyStore::load(None, Some(format!("read {OPERATIONS_KEY}"))).map_err(anyhow::Error::msg)?;
    let metrics = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    Ok(server::Options {
        max_concurrent: 1024,
        request_timeout: Some(Duration::from_secs(30)),
        keys,
        metrics: Some(metrics),
        ..server::Options::default()
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    let work = tempfile::tempdir()?;
    let root = model_root(&args, work.path())?;
    let pop = Arc::new(population(&root, args.zipf)?);
    // The server on its own runtime (the machine's cores, as in production); the load on
    // another, so neither starves the other's scheduler.
    let server_rt = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("server").build()?;
    let (addr, stop) = match &args.addr {
        Some(a) => (a.clone(), None),
        None => {
            let listener = server_rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
            let addr = format!("http://{}", listener.local_addr()?);
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            // The server binary's defaults (new-arrival slots, the rankings memo) but
            // for what the flags set.
            let serving = affinity_service::config::Serving::default();
            let overrides = SettingsOverrides {
                ef_search: args.ef_search,
                explore_share: Some(serving.explore_share as f32),
                ranking_memo_users: Some(args.ranking_memo_users.unwrap_or(serving.ranking_memo_users)),
                ..SettingsOverrides::default()
            };
            let state = ServerState::new(root.clone(), overrides);
            let options = if args.operations {
                operations_on(&server_rt)?
            } else {
                server::Options::default()
            };
            let handle = server_rt.spawn(server::run_with(listener, state, options, async {
                let _ = stopped.await;
            }));
            (addr, Some((stop, handle)))
        }
    };
    let api_key = if args.operations { Some(OPERATIONS_KEY.to_string()) } else { args.api_key.clone() };
    let mut load_rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.load_threads {
        load_rt.worker_threads(n.max(1));
    }
    let load_rt = load_rt.enable_all().thread_name("load").build()?;
    let rows = load_rt.block_on(async {
        wait_serving(&addr, Duration::from_secs(120)).await?;
        let mut clients = Vec::new();
        for _ in 0..args.connections.max(1) {
            let ch = connect(&addr).await?;
            let key = ApiKey::new(api_key.as_deref())?;
            clients.push(Clients {
                rec: RecommenderClient::new(InterceptedService::new(ch.clone(), key.clone())),
                health: HealthClient::new(InterceptedService::new(ch, key)),
            });
        }
        let mut rows: Vec<RunRow> = Vec::new();
        let workloads = args.workloads.clone();
        let mut max: BTreeMap<&'static str, f64> = BTreeMap::new();
        if args.loops != Loops::Open {
            for &w in &workloads {
                let spec = RunSpec { workload: w, clients: &clients, pop: &pop, args: &args };
                let r = closed_loop(&spec).await?;
                eprintln!("closed {:<14} {:>8.0} req/s", w.label(), r.qps);
                max.insert(w.label(), r.qps);
                rows.push(r);
            }
        }
        if args.loops != Loops::Closed {
            for &w in &workloads {
                // Half of each workload's own maximum; the no-op at Recommend's, so the
                // two latencies compare at one rate.
                let own = if w == Workload::Check { max.get(Workload::Recommend.label()).or(max.get(w.label())) } else { max.get(w.label()) };
                let rate = match (args.rate, own) {
                    (Some(r), _) => r,
                    (None, Some(max)) => (max / 2.0).max(1.0),
                    (None, None) => bail!("--loops open needs --rate (or run the closed loop first)"),
                };
                let spec = RunSpec { workload: w, clients: &clients, pop: &pop, args: &args };
                let r = open_loop(&spec, rate).await?;
                eprintln!("open   {:<14} {:>8.0} req/s at {rate:.0} offered, p99 {:.0} µs", w.label(), r.qps, r.p99_us);
                rows.push(r);
            }
        }
        Ok::<_, anyhow::Error>(rows)
    })?;
    let mut rows = rows;
    if !args.no_h2load && std::process::Command::new("h2load").arg("--version").output().is_ok() {
        let user = pop.users[0].clone();
        let check = grpc_frame(&HealthCheckRequest { service: String::new() });
        let rec = grpc_frame(&proto::RecommendRequest { subject: Some(Subject::UserId(user)), k: args.k, ..Default::default() });
        for (path, body) in [("/grpc.health.v1.Health/Check", check), ("/affinity.v1.Recommender/Recommend", rec)] {
            match h2load(&addr, path, &body, &args, api_key.as_deref(), work.path()) {
                Ok(Some(r)) => rows.push(r),
                Ok(None) => eprintln!("h2load gave no summary for {path}"),
                Err(e) => eprintln!("h2load: {e:#}"),
            }
        }
    } else {
        eprintln!("h2load not found (or --no-h2load): no independent-generator rows");
    }
    for generator in ["affinity-load", "h2load"] {
        let check = rows.iter().find(|r| r.generator == generator && r.mode == "closed" && r.workload == Workload::Check.label()).map(|r| r.qps);
        if let Some(check) = check {
            for r in rows.iter_mut().filter(|r| r.generator == generator) {
                r.ratio_to_check = Some(r.qps / check);
            }
        }
    }
    if let Some((stop, handle)) = stop {
        let _ = stop.send(());
        server_rt.block_on(handle)??;
    }
    println!(
        "{} · {} users, {} items drawn with Zipf {} · k {} · {} s measured after {} s warm-up per run",
        root.display(),
        pop.users.len(),
        pop.items.len(),
        args.zipf,
        args.k,
        args.seconds,
        args.warmup
    );
    print(&rows);
    if let Some(parent) = args.json.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&rows)?)?;
    println!("json: {}", args.json.display());
    Ok(())
}

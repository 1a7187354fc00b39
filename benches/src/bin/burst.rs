//! What the costliest allowed request costs, and what is left of it once the client has
//! given up.
//!
//! Trains a model on a synthetic catalogue large enough that one request is expensive,
//! serves it in this process with exact scoring (every item scored, the worst case) on an
//! ephemeral loopback port, and sends the costliest `Recommend` the request limits allow:
//! an anonymous session of 1,000 recent items, 10,000 excluded ids, `k` = 1,000, seen
//! items allowed. It measures
//!
//! 1. the request's own cost, with no deadline (wall time and CPU-seconds);
//! 2. one such request with a deadline well below that cost: how long after the deadline
//!    the process still burns CPU (process CPU clock sampled every 5 ms);
//! 3. a burst of 20 at once with the same deadline: resident memory before, at its peak,
//!    and 5 s later (from `/proc/self/status`).
//!
//! Prints a table and writes JSON. Linux only (it reads `/proc`). Run it from a release
//! build:
//!
//! ```text
//! cargo run --release -p affinity-benches --bin burst
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use affinity_core::data::{Dataset, Event, EventKind, TimeKind};
use affinity_core::params::TrainParams;
use affinity_core::train::{train, NoProgress};
use affinity_service::client::wait_serving;
use affinity_service::proto::recommend_request::Subject;
use affinity_service::proto::recommender_client::RecommenderClient;
use affinity_service::proto::{self, RecentItems};
use affinity_service::server;
use affinity_service::state::{Retrieval, ServerState, SettingsOverrides};
use anyhow::{Context, Result};
use clap::Parser;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tonic::transport::Channel;

#[derive(Parser, Debug)]
#[command(about = "Cost of the costliest allowed request, and what a client deadline leaves of it")]
struct Args {
    /// Items in the synthetic catalogue.
    #[arg(long, default_value_t = 2_000_000)]
    items: usize,
    /// Users in the synthetic event log (each with `--events-per-user` events).
    #[arg(long, default_value_t = 200_000)]
    users: usize,
    #[arg(long, default_value_t = 12)]
    events_per_user: usize,
    /// Embedding size of the trained model.
    #[arg(long, default_value_t = 32)]
    factors: usize,
    /// Client deadline in ms; 0 picks a third of the request's measured cost.
    #[arg(long, default_value_t = 0)]
    deadline_ms: u64,
    /// Requests in the burst.
    #[arg(long, default_value_t = 20)]
    burst: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Where to write the JSON results.
    #[arg(long, default_value = "benches/results/burst.json")]
    json: PathBuf,
}

#[derive(Serialize)]
struct Report {
    items: usize,
    users: usize,
    events: usize,
    factors: usize,
    train_seconds: f64,
    request_wall_ms: f64,
    request_cpu_ms: f64,
    deadline_ms: u64,
    deadline_status: String,
    cpu_after_deadline_ms: f64,
    burst: usize,
    burst_statuses: Vec<String>,
    rss_before_mb: f64,
    rss_peak_mb: f64,
    rss_after_5s_mb: f64,
    rss_ratio_after_5s: f64,
}

/// CPU time this process has used, all threads (`CLOCK_PROCESS_CPUTIME_ID`: exact, not
/// the 10 ms ticks of `/proc/self/stat`).
fn cpu_time() -> Result<Duration> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    anyhow::ensure!(rc == 0, "clock_gettime failed: {}", std::io::Error::last_os_error());
    Ok(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// Resident memory of this process in MiB, from `/proc/self/status`.
fn rss_mb() -> Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    let kb: f64 = line.split_whitespace().nth(1).context("odd VmRSS")?.parse()?;
    Ok(kb / 1024.0)
}

/// A log where item popularity falls off as a power law, as in real shops.
fn synthetic(args: &Args) -> Dataset {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
    let mut events = Vec::with_capacity(args.users * args.events_per_user);
    // Every item appears at least once, so the catalogue really has `items` scored items.
    for i in 0..args.items {
        events.push(Event::new(format!("u{}", i % args.users), format!("i{i}"), EventKind::View, Some(i as i64)));
    }
    for u in 0..args.users {
        for e in 0..args.events_per_user {
            let x: f64 = rng.gen();
            let item = ((args.items as f64) * x.powi(3)) as usize;
            events.push(Event::new(format!("u{u}"), format!("i{item}"), EventKind::View, Some((args.items + e) as i64)));
        }
    }
    Dataset { events, ..Default::default() }
}

fn costliest(args: &Args) -> proto::RecommendRequest {
    let step = (args.items / 11_000).max(1);
    proto::RecommendRequest {
        subject: Some(Subject::RecentItems(RecentItems {
            item_ids: (0..1_000).map(|n| format!("i{}", n * step)).collect(),
        })),
        k: 1_000,
        exclude_seen: Some(false),
        exclude_item_ids: (1_000..11_000).map(|n| format!("i{}", n * step)).collect(),
        category: None,
        repeat_policy: 0,
        rules: None,
        attributes: None,
        social: None,
        from_contacts: false,
    }
}

async fn send(channel: Channel, req: proto::RecommendRequest, deadline: Option<Duration>) -> String {
    let mut request = tonic::Request::new(req);
    if let Some(d) = deadline {
        request.set_timeout(d);
    }
    match RecommenderClient::new(channel).recommend(request).await {
        Ok(r) => format!("OK ({} items)", r.into_inner().items.len()),
        Err(s) => format!("{:?}", s.code()),
    }
}

/// Samples process CPU every 5 ms from `from` on; returns how long after `from` the
/// process last used CPU faster than a tenth of a core (over a 50 ms window), after
/// watching `watch`.
async fn cpu_busy_after(from: Instant, watch: Duration) -> Result<Duration> {
    let mut samples = Vec::new();
    while from.elapsed() < watch {
        samples.push((from.elapsed(), cpu_time()?));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut last_busy = Duration::ZERO;
    for (n, &(t, cpu)) in samples.iter().enumerate() {
        if let Some(&(t0, cpu0)) = samples[..n].iter().rev().find(|(t0, _)| t - *t0 >= Duration::from_millis(50)) {
            let rate = (cpu - cpu0).as_secs_f64() / (t - t0).as_secs_f64();
            if rate > 0.1 {
                last_busy = t;
            }
        }
    }
    Ok(last_busy)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let data = synthetic(&args);
    let mut params = TrainParams::default();
    params.als.factors = args.factors;
    let t = Instant::now();
    let model = train(&data, TimeKind::Unix, &params, &NoProgress);
    let train_seconds = t.elapsed().as_secs_f64();
    let (n_items, n_events) = (model.n_items(), data.events.len());
    drop(data);
    eprintln!("trained {n_items} items in {train_seconds:.1} s");

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(async {
        let overrides = SettingsOverrides { retrieval: Some(Retrieval::Exact), ..Default::default() };
        let state = ServerState::with_model(model, overrides);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server::run(listener, state, async {
            let _ = stopped.await;
        }));
        let channel = wait_serving(&addr, Duration::from_secs(60)).await?;
        let req = costliest(&args);

        // 1. The request's own cost (after one warm-up).
        send(channel.clone(), req.clone(), None).await;
        let (t, cpu) = (Instant::now(), cpu_time()?);
        let status = send(channel.clone(), req.clone(), None).await;
        let (request_wall, request_cpu) = (t.elapsed(), cpu_time()? - cpu);
        anyhow::ensure!(status.starts_with("OK"), "the costliest request failed: {status}");
        let deadline = match args.deadline_ms {
            0 => (request_wall / 3).max(Duration::from_millis(20)),
            ms => Duration::from_millis(ms),
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_before = rss_mb()?;

        // 2. One request that outlives its deadline.
        let start = Instant::now();
        let deadline_status = send(channel.clone(), req.clone(), Some(deadline)).await;
        let busy = cpu_busy_after(start, deadline + Duration::from_secs(2).max(request_wall * 2)).await?;
        let cpu_after_deadline = busy.saturating_sub(deadline);

        // 3. A burst of them at once, then memory over the next 5 s.
        let calls: Vec<_> = (0..args.burst).map(|_| tokio::spawn(send(channel.clone(), req.clone(), Some(deadline)))).collect();
        let mut rss_peak = rss_mb()?;
        let mut burst_statuses = Vec::new();
        for c in calls {
            burst_statuses.push(c.await?);
            rss_peak = rss_peak.max(rss_mb()?);
        }
        let done = Instant::now();
        while done.elapsed() < Duration::from_secs(5) {
            rss_peak = rss_peak.max(rss_mb()?);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let rss_after = rss_mb()?;

        let _ = stop.send(());
        serving.await??;
        anyhow::Ok(Report {
            items: n_items,
            users: args.users,
            events: n_events,
            factors: args.factors,
            train_seconds,
            request_wall_ms: request_wall.as_secs_f64() * 1e3,
            request_cpu_ms: request_cpu.as_secs_f64() * 1e3,
            deadline_ms: deadline.as_millis() as u64,
            deadline_status,
            cpu_after_deadline_ms: cpu_after_deadline.as_secs_f64() * 1e3,
            burst: args.burst,
            burst_statuses,
            rss_before_mb: rss_before,
            rss_peak_mb: rss_peak,
            rss_after_5s_mb: rss_after,
            rss_ratio_after_5s: rss_after / rss_before,
        })
    })?;

    println!(
        "{} items · {} users · {} events · {} factors · exact scoring · release: {}",
        report.items,
        report.users,
        report.events,
        report.factors,
        !cfg!(debug_assertions)
    );
    println!("{:<44} {:>12}", "measure", "value");
    let rows = [
        ("costliest request, wall ms", format!("{:.0}", report.request_wall_ms)),
        ("costliest request, CPU ms", format!("{:.0}", report.request_cpu_ms)),
        ("client deadline ms", report.deadline_ms.to_string()),
        ("status at the deadline", report.deadline_status.clone()),
        ("CPU still busy after the deadline, ms", format!("{:.0}", report.cpu_after_deadline_ms)),
        ("burst size", report.burst.to_string()),
        ("RSS before the burst, MiB", format!("{:.0}", report.rss_before_mb)),
        ("RSS peak, MiB", format!("{:.0}", report.rss_peak_mb)),
        ("RSS 5 s after the burst, MiB", format!("{:.0}", report.rss_after_5s_mb)),
        ("RSS after / before", format!("{:.3}", report.rss_ratio_after_5s)),
    ];
    for (k, v) in rows {
        println!("{k:<44} {v:>12}");
    }
    if let Some(parent) = args.json.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)?;
    println!("json: {}", args.json.display());
    Ok(())
}

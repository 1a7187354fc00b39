//! Ingest throughput and acknowledgement latency, with the event log on this disk.
//!
//! Serves the demo model with the real server code on a loopback port, its event log in
//! `benches/.work/ingest/` (the repository's disk, not tmpfs), and measures:
//!
//! 1. the disk's own `write + fdatasync` latency (what every acknowledgement waits for
//!    at least once);
//! 2. for batches of 1 and 100 events and 1 and 64 concurrent producers, sustained
//!    events/s and the acknowledgement latency (send → durable reply) over `--seconds`,
//!    each producer sending its next batch as soon as the last is acknowledged (closed
//!    loop: the server's saturation throughput; with 64 producers the latency is mostly
//!    queueing, by Little's law producers × batch / throughput);
//! 3. the same 64 producers at a fixed offered rate (`--paced-rate`, open loop: batches
//!    leave on schedule whether or not earlier ones were answered, and latency counts from
//!    the scheduled send, so a server falling behind shows in it) — the latency a
//!    storefront sending that many events a second sees — first on an empty live state,
//!    and again last, on the ~640,000 users the saturation runs leave;
//! 4. the live state's memory after all runs: users, events, the estimate `ModelInfo`
//!    reports, and bytes per user;
//! 5. the event-to-answer delay: an ingested view acknowledged → the next `Recommend`
//!    for that user, which must already reflect it (checked: the viewed item is gone
//!    from the list and the list is personalised).
//!
//! Prints a table and writes JSON. Run it from a release build:
//!
//! ```text
//! cargo run --release -p affinity-benches --bin ingest
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use affinity_service::client::wait_serving;
use affinity_service::proto::recommend_request::Subject;
use affinity_service::proto::recommender_client::RecommenderClient;
use affinity_service::proto::{self, IngestEvent};
use affinity_service::state::{ServerConfig, ServerState};
use affinity_service::server;
use anyhow::{Context, Result};
use clap::Parser;
use hdrhistogram::Histogram;
use serde::Serialize;
use tonic::transport::Channel;

#[derive(Parser, Debug)]
#[command(about = "Ingest throughput, acknowledgement latency and event-to-answer delay")]
struct Args {
    /// Seconds per (batch, producers) run.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Working directory for the model and the event log (on the disk to measure).
    #[arg(long, default_value = "benches/.work/ingest")]
    work: PathBuf,
    /// Events per second offered by the paced run (64 producers, batches of 100).
    #[arg(long, default_value_t = 100_000.0)]
    paced_rate: f64,
    /// Where to write the JSON results.
    #[arg(long, default_value = "benches/results/ingest.json")]
    json: PathBuf,
}

#[derive(Serialize)]
struct Run {
    batch: usize,
    producers: usize,
    /// Events per second offered (paced runs); absent: closed loop.
    offered_events_per_second: Option<f64>,
    events: u64,
    events_per_second: f64,
    ack_p50_ms: f64,
    ack_p99_ms: f64,
    ack_max_ms: f64,
}

#[derive(Serialize)]
struct Report {
    disk_fsync_p50_ms: f64,
    disk_fsync_p99_ms: f64,
    runs: Vec<Run>,
    log_syncs: u64,
    log_events: u64,
    answer_after_ack_p50_ms: f64,
    answer_after_ack_p99_ms: f64,
    live_users: usize,
    live_events: usize,
    live_bytes_estimate: usize,
    live_bytes_per_user: f64,
    process_rss_growth_bytes: usize,
}

/// This process's resident memory in bytes (Linux), for a cross-check of the live
/// state's own estimate.
fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1e6
}

/// `write 4 KiB + fdatasync` latency of a file in `dir`.
fn disk_fsync(dir: &Path) -> Result<Histogram<u64>> {
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path)?;
    let mut h = Histogram::<u64>::new(3)?;
    let block = [7u8; 4096];
    for _ in 0..300 {
        let t = Instant::now();
        f.write_all(&block)?;
        f.sync_data()?;
        h.record(t.elapsed().as_nanos() as u64)?;
    }
    std::fs::remove_file(&path)?;
    Ok(h)
}

fn events(producer: usize, n: u64, batch: usize) -> proto::IngestEventsRequest {
    proto::IngestEventsRequest {
        events: (0..batch)
            .map(|k| IngestEvent {
                user_id: format!("bench-{producer}-{}", (n as usize * batch + k) % 5_000),
                item_id: format!("sku-{:04}", (n as usize * 31 + k * 7) % 400),
                event: "view".into(),
                ..Default::default()
            })
            .collect(),
    }
}

async fn run(channel: &Channel, batch: usize, producers: usize, seconds: f64) -> Result<Run> {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let tasks: Vec<Producer> = (0..producers)
        .map(|p| {
            let mut c = RecommenderClient::new(channel.clone());
            tokio::spawn(async move {
                let mut h = Histogram::<u64>::new(3)?;
                let mut sent = 0u64;
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let req = events(p, n, batch);
                    let t = Instant::now();
                    let r = c.ingest_events(req).await?.into_inner();
                    h.record(t.elapsed().as_nanos() as u64)?;
                    sent += u64::from(r.stored);
                    n += 1;
                }
                anyhow::Ok((h, sent))
            })
        })
        .collect();
    collect(tasks, Instant::now(), batch, producers, None).await
}

type Producer = tokio::task::JoinHandle<Result<(Histogram<u64>, u64)>>;

/// Waits for every producer and sums their latencies and counts into a run's figures;
/// throughput counts from `started`.
async fn collect(tasks: Vec<Producer>, started: Instant, batch: usize, producers: usize, offered: Option<f64>) -> Result<Run> {
    let mut all = Histogram::<u64>::new(3)?;
    let mut total = 0;
    for t in tasks {
        let (h, sent) = t.await??;
        all.add(&h)?;
        total += sent;
    }
    let wall = started.elapsed().as_secs_f64();
    Ok(Run {
        batch,
        producers,
        offered_events_per_second: offered,
        events: total,
        events_per_second: total as f64 / wall,
        ack_p50_ms: ms(&all, 0.5),
        ack_p99_ms: ms(&all, 0.99),
        ack_max_ms: all.max() as f64 / 1e6,
    })
}

/// `producers` tasks each sending batches on a fixed schedule (`rate` events/s in all),
/// latency measured from each batch's scheduled time.
async fn run_paced(channel: &Channel, batch: usize, producers: usize, rate: f64, seconds: f64) -> Result<Run> {
    let interval = Duration::from_secs_f64(batch as f64 * producers as f64 / rate);
    let start = Instant::now() + Duration::from_millis(50);
    let count = (seconds / interval.as_secs_f64()) as u64;
    let tasks: Vec<Producer> = (0..producers)
        .map(|p| {
            let c = RecommenderClient::new(channel.clone());
            // Producers start spread over one interval.
            let offset = interval.mul_f64(p as f64 / producers as f64);
            tokio::spawn(async move {
                let mut inflight = tokio::task::JoinSet::new();
                for n in 0..count {
                    let due = start + offset + interval * n as u32;
                    tokio::time::sleep_until(due.into()).await;
                    let (mut c, req) = (c.clone(), events(p + 1000, n, batch));
                    inflight.spawn(async move {
                        let r = c.ingest_events(req).await?.into_inner();
                        anyhow::Ok((due.elapsed().as_nanos() as u64, u64::from(r.stored)))
                    });
                }
                let mut h = Histogram::<u64>::new(3)?;
                let mut sent = 0;
                while let Some(done) = inflight.join_next().await {
                    let (latency, stored) = done??;
                    h.record(latency)?;
                    sent += stored;
                }
                anyhow::Ok((h, sent))
            })
        })
        .collect();
    collect(tasks, start, batch, producers, Some(rate)).await
}

/// Ingest one view for a fresh user, then time the next `Recommend` and check it
/// reflects the view.
async fn answer_after_ack(channel: &Channel, rounds: usize) -> Result<Histogram<u64>> {
    let mut c = RecommenderClient::new(channel.clone());
    let mut h = Histogram::<u64>::new(3)?;
    for n in 0..rounds {
        let user = format!("fresh-{n}");
        let item = format!("sku-{:04}", (n * 13) % 400);
        let batch = proto::IngestEventsRequest {
            events: vec![IngestEvent {
                user_id: user.clone(),
                item_id: item.clone(),
                event: "view".into(),
                ..Default::default()
            }],
        };
        c.ingest_events(batch).await?;
        let t = Instant::now();
        let r = c
            .recommend(proto::RecommendRequest {
                subject: Some(Subject::UserId(user)),
                k: 10,
                ..Default::default()
            })
            .await?
            .into_inner();
        h.record(t.elapsed().as_nanos() as u64)?;
        let personal = r.items.first().and_then(|i| i.reason.as_ref()).map(|r| r.kind) == Some(proto::reason::Kind::Personalized as i32);
        anyhow::ensure!(personal && r.items.iter().all(|i| i.item_id != item), "the answer after the ack does not reflect the event");
    }
    Ok(h)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let root = affinity_benches::demo_root_without_events(&args.work)?;
    let fsync = disk_fsync(&args.work)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(async {
        let config = ServerConfig {
            events_dir: Some(root.join("events")),
            ..ServerConfig::default()
        };
        let state = ServerState::configured(root.clone(), config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server::run(listener, Arc::clone(&state), async {
            let _ = stopped.await;
        }));
        // SERVING is reported once the model is loaded and the event log is open.
        let channel = wait_serving(&addr, Duration::from_secs(120)).await?;
        let rss_before = rss_bytes();
        let mut runs = Vec::new();
        // Paced on an empty live state, then (last) on the one the saturation runs leave.
        let r = run_paced(&channel, 100, 64, args.paced_rate, args.seconds).await?;
        eprintln!("batch 100, 64 producers paced at {:.0} events/s, fresh live state: ack p99 {:.2} ms", args.paced_rate, r.ack_p99_ms);
        runs.push(r);
        for (batch, producers) in [(1, 1), (1, 64), (100, 1), (100, 64)] {
            let r = run(&channel, batch, producers, args.seconds).await?;
            eprintln!("batch {batch}, {producers} producer(s): {:.0} events/s", r.events_per_second);
            runs.push(r);
        }
        let r = run_paced(&channel, 100, 64, args.paced_rate, args.seconds).await?;
        eprintln!("batch 100, 64 producers paced at {:.0} events/s, after the saturation runs: ack p99 {:.2} ms", args.paced_rate, r.ack_p99_ms);
        runs.push(r);
        let answer = answer_after_ack(&channel, 300).await?;
        let metrics = state.ingest().map(|i| i.metrics()).map_err(|e| anyhow::anyhow!("{e}"))?;
        let live = state.users().stats();
        let rss_growth = rss_bytes().saturating_sub(rss_before);
        let _ = stop.send(());
        serving.await??;
        anyhow::Ok(Report {
            disk_fsync_p50_ms: ms(&fsync, 0.5),
            disk_fsync_p99_ms: ms(&fsync, 0.99),
            runs,
            log_syncs: metrics.syncs,
            log_events: metrics.appended,
            answer_after_ack_p50_ms: ms(&answer, 0.5),
            answer_after_ack_p99_ms: ms(&answer, 0.99),
            live_users: live.users,
            live_events: live.events,
            live_bytes_estimate: live.bytes,
            live_bytes_per_user: live.bytes as f64 / live.users.max(1) as f64,
            process_rss_growth_bytes: rss_growth,
        })
    })?;
    println!(
        "event log on {} · disk write+fdatasync p50 {:.2} ms, p99 {:.2} ms · {} syncs for {} events",
        args.work.display(),
        report.disk_fsync_p50_ms,
        report.disk_fsync_p99_ms,
        report.log_syncs,
        report.log_events
    );
    println!("{:>6} {:>10} {:>10} {:>12} {:>12} {:>12} {:>12}", "batch", "producers", "offered", "events/s", "ack p50 ms", "ack p99 ms", "ack max ms");
    for r in &report.runs {
        let offered = r.offered_events_per_second.map_or("max".to_string(), |o| format!("{o:.0}"));
        println!(
            "{:>6} {:>10} {:>10} {:>12.0} {:>12.2} {:>12.2} {:>12.2}",
            r.batch, r.producers, offered, r.events_per_second, r.ack_p50_ms, r.ack_p99_ms, r.ack_max_ms
        );
    }
    println!(
        "live state after the runs: {} users, {} events, estimated {:.1} MB ({:.0} bytes per user, at most {} events each); the process grew {:.1} MB over the runs (clients, buffers and allocator slack included)",
        report.live_users,
        report.live_events,
        report.live_bytes_estimate as f64 / 1e6,
        report.live_bytes_per_user,
        affinity_service::live::LiveLimits::default().per_user,
        report.process_rss_growth_bytes as f64 / 1e6
    );
    println!(
        "event → answer: the Recommend right after an acknowledged view reflects it; its latency p50 {:.2} ms, p99 {:.2} ms",
        report.answer_after_ack_p50_ms, report.answer_after_ack_p99_ms
    );
    if let Some(parent) = args.json.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?).with_context(|| format!("cannot write {}", args.json.display()))?;
    println!("json: {}", args.json.display());
    Ok(())
}

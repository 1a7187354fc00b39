//! Acknowledged means durable: SIGKILL the real server while producers ingest, and count
//! acknowledged events missing from its log.
//!
//! Each round starts `affinity-server` (from `target/release/`, so build it first) on the
//! demo model with its event log in `benches/.work/crash/`, runs producers that send
//! batches with unique event ids and record every acknowledged one, kills the server
//! with SIGKILL at a seeded random moment, then reads the log as the trainer does
//! (`affinity_eventlog::read_dir`) and counts acknowledged ids that are not there. The
//! next round restarts the server on the same log, so each round also checks that a
//! killed log opens again (torn tail cut) and keeps numbering. Prints a table and writes
//! JSON.
//!
//! ```text
//! cargo build --release --bin affinity-server && cargo run --release -p affinity-benches --bin crash
//! ```

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use affinity_service::client::wait_serving;
use affinity_service::proto::recommender_client::RecommenderClient;
use affinity_service::proto::{self, IngestEvent};
use anyhow::{Context, Result};
use clap::Parser;
use rand::{Rng, SeedableRng};
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(about = "SIGKILL the server under ingest; count acknowledged events lost")]
struct Args {
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Concurrent producers per round.
    #[arg(long, default_value_t = 8)]
    producers: usize,
    /// Events per batch.
    #[arg(long, default_value_t = 10)]
    batch: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, default_value = "benches/.work/crash")]
    work: PathBuf,
    #[arg(long, default_value = "target/release/affinity-server")]
    server: PathBuf,
    #[arg(long, default_value = "benches/results/crash.json")]
    json: PathBuf,
}

#[derive(Serialize)]
struct Round {
    killed_after_ms: u64,
    acknowledged: usize,
    lost: usize,
    in_log: usize,
}

async fn produce(addr: String, producer: usize, round: usize, batch: usize) -> Vec<String> {
    let Ok(mut c) = RecommenderClient::connect(addr).await else { return Vec::new() };
    let mut acked = Vec::new();
    for n in 0.. {
        let ids: Vec<String> = (0..batch).map(|k| format!("r{round}-p{producer}-b{n}-e{k}")).collect();
        let req = proto::IngestEventsRequest {
            events: ids
                .iter()
                .map(|id| IngestEvent {
                    user_id: format!("crash-{producer}"),
                    item_id: format!("sku-{:04}", n % 400),
                    event: "view".into(),
                    event_id: Some(id.clone()),
                    ..Default::default()
                })
                .collect(),
        };
        match c.ingest_events(req).await {
            Ok(_) => acked.extend(ids),
            Err(_) => break,
        }
    }
    acked
}

async fn round(args: &Args, root: &std::path::Path, n: usize, kill_after: Duration) -> Result<Round> {
    let mut child = Command::new(&args.server)
        .args(["--listen", "127.0.0.1:0", "--model"])
        .arg(root)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {} (build it first)", args.server.display()))?;
    let mut out = BufReader::new(child.stdout.take().context("no stdout")?);
    let addr = loop {
        let mut line = String::new();
        anyhow::ensure!(out.read_line(&mut line)? > 0, "the server exited before listening");
        if let Some(a) = line.trim().strip_prefix("listening on ") {
            break format!("http://{a}");
        }
    };
    // SERVING is reported once the model is loaded and the event log is open.
    wait_serving(&addr, Duration::from_secs(60)).await?;
    let producers: Vec<_> = (0..args.producers).map(|p| tokio::spawn(produce(addr.clone(), p, n, args.batch))).collect();
    tokio::time::sleep(kill_after).await;
    child.kill()?; // SIGKILL
    child.wait()?;
    let mut acked = Vec::new();
    for p in producers {
        acked.extend(p.await?);
    }
    let in_log: HashSet<String> = affinity_eventlog::read_dir(&root.join("events"), 1)?
        .into_iter()
        .filter_map(|r| r.entry.into_event().and_then(|e| e.event_id))
        .collect();
    Ok(Round {
        killed_after_ms: kill_after.as_millis() as u64,
        acknowledged: acked.len(),
        lost: acked.iter().filter(|id| !in_log.contains(*id)).count(),
        in_log: in_log.len(),
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    let root = affinity_benches::demo_root_without_events(&args.work)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut rounds = Vec::new();
    for n in 0..args.rounds {
        let kill_after = Duration::from_millis(rng.gen_range(50..800));
        let r = runtime.block_on(round(&args, &root, n, kill_after))?;
        eprintln!("round {n}: killed after {} ms, {} acknowledged, {} lost", r.killed_after_ms, r.acknowledged, r.lost);
        rounds.push(r);
    }
    let acked: usize = rounds.iter().map(|r| r.acknowledged).sum();
    let lost: usize = rounds.iter().map(|r| r.lost).sum();
    println!("{:>6} {:>10} {:>13} {:>6} {:>12}", "round", "killed ms", "acknowledged", "lost", "log events");
    for (n, r) in rounds.iter().enumerate() {
        println!("{n:>6} {:>10} {:>13} {:>6} {:>12}", r.killed_after_ms, r.acknowledged, r.lost, r.in_log);
    }
    println!("{} rounds of SIGKILL: {acked} acknowledged events, {lost} lost", rounds.len());
    if let Some(parent) = args.json.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&serde_json::json!({ "rounds": rounds, "acknowledged": acked, "lost": lost }))?)?;
    println!("json: {}", args.json.display());
    anyhow::ensure!(lost == 0, "{lost} acknowledged events lost");
    Ok(())
}

//! Serving latency over gRPC on loopback.
//!
//! Trains a model on a data set (MovieLens-100K by default) through the core pipeline,
//! serves it with the real server code on an ephemeral loopback port, then a tonic client
//! sends sequential requests — a warm-up, then the measured run — for random known users
//! (`Recommend`) and random items with events (`SimilarItems`), k = 10. Prints a table
//! and writes JSON. Run it from a release build:
//!
//! ```text
//! cargo run --release -p affinity-benches --bin latency
//! ```

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::Duration;

use affinity_core::data::TimeKind;
use affinity_core::model::format;
use affinity_core::model::publish::Retention;
use affinity_core::params::TrainParams;
use affinity_core::train::{train, NoProgress};
use affinity_benches::{print_rows, time_calls, Row};
use affinity_core::ItemIdx;
use affinity_lab::import::{self, Source};
use affinity_service::proto::recommend_request::Subject;
use affinity_service::proto::recommender_client::RecommenderClient;
use affinity_service::proto::{self, similar_items_request::Mode};
use affinity_service::client::wait_serving;
use affinity_service::server;
use affinity_service::state::{ServerState, SettingsOverrides};
use anyhow::{Context, Result};
use clap::Parser;
use rand::{Rng, SeedableRng};
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(about = "gRPC latency benchmark for affinity-server")]
struct Args {
    /// Data set folder (MovieLens layout).
    #[arg(long, default_value = "../shared/datasets/movielens-100k")]
    dataset: PathBuf,
    #[arg(long, default_value_t = 1_000)]
    warmup: usize,
    #[arg(long, default_value_t = 10_000)]
    requests: usize,
    #[arg(long, default_value_t = 10)]
    k: u32,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Where to write the JSON results.
    #[arg(long, default_value = "benches/results/latency.json")]
    json: PathBuf,
}

#[derive(Serialize)]
struct Report {
    dataset: String,
    build: &'static str,
    users: usize,
    items: usize,
    scoring: String,
    k: u32,
    warmup: usize,
    rows: Vec<Row>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let data = import::import(Source::MovieLens, &args.dataset)
        .with_context(|| format!("cannot import {}", args.dataset.display()))?;
    let root = tempfile::tempdir()?;
    let mut m = train(&data, TimeKind::Unix, &TrainParams::default(), &NoProgress);
    format::save(&mut m, root.path(), Retention::default())?;
    let users: Vec<String> = m.user_ids().to_vec();
    let items: Vec<String> = (0..m.n_items() as u32)
        .map(ItemIdx)
        .filter(|&i| m.has_collab(i))
        .map(|i| m.item_id(i).to_string())
        .collect();
    let scoring = if m.default_settings().scores_exactly(m.n_items()) { "exact" } else { "ann" }.to_string();
    let n_items = m.n_items();
    drop(m);

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(measure(&args, root.path(), &users, &items))?;
    let report = Report {
        dataset: args.dataset.display().to_string(),
        build: if cfg!(debug_assertions) { "debug" } else { "release" },
        users: users.len(),
        items: n_items,
        scoring,
        k: args.k,
        warmup: args.warmup,
        rows: report,
    };
    println!(
        "dataset {} · {} users · {} items · scoring {} · k {} · {} build · sequential, {} warm-up",
        report.dataset, report.users, report.items, report.scoring, report.k, report.build, report.warmup
    );
    print_rows(&report.rows);
    if let Some(parent) = args.json.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)?;
    println!("json: {}", args.json.display());
    Ok(())
}

async fn measure(args: &Args, model_root: &Path, users: &[String], items: &[String]) -> Result<Vec<Row>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let state = ServerState::new(model_root.to_path_buf(), SettingsOverrides::default());
    let serving = tokio::spawn(server::run(listener, state, async {
        let _ = stopped.await;
    }));
    let channel = wait_serving(&addr, Duration::from_secs(60)).await?;
    let client = RecommenderClient::new(channel);
    let mut rows = Vec::new();

    let (warmup, requests, k) = (args.warmup, args.requests, args.k);
    let rng = RefCell::new(rand_chacha::ChaCha8Rng::seed_from_u64(args.seed));
    let recommend = || {
        let user = users[rng.borrow_mut().gen_range(0..users.len())].clone();
        let mut c = client.clone();
        async move {
            let req = proto::RecommendRequest {
                subject: Some(Subject::UserId(user.clone())),
                k,
                ..Default::default()
            };
            let r = c.recommend(req).await?.into_inner();
            anyhow::ensure!(r.items.len() == k as usize, "short answer for {user}");
            Ok(())
        }
    };
    rows.push(time_calls("Recommend", warmup, requests, recommend).await?);
    let similar = || {
        let item = items[rng.borrow_mut().gen_range(0..items.len())].clone();
        let mut c = client.clone();
        async move {
            let req = proto::SimilarItemsRequest {
                item_id: item.clone(),
                k,
                mode: Mode::Unspecified as i32,
                rules: None,
            };
            let r = c.similar_items(req).await?.into_inner();
            anyhow::ensure!(r.items.len() == k as usize, "short answer for {item}");
            Ok(())
        }
    };
    rows.push(time_calls("SimilarItems", warmup, requests, similar).await?);

    let _ = stop.send(());
    serving.await??;
    Ok(rows)
}

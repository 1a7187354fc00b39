//! Latency of business rules over gRPC: a selective filter and diversity.
//!
//! Two models, each served with the real server code on a loopback port: MovieLens-100K
//! (1,682 items, scored exactly) and a synthetic catalogue of `--items` items (100,000 by
//! default, 200 categories and 50 brands, scored through the HNSW index). For each,
//! sequential `Recommend` calls for random users, k = 10:
//!
//! - no rules (the baseline);
//! - a filter that at most 1% of the items pass (one small category);
//! - diversity: at most 2 per category and MMR with λ = 0.7;
//! - both at once;
//!
//! and `SimilarItems` with the selective filter; on the synthetic catalogue (whose items
//! sit in 100 towns), also "near you": only items within 10 km of a town (about 1% of
//! the catalogue), and a nearness boost within 25 km. Every answer is checked against its
//! rules. Prints a table per model and writes JSON. Run it from a release build:
//!
//! ```text
//! cargo run --release -p affinity-benches --bin rules
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use affinity_benches::{print_rows, time_calls, Row};
use affinity_core::data::{Dataset, Event, EventKind, GeoPoint, Item, TimeKind};
use affinity_core::model::format;
use affinity_core::model::publish::Retention;
use affinity_core::params::TrainParams;
use affinity_core::train::{train, NoProgress};
use affinity_core::ItemIdx;
use affinity_lab::import::{self, Source};
use affinity_service::client::wait_serving;
use affinity_service::proto::recommend_request::Subject;
use affinity_service::proto::recommender_client::RecommenderClient;
use affinity_service::proto::{self, similar_items_request::Mode};
use affinity_service::server;
use affinity_service::state::{ServerState, SettingsOverrides};
use anyhow::{ensure, Context, Result};
use clap::Parser;
use rand::{Rng, SeedableRng};
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(about = "Latency of Recommend under a selective filter and diversity rules")]
struct Args {
    /// MovieLens-100K folder.
    #[arg(long, default_value = "../shared/datasets/movielens-100k")]
    dataset: PathBuf,
    /// Items in the synthetic catalogue.
    #[arg(long, default_value_t = 100_000)]
    items: usize,
    #[arg(long, default_value_t = 300)]
    warmup: usize,
    #[arg(long, default_value_t = 3_000)]
    requests: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Where to write the JSON results.
    #[arg(long, default_value = "benches/results/rules.json")]
    json: PathBuf,
}

#[derive(Serialize)]
struct ModelReport {
    model: String,
    items: usize,
    scoring: String,
    /// The categories the selective filter draws from, and the largest share of items one holds.
    filter_categories: usize,
    filter_max_share: f64,
    rows: Vec<Row>,
}

/// Towns the synthetic catalogue's items sit in.
const TOWNS: usize = 100;

/// Town `t` on a 10 × 10 grid about 55 km apart, an item `i` a little off its centre
/// (up to about 3 km).
fn town(t: usize, i: usize) -> GeoPoint {
    let jitter = |k: usize| ((i * 31 + k * 17) % 100) as f64 / 100.0 - 0.5;
    GeoPoint { lat: 50.0 + (t / 10) as f64 * 0.5 + jitter(1) * 0.05, lon: -5.0 + (t % 10) as f64 * 0.8 + jitter(2) * 0.08 }
}

/// A synthetic store: `n` items in 200 categories and 50 brands; users who mostly stay in
/// two categories.
fn synthetic(n: usize, seed: u64) -> Dataset {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let items: Vec<Item> = (0..n)
        .map(|i| Item {
            title: format!("item {i}"),
            category: format!("c{}", i % 200),
            brand: format!("b{}", (i / 7) % 50),
            price: Some(1.0 + (i % 97) as f32),
            location: Some(town(i * 7919 % TOWNS, i)),
            ..Item::bare(format!("i{i}"))
        })
        .collect();
    let users = n / 4;
    let mut events = Vec::with_capacity(users * 20);
    for u in 0..users {
        let home = [rng.gen_range(0..200usize), rng.gen_range(0..200usize)];
        for t in 0..20 {
            let c = if rng.gen_bool(0.85) { home[t % 2] } else { rng.gen_range(0..200) };
            // Popular items within a category: a skewed rank.
            let rank = (rng.gen::<f64>().powi(3) * (n / 200) as f64) as usize;
            let item = c + 200 * rank.min(n / 200 - 1);
            events.push(Event::new(format!("u{u}"), format!("i{item}"), EventKind::View, Some(t as i64)));
        }
    }
    Dataset { events, items, ..Dataset::default() }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let movielens = import::import(Source::MovieLens, &args.dataset).with_context(|| format!("cannot import {}", args.dataset.display()))?;
    let mut reports = Vec::new();
    for (name, data, time) in [
        ("movielens-100k".to_string(), movielens, TimeKind::Unix),
        (format!("synthetic-{}", args.items), synthetic(args.items, args.seed), TimeKind::Order),
    ] {
        eprintln!("{name}: training on {} events …", data.events.len());
        let root = tempfile::tempdir()?;
        let mut m = train(&data, time, &TrainParams::default(), &NoProgress);
        format::save(&mut m, root.path(), Retention::default())?;
        let users: Vec<String> = m.user_ids().to_vec();
        let category: HashMap<String, String> = m.items().iter().map(|i| (i.item_id.clone(), i.category.clone())).collect();
        let mut counts: HashMap<String, usize> = HashMap::new();
        for c in category.values().filter(|c| !c.is_empty()) {
            *counts.entry(c.clone()).or_default() += 1;
        }
        // Categories holding at most 1% of the items (and at least k of them).
        let limit = m.n_items() / 100;
        let mut small: Vec<String> = counts.iter().filter(|(_, &n)| n <= limit && n >= 10).map(|(c, _)| c.clone()).collect();
        small.sort();
        ensure!(!small.is_empty(), "{name}: no category holds between 10 items and 1% of the catalogue");
        let max_share = small.iter().map(|c| counts[c]).max().unwrap_or(0) as f64 / m.n_items() as f64;
        let scoring = if m.default_settings().scores_exactly(m.n_items()) { "exact" } else { "ann" }.to_string();
        let n_items = m.n_items();
        let similar_items: Vec<String> = (0..m.n_items() as u32).map(ItemIdx).filter(|&i| m.has_collab(i)).map(|i| m.item_id(i).to_string()).collect();
        let places: HashMap<String, GeoPoint> = m.items().iter().filter_map(|i| i.location.map(|p| (i.item_id.clone(), p))).collect();
        drop(m);
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        let rows = runtime.block_on(measure(&args, root.path(), &users, &similar_items, &small, &category, &places))?;
        println!("{name} · {n_items} items · scoring {scoring} · filter: one of {} categories of ≤ 1% of the items (largest {:.2}%) · k 10", small.len(), max_share * 100.0);
        print_rows(&rows);
        reports.push(ModelReport {
            model: name,
            items: n_items,
            scoring,
            filter_categories: small.len(),
            filter_max_share: max_share,
            rows,
        });
    }
    if let Some(parent) = args.json.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&reports)?)?;
    println!("json: {}", args.json.display());
    Ok(())
}

async fn measure(
    args: &Args,
    root: &Path,
    users: &[String],
    items: &[String],
    small: &[String],
    category: &HashMap<String, String>,
    places: &HashMap<String, GeoPoint>,
) -> Result<Vec<Row>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let state = ServerState::new(root.to_path_buf(), SettingsOverrides::default());
    let serving = tokio::spawn(server::run(listener, state, async {
        let _ = stopped.await;
    }));
    let client = RecommenderClient::new(wait_serving(&addr, Duration::from_secs(120)).await?);
    let rng = Rc::new(RefCell::new(rand_chacha::ChaCha8Rng::seed_from_u64(args.seed)));
    let category = Rc::new(category.clone());
    let filter = |rng: &RefCell<rand_chacha::ChaCha8Rng>| small[rng.borrow_mut().gen_range(0..small.len())].clone();
    let diversity = proto::Rules { max_per_category: 2, mmr_lambda: Some(0.7), ..Default::default() };
    let mut rows = Vec::new();
    for (label, filtered, diverse) in [
        ("Recommend", false, false),
        ("Recommend · filter ≤ 1%", true, false),
        ("Recommend · diversity", false, true),
        ("Recommend · filter + diversity", true, true),
    ] {
        let call = || {
            let user = users[rng.borrow_mut().gen_range(0..users.len())].clone();
            let only = filtered.then(|| filter(&rng));
            let mut rules = if diverse { diversity.clone() } else { proto::Rules::default() };
            rules.include_categories = only.iter().cloned().collect();
            let (mut c, category) = (client.clone(), Rc::clone(&category));
            async move {
                let req = proto::RecommendRequest {
                    subject: Some(Subject::UserId(user.clone())),
                    k: 10,
                    rules: Some(rules),
                    ..Default::default()
                };
                let r = c.recommend(req).await?.into_inner();
                ensure!(r.items.len() == 10 || r.shortfall != 0, "short answer for {user} without a shortfall");
                if let Some(only) = &only {
                    ensure!(r.items.iter().all(|i| &category[&i.item_id] == only), "the filter was broken");
                }
                if diverse {
                    let mut per: HashMap<&str, usize> = HashMap::new();
                    for i in &r.items {
                        *per.entry(category[&i.item_id].as_str()).or_default() += 1;
                    }
                    ensure!(per.values().all(|&n| n <= 2), "the cap was broken");
                }
                Ok(())
            }
        };
        rows.push(time_calls(label, args.warmup, args.requests, call).await?);
    }
    let similar = || {
        let item = items[rng.borrow_mut().gen_range(0..items.len())].clone();
        let only = filter(&rng);
        let (mut c, category) = (client.clone(), Rc::clone(&category));
        async move {
            let req = proto::SimilarItemsRequest {
                item_id: item,
                k: 10,
                mode: Mode::Blend as i32,
                rules: Some(proto::Rules { include_categories: vec![only.clone()], ..Default::default() }),
            };
            let r = c.similar_items(req).await?.into_inner();
            ensure!(r.items.iter().all(|i| category[&i.item_id] == only), "the filter was broken");
            Ok(())
        }
    };
    rows.push(time_calls("SimilarItems · filter ≤ 1%", args.warmup, args.requests, similar).await?);
    if !places.is_empty() {
        let places = Rc::new(places.clone());
        for (label, radius_km, within_only) in [("Recommend · within 10 km", 10.0, true), ("Recommend · near boost 25 km", 25.0, false)] {
            let call = || {
                let user = users[rng.borrow_mut().gen_range(0..users.len())].clone();
                let here = town(rng.borrow_mut().gen_range(0..TOWNS), 0);
                let (mut c, places) = (client.clone(), Rc::clone(&places));
                async move {
                    let near = proto::Near { latitude: here.lat, longitude: here.lon, radius_km, within_only, boost: Some(1.0) };
                    let req = proto::RecommendRequest {
                        subject: Some(Subject::UserId(user.clone())),
                        k: 10,
                        rules: Some(proto::Rules { near: Some(near), ..Default::default() }),
                        ..Default::default()
                    };
                    let r = c.recommend(req).await?.into_inner();
                    ensure!(r.items.len() == 10, "short answer for {user}");
                    if within_only {
                        ensure!(r.items.iter().all(|i| places[&i.item_id].distance_km(&here) <= radius_km), "the radius was broken");
                    }
                    Ok(())
                }
            };
            rows.push(time_calls(label, args.warmup, args.requests, call).await?);
        }
    }
    let _ = stop.send(());
    serving.await??;
    Ok(rows)
}

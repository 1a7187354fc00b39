//! Social scoring's worth: Recall@10 and NDCG@10 with and without it, over seeds.
//!
//! For LastFM (friendships) and FilmTrust (trust links), events exported as a storefront
//! sends them (every event `view`, no value, no timestamps): per seed, a `random` split;
//! `train` as a user runs it (its own validation search, which chooses the social weight
//! among the others, then the final fit on train + validation with the graph); the test
//! part scored through the serving code path with the trained social weight and, on the
//! same model, with social scoring off. Slices: users with and without contacts (FilmTrust's
//! raters who trust nobody must not lose). Cold start through friends: a seeded tenth of
//! the users lose their whole history from the fit (they stay known through the graph)
//! and are scored on all of it, social against popularity. The generated community store
//! (`community-synth`: planted communities whose members share house favourites, see
//! `affinity_lab::synth::community_store`) is run the same way, with slices for members
//! and others: the community weight is the search's too. Prints tables and writes
//! `benches/results/social.json`.
//!
//! ```text
//! cargo run --release -p affinity-benches --bin social
//! ```

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Instant;

use affinity_core::data::{Dataset, EventKind, TimeKind};
use affinity_core::ids::stable_hash;
use affinity_core::params::TrainParams;
use affinity_core::settings::ServingSettings;
use affinity_core::train::{train, NoProgress};
use affinity_lab::autotune::{autotune, Budget};
use affinity_lab::baselines::Pop;
use affinity_lab::eval;
use affinity_lab::import::{self, Source};
use affinity_lab::rank::Affinity;
use affinity_lab::split::{self, Protocol, Target};
use affinity_lab::synth;
use anyhow::{Context, Result};
use clap::Parser;
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(about = "Recall and NDCG with and without social scoring, over seeds")]
struct Args {
    /// Folder holding lastfm-hetrec and filmtrust.
    #[arg(long, default_value = "../shared/datasets")]
    datasets: PathBuf,
    /// Seeds (seed, seed + 1, …).
    #[arg(long, default_value_t = 5)]
    seeds: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Share of each user's items for test (0.1 with --valid-share 0.1: the 8:1:1 split
    /// social recommenders are often reported on).
    #[arg(long, default_value_t = 0.2)]
    test_share: f64,
    #[arg(long, default_value_t = 0.16)]
    valid_share: f64,
    /// Only these data sets (lastfm-hetrec, filmtrust).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    #[arg(long, default_value = "benches/results/social.json")]
    json: PathBuf,
    /// Instead: build a synthetic graph of this many users (with --graph-edges) and report
    /// its build time, size and encode / decode times.
    #[arg(long)]
    graph_users: Option<usize>,
    #[arg(long, default_value_t = 20_000_000)]
    graph_edges: usize,
}

/// The social graph at scale: random friendships and follows over `users` users, each
/// user's degree skewed (a few accounts with many followers, as on a social shop).
fn graph_scale(users: usize, edges: usize) -> Result<()> {
    use affinity_core::data::{SocialEdge, SocialKind};
    use affinity_core::ids::IdMap;
    use affinity_core::social::SocialGraph;
    use rand::{Rng, SeedableRng};
    let ids: Vec<String> = (0..users).map(|u| format!("u{u}")).collect();
    let map = IdMap::from_ids(ids.clone());
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let started = Instant::now();
    let list: Vec<SocialEdge> = (0..edges)
        .map(|_| {
            let a = rng.gen_range(0..users);
            // Followed accounts drawn with a power-law skew; friends uniformly.
            let friend = rng.gen_bool(0.5);
            let b = if friend { rng.gen_range(0..users) } else { ((users as f64).powf(rng.gen::<f64>()) as usize).min(users - 1) };
            SocialEdge { user_id: ids[a].clone(), other_id: ids[b].clone(), kind: if friend { SocialKind::Friend } else { SocialKind::Follow }, weight: 1.0 }
        })
        .collect();
    eprintln!("generated {edges} edges in {:.1}s", started.elapsed().as_secs_f64());
    let rss = || std::fs::read_to_string("/proc/self/status").ok().and_then(|s| s.lines().find(|l| l.starts_with("VmHWM")).map(str::to_string)).unwrap_or_default();
    let before = rss();
    let started = Instant::now();
    let (graph, report) = SocialGraph::build(&list, &map);
    let build = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let bytes = bincode::serialize(&graph)?;
    let encode = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let back: SocialGraph = bincode::deserialize(&bytes)?;
    let decode = started.elapsed().as_secs_f64();
    anyhow::ensure!(back == graph, "the graph does not round-trip");
    println!(
        "social graph: {users} users, {edges} edges ({} self-loops, {} merged) → {} contact entries; build {build:.1}s; table {:.0} MiB in memory, {:.0} MiB encoded; encode {encode:.2}s, decode {decode:.2}s; peak RSS before build {before}, after {}",
        report.self_loops,
        report.merged,
        graph.n_contacts(),
        graph.heap_bytes() as f64 / (1 << 20) as f64,
        bytes.len() as f64 / (1 << 20) as f64,
        rss()
    );
    // Influence over the same graph: ten timed items per user from 100,000, a tenth of
    // the draws from a user's first contact's items (adoptions to count).
    let mut firsts: Vec<Vec<affinity_core::influence::FirstSeen>> = (0..users).map(|_| (0..10).map(|_| (rng.gen_range(0..100_000u32), Some(rng.gen_range(0..1_000_000i64)))).collect()).collect();
    for u in 0..users {
        if let Some(c) = graph.contacts(affinity_core::ids::UserIdx(u as u32)).first() {
            let theirs = firsts[c.user as usize][0].0;
            firsts[u].push((theirs, Some(2_000_000)));
        }
        firsts[u].sort_unstable();
        firsts[u].dedup_by_key(|f| f.0);
    }
    let after_graph = rss();
    let started = Instant::now();
    let influence = affinity_core::influence::Influence::compute(&graph, users, &firsts, |i| if i % 2 == 0 { "even" } else { "odd" });
    let took = started.elapsed().as_secs_f64();
    let influence_bytes = bincode::serialize(&influence)?;
    println!(
        "influence: {users} users with 10-11 timed items each, computed in {took:.1}s, {:.0} MiB encoded; top user {:?}; peak RSS {}",
        influence_bytes.len() as f64 / (1 << 20) as f64,
        influence.top("").first(),
        rss()
    );
    let kib = |line: String| line.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok());
    println!(
        "{}",
        serde_json::json!({
            "users": users, "edges": edges, "contact_entries": graph.n_contacts(),
            "build_seconds": build, "table_bytes": graph.heap_bytes(), "encoded_bytes": bytes.len(),
            "encode_seconds": encode, "decode_seconds": decode,
            "influence_seconds": took, "influence_encoded_bytes": influence_bytes.len(),
            "peak_rss_kib": { "before_graph": kib(before), "after_graph": kib(after_graph), "after_influence": kib(rss()) },
        })
    );
    Ok(())
}

/// Recall@10 (hits / min(10, |test|)), Recall@10 over |test| and NDCG@10 of one run.
#[derive(Serialize, Clone, Copy, Default)]
struct At10 {
    recall: f64,
    recall_full: f64,
    ndcg: f64,
    users: usize,
}

#[derive(Serialize)]
struct SeedRun {
    seed: u64,
    social_weight: f32,
    community_weight: f32,
    tune_and_fit_seconds: f64,
    /// slice → (social on, social off).
    slices: BTreeMap<String, (At10, At10)>,
    /// Cold start through friends: (social, popularity).
    cold: (At10, At10),
}

#[derive(Serialize)]
struct DataRun {
    dataset: String,
    /// The shares held out, as "test 0.2, validation 0.16".
    split: String,
    users: usize,
    edges: usize,
    runs: Vec<SeedRun>,
}

fn at10(r: &dyn affinity_lab::rank::Ranker, m: &affinity_core::model::Model, t: &Target) -> At10 {
    let x = eval::score(r, m, t, &[10]).into_iter().next().unwrap_or_default();
    At10 { recall: x.recall, recall_full: x.recall_full, ndcg: x.ndcg, users: x.users }
}

fn only(t: &Target, keep: impl Fn(&str) -> bool) -> Target {
    Target {
        relevant: t.relevant.iter().filter(|(u, _)| keep(u)).map(|(u, i)| (u.clone(), i.clone())).collect(),
        keep_relevant_seen: t.keep_relevant_seen,
    }
}

/// A shared data set, events as a storefront sends them.
fn imported(name: &str, source: Source, args: &Args) -> Result<Dataset> {
    let folder = args.datasets.join(name);
    import::import(source, &folder).with_context(|| format!("cannot import {}", folder.display()))
}

fn run(name: &str, mut data: Dataset, args: &Args) -> Result<DataRun> {
    for e in &mut data.events {
        e.kind = EventKind::View;
        e.value = None;
        e.timestamp = None;
    }
    let kind = TimeKind::None;
    let users: HashSet<&str> = data.events.iter().map(|e| e.user_id.as_str()).collect();
    let mut out = DataRun { dataset: name.to_string(), split: format!("test {}, validation {}", args.test_share, args.valid_share), users: users.len(), edges: data.social.len(), runs: Vec::new() };
    for seed in args.seed..args.seed + args.seeds {
        let s = split::split_with(data.events.clone(), Protocol::Random, seed, kind, split::Shares { test: args.test_share, valid: args.valid_share })?;
        let fit: Vec<_> = s.train.iter().chain(&s.valid).cloned().collect();
        let target = split::target(Protocol::Random, &fit, &s.test);
        let fit_data = Dataset { events: fit, items: data.items.clone(), users: data.users.clone(), social: data.social.clone(), memberships: data.memberships.clone() };
        let started = Instant::now();
        let (params, _) = autotune(&fit_data, kind, &TrainParams::default(), &Budget { seed, ..Budget::default() }, &NoProgress);
        let model = train(&fit_data, kind, &params, &NoProgress);
        let seconds = started.elapsed().as_secs_f64();
        let on = Affinity::new(&model);
        let off = Affinity::with_settings(&model, model.default_settings().without_social());
        let has_contacts = |u: &str| model.user_index(u).is_some_and(|i| !model.social().contacts(i).is_empty());
        let is_member = |u: &str| model.user_index(u).is_some_and(|i| !model.communities_of(i).is_empty());
        let mut slices = BTreeMap::new();
        let mut cuts: Vec<(&str, Target)> = vec![("all", only(&target, |_| true))];
        if !data.social.is_empty() {
            cuts.push(("with contacts", only(&target, has_contacts)));
            cuts.push(("no contacts", only(&target, |u| !has_contacts(u))));
        }
        if !data.memberships.is_empty() {
            cuts.push(("members", only(&target, is_member)));
            cuts.push(("not members", only(&target, |u| !is_member(u))));
        }
        for (slice, t) in cuts {
            slices.insert(slice.to_string(), (at10(&on, &model, &t), at10(&off, &model, &t)));
        }
        // Cold start: a seeded tenth of the users keep none of their events in the fit.
        let hidden = |u: &str| (stable_hash(u.as_bytes()) ^ seed).wrapping_mul(0x9e37_79b9_7f4a_7c15).is_multiple_of(10);
        let cold_fit = Dataset {
            events: data.events.iter().filter(|e| !hidden(&e.user_id)).cloned().collect(),
            ..fit_data.clone()
        };
        let cold_model = train(&cold_fit, kind, &params, &NoProgress);
        let cold_target = split::target(Protocol::Random, &cold_fit.events, &data.events.iter().filter(|e| hidden(&e.user_id)).cloned().collect::<Vec<_>>());
        let social_on = ServingSettings { social_blend: params.social_blend.max(affinity_core::params::DEFAULT_SOCIAL_BLEND), ..cold_model.default_settings() };
        let cold = (at10(&Affinity::with_settings(&cold_model, social_on), &cold_model, &cold_target), at10(&Pop(&cold_model), &cold_model, &cold_target));
        eprintln!("{name} seed {seed}: social weight {}, community weight {}, {:.1}s", params.social_blend, params.community_blend, seconds);
        out.runs.push(SeedRun { seed, social_weight: params.social_blend, community_weight: params.community_blend, tune_and_fit_seconds: seconds, slices, cold });
    }
    Ok(out)
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 { v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (m, var.sqrt())
}

fn print(r: &DataRun) {
    println!("\n## {} ({} users, {} edges; views only, random split {}, {} seeds)\n", r.dataset, r.users, r.edges, r.split, r.runs.len());
    println!("| slice | users | R@10 social | R@10 without | gain (σ of runs, σ of paired diff, paired t) | NDCG@10 social | NDCG@10 without | gain (σ, σ diff, t) | R@10 hits/|test| social / without |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let slices: Vec<String> = r.runs.first().map(|x| x.slices.keys().cloned().collect()).unwrap_or_default();
    for slice in slices {
        let get = |f: &dyn Fn(&(At10, At10)) -> f64| -> Vec<f64> { r.runs.iter().map(|x| f(&x.slices[&slice])).collect() };
        let (ron, roff) = (mean_sd(&get(&|p| p.0.recall)), mean_sd(&get(&|p| p.1.recall)));
        let rdiff = mean_sd(&get(&|p| p.0.recall - p.1.recall));
        let (non, noff) = (mean_sd(&get(&|p| p.0.ndcg)), mean_sd(&get(&|p| p.1.ndcg)));
        let ndiff = mean_sd(&get(&|p| p.0.ndcg - p.1.ndcg));
        let (fon, foff) = (mean_sd(&get(&|p| p.0.recall_full)), mean_sd(&get(&|p| p.1.recall_full)));
        let users = r.runs[0].slices[&slice].0.users;
        // The gain against the spread of the runs, against the spread of the per-seed
        // gains, and as a paired t statistic (the mean gain over its standard error).
        let n = (r.runs.len().max(1) as f64).sqrt();
        let sig = |d: (f64, f64), sd: f64| format!("{:+.4} ({:.1}σ, {:.1}σ, t {:.1})", d.0, d.0 / sd.max(1e-9), d.0 / d.1.max(1e-9), d.0 * n / d.1.max(1e-9));
        println!(
            "| {slice} | {users} | {:.4} ± {:.4} | {:.4} ± {:.4} | {} | {:.4} ± {:.4} | {:.4} ± {:.4} | {} | {:.4} / {:.4} |",
            ron.0, ron.1, roff.0, roff.1, sig(rdiff, roff.1.max(ron.1)), non.0, non.1, noff.0, noff.1, sig(ndiff, noff.1.max(non.1)), fon.0, foff.0
        );
    }
    let cold_social = mean_sd(&r.runs.iter().map(|x| x.cold.0.recall).collect::<Vec<_>>());
    let cold_pop = mean_sd(&r.runs.iter().map(|x| x.cold.1.recall).collect::<Vec<_>>());
    let weights: Vec<String> = r.runs.iter().map(|x| format!("{}/{}", x.social_weight, x.community_weight)).collect();
    println!(
        "\ncold start through friends (a tenth of users without history, {} users): R@10 social {:.4} ± {:.4}, popularity {:.4} ± {:.4}; trained social/community weights: {}",
        r.runs.first().map_or(0, |x| x.cold.0.users),
        cold_social.0,
        cold_social.1,
        cold_pop.0,
        cold_pop.1,
        weights.join(", ")
    );
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(users) = args.graph_users {
        return graph_scale(users, args.graph_edges);
    }
    let mut all = Vec::new();
    for name in ["lastfm-hetrec", "filmtrust", "community-synth"] {
        if !args.only.is_empty() && !args.only.iter().any(|o| o == name) {
            continue;
        }
        let data = match name {
            "lastfm-hetrec" => imported(name, Source::LastFm, &args)?,
            "filmtrust" => imported(name, Source::FilmTrust, &args)?,
            _ => synth::community_store(synth::CommunitySize::default(), 1).data,
        };
        let r = run(name, data, &args)?;
        print(&r);
        all.push(r);
    }
    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&all)?).with_context(|| format!("cannot write {}", args.json.display()))?;
    println!("\nwritten to {}", args.json.display());
    Ok(())
}

//! The `evaluate` subcommand: affinity against Pop, ItemKNN and EASE on one split, or on
//! several seeds with mean and standard deviation.
//!
//! Protocol: baselines' hyper-parameters are chosen on the validation part (models fit on
//! train only); then every system is fit on train + validation and scored on test.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use affinity_core::data::{Dataset, Event, TimeKind};
use affinity_core::model::Model;
use affinity_core::params::TrainParams;
use affinity_core::train::{self, NoProgress};
use affinity_lab::baselines::{Ease, ItemKnn, Pop};
use affinity_lab::eval::{self, EvalReport, Metrics, ModelReport};
use affinity_lab::rank::{Affinity, Ranker};
use affinity_lab::split::{self, SplitSet, Target};
use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::cli::{Baseline, EvaluateArgs};
use crate::input::{load_events, load_items, load_memberships, load_params, load_social, time_kind};
use crate::tune::BaselineParams;

/// EASE regularisation values tried on validation.
const EASE_LAMBDAS: [f32; 6] = [50.0, 100.0, 200.0, 500.0, 1000.0, 3000.0];

pub fn run(args: EvaluateArgs) -> Result<()> {
    let params = load_params(args.read.params.as_deref())?;
    // What every fit gets besides its events: the catalogue, the graph, the communities.
    let around = Dataset {
        items: load_items(args.items.as_deref(), args.read.skip_invalid)?,
        social: match &args.social {
            Some(p) => load_social(p, args.read.skip_invalid)?,
            None => Vec::new(),
        },
        memberships: match &args.communities {
            Some(p) => load_memberships(p, args.read.skip_invalid)?,
            None => Vec::new(),
        },
        ..Dataset::default()
    };
    let (splits, kind, name) = if let Some(dir) = &args.split {
        let s = SplitSet::read(dir)?;
        let all: Vec<Event> = s.train.iter().chain(&s.valid).chain(&s.test).cloned().collect();
        let kind = time_kind(args.read.time_kind, &all);
        (vec![s], kind, folder_name(dir))
    } else {
        let path = args.events.as_deref().context("--events or --split is required")?;
        let events = load_events(path, args.read.skip_invalid)?;
        let kind = time_kind(args.read.time_kind, &events);
        let splits = (0..args.seeds.max(1))
            .map(|n| split::split_with(events.clone(), args.protocol.into(), args.seed + n, kind, args.shares.into()))
            .collect::<Result<Vec<_>, _>>()?;
        let name = path.parent().map(folder_name).unwrap_or_else(|| "events".into());
        (splits, kind, name)
    };
    let name = args.dataset.clone().unwrap_or(name);
    let mut reports = Vec::new();
    for s in &splits {
        let r = evaluate_split(s, &around, kind, &params, &args, &name)?;
        if splits.len() == 1 {
            print_table(&r);
        } else {
            eprintln!("seed {} done", s.seed);
        }
        reports.push(r);
    }
    if reports.len() == 1 {
        if let Some(path) = &args.json {
            write_json(path, &reports[0])?;
        }
        return Ok(());
    }
    let summary = summarise(&reports);
    print_summary(&reports[0], &summary, reports.len());
    if let Some(path) = &args.json {
        write_json(
            path,
            &MultiSeed {
                dataset: reports[0].dataset.clone(),
                protocol: reports[0].protocol.clone(),
                seeds: reports.iter().map(|r| r.seed).collect(),
                summary,
                runs: reports,
            },
        )?;
    }
    Ok(())
}

fn folder_name(p: &Path) -> String {
    p.canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| p.display().to_string())
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    fs::write(path, serde_json::to_string_pretty(value)?).with_context(|| format!("cannot write {}", path.display()))
}

/// Trains on `events` with what `around` holds besides events.
fn fit(events: Vec<Event>, around: &Dataset, kind: TimeKind, params: &TrainParams) -> (Model, f64) {
    let data = Dataset { events, ..around.clone() };
    eval::timed(|| train::train(&data, kind, params, &NoProgress))
}

fn ndcg_at_10(r: &dyn Ranker, m: &Model, t: &Target) -> f64 {
    eval::score(r, m, t, &[10])[0].ndcg
}

fn evaluate_split(
    s: &SplitSet,
    around: &Dataset,
    kind: TimeKind,
    params: &TrainParams,
    args: &EvaluateArgs,
    dataset: &str,
) -> Result<EvalReport> {
    let want = |b: Baseline| args.baselines.contains(&b);
    let tuned: Option<BaselineParams> = match &args.baseline_params {
        Some(path) => Some(
            serde_json::from_str(&fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?)
                .with_context(|| format!("{}: invalid baseline parameters", path.display()))?,
        ),
        None => None,
    };
    let knn_neighbours = tuned.as_ref().and_then(|t| t.itemknn_neighbours).unwrap_or(args.knn_neighbours);
    // Choose EASE's λ on validation, with models fit on train only, unless `tune` did.
    let mut ease_lambda = 500.0f32;
    if let Some(l) = tuned.as_ref().and_then(|t| t.ease_lambda) {
        ease_lambda = l;
    } else if want(Baseline::Ease) && !s.valid.is_empty() {
        let (tune_model, _) = fit(s.train.clone(), around, kind, params);
        let valid = split::target(s.protocol, &s.train, &s.valid);
        let mut best = f64::MIN;
        for &l in &EASE_LAMBDAS {
            let ndcg = ndcg_at_10(&Ease::fit(&tune_model, l), &tune_model, &valid);
            if ndcg > best {
                best = ndcg;
                ease_lambda = l;
            }
        }
    }
    let fit_events: Vec<Event> = s.train.iter().chain(&s.valid).cloned().collect();
    let target = split::target(s.protocol, &fit_events, &s.test);
    if target.relevant.is_empty() {
        bail!("no test user has a held-out item the model could rank (test events: {}): every figure would be 0", s.test.len());
    }
    let (mut model, fit_affinity) = fit(fit_events, around, kind, params);
    let mut models = Vec::new();
    let mut add = |name: Option<&str>, r: &dyn Ranker, m: &Model, fit: f64, p: serde_json::Value| {
        models.push(ModelReport {
            name: name.unwrap_or(r.name()).to_string(),
            params: p,
            fit_seconds: fit,
            metrics: eval::score(r, m, &target, &args.k),
        })
    };
    if want(Baseline::Pop) {
        add(None, &Pop(&model), &model, 0.0, serde_json::json!({}));
    }
    if want(Baseline::Itemknn) {
        let (knn, t) = eval::timed(|| ItemKnn::fit(&model, knn_neighbours));
        add(None, &knn, &model, t, serde_json::json!({ "neighbours": knn_neighbours }));
    }
    if want(Baseline::Ease) {
        let (ease, t) = eval::timed(|| Ease::fit(&model, ease_lambda));
        add(None, &ease, &model, t, serde_json::json!({ "lambda": ease_lambda }));
    }
    let p = serde_json::to_value(params)?;
    add(None, &Affinity::new(&model), &model, fit_affinity, p.clone());
    if model.has_social() || model.has_communities() {
        let off = model.default_settings().without_social();
        add(Some("affinity-no-social"), &Affinity::with_settings(&model, off), &model, fit_affinity, p.clone());
    }
    if args.exact {
        let settings = model.default_settings();
        add(Some("affinity-exact"), &Affinity::with_settings(&model, settings.exact()), &model, fit_affinity, p.clone());
        // Small catalogues are served exactly and carry no index: build one to compare.
        let ann = settings.ann();
        let ((), index_seconds) = eval::timed(|| model.ensure_indexes(&ann));
        add(Some("affinity-ann"), &Affinity::with_settings(&model, ann), &model, fit_affinity + index_seconds, p);
    }
    let mut split_sizes = BTreeMap::new();
    split_sizes.insert("train_events".to_string(), s.train.len());
    split_sizes.insert("valid_events".to_string(), s.valid.len());
    split_sizes.insert("test_events".to_string(), s.test.len());
    split_sizes.insert("test_users".to_string(), target.relevant.len());
    Ok(EvalReport {
        dataset: dataset.to_string(),
        protocol: s.protocol.as_str().to_string(),
        seed: s.seed,
        split_sizes,
        models,
    })
}

/// Mean and standard deviation of one model's metrics over seeds.
#[derive(Serialize)]
struct Summary {
    name: String,
    fit_seconds: f64,
    mean: Vec<Metrics>,
    std: Vec<Metrics>,
}

#[derive(Serialize)]
struct MultiSeed {
    dataset: String,
    protocol: String,
    seeds: Vec<u64>,
    summary: Vec<Summary>,
    runs: Vec<EvalReport>,
}

fn summarise(reports: &[EvalReport]) -> Vec<Summary> {
    let n = reports.len() as f64;
    reports[0]
        .models
        .iter()
        .enumerate()
        .map(|(mi, m)| {
            let runs: Vec<&ModelReport> = reports.iter().map(|r| &r.models[mi]).collect();
            let stat = |f: &dyn Fn(&Metrics) -> f64, ki: usize| {
                let xs: Vec<f64> = runs.iter().map(|r| f(&r.metrics[ki])).collect();
                let mean = xs.iter().sum::<f64>() / n;
                let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
                (mean, var.sqrt())
            };
            let mut mean = Vec::new();
            let mut std = Vec::new();
            for (ki, base) in m.metrics.iter().enumerate() {
                let mut a = *base;
                let mut b = *base;
                macro_rules! field {
                    ($f:ident) => {{
                        let (mu, sd) = stat(&|x: &Metrics| x.$f, ki);
                        a.$f = mu;
                        b.$f = sd;
                    }};
                }
                field!(recall);
                field!(recall_full);
                field!(ndcg);
                field!(hr);
                field!(mrr);
                field!(coverage);
                mean.push(a);
                std.push(b);
            }
            Summary {
                name: m.name.clone(),
                fit_seconds: runs.iter().map(|r| r.fit_seconds).sum::<f64>() / n,
                mean,
                std,
            }
        })
        .collect()
}

const HEADER: &str = "model              K    Recall  Recall|T|     NDCG       HR      MRR  Coverage    fit s";

fn print_table(r: &EvalReport) {
    println!(
        "dataset {} · protocol {} · seed {} · {} test users · affinity scored through the server's code path",
        r.dataset,
        r.protocol,
        r.seed,
        r.split_sizes.get("test_users").copied().unwrap_or(0)
    );
    println!("{HEADER}");
    for m in &r.models {
        for x in &m.metrics {
            println!(
                "{:<16} {:>3} {:>9.4} {:>10.4} {:>8.4} {:>8.4} {:>8.4} {:>9.4} {:>8.2}",
                m.name, x.k, x.recall, x.recall_full, x.ndcg, x.hr, x.mrr, x.coverage, m.fit_seconds
            );
        }
    }
}

fn print_summary(first: &EvalReport, summary: &[Summary], n: usize) {
    println!(
        "dataset {} · protocol {} · mean ± std over {n} seeds from {}",
        first.dataset, first.protocol, first.seed
    );
    println!("{HEADER}");
    for s in summary {
        for (a, b) in s.mean.iter().zip(&s.std) {
            println!(
                "{:<16} {:>3} {:>9} {:>10} {:>8} {:>8} {:>8} {:>9} {:>8.2}",
                s.name,
                a.k,
                format!("{:.4}±{:.3}", a.recall, b.recall),
                format!("{:.4}", a.recall_full),
                format!("{:.4}±{:.3}", a.ndcg, b.ndcg),
                format!("{:.4}", a.hr),
                format!("{:.4}", a.mrr),
                format!("{:.4}", a.coverage),
                s.fit_seconds
            );
        }
    }
}

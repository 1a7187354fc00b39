//! The `evaluate` subcommand: affinity against Pop and ItemKNN on one split.

use std::collections::BTreeMap;
use std::fs;

use affinity_core::eval::{self, Affinity, EvalReport, ItemKnn, ModelReport, Pop, Ranker};
use affinity_core::train::{self, NoProgress};
use anyhow::{Context, Result};

use crate::cli::EvaluateArgs;
use crate::input::{load_inputs, load_params};

pub fn run(args: EvaluateArgs) -> Result<()> {
    let (dataset, time_kind) = load_inputs(&args.input)?;
    let params = load_params(args.input.params.as_deref())?;
    let split = eval::random_split(&dataset.events, args.seed);
    let test_pairs: usize = split.test.values().map(Vec::len).sum();
    let mut train_set = dataset.clone();
    train_set.events = split.train;
    let (model, fit_affinity) = eval::timed(|| train::train(&train_set, time_kind, &params, &NoProgress));
    let (knn, fit_knn) = eval::timed(|| ItemKnn::fit(&model, args.knn_neighbours));
    let pop = Pop(&model);
    let affinity = Affinity(&model);
    let systems: Vec<(&dyn Ranker, f64, serde_json::Value)> = vec![
        (&pop, 0.0, serde_json::json!({})),
        (&knn, fit_knn, serde_json::json!({ "neighbours": args.knn_neighbours })),
        (&affinity, fit_affinity, serde_json::to_value(params)?),
    ];
    let models: Vec<ModelReport> = systems
        .into_iter()
        .map(|(r, fit, p)| ModelReport {
            name: r.name().to_string(),
            params: p,
            fit_seconds: fit,
            metrics: eval::score(r, &model, &split.test, &args.k),
        })
        .collect();
    let dataset_name = args.dataset.clone().unwrap_or_else(|| {
        args.input
            .events
            .canonicalize()
            .ok()
            .and_then(|p| p.parent().and_then(|d| d.file_name()).map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "events".into())
    });
    let mut split_sizes = BTreeMap::new();
    split_sizes.insert("train_events".to_string(), train_set.events.len());
    split_sizes.insert("test_users".to_string(), split.test.len());
    split_sizes.insert("test_items".to_string(), test_pairs);
    let report = EvalReport {
        dataset: dataset_name,
        protocol: "random".into(),
        seed: args.seed,
        split_sizes,
        models,
    };
    print_table(&report);
    if let Some(path) = &args.json {
        fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn print_table(r: &EvalReport) {
    println!(
        "dataset {} · protocol {} · seed {} · {} test users · scoring {}",
        r.dataset,
        r.protocol,
        r.seed,
        r.split_sizes.get("test_users").copied().unwrap_or(0),
        "same code path as the server"
    );
    println!(
        "{:<10} {:>4} {:>9} {:>11} {:>8} {:>7} {:>7} {:>9} {:>8}",
        "model", "K", "Recall", "Recall|T|", "NDCG", "HR", "MRR", "Coverage", "fit s"
    );
    for m in &r.models {
        for x in &m.metrics {
            println!(
                "{:<10} {:>4} {:>9.4} {:>11.4} {:>8.4} {:>7.4} {:>7.4} {:>9.4} {:>8.2}",
                m.name, x.k, x.recall, x.recall_full, x.ndcg, x.hr, x.mrr, x.coverage, m.fit_seconds
            );
        }
    }
}

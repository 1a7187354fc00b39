//! The `tune` subcommand: random search on a split's validation part.
//!
//! Every candidate is fit on `train.csv` and ranked against `valid.csv`; `test.csv` is
//! never read. affinity and each baseline get the same number of candidates (fits); each
//! fitted affinity model is also scored with every neighbour blend of
//! `tune::BLEND_SWEEP`, a serving-time setting that needs no refit. The winner
//! for affinity is written as a parameters file for `train --params` / `evaluate
//! --params`; the baselines' winners go to a file for `evaluate --baseline-params`.

use std::fs;

use affinity_core::data::{Dataset, Event};
use affinity_core::model::Model;
use affinity_core::params::TrainParams;
use affinity_core::train::{self, NoProgress};
use affinity_lab::baselines::{Ease, ItemKnn};
use affinity_lab::eval;
use affinity_lab::rank::{AffinityBlends, Ranker};
use affinity_lab::split::{self, SplitSet, Target};
use affinity_lab::tune;
use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use crate::cli::{Baseline, TuneArgs};
use crate::input::{load_items, load_params, time_kind};

/// Baseline parameters chosen on validation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BaselineParams {
    pub itemknn_neighbours: Option<usize>,
    pub ease_lambda: Option<f32>,
}

#[derive(Serialize)]
struct Trial {
    system: String,
    /// Which fit of this system (a fitted affinity model is scored once per blend).
    fit: usize,
    params: serde_json::Value,
    valid_ndcg10: f64,
    valid_recall10: f64,
    fit_seconds: f64,
}

pub fn run(args: TuneArgs) -> Result<()> {
    let s = SplitSet::read_without_test(&args.split)?;
    let items = load_items(args.items.as_deref(), args.read.skip_invalid)?;
    let all: Vec<Event> = s.train.iter().chain(&s.valid).cloned().collect();
    let kind = time_kind(args.read.time_kind, &all);
    let base = load_params(args.read.params.as_deref())?;
    let valid = split::target(s.protocol, &s.train, &s.valid);
    if valid.relevant.is_empty() {
        bail!("{}: the split has no validation users to tune on", args.split.display());
    }
    let data = Dataset {
        events: s.train.clone(),
        items,
        social: match &args.social {
            Some(p) => crate::input::load_social(p, args.read.skip_invalid)?,
            None => Vec::new(),
        },
        memberships: match &args.communities {
            Some(p) => crate::input::load_memberships(p, args.read.skip_invalid)?,
            None => Vec::new(),
        },
        ..Dataset::default()
    };
    let mut trials: Vec<Trial> = Vec::new();
    let candidates = tune::affinity_candidates(&base, kind, args.trials, args.seed);
    let bar = ProgressBar::new(candidates.len() as u64).with_message("affinity candidates");
    let mut best: Option<(f64, TrainParams)> = None;
    let mut first_model = None;
    for (n, p) in candidates.into_iter().enumerate() {
        let (model, fit) = eval::timed(|| train::train(&data, kind, &p, &NoProgress));
        // The candidate's own blend first, then the sweep (serving-time: no refit).
        let blends = tune::blend_variants(&p, tune::Signals::of(&data));
        let ranker = AffinityBlends {
            model: &model,
            settings: model.default_settings(),
            blends: blends.clone(),
        };
        for (blend, metrics) in blends.into_iter().zip(eval::score_variants(&ranker, &model, &valid, &[10])) {
            let q = tune::with_blend(p, blend);
            let m = &metrics[0];
            if best.as_ref().is_none_or(|(b, _)| m.ndcg > *b) {
                best = Some((m.ndcg, q));
            }
            trials.push(Trial {
                system: "affinity".into(),
                fit: n,
                params: serde_json::to_value(q)?,
                valid_ndcg10: m.ndcg,
                valid_recall10: m.recall,
                fit_seconds: fit,
            });
        }
        first_model.get_or_insert(model);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let Some((best_ndcg, best_params)) = best else { bail!("no candidates to try") };
    let Some(model) = first_model else { bail!("no model was fit") };

    let mut chosen = BaselineParams::default();
    if args.baselines.contains(&Baseline::Itemknn) {
        let candidates = tune::knn_candidates(args.trials);
        let fit = |n| ItemKnn::fit(&model, n);
        let describe = |n| serde_json::json!({ "neighbours": n });
        chosen.itemknn_neighbours = best_baseline("ItemKNN", candidates, fit, describe, &model, &valid, &mut trials);
    }
    if args.baselines.contains(&Baseline::Ease) {
        let candidates = tune::ease_candidates(args.trials);
        let fit = |l| Ease::fit(&model, l);
        let describe = |l| serde_json::json!({ "lambda": l });
        chosen.ease_lambda = best_baseline("EASE", candidates, fit, describe, &model, &valid, &mut trials);
    }
    fs::write(&args.out, serde_json::to_string_pretty(&best_params)?)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    if let Some(path) = &args.baselines_out {
        fs::write(path, serde_json::to_string_pretty(&chosen)?).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.json {
        fs::write(path, serde_json::to_string_pretty(&trials)?).with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!(
        "tuned on {} validation users of {} ({} split): affinity NDCG@10 {:.4} with factors {}, λ {:.1}, α {}, blend {} → {}",
        valid.relevant.len(),
        args.split.display(),
        s.protocol.as_str(),
        best_ndcg,
        best_params.als.factors,
        best_params.als.regularization,
        best_params.als.alpha,
        best_params.sequence.blend,
        args.out.display()
    );
    if let Some(n) = chosen.itemknn_neighbours {
        println!("ItemKNN: {n} neighbours");
    }
    if let Some(l) = chosen.ease_lambda {
        println!("EASE: λ {l:.1}");
    }
    Ok(())
}

/// Fits a baseline once per candidate on the training part, records each validation
/// score in `trials` and returns the candidate with the best NDCG@10.
fn best_baseline<C: Copy, R: Ranker>(
    system: &str,
    candidates: Vec<C>,
    fit: impl Fn(C) -> R,
    describe: impl Fn(C) -> serde_json::Value,
    model: &Model,
    valid: &Target,
    trials: &mut Vec<Trial>,
) -> Option<C> {
    let mut best: Option<(f64, C)> = None;
    for (n, c) in candidates.into_iter().enumerate() {
        let (ranker, fit_seconds) = eval::timed(|| fit(c));
        let m = &eval::score(&ranker, model, valid, &[10])[0];
        trials.push(Trial {
            system: system.into(),
            fit: n,
            params: describe(c),
            valid_ndcg10: m.ndcg,
            valid_recall10: m.recall,
            fit_seconds,
        });
        if best.is_none_or(|(b, _)| m.ndcg > b) {
            best = Some((m.ndcg, c));
        }
    }
    best.map(|(_, c)| c)
}

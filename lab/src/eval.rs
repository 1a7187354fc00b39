//! Ranking metrics, and scoring a [`Ranker`] on a held-out target.
//!
//! Every system is trained on the same split and asked for the same users; affinity's
//! ranker goes through the server's code path (see [`crate::rank`]), so the numbers here
//! are the numbers the service delivers.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use affinity_core::model::Model;
use affinity_core::ItemIdx;

use crate::rank::Ranker;
use crate::split::Target;

/// Ranking metrics of one user's list against their held-out items.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct UserMetrics {
    /// hits / min(K, |test|)
    pub recall: f64,
    /// hits / |test|
    pub recall_full: f64,
    pub ndcg: f64,
    pub hit: f64,
    pub mrr: f64,
}

/// Metrics of `ranked` (best first, at least K long or shorter) at cut-off `k`.
pub fn user_metrics<T: Eq + std::hash::Hash>(ranked: &[T], relevant: &HashSet<T>, k: usize) -> UserMetrics {
    if relevant.is_empty() {
        return UserMetrics::default();
    }
    let mut hits = 0usize;
    let mut dcg = 0.0;
    let mut first = None;
    for (r, item) in ranked.iter().take(k).enumerate() {
        if relevant.contains(item) {
            hits += 1;
            dcg += 1.0 / ((r + 2) as f64).log2();
            first.get_or_insert(r);
        }
    }
    let ideal_n = k.min(relevant.len());
    let idcg: f64 = (0..ideal_n).map(|r| 1.0 / ((r + 2) as f64).log2()).sum();
    UserMetrics {
        recall: hits as f64 / ideal_n as f64,
        recall_full: hits as f64 / relevant.len() as f64,
        ndcg: dcg / idcg,
        hit: if hits > 0 { 1.0 } else { 0.0 },
        mrr: first.map_or(0.0, |r| 1.0 / (r + 1) as f64),
    }
}

/// Averaged metrics at one cut-off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Metrics {
    pub k: usize,
    pub recall: f64,
    pub recall_full: f64,
    pub ndcg: f64,
    pub hr: f64,
    pub mrr: f64,
    /// Distinct recommended items / items in training.
    pub coverage: f64,
    pub users: usize,
}

/// One system's result.
#[derive(Debug, Clone, Serialize)]
pub struct ModelReport {
    pub name: String,
    pub params: serde_json::Value,
    pub fit_seconds: f64,
    pub metrics: Vec<Metrics>,
}

/// The whole evaluation, as written by `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub dataset: String,
    pub protocol: String,
    pub seed: u64,
    pub split_sizes: BTreeMap<String, usize>,
    pub models: Vec<ModelReport>,
}

/// Scores `ranker` on the held-out items of every test user, at each cut-off in `ks`.
pub fn score(ranker: &dyn Ranker, model: &Model, target: &Target, ks: &[usize]) -> Vec<Metrics> {
    score_variants(ranker, model, target, ks).into_iter().next().unwrap_or_default()
}

/// Scores every variant of `ranker` (see [`Ranker::rank_variants`]) on the held-out items
/// of every test user, at each cut-off in `ks`: one list of metrics per variant.
pub fn score_variants(ranker: &dyn Ranker, model: &Model, target: &Target, ks: &[usize]) -> Vec<Vec<Metrics>> {
    let max_k = ks.iter().copied().max().unwrap_or(10);
    let users: Vec<(&String, &Vec<String>)> = target.relevant.iter().collect();
    let lists: Vec<(Vec<Vec<ItemIdx>>, HashSet<ItemIdx>)> = users
        .par_iter()
        .map(|(user, items)| {
            // Items never seen in training cannot be recommended; they still count as misses.
            let relevant: HashSet<ItemIdx> = items
                .iter()
                .enumerate()
                .map(|(n, id)| model.item_index(id).unwrap_or(ItemIdx(u32::MAX - n as u32)))
                .collect();
            let mut keep: Vec<ItemIdx> = Vec::new();
            if target.keep_relevant_seen {
                keep = relevant.iter().copied().filter(|i| i.get() < model.n_items()).collect();
                keep.sort_unstable();
            }
            (ranker.rank_variants(user, max_k, &keep), relevant)
        })
        .collect();
    let variants = lists.iter().map(|(v, _)| v.len()).max().unwrap_or(1);
    let train_items = model.manifest().counts.items_with_events.max(1);
    (0..variants)
        .map(|v| {
            let empty = Vec::new();
            let per_user: Vec<(&Vec<ItemIdx>, &HashSet<ItemIdx>)> = lists.iter().map(|(l, r)| (l.get(v).unwrap_or(&empty), r)).collect();
            ks.iter().map(|&k| metrics_at(&per_user, k, train_items)).collect()
        })
        .collect()
}

/// Averages per-user metrics at cut-off `k`.
fn metrics_at(lists: &[(&Vec<ItemIdx>, &HashSet<ItemIdx>)], k: usize, train_items: usize) -> Metrics {
    let mut m = Metrics {
        k,
        users: lists.len(),
        ..Metrics::default()
    };
    let mut distinct: HashSet<ItemIdx> = HashSet::new();
    for (ranked, relevant) in lists {
        let um = user_metrics(ranked, relevant, k);
        m.recall += um.recall;
        m.recall_full += um.recall_full;
        m.ndcg += um.ndcg;
        m.hr += um.hit;
        m.mrr += um.mrr;
        distinct.extend(ranked.iter().take(k));
    }
    let n = lists.len().max(1) as f64;
    m.recall /= n;
    m.recall_full /= n;
    m.ndcg /= n;
    m.hr /= n;
    m.mrr /= n;
    m.coverage = distinct.len() as f64 / train_items as f64;
    m
}

/// Times `f`, returning its value and the seconds it took.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let start = Instant::now();
    let v = f();
    (v, start.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[u32]) -> HashSet<u32> {
        v.iter().copied().collect()
    }

    #[test]
    fn metrics_on_hand_computed_case() {
        // Relevant {2, 5, 9}; ranked [2, 7, 5, 1]; K = 3 → hits at ranks 0 and 2.
        let m = user_metrics(&[2, 7, 5, 1], &set(&[2, 5, 9]), 3);
        assert!((m.recall - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.recall_full - 2.0 / 3.0).abs() < 1e-12);
        let dcg = 1.0 + 1.0 / 4f64.log2();
        let idcg = 1.0 + 1.0 / 3f64.log2() + 1.0 / 4f64.log2();
        assert!((m.ndcg - dcg / idcg).abs() < 1e-12);
        assert_eq!(m.hit, 1.0);
        assert_eq!(m.mrr, 1.0);
        // K = 1 with 3 relevant: recall uses min(K, |test|) = 1.
        let m = user_metrics(&[7, 2], &set(&[2, 5, 9]), 1);
        assert_eq!(m.recall, 0.0);
        let m = user_metrics(&[2, 7], &set(&[2, 5, 9]), 1);
        assert_eq!(m.recall, 1.0);
        assert!((m.recall_full - 1.0 / 3.0).abs() < 1e-12);
        let m = user_metrics(&[7, 8, 2], &set(&[2]), 10);
        assert!((m.mrr - 1.0 / 3.0).abs() < 1e-12);
        assert!((m.ndcg - 0.5).abs() < 1e-12);
    }
}

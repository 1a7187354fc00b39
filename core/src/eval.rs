//! Offline evaluation: data splits, ranking metrics and in-tree baselines.
//!
//! Every model is trained on the same split and asked for the same users; affinity is
//! scored through [`Model::recommend`], the function the server calls, so the numbers
//! here are the numbers the service delivers. Baselines work in the model's item index
//! space and see exactly the training histories the model saw.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;
use serde::Serialize;

use crate::content::fnv1a;
use crate::data::Event;
use crate::model::Model;
use crate::recommend::{RecommendRequest, Subject};

/// Users with fewer distinct items than this stay entirely in training.
pub const MIN_ITEMS_FOR_TEST: usize = 5;

/// A train/test split of events.
#[derive(Debug, Clone, Default)]
pub struct Split {
    pub train: Vec<Event>,
    /// Held-out distinct items per user, sorted by user id.
    pub test: BTreeMap<String, Vec<String>>,
}

/// The per-user random split: users with at least [`MIN_ITEMS_FOR_TEST`] distinct items
/// send `max(1, round(0.2·n))` of them, chosen with a seeded RNG, to test; all events of
/// a test item leave training.
pub fn random_split(events: &[Event], seed: u64) -> Split {
    let mut per_user: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut seen: HashSet<(&str, &str)> = HashSet::new();
    for e in events {
        if seen.insert((&e.user_id, &e.item_id)) {
            per_user.entry(&e.user_id).or_default().push(&e.item_id);
        }
    }
    let mut held: HashSet<(&str, &str)> = HashSet::new();
    let mut test = BTreeMap::new();
    for (user, items) in per_user {
        if items.len() < MIN_ITEMS_FOR_TEST {
            continue;
        }
        let n_test = ((items.len() as f64 * 0.2).round() as usize).max(1);
        let mut sorted = items.clone();
        sorted.sort_unstable();
        // Each user's draw depends only on the seed and the user id.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ fnv1a(user.as_bytes()));
        sorted.shuffle(&mut rng);
        let chosen: Vec<String> = sorted[..n_test].iter().map(|s| s.to_string()).collect();
        for &item in &sorted[..n_test] {
            held.insert((user, item));
        }
        test.insert(user.to_string(), chosen);
    }
    let train = events
        .iter()
        .filter(|e| !held.contains(&(e.user_id.as_str(), e.item_id.as_str())))
        .cloned()
        .collect();
    Split { train, test }
}

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
pub fn user_metrics(ranked: &[u32], relevant: &HashSet<u32>, k: usize) -> UserMetrics {
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

/// Something that ranks items for a training user (by model user index).
pub trait Ranker: Sync {
    fn name(&self) -> &str;
    /// Top `k` unseen items for `user_id`, best first, as model item indices.
    fn rank(&self, user_id: &str, k: usize) -> Vec<u32>;
}

/// affinity itself, through the serving code path.
pub struct Affinity<'a>(pub &'a Model);

impl Ranker for Affinity<'_> {
    fn name(&self) -> &str {
        "affinity"
    }
    fn rank(&self, user_id: &str, k: usize) -> Vec<u32> {
        let req = RecommendRequest {
            subject: Subject::User(user_id),
            k,
            exclude_seen: true,
            exclude_items: &[],
            category: None,
        };
        self.0
            .recommend(&req)
            .map(|r| r.items.into_iter().map(|s| s.item).collect())
            .unwrap_or_default()
    }
}

/// Most popular unseen items.
pub struct Pop<'a>(pub &'a Model);

impl Ranker for Pop<'_> {
    fn name(&self) -> &str {
        "Pop"
    }
    fn rank(&self, user_id: &str, k: usize) -> Vec<u32> {
        let seen = self.0.users.get(user_id).map(|u| &self.0.histories[u as usize]);
        self.0
            .popular_order
            .iter()
            .copied()
            .filter(|&i| seen.is_none_or(|h| !h.has_seen(i)))
            .take(k)
            .collect()
    }
}

/// Item-based k-nearest-neighbours with cosine similarity on binary interactions.
pub struct ItemKnn<'a> {
    model: &'a Model,
    /// Per item: `(neighbour, similarity)`, best first.
    neighbours: Vec<Vec<(u32, f32)>>,
    pub k_neighbours: usize,
}

impl<'a> ItemKnn<'a> {
    /// Builds the neighbour lists from the model's training histories.
    pub fn fit(model: &'a Model, k_neighbours: usize) -> ItemKnn<'a> {
        let n = model.n_items();
        let mut users_of: Vec<Vec<u32>> = vec![Vec::new(); n];
        for (u, h) in model.histories.iter().enumerate() {
            for &(i, _) in &h.seen {
                users_of[i as usize].push(u as u32);
            }
        }
        let counts: Vec<f32> = users_of.iter().map(|u| u.len() as f32).collect();
        let neighbours = (0..n)
            .into_par_iter()
            .map_init(
                || vec![0u32; n],
                |co, i| {
                    let mut touched = Vec::new();
                    for &u in &users_of[i] {
                        for &(j, _) in &model.histories[u as usize].seen {
                            if j as usize != i {
                                if co[j as usize] == 0 {
                                    touched.push(j);
                                }
                                co[j as usize] += 1;
                            }
                        }
                    }
                    let mut sims: Vec<(u32, f32)> = touched
                        .iter()
                        .map(|&j| {
                            let c = co[j as usize] as f32;
                            co[j as usize] = 0;
                            (j, c / (counts[i] * counts[j as usize]).sqrt())
                        })
                        .collect();
                    sims.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                    sims.truncate(k_neighbours);
                    sims
                },
            )
            .collect();
        ItemKnn {
            model,
            neighbours,
            k_neighbours,
        }
    }
}

impl Ranker for ItemKnn<'_> {
    fn name(&self) -> &str {
        "ItemKNN"
    }
    fn rank(&self, user_id: &str, k: usize) -> Vec<u32> {
        let Some(u) = self.model.users.get(user_id) else {
            return Vec::new();
        };
        let h = &self.model.histories[u as usize];
        let mut scores: HashMap<u32, f32> = HashMap::new();
        for &(j, _) in &h.seen {
            for &(i, s) in &self.neighbours[j as usize] {
                *scores.entry(i).or_insert(0.0) += s;
            }
        }
        let mut ranked: Vec<(f32, u32)> = scores
            .into_iter()
            .filter(|&(i, _)| !h.has_seen(i))
            .map(|(i, s)| (s, i))
            .collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        ranked.truncate(k);
        ranked.into_iter().map(|(_, i)| i).collect()
    }
}

/// Scores `ranker` on the held-out items of every test user, at each cut-off in `ks`.
pub fn score(ranker: &dyn Ranker, model: &Model, test: &BTreeMap<String, Vec<String>>, ks: &[usize]) -> Vec<Metrics> {
    let max_k = ks.iter().copied().max().unwrap_or(10);
    let users: Vec<(&String, &Vec<String>)> = test.iter().collect();
    let lists: Vec<(Vec<u32>, HashSet<u32>)> = users
        .par_iter()
        .map(|(user, items)| {
            // Items never seen in training cannot be recommended; they still count as misses.
            let relevant: HashSet<u32> = items
                .iter()
                .enumerate()
                .map(|(n, id)| model.item_ids.get(id).unwrap_or(u32::MAX - n as u32))
                .collect();
            (ranker.rank(user, max_k), relevant)
        })
        .collect();
    let train_items = model.popularity.iter().filter(|&&p| p > 0.0).count().max(1);
    ks.iter()
        .map(|&k| {
            let mut m = Metrics {
                k,
                users: lists.len(),
                ..Metrics::default()
            };
            let mut distinct: HashSet<u32> = HashSet::new();
            for (ranked, relevant) in &lists {
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
        })
        .collect()
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
    use crate::data::EventKind;

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

    fn events(users: usize, items_per_user: usize) -> Vec<Event> {
        let mut out = Vec::new();
        for u in 0..users {
            for i in 0..items_per_user {
                out.push(Event {
                    user_id: format!("u{u}"),
                    item_id: format!("i{}", (u + i * 3) % 50),
                    kind: EventKind::View,
                    timestamp: None,
                    value: None,
                });
            }
        }
        out
    }

    #[test]
    fn random_split_holds_out_twenty_percent_without_leaks() {
        let mut ev = events(30, 10);
        ev.extend(events(1, 3).into_iter().map(|mut e| {
            e.user_id = "small".into();
            e
        }));
        let split = random_split(&ev, 42);
        assert!(!split.test.contains_key("small"), "users with < 5 items stay in train");
        assert_eq!(split.test.len(), 30);
        for (user, items) in &split.test {
            assert_eq!(items.len(), 2, "round(0.2 * 10) = 2");
            for item in items {
                assert!(
                    !split.train.iter().any(|e| &e.user_id == user && &e.item_id == item),
                    "test item {item} of {user} leaked into train"
                );
            }
        }
        assert_eq!(split.train.len(), ev.len() - 60);
        let again = random_split(&ev, 42);
        assert_eq!(again.test, split.test, "same seed, same split");
        assert_ne!(random_split(&ev, 43).test, split.test);
    }
}

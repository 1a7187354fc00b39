//! Choosing the HNSW search list size (`ef`) from measured recall.
//!
//! How large a candidate list a graph search needs to find the true top 10 depends on
//! the catalogue: on the scale bench's stores, `ef` 40 finds 98–99% of the exact top 10
//! at 100k–150k items but 93% at a million. So no fixed default suits every model. After
//! building the indexes, training measures the inner-product index against exact
//! scoring for a fixed sample of its users' stored vectors and records the smallest
//! `ef` of [`LADDER`] whose recall@10 reaches [`TARGET_RECALL`] as the model's serving
//! setting (the server's `--ef-search` still overrides it).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::Model;
use crate::ann::ip_query;
use crate::ids::UserIdx;

/// Recall@10 against exact scoring that the chosen `ef` must reach.
pub const TARGET_RECALL: f64 = 0.95;

/// Search list sizes tried, smallest first.
pub const LADDER: [usize; 7] = [10, 20, 40, 80, 160, 320, 640];

/// Users whose vectors are the queries (evenly spaced over the user table).
const QUERIES: usize = 200;

/// Results compared per query.
const K: usize = 10;

/// What the calibration measured, recorded in the manifest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EfCalibration {
    /// The `ef` chosen: the smallest of the ladder reaching the target, else the largest.
    pub ef_search: usize,
    /// Users whose vectors were the queries.
    pub queries: usize,
    /// `(ef, recall@10)` for every size tried.
    pub recall_at_10: Vec<(usize, f64)>,
}

impl Model {
    /// Measures the inner-product index's recall@10 against exact scoring at every `ef`
    /// of [`LADDER`] and makes the smallest that reaches [`TARGET_RECALL`] the model's
    /// serving `ef`. `None` (and nothing changed) without an index or user vectors.
    pub fn calibrate_ef(&mut self) -> Option<EfCalibration> {
        let index = self.indexes.mips.as_ref()?;
        let with_vector: Vec<UserIdx> = (0..self.n_users() as u32)
            .map(UserIdx)
            .filter(|&u| self.user_vector(u).iter().any(|&x| x != 0.0))
            .collect();
        if with_vector.is_empty() || index.len() < K {
            return None;
        }
        let step = (with_vector.len() / QUERIES).max(1);
        let queries: Vec<UserIdx> = with_vector.into_iter().step_by(step).take(QUERIES).collect();
        let never = crate::cancel::Cancel::never();
        let per_query: Vec<Vec<usize>> = queries
            .par_iter()
            .map(|&user| {
                let u = self.user_vector(user);
                let mut exact: Vec<(f32, u32)> = match self.score_every_item(u, &never) {
                    Ok(scores) => scores.into_iter().enumerate().filter(|&(i, _)| self.has_collab[i]).map(|(i, s)| (s, i as u32)).collect(),
                    Err(_) => Vec::new(),
                };
                let order = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
                if exact.len() > K {
                    exact.select_nth_unstable_by(K, order);
                    exact.truncate(K);
                }
                let truth: Vec<u32> = exact.into_iter().map(|x| x.1).collect();
                let q = ip_query(u, index.dim());
                LADDER
                    .iter()
                    .map(|&ef| index.search(&q, K, ef, self.mips_rows()).iter().filter(|h| truth.contains(&h.item)).count())
                    .collect()
            })
            .collect();
        let found = |rung: usize| per_query.iter().map(|hits| hits[rung]).sum::<usize>() as f64 / (per_query.len() * K) as f64;
        let recall_at_10: Vec<(usize, f64)> = LADDER.iter().enumerate().map(|(rung, &ef)| (ef, found(rung))).collect();
        let ef_search = recall_at_10.iter().find(|(_, r)| *r >= TARGET_RECALL).map_or(LADDER[LADDER.len() - 1], |&(ef, _)| ef);
        let calibration = EfCalibration { ef_search, queries: per_query.len(), recall_at_10 };
        self.manifest.serving.ef_search = ef_search;
        self.manifest.ef_calibration = Some(calibration.clone());
        Some(calibration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::TimeKind;
    use crate::demo::{generate, DemoSize, DEMO_SEED};
    use crate::testing::fast_params;
    use crate::train::{train, NoProgress};

    #[test]
    fn the_trainer_serves_the_smallest_ef_that_finds_the_exact_top_10() {
        let store = generate(DemoSize { users: 400, items: 2_000, events_per_user: 20, planted: false }, DEMO_SEED);
        // A sparse graph (few links, short build lists), so small lists miss: recall@10
        // rises from about 0.91 at ef 10 to 0.96 at 40.
        let mut p = fast_params();
        p.exact_max_items = 0;
        p.hnsw.max_connections = 6;
        p.hnsw.ef_construction = 12;
        let m = train(&store, TimeKind::Unix, &p, &NoProgress);
        let c = m.manifest().ef_calibration.clone().expect("a model served through its index is calibrated");
        assert_eq!(m.default_settings().ef_search, c.ef_search);
        assert_eq!(c.recall_at_10.iter().map(|x| x.0).collect::<Vec<_>>(), LADDER);
        assert!(c.queries > 0 && c.recall_at_10.iter().all(|&(_, r)| (0.0..=1.0).contains(&r)));
        let chosen = LADDER.iter().position(|&ef| ef == c.ef_search).unwrap();
        assert!(chosen > 0, "this sparse graph misses at the smallest list (about 0.91): {c:?}");
        assert!(c.recall_at_10[..chosen].iter().all(|&(_, r)| r < TARGET_RECALL), "a smaller ef reached the target: {c:?}");
        assert!(c.recall_at_10[chosen].1 >= TARGET_RECALL || chosen == LADDER.len() - 1, "{c:?}");
        // A catalogue scored exactly has no index to calibrate.
        let exact = train(&store, TimeKind::Unix, &fast_params(), &NoProgress);
        assert!(exact.manifest().ef_calibration.is_none());
    }
}

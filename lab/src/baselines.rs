//! In-tree baselines scored on the same split as affinity: Pop, ItemKNN and EASE.
//!
//! They work in the model's item index space and see exactly the training histories the
//! model saw, so a comparison differs only in the algorithm.

use affinity_core::model::Model;
use affinity_core::ItemIdx;
use faer::linalg::solvers::DenseSolveCore;
use faer::{Mat, Side};
use rayon::prelude::*;

use crate::rank::{allowed, top_of, Ranker};

/// Most popular unseen items.
pub struct Pop<'a>(pub &'a Model);

impl Ranker for Pop<'_> {
    fn name(&self) -> &str {
        "Pop"
    }
    fn rank(&self, user_id: &str, k: usize, keep: &[ItemIdx]) -> Vec<ItemIdx> {
        let seen = self.0.user_index(user_id).map(|u| self.0.history(u));
        self.0
            .popular_order()
            .iter()
            .copied()
            .filter(|&i| allowed(seen, i, keep))
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
        for (u, h) in model.histories().iter().enumerate() {
            for (i, _) in h.seen() {
                users_of[i.get()].push(u as u32);
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
                        for (j, _) in model.histories()[u as usize].seen() {
                            let j = j.0;
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
    fn rank(&self, user_id: &str, k: usize, keep: &[ItemIdx]) -> Vec<ItemIdx> {
        let Some(u) = self.model.user_index(user_id) else {
            return Pop(self.model).rank(user_id, k, keep);
        };
        let h = self.model.history(u);
        let mut scores = vec![0.0f32; self.model.n_items()];
        for (j, _) in h.seen() {
            for &(i, s) in &self.neighbours[j.get()] {
                scores[i as usize] += s;
            }
        }
        top_of(&scores, k, |i| allowed(Some(h), i, keep))
    }
}

/// EASE (Steck 2019): a closed-form item–item model, `B = I − P·diag(1/diag(P))` with
/// `P = (XᵀX + λI)⁻¹` and a zero diagonal. Memory and time grow with items² and items³:
/// strong on small catalogues, infeasible at a million items. Fitted over the items some
/// history holds (a catalogue item nobody had gets a zero row and column either way), so
/// a catalogue file listing many more items costs nothing extra.
pub struct Ease<'a> {
    model: &'a Model,
    /// Each fitted item's model index, and each model item's place among them.
    items: Vec<ItemIdx>,
    place: Vec<Option<u32>>,
    /// Row-major `fitted × fitted`.
    weights: Vec<f32>,
    pub lambda: f32,
}

impl<'a> Ease<'a> {
    /// Fits on the model's (binary) training histories.
    pub fn fit(model: &'a Model, lambda: f32) -> Ease<'a> {
        let mut place: Vec<Option<u32>> = vec![None; model.n_items()];
        let mut items = Vec::new();
        for h in model.histories() {
            for (i, _) in h.seen() {
                if place[i.get()].is_none() {
                    place[i.get()] = Some(items.len() as u32);
                    items.push(i);
                }
            }
        }
        let n = items.len();
        let at = |i: ItemIdx| place[i.get()].map_or(0, |p| p as usize);
        let mut g = Mat::<f32>::zeros(n, n);
        for h in model.histories() {
            for (i, _) in h.seen() {
                for (j, _) in h.seen() {
                    g[(at(i), at(j))] += 1.0;
                }
            }
        }
        for i in 0..n {
            g[(i, i)] += lambda;
        }
        let p = match g.llt(Side::Lower) {
            Ok(llt) => llt.inverse(),
            Err(_) => Mat::<f32>::zeros(n, n),
        };
        drop(g);
        let mut weights = vec![0.0f32; n * n];
        weights.par_chunks_mut(n.max(1)).enumerate().for_each(|(i, row)| {
            for (j, w) in row.iter_mut().enumerate() {
                // B[i][j] = −P[i][j] / P[j][j], zero diagonal.
                if i != j {
                    let d = p[(j, j)];
                    *w = if d != 0.0 { -p[(i, j)] / d } else { 0.0 };
                }
            }
        });
        Ease { model, items, place, weights, lambda }
    }
}

impl Ranker for Ease<'_> {
    fn name(&self) -> &str {
        "EASE"
    }
    fn rank(&self, user_id: &str, k: usize, keep: &[ItemIdx]) -> Vec<ItemIdx> {
        let n = self.items.len();
        let Some(u) = self.model.user_index(user_id) else {
            return Pop(self.model).rank(user_id, k, keep);
        };
        let h = self.model.history(u);
        let mut fitted = vec![0.0f32; n];
        for (j, _) in h.seen() {
            let Some(p) = self.place[j.get()] else { continue };
            let row = &self.weights[p as usize * n..(p as usize + 1) * n];
            for (s, w) in fitted.iter_mut().zip(row) {
                *s += w;
            }
        }
        let mut scores = vec![0.0f32; self.model.n_items()];
        for (&i, s) in self.items.iter().zip(fitted) {
            scores[i.get()] = s;
        }
        top_of(&scores, k, |i| allowed(Some(h), i, keep))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use affinity_core::data::{Dataset, Event, EventKind, TimeKind};
    use affinity_core::params::TrainParams;
    use affinity_core::train::{train, NoProgress};

    fn model() -> Model {
        model_with(Vec::new())
    }

    fn model_with(items: Vec<affinity_core::data::Item>) -> Model {
        // Items a and b always go together; c is popular on its own.
        let mut events = Vec::new();
        let mut push = |u: String, i: &str| {
            events.push(Event {
                user_id: u,
                item_id: i.into(),
                kind: EventKind::View,
                timestamp: None,
                value: None,
            })
        };
        for u in 0..10 {
            push(format!("p{u}"), "a");
            push(format!("p{u}"), "b");
        }
        for u in 0..15 {
            push(format!("c{u}"), "c");
            push(format!("c{u}"), if u % 2 == 0 { "d" } else { "e" });
        }
        push("q".into(), "a");
        let data = Dataset {
            events,
            items,
            ..Dataset::default()
        };
        let params = TrainParams {
            als: affinity_core::als::AlsParams {
                factors: 4,
                ..Default::default()
            },
            ..TrainParams::default()
        };
        train(&data, TimeKind::None, &params, &NoProgress)
    }

    #[test]
    fn baselines_rank_as_expected() {
        let m = model();
        let b = m.item_index("b").unwrap();
        let c = m.item_index("c").unwrap();
        let a = m.item_index("a").unwrap();
        assert_eq!(Pop(&m).rank("q", 1, &[]), vec![c], "most popular unseen");
        assert_eq!(ItemKnn::fit(&m, 10).rank("q", 1, &[]), vec![b]);
        assert_eq!(Ease::fit(&m, 1.0).rank("q", 1, &[]), vec![b]);
        // Seen items are left out unless kept.
        assert!(!Ease::fit(&m, 1.0).rank("q", 5, &[]).contains(&a));
        assert!(Pop(&m).rank("q", 10, &[a]).contains(&a));
    }

    #[test]
    fn ease_is_fitted_over_the_items_someone_had_only() {
        let plain = model();
        let listed: Vec<_> = (0..2_000).map(|n| affinity_core::data::Item::bare(format!("listed{n}"))).collect();
        let big = model_with(listed);
        assert_eq!(big.n_items(), plain.n_items() + 2_000);
        let e = Ease::fit(&big, 1.0);
        assert_eq!(e.weights.len(), 25, "five items were had");
        let ids = |m: &Model, r: Vec<ItemIdx>| r.into_iter().map(|i| m.item_id(i).to_string()).collect::<Vec<_>>();
        // The had items rank as without the listing (the listed ones score 0, as an
        // items × items fit gives them too).
        let had: Vec<String> = ids(&big, e.rank("q", 2_005, &[])).into_iter().filter(|i| !i.starts_with("listed")).collect();
        assert_eq!(had, ids(&plain, Ease::fit(&plain, 1.0).rank("q", 5, &[])));
    }
}

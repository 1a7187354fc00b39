//! Candidate lists for users with long histories, computed when training.
//!
//! A graph search finds the items nearest a user's vector, and a user who had thousands
//! of items must look past all of them: the search asks for room for what the filter
//! drops, rounds grow, and past a point the request scores the whole catalogue exactly
//! (tens of milliseconds at a million items). On a heavy-tailed store those few users
//! draw a large share of requests. Training already has their vectors, so it scores the
//! catalogue for them once, in batches (one pass over the item matrix per batch instead
//! of one per user), and keeps each one's best [`SHORTLIST`] items they never had. Serving
//! starts such a user's candidates from that list (plus neighbour votes, promotions and
//! new arrivals, as for any search) and re-scores them with the current vector; it falls
//! back to the search when live events or filters leave too few.

use ndarray::{s, Array2};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::Model;
use crate::ids::{ItemIdx, UserIdx};

/// Users with more items than this get a list: below it the first search round (room for
/// this many dropped items) finds enough.
pub const HEAVY_SEEN: usize = crate::recommend::SEARCH_ROOM;

/// Items kept per user.
pub const SHORTLIST: usize = 1_000;

/// Budget of item scores computed for the lists (users × items), so training time stays
/// bounded: the heaviest users first, as many as fit (5,000 at a million items).
const SCORE_BUDGET: usize = 5_000_000_000;

/// Users scored per pass over the item matrix.
const BATCH: usize = 32;

/// The lists, by user index.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Shortlists {
    /// Users with a list, ascending.
    users: Vec<u32>,
    /// Their lists, best first.
    lists: Vec<Vec<u32>>,
}

impl Shortlists {
    /// The list of `user`, if they have one.
    pub fn get(&self, user: UserIdx) -> Option<&[u32]> {
        self.users.binary_search(&user.0).ok().map(|at| self.lists[at].as_slice())
    }

    /// How many users have a list.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether no user has a list.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether every index is in range.
    pub(crate) fn fits(&self, n_users: usize, n_items: usize) -> bool {
        self.users.len() == self.lists.len()
            && self.users.windows(2).all(|w| w[0] < w[1])
            && self.users.iter().all(|&u| (u as usize) < n_users)
            && self.lists.iter().flatten().all(|&i| (i as usize) < n_items)
    }
}

impl Model {
    /// Computes the lists for the heaviest users (more than [`HEAVY_SEEN`] items) within
    /// the score budget; returns how many users got one.
    pub fn build_shortlists(&mut self) -> usize {
        let n = self.n_items();
        if n <= SHORTLIST {
            return 0;
        }
        let mut heavy: Vec<(usize, u32)> = (0..self.n_users() as u32)
            .map(|u| (self.history(UserIdx(u)).len(), u))
            .filter(|&(seen, u)| seen > HEAVY_SEEN && self.user_vector(UserIdx(u)).iter().any(|&x| x != 0.0))
            .collect();
        heavy.sort_unstable_by(|a, b| b.cmp(a));
        heavy.truncate((SCORE_BUDGET / n).max(1));
        let mut users: Vec<u32> = heavy.into_iter().map(|(_, u)| u).collect();
        users.sort_unstable();
        let d = self.collab.item_factors.ncols();
        let lists: Vec<Vec<u32>> = users
            .par_chunks(BATCH)
            .flat_map_iter(|batch| {
                let mut queries = Array2::<f32>::zeros((d, batch.len()));
                for (c, &u) in batch.iter().enumerate() {
                    queries.column_mut(c).assign(&ndarray::ArrayView1::from(self.user_vector(UserIdx(u))));
                }
                // items × batch: one pass over the item matrix for the whole batch.
                let scores = self.collab.item_factors.dot(&queries);
                let mut lists = Vec::with_capacity(batch.len());
                let mut buf: Vec<(f32, u32)> = Vec::with_capacity(n);
                for (c, &u) in batch.iter().enumerate() {
                    let history = self.history(UserIdx(u));
                    buf.clear();
                    buf.extend(
                        scores
                            .slice(s![.., c])
                            .iter()
                            .enumerate()
                            .filter(|&(i, _)| self.has_collab(ItemIdx(i as u32)) && !history.has_seen(ItemIdx(i as u32)))
                            .map(|(i, &score)| (score, i as u32)),
                    );
                    let keep = SHORTLIST.min(buf.len());
                    if keep < buf.len() {
                        buf.select_nth_unstable_by(keep, |a, b| b.0.total_cmp(&a.0));
                        buf.truncate(keep);
                    }
                    buf.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                    lists.push(buf.iter().map(|&(_, i)| i).collect());
                }
                lists
            })
            .collect();
        let count = users.len();
        self.shortlists = Shortlists { users, lists };
        count
    }

    /// The training-time list of `user`, if they have one.
    pub(crate) fn shortlist(&self, user: UserIdx) -> Option<&[u32]> {
        self.shortlists.get(user)
    }

    /// Every list (saved with the model).
    pub(crate) fn shortlists(&self) -> &Shortlists {
        &self.shortlists
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Event, EventKind, TimeKind};
    use crate::demo::{generate, DemoSize, DEMO_SEED};
    use crate::recommend::RecommendQuery;
    use crate::testing::fast_params;
    use crate::train::{train, NoProgress};

    #[test]
    fn a_heavy_user_is_served_from_their_list_with_the_exact_answer_and_it_survives_saving() {
        let mut store = generate(DemoSize { users: 300, items: 3_000, events_per_user: 20, planted: false }, DEMO_SEED);
        // One account that viewed 700 distinct items: more than a first search round makes
        // room for.
        let items: Vec<String> = store.items.iter().map(|i| i.item_id.clone()).collect();
        for (n, item) in items.iter().step_by(4).take(700).enumerate() {
            store.events.push(Event::new("heavy", item.clone(), EventKind::View, Some(1_700_000_000 + n as i64)));
        }
        let mut p = fast_params();
        p.exact_max_items = 0;
        let m = train(&store, TimeKind::Unix, &p, &NoProgress);
        let heavy = m.user_index("heavy").unwrap();
        let list = m.shortlist(heavy).expect("the heavy user has a list");
        assert_eq!(m.shortlists().len(), 1, "only users above {HEAVY_SEEN} items get one");
        assert_eq!(list.len(), SHORTLIST);
        // The best unseen items by the stored vector, best first.
        let scores = m.score_every_item(m.user_vector(heavy), &crate::cancel::Cancel::never()).unwrap();
        let mut unseen: Vec<u32> = (0..m.n_items() as u32).filter(|&i| m.has_collab(ItemIdx(i)) && !m.history(heavy).has_seen(ItemIdx(i))).collect();
        unseen.sort_by(|&a, &b| scores[b as usize].total_cmp(&scores[a as usize]).then(a.cmp(&b)));
        // (Scores from the batched product differ from the per-user one in the last bits:
        // near-ties may swap.)
        let truth: std::collections::HashSet<u32> = unseen[..SHORTLIST].iter().copied().collect();
        assert!(list.iter().filter(|i| truth.contains(i)).count() >= SHORTLIST - 10, "the best unseen items");
        assert!(list.windows(2).all(|w| scores[w[0] as usize] >= scores[w[1] as usize] - 1e-4), "best first");

        let q = RecommendQuery::for_user("heavy", 10);
        let ann = m.recommend(&q, &m.default_settings()).unwrap();
        let exact = m.recommend(&q, &m.default_settings().exact()).unwrap();
        let ids = |r: &crate::recommend::Recommendations| r.items.iter().map(|s| s.item).collect::<Vec<_>>();
        assert_eq!(ann.retrieval, crate::recommend::Retrieval::Ann);
        assert_eq!(ids(&ann), ids(&exact), "the list holds the exact top 10");

        let dir = tempfile::tempdir().unwrap();
        let mut m = m;
        let saved = crate::model::format::save(&mut m, dir.path(), crate::model::publish::Retention::default()).unwrap();
        let loaded = crate::model::format::load(&saved).unwrap();
        assert_eq!(loaded.shortlists(), m.shortlists());
        assert_eq!(ids(&loaded.recommend(&q, &loaded.default_settings()).unwrap()), ids(&exact));

        // Serving does start from the list: given the worst items instead, it answers
        // from them.
        let worst: Vec<u32> = unseen[unseen.len() - SHORTLIST..].to_vec();
        m.shortlists = Shortlists { users: vec![heavy.0], lists: vec![worst.clone()] };
        assert_ne!(ids(&m.recommend(&q, &m.default_settings()).unwrap()), ids(&exact));
        // Not when the list cannot stand for the query: items they had asked for, or many
        // live events.
        let from_worst = |r: &crate::recommend::Recommendations| r.items.iter().all(|s| worst.contains(&s.item.0));
        let mut include = q.clone();
        include.seen = crate::repeat::SeenPolicy::Include;
        assert!(!from_worst(&m.recommend(&include, &m.default_settings()).unwrap()));
        let mut busy = q.clone();
        busy.live = (0..100).map(|n| crate::recommend::LiveEvent { item_id: items[n * 4 + 1].clone(), kind: EventKind::View, timestamp: Some(1_800_000_000 + n as i64) }).collect();
        assert!(!from_worst(&m.recommend(&busy, &m.default_settings()).unwrap()));
    }
}

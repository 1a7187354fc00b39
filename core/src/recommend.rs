//! Serving-time scoring: personalised recommendations and similar items.
//!
//! Both the server and the evaluator call these functions, so the quality `evaluate`
//! reports is the quality the server returns. A user is scored by the inner product of
//! their folded-in vector with every item's factors; small catalogues are scored exactly,
//! large ones retrieve candidates from the MIPS HNSW index and re-rank them exactly,
//! falling back to exact scoring when filters leave too few. Ties break by item index,
//! so results are deterministic.

use std::cmp::Ordering;
use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::linalg::dot;
use crate::model::{Model, UserHistory};

/// Largest `k` a request may ask for.
pub const MAX_K: usize = 1000;

/// Who recommendations are for.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    /// A user id; unknown users get popular items.
    User(&'a str),
    /// An anonymous session: the items it interacted with, oldest first.
    RecentItems(&'a [String]),
}

/// A recommendation request in domain terms.
#[derive(Debug, Clone, Copy)]
pub struct RecommendRequest<'a> {
    pub subject: Subject<'a>,
    pub k: usize,
    /// Leave out items the user (or session) already interacted with.
    pub exclude_seen: bool,
    pub exclude_items: &'a [String],
    /// Only items of this category.
    pub category: Option<&'a str>,
}

/// Why an item was recommended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasonKind {
    /// Personalised from the user's history.
    Personalized,
    /// Popular items: the subject has no usable history.
    Popular,
    /// Similar to the query item.
    Similar,
}

/// A scored item with its reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub item: u32,
    pub score: f32,
    pub reason: ReasonKind,
    pub reason_text: String,
}

/// How candidates were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retrieval {
    /// Every eligible item was scored.
    Exact,
    /// Candidates came from the HNSW index and were re-ranked exactly.
    Ann,
    /// Popularity order (no personal signal).
    Popularity,
}

impl Retrieval {
    pub fn as_str(self) -> &'static str {
        match self {
            Retrieval::Exact => "exact",
            Retrieval::Ann => "ann",
            Retrieval::Popularity => "popularity",
        }
    }
}

/// The answer to a [`RecommendRequest`].
#[derive(Debug, Clone)]
pub struct Recommendations {
    pub items: Vec<Scored>,
    pub retrieval: Retrieval,
}

/// Similarity space for similar items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimilarMode {
    Collaborative,
    Content,
    Blend,
}

/// Checks `k` against its bounds.
pub fn validate_k(k: usize) -> Result<()> {
    if k == 0 || k > MAX_K {
        return Err(Error::invalid_argument("k", format!("must be between 1 and {MAX_K}, got {k}")));
    }
    Ok(())
}

/// Which items may be returned.
struct Eligibility<'a> {
    model: &'a Model,
    seen: Vec<u32>,
    excluded: Vec<u32>,
    category: Option<&'a str>,
}

impl Eligibility<'_> {
    fn allows(&self, i: u32) -> bool {
        let item = &self.model.items[i as usize];
        item.available
            && self.category.is_none_or(|c| item.category == c)
            && self.seen.binary_search(&i).is_err()
            && self.excluded.binary_search(&i).is_err()
    }
}

/// Orders by score descending, then item index ascending.
fn by_score(a: &(f32, u32), b: &(f32, u32)) -> Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// Keeps the best `k` of `scored`, sorted.
fn top_k(mut scored: Vec<(f32, u32)>, k: usize) -> Vec<(f32, u32)> {
    if scored.len() > k {
        scored.select_nth_unstable_by(k, by_score);
        scored.truncate(k);
    }
    scored.sort_by(by_score);
    scored
}

fn item_label(model: &Model, i: u32) -> String {
    let item = &model.items[i as usize];
    if item.title.is_empty() {
        item.item_id.clone()
    } else {
        item.title.clone()
    }
}

impl Model {
    fn item_vector(&self, i: u32) -> &[f32] {
        self.collab.item_factors.row(i as usize).to_slice().unwrap_or(&[])
    }

    fn unit_vector(&self, i: u32) -> &[f32] {
        self.collab_unit.row(i as usize).to_slice().unwrap_or(&[])
    }

    fn content_vector(&self, i: u32) -> &[f32] {
        self.content.row(i as usize).to_slice().unwrap_or(&[])
    }

    /// Looks up an item id, as NOT_FOUND when absent.
    pub fn item_index(&self, item_id: &str) -> Result<u32> {
        if item_id.is_empty() {
            return Err(Error::invalid_argument("item_id", "must not be empty"));
        }
        self.item_ids
            .get(item_id)
            .ok_or_else(|| Error::NotFound(format!("item `{item_id}` is not in model {}", self.version())))
    }

    /// Recommends items for a user or an anonymous session.
    pub fn recommend(&self, req: &RecommendRequest<'_>) -> Result<Recommendations> {
        validate_k(req.k)?;
        let mut excluded: Vec<u32> = req.exclude_items.iter().filter_map(|id| self.item_ids.get(id)).collect();
        excluded.sort_unstable();
        // The subject's interacted items (sorted), its vector, and its recent items.
        let (history, user_vec, recent): (Vec<u32>, Option<Vec<f32>>, Vec<u32>) = match req.subject {
            Subject::User(user_id) => {
                if user_id.is_empty() {
                    return Err(Error::invalid_argument("user_id", "must not be empty"));
                }
                match self.users.get(user_id) {
                    Some(u) => {
                        let h: &UserHistory = &self.histories[u as usize];
                        let v = self.user_factors.row(u as usize).to_vec();
                        let recent = h.recent.iter().map(|r| r.item).collect();
                        let seen = if req.exclude_seen { h.seen.iter().map(|&(i, _)| i).collect() } else { Vec::new() };
                        (seen, Some(v), recent)
                    }
                    None => (Vec::new(), None, Vec::new()),
                }
            }
            Subject::RecentItems(ids) => {
                let mut items: Vec<u32> = ids.iter().filter_map(|id| self.item_ids.get(id)).collect();
                let recent = items.clone();
                items.sort_unstable();
                items.dedup();
                let weighted: Vec<(u32, f32)> = items.iter().map(|&i| (i, 1.0)).collect();
                let v = (!weighted.is_empty()).then(|| self.collab.user_vector(&weighted));
                (items, v, recent)
            }
        };
        let seen = if req.exclude_seen { history } else { Vec::new() };
        let filter = Eligibility {
            model: self,
            seen,
            excluded,
            category: req.category,
        };
        let personal = user_vec.filter(|v| v.iter().any(|&x| x != 0.0));
        let Some(u) = personal else {
            return Ok(self.popular(&filter, req.k));
        };
        let votes = self.neighbour_votes(&recent);
        let (ranked, retrieval) = self.rank_user(&u, &votes, &filter, req.k);
        let items = ranked
            .into_iter()
            .map(|(score, item)| {
                let because = recent
                    .iter()
                    .rev()
                    .filter(|&&r| self.has_collab[r as usize])
                    .map(|&r| (dot(self.unit_vector(r), self.unit_vector(item)), r))
                    .max_by(|a, b| a.0.total_cmp(&b.0));
                Scored {
                    item,
                    score,
                    reason: ReasonKind::Personalized,
                    reason_text: match because {
                        Some((_, r)) => format!("because of your interest in {}", item_label(self, r)),
                        None => "matches your history".to_string(),
                    },
                }
            })
            .collect();
        Ok(Recommendations { items, retrieval })
    }

    /// Votes of the recent items (oldest first) for their neighbours, most recent
    /// strongest, scaled so the strongest vote is 1.
    fn neighbour_votes(&self, recent: &[u32]) -> HashMap<u32, f32> {
        let p = self.manifest.params.sequence;
        let mut votes: HashMap<u32, f32> = HashMap::new();
        if p.blend <= 0.0 {
            return votes;
        }
        let mut w = 1.0f32;
        for &r in recent.iter().rev().take(p.max_recent) {
            for &(j, s) in &self.neighbours[r as usize] {
                *votes.entry(j).or_insert(0.0) += w * s;
            }
            w *= p.recency_decay;
        }
        let max = votes.values().copied().fold(0.0f32, f32::max);
        if max > 0.0 {
            votes.values_mut().for_each(|v| *v /= max);
        }
        votes
    }

    /// Ranks eligible items for user vector `u` blended with neighbour votes.
    fn rank_user(&self, u: &[f32], votes: &HashMap<u32, f32>, filter: &Eligibility<'_>, k: usize) -> (Vec<(f32, u32)>, Retrieval) {
        let beta = if votes.is_empty() { 0.0 } else { self.manifest.params.sequence.blend.clamp(0.0, 1.0) };
        // Inner products are scaled into [-1, 1] by |u| and the largest item norm; votes
        // are already scaled so the strongest is 1.
        let blend = |raw: Vec<(f32, u32)>| -> Vec<(f32, u32)> {
            if beta == 0.0 {
                return raw;
            }
            let scale = (1.0 - beta) / (crate::linalg::norm(u) * self.max_norm).max(f32::MIN_POSITIVE);
            raw.into_iter()
                .map(|(s, i)| (scale * s + beta * votes.get(&i).copied().unwrap_or(0.0), i))
                .collect()
        };
        if !self.uses_exact_scoring() {
            if let Some(index) = &self.collab_mips {
                let want = (k + filter.seen.len() + filter.excluded.len()).min(index.len());
                let query = crate::ann::mips_query(u);
                let ef = self.manifest.params.hnsw.ef_search.max(want);
                let mut cands: Vec<u32> = index.search(&query, want, ef).into_iter().map(|h| h.item).collect();
                cands.extend(votes.keys().copied());
                cands.sort_unstable();
                cands.dedup();
                let raw: Vec<(f32, u32)> = cands
                    .into_iter()
                    .filter(|&i| filter.allows(i))
                    .map(|i| (dot(u, self.item_vector(i)), i))
                    .collect();
                if raw.len() >= k {
                    return (top_k(blend(raw), k), Retrieval::Ann);
                }
            }
        }
        let raw: Vec<(f32, u32)> = (0..self.n_items() as u32)
            .filter(|&i| filter.allows(i))
            .map(|i| (dot(u, self.item_vector(i)), i))
            .collect();
        (top_k(blend(raw), k), Retrieval::Exact)
    }

    fn popular(&self, filter: &Eligibility<'_>, k: usize) -> Recommendations {
        let items = self
            .popular_order
            .iter()
            .copied()
            .filter(|&i| filter.allows(i))
            .take(k)
            .map(|i| Scored {
                item: i,
                score: self.popularity[i as usize],
                reason: ReasonKind::Popular,
                reason_text: "popular with all users (no history for this user yet)".to_string(),
            })
            .collect();
        Recommendations {
            items,
            retrieval: Retrieval::Popularity,
        }
    }

    /// Items most similar to `item_id` in the given space, best first.
    pub fn similar_items(&self, item_id: &str, k: usize, mode: SimilarMode) -> Result<Vec<Scored>> {
        validate_k(k)?;
        let q = self.item_index(item_id)?;
        let has_c = self.has_collab[q as usize];
        let has_t = self.has_content[q as usize];
        let w = match mode {
            SimilarMode::Collaborative if !has_c => {
                return Err(Error::NotFound(format!(
                    "item `{item_id}` has no events, so it has no collaborative embedding; try mode content"
                )))
            }
            SimilarMode::Content if !has_t => {
                return Err(Error::NotFound(format!(
                    "item `{item_id}` has no catalogue features, so it has no content embedding; try mode collaborative"
                )))
            }
            SimilarMode::Blend if !has_c && !has_t => {
                return Err(Error::NotFound(format!(
                    "item `{item_id}` has neither events nor catalogue features to compare by"
                )))
            }
            SimilarMode::Collaborative => 1.0,
            SimilarMode::Content => 0.0,
            SimilarMode::Blend if !has_t => 1.0,
            SimilarMode::Blend if !has_c => 0.0,
            SimilarMode::Blend => self.manifest.params.blend_weight,
        };
        let score = |i: u32| {
            let mut s = 0.0;
            if w > 0.0 && self.has_collab[i as usize] {
                s += w * dot(self.unit_vector(q), self.unit_vector(i));
            }
            if w < 1.0 && self.has_content[i as usize] {
                s += (1.0 - w) * dot(self.content_vector(q), self.content_vector(i));
            }
            s
        };
        let eligible = |i: u32| i != q && self.items[i as usize].available;
        let scored: Vec<(f32, u32)> = if self.uses_exact_scoring() {
            (0..self.n_items() as u32).filter(|&i| eligible(i)).map(|i| (score(i), i)).collect()
        } else {
            let want = k * 2 + 10;
            let ef = self.manifest.params.hnsw.ef_search.max(want);
            let mut cands: Vec<u32> = Vec::new();
            if w > 0.0 {
                if let Some(index) = &self.collab_cos {
                    cands.extend(index.search(self.unit_vector(q), want, ef).into_iter().map(|h| h.item));
                }
            }
            if w < 1.0 {
                if let Some(index) = &self.content_index {
                    cands.extend(index.search(self.content_vector(q), want, ef).into_iter().map(|h| h.item));
                }
            }
            cands.sort_unstable();
            cands.dedup();
            cands.into_iter().filter(|&i| eligible(i)).map(|i| (score(i), i)).collect()
        };
        let text = match mode {
            SimilarMode::Collaborative => "often chosen by the same users",
            SimilarMode::Content => "shares catalogue features",
            SimilarMode::Blend => "similar by co-interaction and catalogue features",
        };
        Ok(top_k(scored, k)
            .into_iter()
            .map(|(score, item)| Scored {
                item,
                score,
                reason: ReasonKind::Similar,
                reason_text: text.to_string(),
            })
            .collect())
    }
}

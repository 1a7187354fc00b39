//! Serving-time scoring: personalised recommendations and similar items.
//!
//! Queries are owned values ([`RecommendQuery`], [`SimilarQuery`]) checked in one place
//! ([`RecommendQuery::validate`], [`SimilarQuery::validate`]), which both scoring methods
//! call first; the gRPC edge only maps the wire shape onto them. The server and the
//! evaluator call the same methods, so the quality `evaluate` reports is the quality the
//! server returns.
//!
//! A user is scored by the inner product of their folded-in vector with every item's
//! factors, blended with the votes of their recent items' neighbours. Small catalogues are
//! scored exactly; large ones retrieve candidates from the MIPS HNSW index and re-rank
//! them exactly, falling back to exact scoring when filters leave too few. Ties break by
//! item index, so results are deterministic.

use std::cmp::Ordering;
use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::ids::ItemIdx;
use crate::linalg::{dot, norm};
use crate::model::Model;
use crate::settings::ServingSettings;

/// Largest `k` a request may ask for.
pub const MAX_K: usize = 1000;

/// Who recommendations are for.
#[derive(Debug, Clone, PartialEq)]
pub enum Subject {
    /// A user id; unknown users get popular items.
    User(String),
    /// An anonymous session: the item ids it interacted with, oldest first.
    Session(Vec<String>),
}

/// A recommendation request in domain terms.
#[derive(Debug, Clone, PartialEq)]
pub struct RecommendQuery {
    pub subject: Subject,
    /// Number of items wanted, `1..=MAX_K`.
    pub k: usize,
    /// Leave out items the user (or session) already interacted with.
    pub exclude_seen: bool,
    /// Never return these item ids (unknown ids are ignored).
    pub exclude_items: Vec<String>,
    /// Only items of this category.
    pub category: Option<String>,
}

impl RecommendQuery {
    /// The top `k` for a user, leaving out what they have seen, without other filters.
    pub fn for_user(user_id: impl Into<String>, k: usize) -> RecommendQuery {
        RecommendQuery {
            subject: Subject::User(user_id.into()),
            k,
            exclude_seen: true,
            exclude_items: Vec::new(),
            category: None,
        }
    }

    /// Checks every field; the error names the field as the API spells it.
    pub fn validate(&self) -> Result<()> {
        validate_k(self.k)?;
        match &self.subject {
            Subject::User(id) if id.is_empty() => return Err(Error::invalid_argument("user_id", "must not be empty")),
            Subject::Session(ids) if ids.iter().any(String::is_empty) => {
                return Err(Error::invalid_argument("recent_items", "must not contain empty ids"))
            }
            _ => {}
        }
        if self.exclude_items.iter().any(String::is_empty) {
            return Err(Error::invalid_argument("exclude_item_ids", "must not contain empty ids"));
        }
        if self.category.as_deref() == Some("") {
            return Err(Error::invalid_argument("category", "must not be empty when set"));
        }
        Ok(())
    }
}

/// Similarity space for similar items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimilarMode {
    Collaborative,
    Content,
    Blend,
}

/// A similar-items request in domain terms.
#[derive(Debug, Clone, PartialEq)]
pub struct SimilarQuery {
    pub item_id: String,
    /// Number of items wanted, `1..=MAX_K`.
    pub k: usize,
    pub mode: SimilarMode,
}

impl SimilarQuery {
    /// Checks every field; the error names the field as the API spells it.
    pub fn validate(&self) -> Result<()> {
        if self.item_id.is_empty() {
            return Err(Error::invalid_argument("item_id", "must not be empty"));
        }
        validate_k(self.k)
    }
}

fn validate_k(k: usize) -> Result<()> {
    if k == 0 || k > MAX_K {
        return Err(Error::invalid_argument("k", format!("must be between 1 and {MAX_K}, got {k}")));
    }
    Ok(())
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
    pub item: ItemIdx,
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
    /// Lower-case name, as logs and tables show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Retrieval::Exact => "exact",
            Retrieval::Ann => "ann",
            Retrieval::Popularity => "popularity",
        }
    }
}

/// The answer to a [`RecommendQuery`].
#[derive(Debug, Clone)]
pub struct Recommendations {
    pub items: Vec<Scored>,
    pub retrieval: Retrieval,
}

/// Which items may be returned for one request.
struct Eligibility<'a> {
    model: &'a Model,
    /// Sorted.
    seen: Vec<ItemIdx>,
    /// Sorted.
    excluded: Vec<ItemIdx>,
    /// The category's items (sorted), when a category was asked for.
    category: Option<&'a [ItemIdx]>,
}

impl<'a> Eligibility<'a> {
    fn allows(&self, i: ItemIdx) -> bool {
        self.model.item(i).available
            && self.category.is_none_or(|c| c.binary_search(&i).is_ok())
            && self.seen.binary_search(&i).is_err()
            && self.excluded.binary_search(&i).is_err()
    }

    /// Every eligible item, in index order: only the category's items when one is set.
    fn all(&self) -> Box<dyn Iterator<Item = ItemIdx> + '_> {
        match self.category {
            Some(members) => Box::new(members.iter().copied().filter(|&i| self.allows(i))),
            None => Box::new((0..self.model.n_items() as u32).map(ItemIdx).filter(|&i| self.allows(i))),
        }
    }
}

/// Orders by score descending, then item index ascending.
fn by_score(a: &(f32, ItemIdx), b: &(f32, ItemIdx)) -> Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// Keeps the best `k` of `scored`, sorted.
fn top_k(mut scored: Vec<(f32, ItemIdx)>, k: usize) -> Vec<(f32, ItemIdx)> {
    if scored.len() > k {
        scored.select_nth_unstable_by(k, by_score);
        scored.truncate(k);
    }
    scored.sort_by(by_score);
    scored
}

fn item_label(model: &Model, i: ItemIdx) -> &str {
    let item = model.item(i);
    if item.title.is_empty() {
        &item.item_id
    } else {
        &item.title
    }
}

/// The subject's interacted items (sorted), its vector, and its recent items.
struct Profile {
    history: Vec<ItemIdx>,
    vector: Option<Vec<f32>>,
    recent: Vec<ItemIdx>,
}

impl Model {
    /// Recommends items for a user or an anonymous session.
    ///
    /// # Errors
    /// `InvalidArgument` naming the field when the query is out of its domain.
    pub fn recommend(&self, query: &RecommendQuery, settings: &ServingSettings) -> Result<Recommendations> {
        query.validate()?;
        let mut excluded: Vec<ItemIdx> = query.exclude_items.iter().filter_map(|id| self.item_index(id)).collect();
        excluded.sort_unstable();
        let profile = self.profile(&query.subject);
        let filter = Eligibility {
            model: self,
            seen: if query.exclude_seen { profile.history } else { Vec::new() },
            excluded,
            category: query.category.as_deref().map(|c| self.items_in_category(c)),
        };
        let personal = profile.vector.filter(|v| v.iter().any(|&x| x != 0.0));
        let Some(u) = personal else {
            return Ok(self.popular(&filter, query.k));
        };
        let recent = profile.recent;
        let votes = self.neighbour_votes(&recent, settings);
        let (ranked, retrieval) = self.rank_user(&u, &votes, &filter, query.k, settings);
        let items = ranked
            .into_iter()
            .map(|(score, item)| {
                let because = recent
                    .iter()
                    .rev()
                    .filter(|&&r| self.has_collab(r))
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

    fn profile(&self, subject: &Subject) -> Profile {
        match subject {
            Subject::User(user_id) => match self.user_index(user_id) {
                Some(u) => {
                    let h = self.history(u);
                    Profile {
                        history: h.seen().map(|(i, _)| i).collect(),
                        vector: Some(self.user_vector(u).to_vec()),
                        recent: h.recent().iter().map(|r| r.item).collect(),
                    }
                }
                None => Profile {
                    history: Vec::new(),
                    vector: None,
                    recent: Vec::new(),
                },
            },
            Subject::Session(ids) => {
                let recent: Vec<ItemIdx> = ids.iter().filter_map(|id| self.item_index(id)).collect();
                let mut history = recent.clone();
                history.sort_unstable();
                history.dedup();
                let weighted: Vec<(u32, f32)> = history.iter().map(|i| (i.0, 1.0)).collect();
                Profile {
                    vector: (!weighted.is_empty()).then(|| self.fold_in(&weighted)),
                    history,
                    recent,
                }
            }
        }
    }

    /// Votes of the recent items (oldest first) for their neighbours, most recent
    /// strongest, scaled so the strongest vote is 1.
    fn neighbour_votes(&self, recent: &[ItemIdx], settings: &ServingSettings) -> HashMap<ItemIdx, f32> {
        let mut votes: HashMap<ItemIdx, f32> = HashMap::new();
        if settings.sequence_blend <= 0.0 {
            return votes;
        }
        let mut w = 1.0f32;
        for &r in recent.iter().rev().take(settings.max_recent) {
            for &(j, s) in self.neighbours_of(r) {
                *votes.entry(ItemIdx(j)).or_insert(0.0) += w * s;
            }
            w *= settings.recency_decay;
        }
        let max = votes.values().copied().fold(0.0f32, f32::max);
        if max > 0.0 {
            votes.values_mut().for_each(|v| *v /= max);
        }
        votes
    }

    /// Ranks eligible items for user vector `u` blended with neighbour votes.
    fn rank_user(
        &self,
        u: &[f32],
        votes: &HashMap<ItemIdx, f32>,
        filter: &Eligibility<'_>,
        k: usize,
        settings: &ServingSettings,
    ) -> (Vec<(f32, ItemIdx)>, Retrieval) {
        let beta = if votes.is_empty() { 0.0 } else { settings.sequence_blend.clamp(0.0, 1.0) };
        // Inner products are scaled into [-1, 1] by |u| and the largest item norm; votes
        // are already scaled so the strongest is 1.
        let blend = |raw: Vec<(f32, ItemIdx)>| -> Vec<(f32, ItemIdx)> {
            if beta == 0.0 {
                return raw;
            }
            let scale = (1.0 - beta) / (norm(u) * self.max_norm()).max(f32::MIN_POSITIVE);
            raw.into_iter()
                .map(|(s, i)| (scale * s + beta * votes.get(&i).copied().unwrap_or(0.0), i))
                .collect()
        };
        let score = |i: ItemIdx| (dot(u, self.item_vector(i)), i);
        if !settings.scores_exactly(self.n_items()) {
            if let Some(index) = &self.indexes().mips {
                let want = (k + filter.seen.len() + filter.excluded.len()).min(index.len());
                let query = crate::ann::mips_query(u);
                let ef = settings.ef_search.max(want);
                let mut cands: Vec<ItemIdx> = index.search(&query, want, ef).into_iter().map(|h| ItemIdx(h.item)).collect();
                cands.extend(votes.keys().copied());
                cands.sort_unstable();
                cands.dedup();
                let raw: Vec<(f32, ItemIdx)> = cands.into_iter().filter(|&i| filter.allows(i)).map(score).collect();
                if raw.len() >= k {
                    return (top_k(blend(raw), k), Retrieval::Ann);
                }
            }
        }
        let raw: Vec<(f32, ItemIdx)> = filter.all().map(score).collect();
        (top_k(blend(raw), k), Retrieval::Exact)
    }

    fn popular(&self, filter: &Eligibility<'_>, k: usize) -> Recommendations {
        let items = self
            .popular_order()
            .iter()
            .copied()
            .filter(|&i| filter.allows(i))
            .take(k)
            .map(|i| Scored {
                item: i,
                score: self.popularity(i),
                reason: ReasonKind::Popular,
                reason_text: "popular with all users (no history for this user yet)".to_string(),
            })
            .collect();
        Recommendations {
            items,
            retrieval: Retrieval::Popularity,
        }
    }

    /// Items most similar to the query item in the given space, best first.
    ///
    /// # Errors
    /// `InvalidArgument` for a bad query; `NotFound` for an unknown item or one without
    /// the embedding the mode needs.
    pub fn similar_items(&self, query: &SimilarQuery, settings: &ServingSettings) -> Result<Vec<Scored>> {
        query.validate()?;
        let item_id = &query.item_id;
        let k = query.k;
        let q = self
            .item_index(item_id)
            .ok_or_else(|| Error::NotFound(format!("item `{item_id}` is not in model {}", self.version())))?;
        let has_c = self.has_collab(q);
        let has_t = self.has_content(q);
        let w = match query.mode {
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
            SimilarMode::Blend => settings.similar_blend,
        };
        let score = |i: ItemIdx| {
            let mut s = 0.0;
            if w > 0.0 && self.has_collab(i) {
                s += w * dot(self.unit_vector(q), self.unit_vector(i));
            }
            if w < 1.0 && self.has_content(i) {
                s += (1.0 - w) * dot(self.content_vector(q), self.content_vector(i));
            }
            (s, i)
        };
        let eligible = |i: &ItemIdx| *i != q && self.item(*i).available;
        let scored: Vec<(f32, ItemIdx)> = if settings.scores_exactly(self.n_items()) {
            (0..self.n_items() as u32).map(ItemIdx).filter(eligible).map(score).collect()
        } else {
            let want = k * 2 + 10;
            let ef = settings.ef_search.max(want);
            let mut cands: Vec<ItemIdx> = Vec::new();
            let indexes = self.indexes();
            if w > 0.0 {
                if let Some(index) = &indexes.collab {
                    cands.extend(index.search(self.unit_vector(q), want, ef).into_iter().map(|h| ItemIdx(h.item)));
                }
            }
            if w < 1.0 {
                if let Some(index) = &indexes.content {
                    cands.extend(index.search(self.content_vector(q), want, ef).into_iter().map(|h| ItemIdx(h.item)));
                }
            }
            cands.sort_unstable();
            cands.dedup();
            cands.into_iter().filter(eligible).map(score).collect()
        };
        let text = match query.mode {
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

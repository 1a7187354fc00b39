//! Rankers: anything that puts items in order for a user of the training data.
//!
//! affinity's own ranker ([`Affinity`]) goes through [`Model::recommend`], the method
//! the server calls, with the serving settings it is given; baselines implement the same
//! trait over the same model's histories, so a comparison differs only in the algorithm.

use affinity_core::model::Model;
use affinity_core::recommend::{Blend, RecommendQuery, Recommendations};
use affinity_core::repeat::SeenPolicy;
use affinity_core::settings::ServingSettings;
use affinity_core::ItemIdx;

/// Something that ranks items for a user of the training data.
pub trait Ranker: Sync {
    /// Name in reports.
    fn name(&self) -> &str;
    /// Top `k` items for `user_id`, best first, leaving out the user's training items
    /// except those in `keep` (sorted).
    fn rank(&self, user_id: &str, k: usize, keep: &[ItemIdx]) -> Vec<ItemIdx>;
    /// Several rankings of one user at once, for rankers that are variants of one fitted
    /// system (by default the one ranking).
    fn rank_variants(&self, user_id: &str, k: usize, keep: &[ItemIdx]) -> Vec<Vec<ItemIdx>> {
        vec![self.rank(user_id, k, keep)]
    }
}

/// affinity itself, through the serving code path, with the given settings.
pub struct Affinity<'a> {
    pub model: &'a Model,
    pub settings: ServingSettings,
}

impl<'a> Affinity<'a> {
    /// Scores with the settings the model was trained to be served with.
    pub fn new(model: &'a Model) -> Affinity<'a> {
        Affinity {
            model,
            settings: model.default_settings(),
        }
    }

    /// Scores with other settings.
    pub fn with_settings(model: &'a Model, settings: ServingSettings) -> Affinity<'a> {
        Affinity { model, settings }
    }
}

/// The request a client would send for `user_id`: top `k` under the trained seen-items
/// policy. Leave-one-out passes the held-out item as `keep` (it may be one the user had):
/// when the model learned returns, the trained policy decides whether it comes back,
/// exactly as served; when it did not, the seen filter goes off and the rest of the
/// history is excluded explicitly, so the held-out item can still be ranked.
fn query_for(m: &Model, user_id: &str, k: usize, keep: &[ItemIdx]) -> RecommendQuery {
    let mut query = RecommendQuery::for_user(user_id, k);
    if !keep.is_empty() && !m.repeat().is_active() {
        query.seen = SeenPolicy::Include;
        if let Some(u) = m.user_index(user_id) {
            query.exclude_items = m
                .history(u)
                .seen()
                .filter(|(i, _)| keep.binary_search(i).is_err())
                .map(|(i, _)| m.item_id(i).to_string())
                .collect();
        }
    }
    query
}

fn items_of(r: Recommendations) -> Vec<ItemIdx> {
    r.items.into_iter().map(|s| s.item).collect()
}

impl Ranker for Affinity<'_> {
    fn name(&self) -> &str {
        "affinity"
    }

    fn rank(&self, user_id: &str, k: usize, keep: &[ItemIdx]) -> Vec<ItemIdx> {
        let query = query_for(self.model, user_id, k, keep);
        self.model.recommend(&query, &self.settings).map(items_of).unwrap_or_default()
    }
}

/// affinity ranked once per neighbour blend, sharing the work the blend does not change
/// (see [`Model::recommend_blends`]): how tuning compares blends on one fitted model.
/// Items the user had are always excluded: tuning scores new items only (its held-out
/// items are never in the fitted history).
pub struct AffinityBlends<'a> {
    pub model: &'a Model,
    pub settings: ServingSettings,
    pub blends: Vec<Blend>,
}

impl Ranker for AffinityBlends<'_> {
    fn name(&self) -> &str {
        "affinity"
    }

    fn rank(&self, user_id: &str, k: usize, keep: &[ItemIdx]) -> Vec<ItemIdx> {
        self.rank_variants(user_id, k, keep).into_iter().next().unwrap_or_default()
    }

    fn rank_variants(&self, user_id: &str, k: usize, keep: &[ItemIdx]) -> Vec<Vec<ItemIdx>> {
        let mut query = query_for(self.model, user_id, k, keep);
        if keep.is_empty() {
            query.seen = SeenPolicy::Exclude;
        }
        self.model
            .recommend_blends(&query, &self.settings, &self.blends)
            .map(|all| all.into_iter().map(items_of).collect())
            .unwrap_or_default()
    }
}

/// Whether a ranker may return `item` to a user with history `h`.
pub(crate) fn allowed(h: Option<&affinity_core::model::UserHistory>, item: ItemIdx, keep: &[ItemIdx]) -> bool {
    h.is_none_or(|h| !h.has_seen(item)) || keep.binary_search(&item).is_ok()
}

/// Top `k` of dense `scores` over allowed items, ties by index.
pub(crate) fn top_of(scores: &[f32], k: usize, allow: impl Fn(ItemIdx) -> bool) -> Vec<ItemIdx> {
    let mut ranked: Vec<(f32, ItemIdx)> = scores
        .iter()
        .enumerate()
        .map(|(i, &s)| (s, ItemIdx(i as u32)))
        .filter(|&(_, i)| allow(i))
        .collect();
    let by = |a: &(f32, ItemIdx), b: &(f32, ItemIdx)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    if ranked.len() > k {
        ranked.select_nth_unstable_by(k, by);
        ranked.truncate(k);
    }
    ranked.sort_by(by);
    ranked.into_iter().map(|(_, i)| i).collect()
}

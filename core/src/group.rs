//! Recommendations for a group (group buying, a household, friends planning together):
//! items the whole group is likely to want, with each member's part in the score.
//!
//! Each member is ranked as `Recommend` ranks them alone (their history, live events,
//! social votes, the request's rules), over a pool of their best items; a member's score
//! for an item is its rank normalised into (0, 1] (the top item 1, the pool's last near
//! 0, an item outside their pool 0), so a member with sharp scores does not outvote one
//! with flat ones. The group's score is the members' mean (`average`: the most liked
//! overall) or their minimum (`least_misery`: nobody is left out), ties by the mean.
//! Items any member already had are left out.

use std::collections::HashMap;

use crate::cancel::Cancel;
use crate::error::{Error, Result};
use crate::ids::ItemIdx;
use crate::model::Model;
use crate::recommend::{RecommendQuery, Subject, MAX_K};
use crate::settings::ServingSettings;

/// The largest group one request may name.
pub const MAX_GROUP: usize = 100;

/// How members' scores combine into the group's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupStrategy {
    /// The members' mean: what the group likes most overall.
    #[default]
    Average,
    /// The members' minimum: the item the least pleased member likes best.
    LeastMisery,
}

/// One item for the group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupScored {
    /// The item.
    pub item: ItemIdx,
    /// The group's score (mean or minimum of `members`).
    pub score: f32,
    /// Each member's normalised score, in the order the members were given.
    pub members: Vec<f32>,
    /// How many members have it in their own pool.
    pub liked_by: usize,
}

/// Checks a group request's size and `k` before anything is built for its members: a
/// group has 1 to [`MAX_GROUP`] members and `k` is 1 to `MAX_K`.
///
/// # Errors
/// `InvalidArgument` naming `user_ids` or `k`.
pub fn check_group(members: usize, k: usize) -> Result<()> {
    if members == 0 || members > MAX_GROUP {
        return Err(Error::invalid_argument("user_ids", format!("a group has 1 to {MAX_GROUP} members, got {members}")));
    }
    crate::recommend::validate_k(k)
}

impl Model {
    /// The top `k` items for the group of `members` (each a query as `Recommend` would
    /// take it for that member; their `k` is ignored) combined by `strategy`.
    ///
    /// # Errors
    /// `InvalidArgument` naming `user_ids` for an empty group or one over
    /// [`MAX_GROUP`], `k` out of range, or a member's query out of its domain;
    /// `Cancelled` when cancelled.
    pub fn recommend_for_group(&self, members: &[RecommendQuery], k: usize, strategy: GroupStrategy, settings: &ServingSettings, cancel: &Cancel) -> Result<Vec<GroupScored>> {
        check_group(members.len(), k)?;
        // Each member's pool: deep enough that the group's top k are in most members' pools.
        let pool = (k * 5).clamp(100, MAX_K);
        let mut scores: HashMap<ItemIdx, Vec<f32>> = HashMap::new();
        for (m, query) in members.iter().enumerate() {
            if cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            // Only items new to the member fill their pool: what any member had is left out below.
            let query = RecommendQuery { k: pool, seen: crate::repeat::SeenPolicy::Exclude, ..query.clone() };
            let ranked = self.recommend_or_cancel(&query, settings, cancel)?;
            for (rank, s) in ranked.items.iter().enumerate() {
                let slot = scores.entry(s.item).or_insert_with(|| vec![0.0; members.len()]);
                slot[m] = (pool - rank) as f32 / pool as f32;
            }
        }
        // What any member already had is not offered to the group (one member's return to
        // a staple is their own list's business).
        for query in members {
            if let (Subject::User(id), true) = (&query.subject, query.use_stored_history) {
                if let Some(u) = self.user_index(id) {
                    self.history(u).seen().for_each(|(i, _)| {
                        scores.remove(&i);
                    });
                }
            }
            for e in &query.live {
                if let Some(i) = self.item_index(&e.item_id) {
                    scores.remove(&i);
                }
            }
        }
        let n = members.len() as f32;
        let mut group: Vec<GroupScored> = scores
            .into_iter()
            .map(|(item, members)| {
                let mean = members.iter().sum::<f32>() / n;
                let min = members.iter().copied().fold(f32::INFINITY, f32::min);
                GroupScored {
                    item,
                    score: match strategy {
                        GroupStrategy::Average => mean,
                        GroupStrategy::LeastMisery => min,
                    },
                    liked_by: members.iter().filter(|&&s| s > 0.0).count(),
                    members,
                }
            })
            .collect();
        let mean = |g: &GroupScored| g.members.iter().sum::<f32>();
        group.sort_by(|a, b| b.score.total_cmp(&a.score).then(mean(b).total_cmp(&mean(a))).then(a.item.cmp(&b.item)));
        group.truncate(k);
        Ok(group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{fast_params, small_model};

    #[test]
    fn least_misery_leaves_nobody_worse_off_than_the_average_does() {
        let m = small_model(&fast_params());
        let s = m.default_settings();
        let users: Vec<RecommendQuery> = m.user_ids().iter().take(4).map(|u| RecommendQuery::for_user(u.as_str(), 10)).collect();
        let avg = m.recommend_for_group(&users, 10, GroupStrategy::Average, &s, &Cancel::never()).unwrap();
        let lm = m.recommend_for_group(&users, 10, GroupStrategy::LeastMisery, &s, &Cancel::never()).unwrap();
        assert_eq!((avg.len(), lm.len()), (10, 10));
        let lowest = |g: &[GroupScored]| g.iter().map(|x| x.members.iter().copied().fold(f32::INFINITY, f32::min)).sum::<f32>();
        assert!(lowest(&lm) >= lowest(&avg), "least misery {} < average {}", lowest(&lm), lowest(&avg));
        for g in &avg {
            assert_eq!(g.members.len(), 4);
            assert!((g.score - g.members.iter().sum::<f32>() / 4.0).abs() < 1e-6);
        }
        assert!(avg.windows(2).all(|w| w[0].score >= w[1].score));
        // One member alone: the group list is their own list.
        let one = m.recommend_for_group(&users[..1], 10, GroupStrategy::Average, &s, &Cancel::never()).unwrap();
        let alone = RecommendQuery { seen: crate::repeat::SeenPolicy::Exclude, ..users[0].clone() };
        let own = m.recommend(&alone, &s).unwrap();
        assert_eq!(one.iter().map(|g| g.item).collect::<Vec<_>>(), own.items.iter().map(|x| x.item).collect::<Vec<_>>());
    }

    #[test]
    fn empty_or_oversized_groups_are_refused_naming_the_field() {
        let m = small_model(&fast_params());
        let s = m.default_settings();
        let e = m.recommend_for_group(&[], 10, GroupStrategy::Average, &s, &Cancel::never()).unwrap_err().to_string();
        assert!(e.contains("user_ids"), "{e}");
        let many: Vec<RecommendQuery> = (0..101).map(|u| RecommendQuery::for_user(format!("u{u}"), 10)).collect();
        assert!(m.recommend_for_group(&many, 10, GroupStrategy::Average, &s, &Cancel::never()).unwrap_err().to_string().contains("user_ids"));
        assert!(m.recommend_for_group(&many[..2], 0, GroupStrategy::Average, &s, &Cancel::never()).unwrap_err().to_string().contains('k'));
    }
}

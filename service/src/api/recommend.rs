//! `Recommend`: wire request → [`RecommendQuery`], [`Recommendations`] → wire reply.

use affinity_core::group::{GroupScored, GroupStrategy};
use affinity_core::recommend::{RecommendQuery, Recommendations, Retrieval, Subject};
use affinity_core::repeat::SeenPolicy;
use affinity_core::Error;

use super::{scored_items, Answer};
use crate::proto::{self, recommend_request};
use crate::status::ApiError;

impl TryFrom<proto::RecommendRequest> for RecommendQuery {
    type Error = ApiError;

    fn try_from(r: proto::RecommendRequest) -> Result<Self, ApiError> {
        let subject = match r.subject {
            Some(recommend_request::Subject::UserId(id)) => Subject::User(id),
            Some(recommend_request::Subject::RecentItems(items)) => Subject::Session(items.item_ids),
            None => return Err(Error::invalid_argument("subject", "set user_id or recent_items").into()),
        };
        let policy = proto::RepeatPolicy::try_from(r.repeat_policy)
            .map_err(|_| Error::invalid_argument("repeat_policy", format!("unknown value {}", r.repeat_policy)))?;
        Ok(RecommendQuery {
            subject,
            k: r.k as usize,
            seen: match (r.exclude_seen, policy) {
                (Some(true), _) => SeenPolicy::Exclude,
                (Some(false), _) => SeenPolicy::Include,
                (None, proto::RepeatPolicy::Unspecified | proto::RepeatPolicy::Trained) => SeenPolicy::Trained,
                (None, proto::RepeatPolicy::ExcludeSeen) => SeenPolicy::Exclude,
                (None, proto::RepeatPolicy::BuyAgain) => SeenPolicy::BuyAgain,
            },
            exclude_items: r.exclude_item_ids,
            // proto3: an empty optional string is as good as unset.
            category: r.category.filter(|c| !c.is_empty()),
            rules: super::rules::rules(r.rules),
            attributes: match r.attributes {
                Some(a) => Some(super::popular::segment(Some(a), "attributes")?),
                None => None,
            },
            // Filled in by the handler from the live state.
            live: Vec::new(),
            contacts_live: Vec::new(),
            use_stored_history: true,
            social: r.social,
            from_contacts: r.from_contacts,
        })
    }
}

impl From<Answer<Recommendations>> for proto::RecommendResponse {
    fn from(a: Answer<Recommendations>) -> Self {
        proto::RecommendResponse {
            model_version: a.live.model.version().to_string(),
            retrieval: match a.value.retrieval {
                Retrieval::Exact => proto::Retrieval::Exact,
                Retrieval::Ann => proto::Retrieval::Ann,
                Retrieval::Popularity => proto::Retrieval::Popularity,
            } as i32,
            items: scored_items(&a.live, a.value.items),
            shortfall: super::rules::shortfall(a.value.shortfall),
        }
    }
}

/// The group strategy a request names.
pub(super) fn group_strategy(value: i32) -> Result<GroupStrategy, ApiError> {
    match proto::GroupStrategy::try_from(value) {
        Ok(proto::GroupStrategy::Unspecified | proto::GroupStrategy::Average) => Ok(GroupStrategy::Average),
        Ok(proto::GroupStrategy::LeastMisery) => Ok(GroupStrategy::LeastMisery),
        Err(_) => Err(Error::invalid_argument("strategy", format!("unknown value {value}")).into()),
    }
}

impl From<Answer<Vec<GroupScored>>> for proto::RecommendForGroupResponse {
    fn from(a: Answer<Vec<GroupScored>>) -> Self {
        proto::RecommendForGroupResponse {
            model_version: a.live.model.version().to_string(),
            items: a
                .value
                .into_iter()
                .map(|g| {
                    let n = g.members.len();
                    proto::GroupItem {
                        item_id: a.live.model.item_id(g.item).to_string(),
                        score: g.score,
                        reason: match (g.liked_by, n) {
                            (_, 1) => "fits you".to_string(),
                            (l, n) if l == n => format!("fits all {n} of you"),
                            (l, n) => format!("fits {l} of {n} of you"),
                        },
                        member_scores: g.members,
                    }
                })
                .collect(),
        }
    }
}

//! `Popular`, and the wire shape of user attributes (also `Recommend`'s cold start):
//! `UserAttributes` → [`Segment`], popular items → wire reply.

use affinity_core::recommend::Recommendations;
use affinity_core::segments::Segment;
use affinity_core::Error;

use super::{scored_items, Answer};
use crate::proto;
use crate::status::ApiError;

/// The segment `a` describes; `prefix` is the request field (`segment`, `attributes`)
/// errors name.
pub(crate) fn segment(a: Option<proto::UserAttributes>, prefix: &'static str) -> Result<Segment, ApiError> {
    let Some(a) = a else { return Ok(Segment::default()) };
    let text = |v: Option<String>| v.map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let age_band = match text(a.age) {
        None => None,
        Some(age) => Some(age.parse().map_err(|why: String| {
            let field = if prefix == "segment" { "segment.age" } else { "attributes.age" };
            Error::invalid_argument(field, why)
        })?),
    };
    Ok(Segment {
        region: text(a.region),
        age_band,
        gender: text(a.gender),
        occupation: text(a.occupation),
        income: text(a.income),
    })
}

/// A `Popular` request in domain terms.
pub(crate) struct PopularQuery {
    pub(crate) segment: Segment,
    pub(crate) category: Option<String>,
    pub(crate) k: usize,
    pub(crate) rules: affinity_core::rules::Rules,
}

impl TryFrom<proto::PopularRequest> for PopularQuery {
    type Error = ApiError;

    fn try_from(r: proto::PopularRequest) -> Result<Self, ApiError> {
        Ok(PopularQuery {
            segment: segment(r.segment, "segment")?,
            category: r.category.filter(|c| !c.is_empty()),
            k: r.k as usize,
            rules: super::rules::rules(r.rules),
        })
    }
}

impl From<Answer<(Recommendations, usize)>> for proto::PopularResponse {
    fn from(a: Answer<(Recommendations, usize)>) -> Self {
        let (r, users) = a.value;
        proto::PopularResponse {
            model_version: a.live.model.version().to_string(),
            items: scored_items(&a.live, r.items),
            segment_users: users as u64,
            shortfall: super::rules::shortfall(r.shortfall),
        }
    }
}

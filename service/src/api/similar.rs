//! `SimilarItems`: wire request → [`SimilarQuery`], scored items → wire reply.

use affinity_core::recommend::{Scored, SimilarMode, SimilarQuery};
use affinity_core::rules::Shortfall;
use affinity_core::Error;

use super::{scored_items, Answer};
use crate::proto::{self, similar_items_request::Mode};
use crate::status::ApiError;

impl TryFrom<proto::SimilarItemsRequest> for SimilarQuery {
    type Error = ApiError;

    fn try_from(r: proto::SimilarItemsRequest) -> Result<Self, ApiError> {
        let mode = match Mode::try_from(r.mode) {
            Ok(Mode::Collaborative) => SimilarMode::Collaborative,
            Ok(Mode::Content) => SimilarMode::Content,
            Ok(Mode::Blend) | Ok(Mode::Unspecified) => SimilarMode::Blend,
            Err(_) => return Err(Error::invalid_argument("mode", format!("unknown value {}", r.mode)).into()),
        };
        Ok(SimilarQuery {
            item_id: r.item_id,
            k: r.k as usize,
            mode,
            rules: super::rules::rules(r.rules),
        })
    }
}

impl From<Answer<(Vec<Scored>, Option<Shortfall>)>> for proto::SimilarItemsResponse {
    fn from(a: Answer<(Vec<Scored>, Option<Shortfall>)>) -> Self {
        let (items, shortfall) = a.value;
        proto::SimilarItemsResponse {
            model_version: a.live.model.version().to_string(),
            items: scored_items(&a.live, items),
            shortfall: super::rules::shortfall(shortfall),
        }
    }
}

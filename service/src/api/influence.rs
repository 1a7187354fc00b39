//! `ListInfluencers`: the model's key opinion leaders and consumers, on the wire.

use affinity_core::influence::Influencer;

use super::Answer;
use crate::proto;

impl From<Answer<Vec<(String, Influencer)>>> for proto::ListInfluencersResponse {
    fn from(a: Answer<Vec<(String, Influencer)>>) -> Self {
        proto::ListInfluencersResponse {
            model_version: a.live.model.version().to_string(),
            influencers: a
                .value
                .into_iter()
                .map(|(user_id, i)| proto::Influencer { user_id, score: i.score, followers: i.followers, adoptions: i.adoptions, leader: i.leader })
                .collect(),
        }
    }
}

//! Serving settings: how a loaded model is scored, as a value separate from the model.
//!
//! Training decides the defaults (they come from the parameters a model was trained with
//! and are recorded in its manifest as `serving`); the server may override them from its
//! configuration, and `evaluate` / `tune` pass their own value to compare settings on one
//! fitted model. Scoring never reads them from the model itself, so switching a setting
//! never means mutating a loaded model.

use serde::{Deserialize, Serialize};

use crate::params::TrainParams;

/// Everything [`crate::model::Model::recommend`] and
/// [`crate::model::Model::similar_items`] take besides the query.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServingSettings {
    /// Catalogues up to this many items are scored exactly (faster than ANN at that
    /// size); larger ones retrieve candidates from the HNSW index and re-rank them.
    pub exact_max_items: usize,
    /// Minimum HNSW candidate list size while searching (raised to the number wanted).
    pub ef_search: usize,
    /// Share of a personalised score that comes from the recent items' neighbour votes
    /// (the rest from the collaborative embedding); 0 turns the votes off.
    pub sequence_blend: f32,
    /// Each step back in a user's recent items multiplies its vote by this.
    pub recency_decay: f32,
    /// How many recent items vote.
    pub max_recent: usize,
    /// Weight of the collaborative space in blended similar items (content gets the rest).
    pub similar_blend: f32,
    /// Expected share of a `Recommend` list given to items nobody has interacted with
    /// yet (new arrivals), so they earn the events that let them rank on their own:
    /// `share × k` slots at the list's tail, the fraction by a draw fixed per user and
    /// day. 0 in models and in evaluation, so evaluated lists are the served ones; the
    /// server turns it on from its configuration.
    pub explore_share: f32,
    /// Weight of the social votes in `Recommend` where the model has a social graph
    /// (see [`crate::social`]); 0 turns them off.
    pub social_blend: f32,
    /// Weight of a member's communities' picks in `Recommend` (see
    /// [`crate::communities`]); 0 turns them off.
    pub community_blend: f32,
}

impl ServingSettings {
    /// The settings a model trained with `params` is served with by default.
    pub fn from_params(params: &TrainParams) -> ServingSettings {
        ServingSettings {
            exact_max_items: params.exact_max_items,
            ef_search: params.hnsw.ef_search,
            sequence_blend: params.sequence.blend,
            recency_decay: params.sequence.recency_decay,
            max_recent: params.sequence.max_recent,
            similar_blend: params.blend_weight,
            explore_share: 0.0,
            social_blend: params.social_blend,
            community_blend: params.community_blend,
        }
    }

    /// Whether a catalogue of `n_items` is scored exactly under these settings.
    pub fn scores_exactly(&self, n_items: usize) -> bool {
        n_items <= self.exact_max_items
    }

    /// These settings without social signals: neither contacts' votes nor communities'
    /// picks.
    pub fn without_social(self) -> ServingSettings {
        ServingSettings {
            social_blend: 0.0,
            community_blend: 0.0,
            ..self
        }
    }

    /// These settings, forced to score every catalogue exactly.
    pub fn exact(self) -> ServingSettings {
        ServingSettings {
            exact_max_items: usize::MAX,
            ..self
        }
    }

    /// These settings, forced to score every catalogue through the ANN index.
    pub fn ann(self) -> ServingSettings {
        ServingSettings {
            exact_max_items: 0,
            ..self
        }
    }
}

impl Default for ServingSettings {
    fn default() -> Self {
        ServingSettings::from_params(&TrainParams::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_training_parameters() {
        let mut p = TrainParams::default();
        p.sequence.blend = 0.3;
        p.exact_max_items = 5;
        let s = ServingSettings::from_params(&p);
        assert_eq!(s.sequence_blend, 0.3);
        assert!(s.scores_exactly(5) && !s.scores_exactly(6));
        assert!(s.exact().scores_exactly(usize::MAX) && !s.ann().scores_exactly(1));
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<ServingSettings>(&json).unwrap(), s);
        assert!(serde_json::from_str::<ServingSettings>(r#"{"blend": 1}"#).is_err(), "unknown keys are refused");
    }
}

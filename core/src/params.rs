//! All training and serving parameters in one serialisable tree, and the record of how
//! `train` chose them.
//!
//! The trainer records these in every model's manifest, `train --params FILE` reads them
//! from JSON (missing fields take their defaults), and the server reads the serving part
//! back from the manifest, so a model always carries the settings it was built with.

use serde::{Deserialize, Serialize};

use crate::als::AlsParams;
use crate::ann::HnswParams;
use crate::content::ContentParams;
use crate::interactions::WeightParams;
use crate::neighbors::SequenceParams;
use crate::repeat::NoveltyCurve;

/// Every knob of training and scoring.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainParams {
    /// How events become user–item weights.
    pub weights: WeightParams,
    /// Collaborative embeddings (iALS).
    pub als: AlsParams,
    /// Content embeddings from catalogue features.
    pub content: ContentParams,
    /// HNSW indexes, built only when a catalogue is scored through ANN.
    pub hnsw: HnswParams,
    /// Item-to-item neighbours and how recent items vote through them.
    pub sequence: SequenceParams,
    /// How many of each user's latest events the model keeps for scoring.
    pub recent_events: usize,
    /// Catalogues up to this size are scored exactly (faster than ANN at that size);
    /// larger ones go through the HNSW index.
    pub exact_max_items: usize,
    /// Weight of the collaborative space in blended similarity (content gets the rest).
    pub blend_weight: f32,
    /// Weight of the social votes (what a user's friends and followed accounts had) in
    /// `Recommend`, where the model has a social graph; `train`'s search chooses it.
    pub social_blend: f32,
    /// Weight of a member's communities' picks (see [`crate::communities`]) in
    /// `Recommend`, where the model has communities; `train`'s search chooses it.
    pub community_blend: f32,
}

/// The social weight when training chose none but a request asks for social scoring,
/// and the one a search starts from.
pub const DEFAULT_SOCIAL_BLEND: f32 = 0.2;

/// The community weight a search starts from (and models trained before it had one
/// serve with).
pub const DEFAULT_COMMUNITY_BLEND: f32 = 0.1;

impl TrainParams {
    /// Checks the values no model could be trained or loaded with (a parameter file's
    /// word is taken as given otherwise): at least one factor and one content dimension,
    /// finite non-negative regularisation, confidence and blend weights.
    ///
    /// # Errors
    /// The first bad value, named as in the file.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.als.factors == 0 {
            return Err("als.factors must be at least 1".into());
        }
        if self.content.dim == 0 {
            return Err("content.dim must be at least 1".into());
        }
        let weights = [
            ("als.regularization", self.als.regularization),
            ("als.alpha", self.als.alpha),
            ("blend_weight", self.blend_weight),
            ("sequence.blend", self.sequence.blend),
            ("social_blend", self.social_blend),
            ("community_blend", self.community_blend),
        ];
        match weights.iter().find(|(_, v)| !v.is_finite() || *v < 0.0) {
            Some((name, v)) => Err(format!("{name} must be finite and not negative, got {v}")),
            None => Ok(()),
        }
    }
}

impl Default for TrainParams {
    fn default() -> Self {
        TrainParams {
            weights: WeightParams::default(),
            als: AlsParams::default(),
            content: ContentParams::default(),
            hnsw: HnswParams::default(),
            sequence: SequenceParams::default(),
            recent_events: 50,
            exact_max_items: 20_000,
            blend_weight: 0.5,
            social_blend: DEFAULT_SOCIAL_BLEND,
            community_blend: DEFAULT_COMMUNITY_BLEND,
        }
    }
}

impl Default for WeightParams {
    fn default() -> Self {
        WeightParams {
            event_weights: Default::default(),
            value_scale: 1.0,
            rating_value_scale: 0.0,
            half_life: 0.0,
            normalize: true,
        }
    }
}

/// What the search did, recorded in the model's manifest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TuningReport {
    /// Why no search was run, when none was (the defaults were used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// How the validation slice was carved.
    pub validation: String,
    /// Event kinds the validation targets were drawn from.
    pub target_events: Vec<String>,
    /// Users scored per candidate.
    pub valid_users: usize,
    /// Candidates fitted (the defaults first).
    pub fits: usize,
    /// (fit, blend) pairs scored.
    pub scored: usize,
    /// What ended the search: "budget" (every trial ran) or "time" (the wall-clock cap).
    pub stopped_by: String,
    /// Validation NDCG@10 of the parameters as given.
    pub given_ndcg10: f64,
    /// Whether the parameters as given were kept because no candidate beat them by the
    /// required margin (1% validation NDCG@10).
    #[serde(default)]
    pub kept_given: bool,
    /// Validation NDCG@10 of the chosen parameters.
    pub best_ndcg10: f64,
    /// Validation Recall@10 of the chosen parameters.
    pub best_recall10: f64,
    /// Seconds spent searching (the final fit not included).
    pub seconds: f64,
    /// Hit curve of new items by rank for the chosen parameters (places returning items
    /// among new ones, see [`crate::repeat`]); absent when no search ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub novelty: Option<NoveltyCurve>,
}

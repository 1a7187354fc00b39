//! `ModelInfo`: the live model's manifest and settings → wire reply.

use crate::proto;
use crate::state::LiveModel;

impl From<&LiveModel> for proto::ModelInfoResponse {
    fn from(live: &LiveModel) -> Self {
        let m = live.model.manifest();
        proto::ModelInfoResponse {
            version: m.version.clone(),
            created_at: m.created_at.clone(),
            format_version: m.format_version,
            users: m.counts.users as u64,
            items: m.counts.items as u64,
            events: m.counts.events as u64,
            items_with_events: m.counts.items_with_events as u64,
            items_with_content: m.counts.items_with_content as u64,
            scoring: if live.settings.scores_exactly(live.model.n_items()) { "exact" } else { "ann" }.to_string(),
            train_seconds: m.train_seconds,
            log_position: m.log_position,
            // Filled in by the handler from the server state.
            ..Default::default()
        }
    }
}

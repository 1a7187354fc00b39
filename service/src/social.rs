//! Social edges added and removed while serving (`IngestSocialEdges`), kept so that
//! every model installed later — a reload onto a model trained before them — gets them
//! too.
//!
//! Only the latest change per edge (follower, followed, kind) is kept, with its log
//! position; re-applying them in log order gives the same contacts as applying every
//! change, since a later change of an edge decides everything an earlier one touched.

use std::collections::HashMap;

use affinity_core::data::SocialKind;
use affinity_core::model::Model;
use affinity_eventlog::SocialChange;

/// The latest change per social edge.
#[derive(Debug, Default)]
pub struct SocialChanges {
    latest: HashMap<(String, String, bool), (u64, SocialChange)>,
}

impl SocialChanges {
    /// Records `change` (at log position `seq`) and applies it to `model`. Returns
    /// whether the model knows both users (else it waits for a model that does).
    pub fn record(&mut self, model: Option<&Model>, seq: u64, change: SocialChange) -> bool {
        let applied = model.is_some_and(|m| m.edit_social(&change.edge, change.removed));
        let e = &change.edge;
        self.latest.insert((e.user_id.clone(), e.other_id.clone(), e.kind == SocialKind::Friend), (seq, change));
        applied
    }

    /// Applies every recorded change to `model` (one being installed), in log order.
    pub fn apply_to(&self, model: &Model) {
        let mut changes: Vec<&(u64, SocialChange)> = self.latest.values().collect();
        changes.sort_unstable_by_key(|(seq, _)| *seq);
        for (_, c) in changes {
            model.edit_social(&c.edge, c.removed);
        }
    }

    /// Forgets every change naming `user_id` (who asked to be forgotten).
    pub fn forget(&mut self, user_id: &str) {
        self.latest.retain(|_, (_, c)| !c.names(user_id));
    }

    /// How many edges were changed.
    pub fn len(&self) -> usize {
        self.latest.len()
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }
}

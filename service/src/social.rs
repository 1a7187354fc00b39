//! Social edges and community memberships changed while serving (`IngestSocialEdges`,
//! `IngestMemberships`), kept so that every model installed later — a reload onto a model
//! trained before them — gets them too.
//!
//! Only the latest change per edge (follower, followed, kind) or membership (user,
//! community) is kept, with its log position; re-applying them in log order gives the same
//! state as applying every change, since a later change of the same key decides
//! everything an earlier one touched.

use std::collections::HashMap;
use std::hash::Hash;

use affinity_core::data::SocialKind;
use affinity_core::model::Model;
use affinity_eventlog::{MembershipChange, SocialChange};

/// The latest change per key, with its log position.
#[derive(Debug)]
pub struct Latest<K, C> {
    latest: HashMap<K, (u64, C)>,
}

impl<K, C> Default for Latest<K, C> {
    fn default() -> Self {
        Latest { latest: HashMap::new() }
    }
}

impl<K: Hash + Eq, C> Latest<K, C> {
    /// Keeps `change` (at log position `seq`) as `key`'s latest.
    pub fn record(&mut self, key: K, seq: u64, change: C) {
        self.latest.insert(key, (seq, change));
    }

    /// Every kept change, in log order.
    pub fn in_order(&self) -> Vec<&C> {
        let mut changes: Vec<&(u64, C)> = self.latest.values().collect();
        changes.sort_unstable_by_key(|(seq, _)| *seq);
        changes.into_iter().map(|(_, c)| c).collect()
    }

    /// Drops every change `keep` refuses.
    pub fn retain(&mut self, keep: impl Fn(&C) -> bool) {
        self.latest.retain(|_, (_, c)| keep(c));
    }

    /// How many keys changed.
    pub fn len(&self) -> usize {
        self.latest.len()
    }

    /// Whether none did.
    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }
}

/// Social edge changes, by (user, other, friendship).
pub type SocialChanges = Latest<(String, String, bool), SocialChange>;

/// Membership changes, by (user, community).
pub type MembershipChanges = Latest<(String, String), MembershipChange>;

impl SocialChanges {
    /// Records `change` (at log position `seq`) and applies it to `model`. Returns
    /// whether the model knows both users (else it waits for a model that does).
    pub fn apply(&mut self, model: Option<&Model>, seq: u64, change: SocialChange) -> bool {
        let applied = model.is_some_and(|m| m.edit_social(&change.edge, change.removed));
        let e = &change.edge;
        self.record((e.user_id.clone(), e.other_id.clone(), e.kind == SocialKind::Friend), seq, change);
        applied
    }

    /// Applies every recorded change to `model` (one being installed), in log order.
    pub fn apply_to(&self, model: &Model) {
        for c in self.in_order() {
            model.edit_social(&c.edge, c.removed);
        }
    }
}

impl MembershipChanges {
    /// Records `change` (at log position `seq`) and applies it to `model`. Returns
    /// whether the model knows the user (else it waits for a model that does).
    pub fn apply(&mut self, model: Option<&Model>, seq: u64, change: MembershipChange) -> bool {
        let applied = model.is_some_and(|m| m.edit_membership(&change.membership, change.removed));
        let m = &change.membership;
        self.record((m.user_id.clone(), m.community_id.clone()), seq, change);
        applied
    }

    /// Applies every recorded change to `model` (one being installed), in log order.
    pub fn apply_to(&self, model: &Model) {
        for c in self.in_order() {
            model.edit_membership(&c.membership, c.removed);
        }
    }
}

//! Catalogue changes made while serving (availability, upserted entries), kept so that
//! every model installed later — a reload onto a model trained from an older catalogue —
//! gets them too.
//!
//! Only the latest state per item is kept: its last upserted entry (with availability
//! changes after it folded in), or for an item never upserted its last availability. So
//! re-applying is idempotent and the order of items does not matter.

use std::collections::HashMap;

use affinity_core::data::Item;
use affinity_core::model::{Model, Upserted};

/// The latest catalogue change per item.
#[derive(Debug, Default)]
pub struct CatalogueChanges {
    entries: HashMap<String, Item>,
    availability: HashMap<String, bool>,
}

impl CatalogueChanges {
    /// Records that `item_id` was put on or taken off sale; applies it to `model`.
    /// Returns whether the model knows the item.
    pub fn set_available(&mut self, model: Option<&Model>, item_id: &str, available: bool) -> bool {
        match self.entries.get_mut(item_id) {
            Some(entry) => entry.available = available,
            None => {
                self.availability.insert(item_id.to_string(), available);
            }
        }
        model.and_then(|m| m.item_index(item_id).map(|i| m.set_available(i, available))).is_some()
    }

    /// Records `item` as the item's entry; applies it to `model`.
    pub fn upsert(&mut self, model: Option<&Model>, item: Item) -> Option<Upserted> {
        self.availability.remove(&item.item_id);
        self.entries.insert(item.item_id.clone(), item.clone());
        model.map(|m| m.upsert_item(item))
    }

    /// Applies every recorded change to `model` (one being installed).
    pub fn apply_to(&self, model: &Model) {
        for item in self.entries.values() {
            model.upsert_item(item.clone());
        }
        for (id, &available) in &self.availability {
            if let Some(i) = model.item_index(id) {
                model.set_available(i, available);
            }
        }
    }

    /// Whether an entry or an availability change for `item_id` was recorded.
    pub fn knows(&self, item_id: &str) -> bool {
        self.entries.contains_key(item_id) || self.availability.contains_key(item_id)
    }

    /// When `item_id` was listed, by its latest entry or the model; `None` for an item
    /// neither knows (or one listed at no known time).
    pub fn listed_at(&self, model: Option<&Model>, item_id: &str) -> Option<i64> {
        match self.entries.get(item_id) {
            Some(e) => e.listed_at,
            None => model.and_then(|m| m.item_index(item_id).and_then(|i| m.item(i).listed_at)),
        }
    }

    /// Whether `item_id` is available on `model` with the changes applied; an unknown
    /// item counts as available (it will be when it arrives).
    pub fn is_available(&self, model: Option<&Model>, item_id: &str) -> bool {
        if let Some(e) = self.entries.get(item_id) {
            return e.available;
        }
        if let Some(&a) = self.availability.get(item_id) {
            return a;
        }
        model.and_then(|m| m.item_index(item_id).map(|i| m.is_available(i))).unwrap_or(true)
    }
}

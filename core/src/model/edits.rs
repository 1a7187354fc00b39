//! Catalogue changes made while a model serves: a new entry for a trained item (its
//! price, category or title changed) and items added after training.
//!
//! A model is shared by every request and never copied, so edits live beside the trained
//! catalogue rather than in it. Every entry ever written stays in an append-only arena:
//! a reference handed out is valid for the model's life, and readers wait for writers
//! only during a short map lookup (and not at all for items never edited). A retrain
//! folds the edits into the catalogue; until then each edit costs one entry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::RwLock;

use crate::data::Item;
use crate::ids::ItemIdx;

/// The current entry of an edited or added item.
pub(crate) struct Edited {
    /// The catalogue entry as last written.
    pub(crate) item: Item,
    /// Its content vector in the model's content space (empty without features).
    pub(crate) content: Vec<f32>,
}

/// Who is where, changed only under the write lock.
#[derive(Default)]
struct EditIndex {
    /// Item index → position of its current entry in the arena.
    current: HashMap<u32, usize>,
    /// Id of an added item → its index (after every trained item).
    added_ids: HashMap<String, u32>,
    /// `c:<category>` / `b:<brand>` → items an edit gave that category or brand (some
    /// may have moved on since).
    moved_in: HashMap<String, Vec<ItemIdx>>,
}

/// Edits to one model's catalogue.
pub(crate) struct CatalogueEdits {
    n_trained: usize,
    /// Per trained item, whether it has an edit (read before taking the lock).
    touched: Vec<AtomicBool>,
    /// Whether any edit was made.
    any: AtomicBool,
    /// Every entry written, oldest first.
    entries: boxcar::Vec<Edited>,
    /// Per added item, whether it may be recommended.
    added_available: boxcar::Vec<AtomicBool>,
    /// Added items fully registered; an index below `n_trained + added` is safe to read.
    added: AtomicUsize,
    index: RwLock<EditIndex>,
}

impl CatalogueEdits {
    /// No edits to a catalogue of `n_trained` items.
    pub(crate) fn new(n_trained: usize) -> CatalogueEdits {
        CatalogueEdits {
            n_trained,
            touched: (0..n_trained).map(|_| AtomicBool::new(false)).collect(),
            any: AtomicBool::new(false),
            entries: boxcar::Vec::new(),
            added_available: boxcar::Vec::new(),
            added: AtomicUsize::new(0),
            index: RwLock::new(EditIndex::default()),
        }
    }

    /// Whether any edit was made.
    pub(crate) fn any(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// Items added after training.
    pub(crate) fn n_added(&self) -> usize {
        self.added.load(Ordering::Acquire)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, EditIndex> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The current entry of `item`, if it was edited or added.
    pub(crate) fn get(&self, item: ItemIdx) -> Option<&Edited> {
        let i = item.get();
        if i < self.n_trained && !self.touched[i].load(Ordering::Acquire) {
            return None;
        }
        let at = *self.read().current.get(&item.0)?;
        self.entries.get(at)
    }

    /// The index of an item added after training.
    pub(crate) fn added_index(&self, item_id: &str) -> Option<ItemIdx> {
        if self.n_added() == 0 {
            return None;
        }
        self.read().added_ids.get(item_id).map(|&i| ItemIdx(i))
    }

    /// Whether the added item `item` may be recommended.
    pub(crate) fn added_available(&self, item: ItemIdx) -> Option<bool> {
        let k = item.get().checked_sub(self.n_trained)?;
        (k < self.n_added()).then(|| self.added_available.get(k).is_some_and(|a| a.load(Ordering::Relaxed)))
    }

    /// Sets whether the added item `item` may be recommended; false when it is not one.
    pub(crate) fn set_added_available(&self, item: ItemIdx, available: bool) -> bool {
        let Some(k) = item.get().checked_sub(self.n_trained).filter(|&k| k < self.n_added()) else { return false };
        if let Some(a) = self.added_available.get(k) {
            a.store(available, Ordering::Relaxed);
        }
        true
    }

    /// Writes the entry of `trained` (a trained item) or, when `None`, of a new item
    /// (or of an item added earlier under the same id); returns its index and whether it
    /// is new.
    pub(crate) fn write(&self, trained: Option<ItemIdx>, entry: Edited) -> (ItemIdx, bool) {
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        let keys = [format!("c:{}", entry.item.category), format!("b:{}", entry.item.brand)];
        let available = entry.item.available;
        let target = trained.or_else(|| index.added_ids.get(&entry.item.item_id).map(|&i| ItemIdx(i)));
        let item = match target {
            Some(i) => i,
            None => {
                let k = self.added_available.push(AtomicBool::new(available));
                ItemIdx((self.n_trained + k) as u32)
            }
        };
        let new_id = (target.is_none()).then(|| entry.item.item_id.clone());
        let at = self.entries.push(entry);
        index.current.insert(item.0, at);
        for key in keys.into_iter().filter(|k| k.len() > 2) {
            let members = index.moved_in.entry(key).or_default();
            if let Err(p) = members.binary_search(&item) {
                members.insert(p, item);
            }
        }
        match new_id {
            Some(id) => {
                index.added_ids.insert(id, item.0);
                self.added.fetch_add(1, Ordering::Release);
            }
            None if item.get() < self.n_trained => self.touched[item.get()].store(true, Ordering::Release),
            None => {
                self.set_added_available(item, available);
            }
        }
        self.any.store(true, Ordering::Release);
        (item, target.is_none())
    }

    /// Items an edit put in `category`, sorted (check each one's current category).
    pub(crate) fn moved_into(&self, category: &str) -> Vec<ItemIdx> {
        self.moved_in(&format!("c:{category}"))
    }

    /// Items an edit gave `brand`, sorted (check each one's current brand).
    pub(crate) fn moved_into_brand(&self, brand: &str) -> Vec<ItemIdx> {
        self.moved_in(&format!("b:{brand}"))
    }

    fn moved_in(&self, key: &str) -> Vec<ItemIdx> {
        if !self.any() {
            return Vec::new();
        }
        self.read().moved_in.get(key).cloned().unwrap_or_default()
    }

    /// Every edited or added item, sorted.
    pub(crate) fn edited(&self) -> Vec<ItemIdx> {
        if !self.any() {
            return Vec::new();
        }
        let mut all: Vec<ItemIdx> = self.read().current.keys().map(|&i| ItemIdx(i)).collect();
        all.sort_unstable();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, category: &str) -> Edited {
        Edited {
            item: Item { category: category.into(), ..Item::bare(id) },
            content: Vec::new(),
        }
    }

    #[test]
    fn edits_and_additions_are_found_and_indexed_after_the_trained_items() {
        let e = CatalogueEdits::new(3);
        assert!(e.get(ItemIdx(1)).is_none() && !e.any());
        assert_eq!(e.write(Some(ItemIdx(1)), entry("b", "toys")), (ItemIdx(1), false));
        assert_eq!(e.get(ItemIdx(1)).map(|x| x.item.category.as_str()), Some("toys"));
        assert!(e.get(ItemIdx(0)).is_none());
        let (new, added) = e.write(None, entry("z", "toys"));
        assert_eq!((new, added), (ItemIdx(3), true));
        assert_eq!(e.added_index("z"), Some(new));
        assert_eq!(e.added_available(new), Some(true));
        // Writing an added id again updates it in place.
        assert_eq!(e.write(None, entry("z", "books")), (new, false));
        assert_eq!(e.n_added(), 1);
        assert_eq!(e.get(new).map(|x| x.item.category.as_str()), Some("books"));
        assert_eq!(e.moved_into("toys"), vec![ItemIdx(1), new]);
        assert_eq!(e.edited(), vec![ItemIdx(1), new]);
        assert!(e.set_added_available(new, false) && e.added_available(new) == Some(false));
        assert!(!e.set_added_available(ItemIdx(2), false));
    }
}

//! Identifiers: the external string ids of users and items, the dense indices the model
//! addresses them by, and the map between the two.
//!
//! External ids are opaque strings exactly as the input files and the API carry them.
//! Inside a model every item and user has a dense index in `0..n`; [`ItemIdx`] and
//! [`UserIdx`] keep the two kinds apart in every public signature, so an item index can
//! never be passed where a user index is meant. Numeric kernels (ALS, neighbours) work on
//! plain `u32` rows for speed and meet these types at the model's surface.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Dense index of an item in a model (`0..items`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ItemIdx(pub u32);

/// Dense index of a user in a model (`0..users`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserIdx(pub u32);

impl ItemIdx {
    /// The index as a `usize`, for addressing rows.
    pub fn get(self) -> usize {
        self.0 as usize
    }
}

impl UserIdx {
    /// The index as a `usize`, for addressing rows.
    pub fn get(self) -> usize {
        self.0 as usize
    }
}

/// A dense index over string ids, in first-seen order.
#[derive(Debug, Clone, Default)]
pub struct IdMap {
    ids: Vec<String>,
    index: HashMap<String, u32>,
}

impl IdMap {
    /// Builds the map; a repeated id keeps its first index.
    pub fn from_ids(ids: Vec<String>) -> IdMap {
        // Sized once and each id moved in with one copy for the index: a million-user
        // model builds two of these on every load.
        let mut map = IdMap { ids: Vec::with_capacity(ids.len()), index: HashMap::with_capacity(ids.len()) };
        for id in ids {
            if !map.index.contains_key(&id) {
                map.index.insert(id.clone(), map.ids.len() as u32);
                map.ids.push(id);
            }
        }
        map
    }

    /// Returns the index of `id`, adding it if new.
    pub fn insert(&mut self, id: &str) -> u32 {
        if let Some(&i) = self.index.get(id) {
            return i;
        }
        let i = self.ids.len() as u32;
        self.ids.push(id.to_string());
        self.index.insert(id.to_string(), i);
        i
    }

    /// The index of `id`, if present.
    pub fn get(&self, id: &str) -> Option<u32> {
        self.index.get(id).copied()
    }

    /// The id at `index`.
    ///
    /// # Panics
    /// If `index` is out of range.
    pub fn id(&self, index: u32) -> &str {
        &self.ids[index as usize]
    }

    /// Every id, by index.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the map holds no id.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// An id as error messages show it: whole when short, else its first 48 characters
/// and its length, so a hostile or mistaken 20 KB id cannot blow up a status header.
pub fn shown(id: &str) -> String {
    const MAX: usize = 48;
    match id.char_indices().nth(MAX) {
        None => id.to_string(),
        Some((cut, _)) => format!("{}… ({} bytes)", &id[..cut], id.len()),
    }
}

/// FNV-1a: a small, stable (across platforms and releases) hash of bytes, used where a
/// hash must never change between builds (content feature buckets, split assignment).
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Every id maps to the index it was first given, and back.
        #[test]
        fn id_map_round_trips(ids in proptest::collection::vec("[a-z0-9]{0,6}", 0..60)) {
            let map = IdMap::from_ids(ids.clone());
            let mut first: HashMap<&str, u32> = HashMap::new();
            for id in &ids {
                let next = first.len() as u32;
                first.entry(id.as_str()).or_insert(next);
            }
            prop_assert_eq!(map.len(), first.len());
            for (id, &i) in &first {
                prop_assert_eq!(map.get(id), Some(i));
                prop_assert_eq!(map.id(i), *id);
            }
            // Rebuilt from its own ids (as a model load does), the map is the same.
            let back = IdMap::from_ids(map.ids().to_vec());
            prop_assert_eq!(back.ids(), map.ids());
            for id in map.ids() {
                prop_assert_eq!(back.get(id), map.get(id));
            }
        }
    }

    #[test]
    fn stable_hash_is_fnv1a() {
        assert_eq!(stable_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn long_ids_are_shown_cut_with_their_length() {
        assert_eq!(shown("sku-1"), "sku-1");
        let long = "é".repeat(10_000);
        let s = shown(&long);
        assert!(s.len() < 120 && s.ends_with("(20000 bytes)"), "{s}");
    }
}

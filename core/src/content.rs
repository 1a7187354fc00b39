//! Content item embeddings from catalogue features.
//!
//! Each item becomes a bag of features — category, brand, price band, tags and title
//! words — weighted by field importance times inverse document frequency, hashed with a
//! sign into a fixed number of dimensions (the hashing trick keeps memory independent of
//! vocabulary size) and scaled to unit length. Cosine between two such vectors measures
//! shared, rare features. Items with no features get a zero vector and are left out of
//! the content index.

use std::collections::HashMap;

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::data::Item;
use crate::ids::stable_hash;
use crate::linalg;

/// Field weights and size of the content space.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContentParams {
    /// Dimensions of the hashed content space; more means fewer feature collisions.
    pub dim: usize,
    /// Importance of the category feature (before IDF).
    pub category_weight: f32,
    /// Importance of the brand feature (before IDF).
    pub brand_weight: f32,
    /// Importance of the price band feature (before IDF).
    pub price_weight: f32,
    /// Importance of each tag (before IDF).
    pub tag_weight: f32,
    /// Importance of each title word, stopwords and one-letter words left out (before IDF).
    pub title_weight: f32,
    /// Number of price bands (quantiles of the catalogue's prices).
    pub price_bands: usize,
}

impl Default for ContentParams {
    fn default() -> Self {
        ContentParams {
            dim: 256,
            category_weight: 2.0,
            brand_weight: 1.5,
            price_weight: 0.75,
            tag_weight: 1.0,
            title_weight: 0.5,
            price_bands: 8,
        }
    }
}

const STOPWORDS: &[&str] = &["the", "a", "an", "of", "and", "in", "on", "for", "to", "with", "la", "le", "de"];

fn title_words(title: &str) -> impl Iterator<Item = String> + '_ {
    title
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 2)
        .map(|w| w.to_lowercase())
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
}

/// Price band boundaries: the catalogue's price quantiles.
fn price_cuts(items: &[Item], bands: usize) -> Vec<f32> {
    let mut prices: Vec<f32> = items.iter().filter_map(|i| i.price).collect();
    if prices.is_empty() || bands < 2 {
        return Vec::new();
    }
    prices.sort_by(f32::total_cmp);
    (1..bands).map(|b| prices[(b * prices.len() / bands).min(prices.len() - 1)]).collect()
}

/// The weighted features of one item, before IDF.
fn features(item: &Item, cuts: &[f32], p: &ContentParams) -> Vec<(String, f32)> {
    let mut f = Vec::new();
    if !item.category.is_empty() {
        f.push((format!("c:{}", item.category.to_lowercase()), p.category_weight));
    }
    if !item.brand.is_empty() {
        f.push((format!("b:{}", item.brand.to_lowercase()), p.brand_weight));
    }
    if let Some(price) = item.price {
        if !cuts.is_empty() {
            let band = cuts.iter().filter(|&&c| price >= c).count();
            f.push((format!("p:{band}"), p.price_weight));
        }
    }
    for t in &item.tags {
        f.push((format!("t:{}", t.to_lowercase()), p.tag_weight));
    }
    for w in title_words(&item.title) {
        f.push((format!("w:{w}"), p.title_weight));
    }
    // Repeated features (e.g. a word twice in a title) count once.
    f.sort_by(|a, b| a.0.cmp(&b.0));
    f.dedup_by(|a, b| a.0 == b.0);
    f
}

/// The content space of one catalogue: its price bands and each feature's document
/// frequency. A model keeps it so that an item added while serving is embedded with the
/// same vocabulary and IDF as the items it was trained with.
#[derive(Debug, Clone)]
pub struct ContentSpace {
    params: ContentParams,
    cuts: Vec<f32>,
    df: HashMap<String, u32>,
    n: f32,
}

impl ContentSpace {
    /// The space of `items`: price quantiles and feature counts.
    pub fn of(items: &[Item], params: &ContentParams) -> ContentSpace {
        let cuts = price_cuts(items, params.price_bands);
        let mut df: HashMap<String, u32> = HashMap::new();
        for item in items {
            for (name, _) in features(item, &cuts, params) {
                *df.entry(name).or_insert(0) += 1;
            }
        }
        ContentSpace {
            params: *params,
            cuts,
            df,
            n: items.len().max(1) as f32,
        }
    }

    /// The unit-length content vector of `item` (zero without features). A feature the
    /// catalogue never had counts as held by one item: the rarest there is.
    pub fn embed(&self, item: &Item) -> Vec<f32> {
        let dim = self.params.dim.max(1);
        let mut v = vec![0.0f32; dim];
        for (name, w) in features(item, &self.cuts, &self.params) {
            let df = self.df.get(&name).copied().unwrap_or(0).max(1);
            let idf = (1.0 + self.n / df as f32).ln();
            let h = stable_hash(name.as_bytes());
            let slot = (h % dim as u64) as usize;
            let sign = if (h >> 63) == 0 { 1.0 } else { -1.0 };
            v[slot] += sign * w * idf;
        }
        linalg::normalize(&mut v);
        v
    }
}

/// Embeds every item; returns `items × dim` (rows unit length, or zero without features).
pub fn embed(items: &[Item], params: &ContentParams) -> Array2<f32> {
    let space = ContentSpace::of(items, params);
    let mut out = Array2::<f32>::zeros((items.len(), params.dim.max(1)));
    for (mut row, item) in out.rows_mut().into_iter().zip(items) {
        row.iter_mut().zip(space.embed(item)).for_each(|(r, x)| *r = x);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, cat: &str, tags: &[&str], title: &str) -> Item {
        Item {
            title: title.into(),
            category: cat.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            ..Item::bare(id)
        }
    }

    #[test]
    fn shared_features_make_items_close() {
        let items = vec![
            item("a", "toys", &["kids", "wood"], "Wooden train"),
            item("b", "toys", &["kids"], "Toy train set"),
            item("c", "garden", &["steel"], "Garden hose"),
            Item::bare("d"),
        ];
        let e = embed(&items, &ContentParams::default());
        let sim = |x: usize, y: usize| linalg::dot(e.row(x).as_slice().unwrap(), e.row(y).as_slice().unwrap());
        assert!(sim(0, 1) > 0.3);
        assert!(sim(0, 1) > sim(0, 2) + 0.2);
        assert!((sim(0, 0) - 1.0).abs() < 1e-5);
        assert_eq!(linalg::norm(e.row(3).as_slice().unwrap()), 0.0);
    }

    #[test]
    fn an_item_added_later_lands_beside_its_kind() {
        let items = vec![
            item("a", "toys", &["kids", "wood"], "Wooden train"),
            item("b", "garden", &["steel"], "Garden hose"),
            item("c", "garden", &["rubber"], "Garden gloves"),
        ];
        let p = ContentParams::default();
        let space = ContentSpace::of(&items, &p);
        let e = embed(&items, &p);
        // Re-embedding a catalogue item gives its trained vector.
        let again = space.embed(&items[1]);
        assert!(again.iter().zip(e.row(1)).all(|(x, y)| (x - y).abs() < 1e-6));
        let new = space.embed(&item("d", "garden", &["steel", "brand-new-tag"], "Steel garden rake"));
        let sim = |row: usize| linalg::dot(&new, e.row(row).as_slice().unwrap());
        assert!((linalg::norm(&new) - 1.0).abs() < 1e-5);
        assert!(sim(1) > sim(2) && sim(2) > sim(0) + 0.1, "{} {} {}", sim(0), sim(1), sim(2));
    }

    #[test]
    fn title_words_skip_stopwords_and_punctuation() {
        let w: Vec<String> = title_words("The Lord of the Rings (2001)").collect();
        assert_eq!(w, vec!["lord", "rings", "2001"]);
    }
}

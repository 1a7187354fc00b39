//! Business rules on recommendations and similar items: what merchandisers ask of a list
//! beyond relevance.
//!
//! A [`Rules`] value is part of a query. Filters (categories and brands in or out, a price
//! range, off-sale items) decide which items are *eligible*; promotions add to the score of
//! named items; diversity (at most N per category or brand, and/or MMR) then chooses among
//! the eligible. Scoring widens its candidate set until `k` eligible items are found or
//! every eligible item was scored, so a selective filter still returns `k` when `k` exist;
//! the answer says when fewer than `k` came back and whether the filters or a diversity
//! cap was the cause ([`Shortfall`]).

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::ids::ItemIdx;
use crate::linalg::dot;
use crate::model::Model;

/// Most ids or names one rule list may hold.
pub const MAX_RULE_VALUES: usize = 1000;

/// Rules a request may carry; the default applies none (only items on sale).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rules {
    /// Only items of one of these categories (empty: any).
    pub include_categories: Vec<String>,
    /// Never items of these categories.
    pub exclude_categories: Vec<String>,
    /// Only items of one of these brands (empty: any).
    pub include_brands: Vec<String>,
    /// Never items of these brands.
    pub exclude_brands: Vec<String>,
    /// Only items with a price of at least this (items without a price fail it).
    pub min_price: Option<f32>,
    /// Only items with a price of at most this (items without a price fail it).
    pub max_price: Option<f32>,
    /// Let items taken off sale through (default: only available items).
    pub include_unavailable: bool,
    /// Never an item the subject interacted with in any way, whatever the repeat policy
    /// would bring back (a "buy it again" request ignores it: it asks for exactly those).
    pub exclude_interacted: bool,
    /// Promoted items and their boosts, added to the item's score after the list's scores
    /// are scaled to [0, 1]: a boost of 1 lifts the weakest candidate level with the best.
    pub promoted: Vec<(String, f32)>,
    /// At most this many items of one category in the list.
    pub max_per_category: Option<usize>,
    /// At most this many items of one brand in the list.
    pub max_per_brand: Option<usize>,
    /// Maximal marginal relevance: each next item maximises `λ·score − (1−λ)·max
    /// similarity to the items already chosen` (1 = relevance only).
    pub mmr_lambda: Option<f32>,
}

/// Why fewer than `k` items came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortfall {
    /// Fewer than `k` items pass the filters.
    Filters,
    /// Enough items pass the filters, but the diversity caps left fewer.
    Diversity,
}

fn check_names(field: &'static str, names: &[String]) -> Result<()> {
    if names.len() > MAX_RULE_VALUES {
        return Err(Error::invalid_argument(field, format!("at most {MAX_RULE_VALUES} values, got {}", names.len())));
    }
    if let Some(n) = names.iter().position(String::is_empty) {
        return Err(Error::invalid_argument(field, format!("value {n} is empty")));
    }
    Ok(())
}

fn check_price(field: &'static str, p: Option<f32>) -> Result<()> {
    match p {
        Some(p) if !p.is_finite() || p < 0.0 => Err(Error::invalid_argument(field, format!("must be finite and not negative, got {p}"))),
        _ => Ok(()),
    }
}

impl Rules {
    /// Checks every rule; the error names the field as the API spells it.
    pub fn validate(&self) -> Result<()> {
        check_names("rules.include_categories", &self.include_categories)?;
        check_names("rules.exclude_categories", &self.exclude_categories)?;
        check_names("rules.include_brands", &self.include_brands)?;
        check_names("rules.exclude_brands", &self.exclude_brands)?;
        check_price("rules.min_price", self.min_price)?;
        check_price("rules.max_price", self.max_price)?;
        if let (Some(lo), Some(hi)) = (self.min_price, self.max_price) {
            if lo > hi {
                return Err(Error::invalid_argument("rules.max_price", format!("{hi} is below min_price {lo}")));
            }
        }
        if self.promoted.len() > MAX_RULE_VALUES {
            return Err(Error::invalid_argument("rules.promoted", format!("at most {MAX_RULE_VALUES} items, got {}", self.promoted.len())));
        }
        for (n, (id, boost)) in self.promoted.iter().enumerate() {
            if id.is_empty() {
                return Err(Error::invalid_argument("rules.promoted", format!("item {n} has an empty id")));
            }
            if !boost.is_finite() {
                return Err(Error::invalid_argument("rules.promoted", format!("item {n} has boost {boost}; boosts must be finite")));
            }
        }
        for (field, cap) in [("rules.max_per_category", self.max_per_category), ("rules.max_per_brand", self.max_per_brand)] {
            if cap == Some(0) {
                return Err(Error::invalid_argument(field, "must be at least 1 when set"));
            }
        }
        if let Some(l) = self.mmr_lambda {
            if !(0.0..=1.0).contains(&l) {
                return Err(Error::invalid_argument("rules.mmr_lambda", format!("must be between 0 and 1, got {l}")));
            }
        }
        Ok(())
    }

    /// Whether any diversity rule is set.
    pub fn diversifies(&self) -> bool {
        self.max_per_category.is_some() || self.max_per_brand.is_some() || self.mmr_lambda.is_some_and(|l| l < 1.0)
    }

    /// Whether any attribute filter is set (beyond availability).
    fn filters_attributes(&self) -> bool {
        !self.include_categories.is_empty()
            || !self.exclude_categories.is_empty()
            || !self.include_brands.is_empty()
            || !self.exclude_brands.is_empty()
            || self.min_price.is_some()
            || self.max_price.is_some()
    }
}

/// The rules' filters, ready to test items against one model.
pub(crate) struct ItemFilter<'a> {
    model: &'a Model,
    rules: &'a Rules,
    /// Also only this category (the request's single `category` field).
    category: Option<&'a str>,
}

impl<'a> ItemFilter<'a> {
    pub(crate) fn new(model: &'a Model, rules: &'a Rules, category: Option<&'a str>) -> ItemFilter<'a> {
        ItemFilter { model, rules, category }
    }

    /// Whether `i` passes every filter.
    pub(crate) fn passes(&self, i: ItemIdx) -> bool {
        if !self.rules.include_unavailable && !self.model.is_available(i) {
            return false;
        }
        if self.category.is_none() && !self.rules.filters_attributes() {
            return true;
        }
        let item = self.model.item(i);
        let r = self.rules;
        self.category.is_none_or(|c| item.category == c)
            && (r.include_categories.is_empty() || r.include_categories.contains(&item.category))
            && !r.exclude_categories.contains(&item.category)
            && (r.include_brands.is_empty() || r.include_brands.contains(&item.brand))
            && !r.exclude_brands.contains(&item.brand)
            && r.min_price.is_none_or(|lo| item.price.is_some_and(|p| p >= lo))
            && r.max_price.is_none_or(|hi| item.price.is_some_and(|p| p <= hi))
    }

    /// The items an include filter narrows the catalogue to (sorted, a superset of those
    /// that pass), or `None` when no include filter is set.
    pub(crate) fn narrowed(&self) -> Option<Vec<ItemIdx>> {
        let mut lists: Vec<Vec<ItemIdx>> = Vec::new();
        if let Some(c) = self.category {
            lists.push(self.model.items_in_category(c).into_owned());
        }
        if !self.rules.include_categories.is_empty() {
            lists.push(union(self.rules.include_categories.iter().map(|c| self.model.items_in_category(c).into_owned())));
        }
        if !self.rules.include_brands.is_empty() {
            lists.push(union(self.rules.include_brands.iter().map(|b| self.model.items_of_brand(b).into_owned())));
        }
        // The shortest list is the tightest superset.
        lists.into_iter().min_by_key(Vec::len)
    }
}

fn union(lists: impl Iterator<Item = Vec<ItemIdx>>) -> Vec<ItemIdx> {
    let mut all: Vec<ItemIdx> = lists.flatten().collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// The lowest score of `scored` and the span up to the highest (never zero), for scaling
/// scores to [0, 1].
fn range(scored: &[(f32, ItemIdx)]) -> (f32, f32) {
    let (lo, hi) = scored.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), s| (lo.min(s.0), hi.max(s.0)));
    (lo, (hi - lo).max(f32::MIN_POSITIVE))
}

/// Adds each promoted item's boost to its score, scores first scaled to [0, 1] over the
/// candidates (promoted items not among them are left out: they did not pass the filters
/// or were not candidates).
pub(crate) fn promote(model: &Model, scored: &mut [(f32, ItemIdx)], promoted: &[(String, f32)]) {
    if promoted.is_empty() || scored.is_empty() {
        return;
    }
    let boosts: HashMap<ItemIdx, f32> = promoted.iter().filter_map(|(id, b)| model.item_index(id).map(|i| (i, *b))).collect();
    let (lo, span) = range(scored);
    for s in scored.iter_mut() {
        s.0 = (s.0 - lo) / span + boosts.get(&s.1).copied().unwrap_or(0.0);
    }
}

/// Chooses up to `k` of `ranked` (eligible items, best first) under the diversity rules.
/// Returns the chosen items and whether the caps left the list short while eligible
/// items remained.
pub(crate) fn diversify(model: &Model, ranked: Vec<(f32, ItemIdx)>, k: usize, rules: &Rules) -> (Vec<(f32, ItemIdx)>, bool) {
    if !rules.diversifies() {
        let mut ranked = ranked;
        ranked.truncate(k);
        return (ranked, false);
    }
    let mut per_category: HashMap<&str, usize> = HashMap::new();
    let mut per_brand: HashMap<&str, usize> = HashMap::new();
    let capped = |i: ItemIdx, per_category: &HashMap<&str, usize>, per_brand: &HashMap<&str, usize>| {
        let item = model.item(i);
        rules.max_per_category.is_some_and(|cap| per_category.get(item.category.as_str()).copied().unwrap_or(0) >= cap)
            || rules.max_per_brand.is_some_and(|cap| per_brand.get(item.brand.as_str()).copied().unwrap_or(0) >= cap)
    };
    let lambda = rules.mmr_lambda.unwrap_or(1.0);
    let similarity = |a: ItemIdx, b: ItemIdx| {
        if model.has_collab(a) && model.has_collab(b) {
            dot(model.unit_vector(a), model.unit_vector(b))
        } else {
            0.0
        }
    };
    let (lo, span) = range(&ranked);
    let mut left = ranked;
    let mut chosen: Vec<(f32, ItemIdx)> = Vec::with_capacity(k);
    let mut max_sim: Vec<f32> = vec![0.0; left.len()];
    while chosen.len() < k {
        // The best remaining by λ·relevance − (1 − λ)·redundancy, skipping capped items.
        let mut best: Option<(f32, usize)> = None;
        for (n, &(s, i)) in left.iter().enumerate() {
            if capped(i, &per_category, &per_brand) {
                continue;
            }
            let value = lambda * (s - lo) / span - (1.0 - lambda) * max_sim[n];
            if best.is_none_or(|(b, _)| value > b) {
                best = Some((value, n));
            }
            if lambda >= 1.0 {
                break; // relevance only: the first uncapped item is the best
            }
        }
        let Some((_, n)) = best else { break };
        let (s, i) = left.remove(n);
        max_sim.remove(n);
        let item = model.item(i);
        *per_category.entry(item.category.as_str()).or_insert(0) += 1;
        *per_brand.entry(item.brand.as_str()).or_insert(0) += 1;
        if lambda < 1.0 {
            for (m, &(_, j)) in left.iter().enumerate() {
                max_sim[m] = max_sim[m].max(similarity(i, j));
            }
        }
        chosen.push((s, i));
    }
    // Short with candidates left over: the caps, not the filters, stopped the list.
    let short = chosen.len() < k && !left.is_empty();
    (chosen, short)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contradictory_or_malformed_rules_name_their_field() {
        let cases = [
            (Rules { min_price: Some(10.0), max_price: Some(5.0), ..Rules::default() }, "rules.max_price"),
            (Rules { min_price: Some(-1.0), ..Rules::default() }, "rules.min_price"),
            (Rules { max_price: Some(f32::NAN), ..Rules::default() }, "rules.max_price"),
            (Rules { include_categories: vec![String::new()], ..Rules::default() }, "rules.include_categories"),
            (Rules { exclude_brands: vec!["b".into(); MAX_RULE_VALUES + 1], ..Rules::default() }, "rules.exclude_brands"),
            (Rules { promoted: vec![("x".into(), f32::INFINITY)], ..Rules::default() }, "rules.promoted"),
            (Rules { max_per_category: Some(0), ..Rules::default() }, "rules.max_per_category"),
            (Rules { mmr_lambda: Some(1.5), ..Rules::default() }, "rules.mmr_lambda"),
        ];
        for (rules, field) in cases {
            let e = rules.validate().unwrap_err();
            assert!(matches!(e, Error::InvalidArgument { field: f, .. } if f == field), "{field}: {e}");
        }
        assert!(Rules::default().validate().is_ok());
        assert!(Rules { min_price: Some(5.0), max_price: Some(5.0), ..Rules::default() }.validate().is_ok());
    }
}

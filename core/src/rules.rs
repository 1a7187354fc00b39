//! Business rules on recommendations and similar items: what merchandisers ask of a list
//! beyond relevance.
//!
//! A [`Rules`] value is part of a query. Filters (categories and brands in or out, a price
//! range, off-sale items, a radius around a place) decide which items are *eligible*;
//! boosts (promoted items, new arrivals, nearness) add to the score of the items they
//! name; diversity (at most N per category or brand, and/or MMR) then chooses among
//! the eligible. Scoring widens its candidate set until `k` eligible items are found or
//! every eligible item was scored, so a selective filter still returns `k` when `k` exist;
//! the answer says when fewer than `k` came back and whether the filters or a diversity
//! cap was the cause ([`Shortfall`]).

use std::collections::HashMap;

use crate::data::{GeoPoint, Item};
use crate::error::{Error, Result};
use crate::ids::ItemIdx;
use crate::linalg::dot;
use crate::model::Model;
use crate::recommend::MAX_ID_BYTES;

/// Most ids or names one rule list may hold.
pub const MAX_RULE_VALUES: usize = 1000;

/// Nearness boost when a request names a place without saying how much nearness counts.
pub const DEFAULT_NEAR_BOOST: f32 = 0.5;

/// New-arrival boost when a request asks for new arrivals without saying how much.
pub const DEFAULT_NEW_ARRIVAL_BOOST: f32 = 0.3;

/// Longest radius and new-arrival window a request may ask for.
const MAX_RADIUS_KM: f64 = 20_037.5;
const MAX_NEW_ARRIVAL_DAYS: u32 = 3650;

/// Seconds in a day.
const DAY: i64 = 86_400;

/// "Near you": a place and a radius around it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Near {
    /// Where the shopper is.
    pub point: GeoPoint,
    /// The radius in kilometres (more than 0).
    pub radius_km: f64,
    /// Only items placed within the radius (items without a place fail).
    pub within_only: bool,
    /// Added to the scaled score of an item inside the radius, times `1 − distance /
    /// radius`: the nearest items gain the most, items at the edge nothing.
    pub boost: f32,
}

/// "New arrivals": items listed within the last `days` days before now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NewArrivals {
    /// How recent a listing counts as new.
    pub days: u32,
    /// Added to the scaled score of a new item.
    pub boost: f32,
}

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
    /// Filter by and/or boost nearness to a place.
    pub near: Option<Near>,
    /// Boost items listed recently.
    pub new_arrivals: Option<NewArrivals>,
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
    if let Some(n) = names.iter().position(|v| v.len() > MAX_ID_BYTES) {
        return Err(Error::invalid_argument(field, format!("value {n} is longer than {MAX_ID_BYTES} bytes")));
    }
    Ok(())
}

/// The largest boost a rule may add: scores are scaled to [0, 1] first, so 1 already
/// lifts the weakest candidate level with the best; far larger ones would only overflow.
pub const MAX_BOOST: f32 = 1_000.0;

fn check_boost(field: &'static str, b: f32) -> Result<()> {
    if !b.is_finite() || !(0.0..=MAX_BOOST).contains(&b) {
        return Err(Error::invalid_argument(field, format!("must be from 0 to {MAX_BOOST}, got {b}")));
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
            if id.is_empty() || id.len() > MAX_ID_BYTES {
                return Err(Error::invalid_argument("rules.promoted", format!("item {n}: ids are 1 to {MAX_ID_BYTES} bytes, got {}", id.len())));
            }
            if !boost.is_finite() || boost.abs() > MAX_BOOST {
                return Err(Error::invalid_argument("rules.promoted", format!("item {n} has boost {boost}; boosts are finite, at most {MAX_BOOST} either way")));
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
        if let Some(near) = &self.near {
            GeoPoint::check_latitude(near.point.lat).map_err(|e| Error::invalid_argument("rules.near.latitude", e))?;
            GeoPoint::check_longitude(near.point.lon).map_err(|e| Error::invalid_argument("rules.near.longitude", e))?;
            let r = near.radius_km;
            if !r.is_finite() || r <= 0.0 || r > MAX_RADIUS_KM {
                return Err(Error::invalid_argument("rules.near.radius_km", format!("must be more than 0 and at most {MAX_RADIUS_KM}, got {r}")));
            }
            check_boost("rules.near.boost", near.boost)?;
        }
        if let Some(new) = &self.new_arrivals {
            if new.days == 0 || new.days > MAX_NEW_ARRIVAL_DAYS {
                return Err(Error::invalid_argument("rules.new_arrival_days", format!("must be 1 to {MAX_NEW_ARRIVAL_DAYS}, got {}", new.days)));
            }
            check_boost("rules.new_arrival_boost", new.boost)?;
        }
        Ok(())
    }

    /// Whether any rule adds to scores (promotions, new arrivals, nearness).
    pub fn boosts(&self) -> bool {
        !self.promoted.is_empty() || self.new_arrivals.is_some() || self.near.is_some_and(|n| n.boost > 0.0)
    }

    /// The item's distance from the request's place, if the request names one and the
    /// item has a place.
    pub fn distance_km(&self, item: &Item) -> Option<f64> {
        let near = self.near.as_ref()?;
        item.location.map(|p| p.distance_km(&near.point))
    }

    /// Whether the item lies within the request's radius.
    fn within(&self, item: &Item) -> bool {
        let (Some(near), Some(p)) = (&self.near, item.location) else { return false };
        // A degree of latitude is at least 110.5 km anywhere: most items fail this
        // comparison before any trigonometry.
        if (p.lat - near.point.lat).abs() * 110.5 > near.radius_km {
            return false;
        }
        p.distance_km(&near.point) <= near.radius_km
    }

    /// Whether the item counts as a new arrival at `now` (a listing time after `now`
    /// counts too: an item added while serving carries the server's clock).
    pub fn is_new_arrival(&self, item: &Item, now: i64) -> bool {
        self.new_arrivals
            .as_ref()
            .is_some_and(|n| item.listed_within(now, i64::from(n.days)))
    }

    /// The items the new-arrival rule lifts at `now` (none without the rule): candidates
    /// a ranking must consider however far down its own order they sit.
    pub(crate) fn new_arrival_items(&self, model: &Model, now: i64) -> Vec<ItemIdx> {
        match &self.new_arrivals {
            Some(n) => model.listed_since(now - i64::from(n.days) * DAY),
            None => Vec::new(),
        }
    }

    /// What the new-arrival and nearness rules add to the item's scaled score.
    fn lift(&self, item: &Item, now: i64) -> f32 {
        let mut lift = 0.0;
        if self.is_new_arrival(item, now) {
            lift += self.new_arrivals.map_or(0.0, |n| n.boost);
        }
        if let (Some(near), Some(d)) = (&self.near, self.distance_km(item)) {
            if d <= near.radius_km {
                lift += near.boost * (1.0 - (d / near.radius_km) as f32);
            }
        }
        lift
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
            || self.near.is_some_and(|n| n.within_only)
    }
}

/// The rules' filters, ready to test items against one model.
pub(crate) struct ItemFilter<'a> {
    model: &'a Model,
    rules: &'a Rules,
    /// Also only this category (the request's single `category` field).
    category: Option<&'a str>,
    /// Whether any attribute filter applies (decided once: scoring asks every item).
    by_attributes: bool,
}

impl<'a> ItemFilter<'a> {
    pub(crate) fn new(model: &'a Model, rules: &'a Rules, category: Option<&'a str>) -> ItemFilter<'a> {
        ItemFilter { model, rules, category, by_attributes: category.is_some() || rules.filters_attributes() }
    }

    /// Whether `i` passes every filter.
    #[inline]
    pub(crate) fn passes(&self, i: ItemIdx) -> bool {
        if !self.rules.include_unavailable && !self.model.is_available(i) {
            return false;
        }
        !self.by_attributes || self.passes_attributes(i)
    }

    fn passes_attributes(&self, i: ItemIdx) -> bool {
        let item = self.model.item(i);
        let r = self.rules;
        self.category.is_none_or(|c| item.category == c)
            && (r.include_categories.is_empty() || r.include_categories.contains(&item.category))
            && !r.exclude_categories.contains(&item.category)
            && (r.include_brands.is_empty() || r.include_brands.contains(&item.brand))
            && !r.exclude_brands.contains(&item.brand)
            && r.min_price.is_none_or(|lo| item.price.is_some_and(|p| p >= lo))
            && r.max_price.is_none_or(|hi| item.price.is_some_and(|p| p <= hi))
            && r.near.is_none_or(|n| !n.within_only || r.within(item))
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

/// Adds the boosts to the candidates' scores, scores first scaled to [0, 1] over the
/// candidates: each promoted item's boost, the new-arrival boost for items listed within
/// the window before `now`, and the nearness boost for items within the radius.
/// Promoted items not among the candidates are left out: they did not pass the filters
/// or were not candidates.
pub(crate) fn boost(model: &Model, scored: &mut [(f32, ItemIdx)], rules: &Rules, now: i64) {
    if !rules.boosts() || scored.is_empty() {
        return;
    }
    let promoted: HashMap<ItemIdx, f32> = rules.promoted.iter().filter_map(|(id, b)| model.item_index(id).map(|i| (i, *b))).collect();
    let lifts = rules.new_arrivals.is_some() || rules.near.is_some();
    let (lo, span) = range(scored);
    for s in scored.iter_mut() {
        let mut lift = promoted.get(&s.1).copied().unwrap_or(0.0);
        if lifts {
            lift += rules.lift(model.item(s.1), now);
        }
        s.0 = (s.0 - lo) / span + lift;
    }
}

/// The reason an item carries beyond the one its ranking gave: "near you" for an item
/// within the request's radius, "new arrival" for one the new-arrival rule counts as new.
pub(crate) fn reason_prefix(rules: &Rules, item: &Item, now: i64) -> Option<(crate::recommend::ReasonKind, String)> {
    use crate::recommend::ReasonKind;
    if rules.within(item) {
        let d = rules.distance_km(item).unwrap_or(0.0);
        return Some((ReasonKind::Nearby, format!("near you ({d:.1} km)")));
    }
    if rules.is_new_arrival(item, now) {
        let days = item.listed_at.map_or(0, |t| (now.saturating_sub(t).max(0) / DAY) as u32);
        let when = match days {
            0 => "today".to_string(),
            1 => "yesterday".to_string(),
            d => format!("{d} days ago"),
        };
        return Some((ReasonKind::NewArrival, format!("new arrival (listed {when})")));
    }
    None
}

/// The per-category and per-brand caps as a list fills: how many of each it holds.
struct Caps<'a> {
    model: &'a Model,
    rules: &'a Rules,
    per_category: HashMap<&'a str, usize>,
    per_brand: HashMap<&'a str, usize>,
}

impl<'a> Caps<'a> {
    /// Whether `i`'s category or brand is at its cap.
    fn capped(&self, i: ItemIdx) -> bool {
        let item = self.model.item(i);
        self.rules.max_per_category.is_some_and(|cap| self.per_category.get(item.category.as_str()).copied().unwrap_or(0) >= cap)
            || self.rules.max_per_brand.is_some_and(|cap| self.per_brand.get(item.brand.as_str()).copied().unwrap_or(0) >= cap)
    }

    /// Counts `i`, chosen, toward its category's and brand's caps.
    fn count(&mut self, i: ItemIdx) {
        let item: &'a Item = self.model.item(i);
        *self.per_category.entry(item.category.as_str()).or_insert(0) += 1;
        *self.per_brand.entry(item.brand.as_str()).or_insert(0) += 1;
    }
}

/// Chooses up to `k` of `ranked` (eligible items, best first) under the diversity rules.
/// Returns the chosen items and whether the caps left the list short while eligible
/// items remained.
pub(crate) fn diversify(model: &Model, ranked: Vec<(f32, ItemIdx)>, k: usize, rules: &Rules, mmr: bool) -> (Vec<(f32, ItemIdx)>, bool) {
    if !rules.diversifies() {
        let mut ranked = ranked;
        ranked.truncate(k);
        return (ranked, false);
    }
    let mut caps = Caps { model, rules, per_category: HashMap::new(), per_brand: HashMap::new() };
    let lambda = if mmr { rules.mmr_lambda.unwrap_or(1.0) } else { 1.0 };
    if lambda >= 1.0 {
        // Relevance only: the greedy choice is the best item not yet capped, and an item
        // capped once stays capped, so one pass in rank order makes the same list.
        let (mut chosen, mut skipped) = (Vec::with_capacity(k), false);
        for (s, i) in ranked {
            if chosen.len() == k {
                break;
            }
            if caps.capped(i) {
                skipped = true;
                continue;
            }
            caps.count(i);
            chosen.push((s, i));
        }
        let short = chosen.len() < k && skipped;
        return (chosen, short);
    }
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
            if caps.capped(i) {
                continue;
            }
            let value = lambda * (s - lo) / span - (1.0 - lambda) * max_sim[n];
            if best.is_none_or(|(b, _)| value > b) {
                best = Some((value, n));
            }
        }
        let Some((_, n)) = best else { break };
        let (s, i) = left.remove(n);
        max_sim.remove(n);
        caps.count(i);
        for (m, &(_, j)) in left.iter().enumerate() {
            max_sim[m] = max_sim[m].max(similarity(i, j));
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

    fn near(lat: f64, lon: f64, radius_km: f64) -> Near {
        Near { point: GeoPoint { lat, lon }, radius_km, within_only: true, boost: DEFAULT_NEAR_BOOST }
    }

    #[test]
    fn nearness_and_new_arrivals_lift_and_explain() {
        let london = GeoPoint { lat: 51.5072, lon: -0.1276 };
        let rules = Rules {
            near: Some(Near { within_only: false, ..near(london.lat, london.lon, 10.0) }),
            new_arrivals: Some(NewArrivals { days: 7, boost: 0.3 }),
            ..Rules::default()
        };
        let at = |lat: f64, lon: f64| Item { location: Some(GeoPoint { lat, lon }), ..Item::bare("x") };
        let now = 100 * DAY;
        // At the centre: the whole nearness boost; 5 km out: about half; 50 km out: none.
        assert!((rules.lift(&at(london.lat, london.lon), now) - DEFAULT_NEAR_BOOST).abs() < 1e-6);
        let half = rules.lift(&at(london.lat + 0.045, london.lon), now);
        assert!((half - DEFAULT_NEAR_BOOST / 2.0).abs() < 0.02, "{half}");
        assert_eq!(rules.lift(&at(51.95, -0.1276), now), 0.0);
        assert_eq!(rules.lift(&Item::bare("nowhere"), now), 0.0);
        // Listed 3 days ago: new; 8 days ago: not; in the future (a server clock): new.
        let listed = |t: i64| Item { listed_at: Some(t), ..Item::bare("y") };
        assert_eq!(rules.lift(&listed(now - 3 * DAY), now), 0.3);
        assert_eq!(rules.lift(&listed(now - 8 * DAY), now), 0.0);
        assert_eq!(rules.lift(&listed(now + DAY), now), 0.3);
        let (kind, text) = reason_prefix(&rules, &at(london.lat, london.lon), now).unwrap();
        assert_eq!((kind, text.as_str()), (crate::recommend::ReasonKind::Nearby, "near you (0.0 km)"));
        let (kind, text) = reason_prefix(&rules, &listed(now - 3 * DAY), now).unwrap();
        assert_eq!((kind, text.as_str()), (crate::recommend::ReasonKind::NewArrival, "new arrival (listed 3 days ago)"));
        assert!(reason_prefix(&rules, &listed(now - 30 * DAY), now).is_none());
    }

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
            (Rules { near: Some(near(91.0, 0.0, 5.0)), ..Rules::default() }, "rules.near.latitude"),
            (Rules { near: Some(near(0.0, -181.0, 5.0)), ..Rules::default() }, "rules.near.longitude"),
            (Rules { near: Some(near(0.0, 0.0, 0.0)), ..Rules::default() }, "rules.near.radius_km"),
            (Rules { near: Some(near(0.0, 0.0, -3.0)), ..Rules::default() }, "rules.near.radius_km"),
            (Rules { near: Some(Near { boost: -1.0, ..near(0.0, 0.0, 5.0) }), ..Rules::default() }, "rules.near.boost"),
            (Rules { new_arrivals: Some(NewArrivals { days: 0, boost: 0.3 }), ..Rules::default() }, "rules.new_arrival_days"),
            (Rules { new_arrivals: Some(NewArrivals { days: 7, boost: f32::NAN }), ..Rules::default() }, "rules.new_arrival_boost"),
        ];
        for (rules, field) in cases {
            let e = rules.validate().unwrap_err();
            assert!(matches!(e, Error::InvalidArgument { field: f, .. } if f == field), "{field}: {e}");
        }
        assert!(Rules::default().validate().is_ok());
        assert!(Rules { min_price: Some(5.0), max_price: Some(5.0), ..Rules::default() }.validate().is_ok());
    }
}

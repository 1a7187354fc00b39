//! Repeat consumption: whether people come back to items they already had, and when.
//!
//! Films are watched once, coffee is bought every week. Excluding everything a user had
//! is right for the first and wrong for the second, so the model learns it from the data
//! instead of assuming either. While the interaction matrix is built, every user's
//! consumptions (purchases when the data has any, else every event) are kept in order
//! ([`RepeatInput`]). [`RepeatModel::learn`] fits a *return hazard* on them: for an item
//! a user last had `g` consumptions ago, the probability that their next consumption is
//! that item again. It is learned per category (items without one form a group), by gap
//! `1..GAPS` (the last bucket holds every longer gap), shrunk toward the data set's
//! hazard at that gap; then scaled by how much more (or less) often than the hazard
//! predicts this user and this item come back. A category nobody ever returned to (with
//! enough buyers to say so) has hazard zero: its items stay excluded. When returns are
//! rare in the whole data (below [`MIN_RETURN_SHARE`] of consumptions) the model is
//! inactive and the trained policy is "exclude seen".
//!
//! Counting is linear in the events: each stretch between two consumptions of one item
//! by one user (or from the last one to the end) adds one to a histogram of stretch
//! lengths, from which exposures at every gap follow.
//!
//! At serving time the trained policy puts both kinds of candidate on one scale, the
//! probability that the next consumption is that item: an item the user had gets its
//! hazard `p_ui` ([`RepeatModel::propensity`]); the new item at rank `r` of the usual
//! ranking gets `(1 − Σ p_u) · h(r)`, where `h` is the hit curve of new items by rank
//! ([`NoveltyCurve`], measured on the trainer's validation slice). The merged list is
//! sorted by that probability.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::data::EventKind;
use crate::ids::ItemIdx;
use crate::interactions::RecentEvent;

/// Below this share of returns among consumptions, repeats are treated as absent.
pub const MIN_RETURN_SHARE: f32 = 0.005;

/// Fewer returns than this in the whole data say nothing.
const MIN_RETURNS: u64 = 20;

/// Gap buckets: gaps `1..GAPS` exactly, the last one for `GAPS` and longer.
pub const GAPS: usize = 32;

/// Exposures pulling a category's hazard at a gap toward the data set's.
const GROUP_PRIOR: f64 = 50.0;

/// A group with at least this many buyers and not one return is one nobody rebuys.
const GROUP_EVIDENCE: u64 = 20;

/// Expected returns pulling a user's or an item's factor toward 1.
const FACTOR_PRIOR: f64 = 2.0;

/// No single item is given more than this probability of being next.
const MAX_P: f32 = 0.95;

/// Whether and how a list may return items its subject already had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SeenPolicy {
    /// What the model learned (the default): had items come back where the data says
    /// people return to them, mixed in by probability; otherwise they are excluded.
    #[default]
    Trained,
    /// Never return an item the subject had.
    Exclude,
    /// Score items the subject had like any other (`exclude_seen = false`).
    Include,
    /// Only items the subject had, ranked by repeat propensity ("buy it again").
    BuyAgain,
}

/// Each user's consumptions in order, collected while the interaction matrix is built.
#[derive(Debug, Clone, Default)]
pub struct RepeatInput {
    /// The kinds counted as consumption.
    pub kinds: Vec<EventKind>,
    /// Per user index: the items consumed, oldest first.
    pub sequences: Vec<Vec<u32>>,
}

impl RepeatInput {
    /// Collects events of `kinds` only.
    pub fn new(kinds: Vec<EventKind>) -> RepeatInput {
        RepeatInput {
            kinds,
            sequences: Vec::new(),
        }
    }

    /// Adds user `user`'s events, in time order (user indexes are dense from 0).
    pub fn observe(&mut self, user: usize, events: impl Iterator<Item = (u32, EventKind)>) {
        if self.sequences.len() <= user {
            self.sequences.resize(user + 1, Vec::new());
        }
        let kinds = &self.kinds;
        self.sequences[user].extend(events.filter(|(_, k)| kinds.contains(k)).map(|(i, _)| i));
    }

    /// Every stretch of every user: `(user, item, length, returned)`, where a stretch
    /// runs from a consumption of `item` to its next one (`returned`, after `length`
    /// consumptions) or to the end of the sequence (`length` consumptions observed).
    fn stretches(&self) -> impl Iterator<Item = (usize, u32, usize, bool)> + '_ {
        self.sequences.iter().enumerate().flat_map(|(u, seq)| {
            let mut last: HashMap<u32, usize> = HashMap::new();
            let mut out = Vec::new();
            for (t, &i) in seq.iter().enumerate() {
                if let Some(p) = last.insert(i, t) {
                    out.push((u, i, t - p, true));
                }
            }
            out.extend(last.into_iter().map(|(i, p)| (u, i, seq.len() - 1 - p, false)));
            out
        })
    }
}

/// The gap bucket of a stretch length (1-based; lengths of `GAPS` and more share the last).
fn bucket(len: usize) -> usize {
    len.clamp(1, GAPS) - 1
}

/// Exposures and returns per gap bucket.
#[derive(Debug, Clone, Default)]
struct GapCounts {
    /// Stretches by length bucket (returned or not); the last bucket counts tail
    /// exposures directly.
    ends: Vec<u64>,
    tail: u64,
    returns: Vec<u64>,
}

impl GapCounts {
    fn new() -> GapCounts {
        GapCounts {
            ends: vec![0; GAPS],
            tail: 0,
            returns: vec![0; GAPS],
        }
    }

    fn add(&mut self, len: usize, returned: bool) {
        if len == 0 {
            return;
        }
        self.ends[bucket(len)] += 1;
        self.tail += len.saturating_sub(GAPS - 1) as u64;
        if returned {
            self.returns[bucket(len)] += 1;
        }
    }

    /// Exposures per bucket: a stretch of length `L` is exposed at every gap up to `L`.
    fn exposures(&self) -> Vec<u64> {
        let mut out = vec![0; GAPS];
        let mut at_least = 0;
        for g in (0..GAPS - 1).rev() {
            at_least += self.ends[g + 1];
            out[g] = at_least + self.ends[g];
        }
        out[GAPS - 1] = self.tail;
        out
    }
}

/// What the model learned about returns; see the module docs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RepeatModel {
    /// The kinds counted as consumption.
    pub kinds: Vec<EventKind>,
    /// Share of consumptions (after each user's first) that were returns; 0 when the
    /// model is inactive.
    pub return_share: f32,
    /// Per group: the return hazard by gap bucket. Empty when inactive.
    pub hazard: Vec<Vec<f32>>,
    /// Per item: its group. Empty when inactive.
    pub item_group: Vec<u32>,
    /// Per item: how much more often than its group's hazard it comes back.
    pub item_factor: Vec<f32>,
    /// Per user: how much more often than the hazards predict they come back.
    pub user_factor: Vec<f32>,
    /// Hit curve of new items by rank.
    pub novelty: NoveltyCurve,
}

impl RepeatModel {
    /// Learns the hazards from `input`; `group` gives each item's group (its category).
    /// Inactive when returns are too rare to matter.
    pub fn learn(input: &RepeatInput, group: &[u32], n_users: usize) -> RepeatModel {
        let n_items = group.len();
        let returns: u64 = input.stretches().filter(|s| s.3).count() as u64;
        let chances: u64 = input.sequences.iter().map(|s| s.len().saturating_sub(1) as u64).sum();
        let share = if chances == 0 { 0.0 } else { returns as f32 / chances as f32 };
        if returns < MIN_RETURNS || share < MIN_RETURN_SHARE {
            return RepeatModel {
                kinds: input.kinds.clone(),
                ..RepeatModel::default()
            };
        }
        let n_groups = group.iter().copied().max().map_or(0, |m| m as usize + 1);
        let mut per_group = vec![GapCounts::new(); n_groups];
        let mut global = GapCounts::new();
        let mut buyers = vec![0u64; n_groups];
        for (_, i, len, returned) in input.stretches() {
            let Some(&g) = group.get(i as usize) else { continue };
            per_group[g as usize].add(len, returned);
            global.add(len, returned);
            if !returned {
                buyers[g as usize] += 1;
            }
        }
        let rate = |r: u64, e: u64| if e == 0 { 0.0 } else { r as f64 / e as f64 };
        let global_exp = global.exposures();
        let global_h: Vec<f64> = (0..GAPS).map(|g| rate(global.returns[g], global_exp[g])).collect();
        let hazard: Vec<Vec<f32>> = per_group
            .iter()
            .zip(&buyers)
            .map(|(c, &b)| {
                if c.returns.iter().all(|&r| r == 0) && b >= GROUP_EVIDENCE {
                    return vec![0.0; GAPS];
                }
                let exp = c.exposures();
                (0..GAPS)
                    .map(|g| ((c.returns[g] as f64 + GROUP_PRIOR * global_h[g]) / (exp[g] as f64 + GROUP_PRIOR)) as f32)
                    .collect()
            })
            .collect();
        // Expected returns of a stretch of length L: the hazard summed over its gaps.
        let cumulative: Vec<Vec<f64>> = hazard
            .iter()
            .map(|h| {
                let mut acc = 0.0;
                h.iter()
                    .map(|&x| {
                        acc += x as f64;
                        acc
                    })
                    .collect()
            })
            .collect();
        let expected = |g: usize, len: usize| -> f64 {
            if len == 0 {
                return 0.0;
            }
            let c = &cumulative[g];
            if len < GAPS {
                c[len - 1]
            } else {
                c[GAPS - 2] + (len - GAPS + 1) as f64 * hazard[g][GAPS - 1] as f64
            }
        };
        let mut user_counts = vec![(0.0f64, 0.0f64); n_users];
        let mut item_counts = vec![(0.0f64, 0.0f64); n_items];
        for (u, i, len, returned) in input.stretches() {
            let Some(&g) = group.get(i as usize) else { continue };
            let e = expected(g as usize, len);
            let r = if returned { 1.0 } else { 0.0 };
            if let Some(c) = user_counts.get_mut(u) {
                c.0 += r;
                c.1 += e;
            }
            item_counts[i as usize].0 += r;
            item_counts[i as usize].1 += e;
        }
        let factor = |(r, e): (f64, f64)| ((r + FACTOR_PRIOR) / (e + FACTOR_PRIOR)) as f32;
        RepeatModel {
            kinds: input.kinds.clone(),
            return_share: share,
            hazard,
            item_group: group.to_vec(),
            item_factor: item_counts.into_iter().map(factor).collect(),
            user_factor: user_counts.into_iter().map(factor).collect(),
            novelty: NoveltyCurve::default(),
        }
    }

    /// Whether the data showed enough returns for the trained policy to offer any.
    pub fn is_active(&self) -> bool {
        self.return_share > 0.0 && !self.hazard.is_empty()
    }

    /// Probability that the next consumption of user `user` (`None`: a session, factor
    /// 1) is `item`, last had `gap` consumptions ago (1 = the latest).
    pub fn probability(&self, user: Option<usize>, item: ItemIdx, gap: usize) -> f32 {
        let Some(&g) = self.item_group.get(item.get()) else { return 0.0 };
        let h = self.hazard.get(g as usize).map_or(0.0, |h| h[bucket(gap)]);
        let fu = user.and_then(|u| self.user_factor.get(u).copied()).unwrap_or(1.0);
        let fi = self.item_factor.get(item.get()).copied().unwrap_or(1.0);
        (h * fu * fi).min(MAX_P)
    }

    /// The probability of every item in `had` being next (see [`RepeatModel::probability`]),
    /// its gap read from the subject's recent events (oldest first; consumption kinds
    /// only; an item no longer among them has the longest gap). Items with probability 0
    /// are left out unless `floor` is positive, which then stands in for it (for "buy it
    /// again", which lists everything the subject had).
    pub fn propensity(&self, user: Option<usize>, had: &[ItemIdx], recent: &[RecentEvent], floor: f32) -> Vec<(f32, ItemIdx)> {
        let mut gap: HashMap<ItemIdx, usize> = HashMap::new();
        let consumed = recent.iter().rev().filter(|e| self.kinds.is_empty() || self.kinds.contains(&e.kind));
        for (n, e) in consumed.enumerate() {
            gap.entry(e.item).or_insert(n + 1);
        }
        had.iter()
            .filter_map(|&i| {
                let p = self.probability(user, i, gap.get(&i).copied().unwrap_or(GAPS)).max(floor);
                (p > 0.0).then_some((p, i))
            })
            .collect()
    }

    /// Records the hit curve of new items measured on a validation slice.
    pub fn set_novelty(&mut self, curve: NoveltyCurve) {
        self.novelty = curve;
    }
}

/// Probability that the next new item is the one at a given rank of the usual ranking:
/// `h(r) = a · (r^g − (r − 1)^g)`, i.e. recall at `r` is `a · r^g`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NoveltyCurve {
    /// Recall at rank 1.
    pub a: f32,
    /// How fast recall grows with rank (0 < g ≤ 1).
    pub g: f32,
}

impl Default for NoveltyCurve {
    /// A middling curve (recall@10 ≈ 0.2) for models trained without a validation slice.
    fn default() -> Self {
        NoveltyCurve { a: 0.05, g: 0.6 }
    }
}

impl NoveltyCurve {
    /// `h(rank)` for a 1-based rank.
    pub fn at(&self, rank: usize) -> f32 {
        let r = rank.max(1) as f32;
        (self.a * (r.powf(self.g) - (r - 1.0).powf(self.g))).max(0.0)
    }

    /// Fits `recall@k = a · k^g` by least squares in log space to `(k, recall)` points;
    /// `None` with fewer than two positive points.
    pub fn fit(points: &[(usize, f64)]) -> Option<NoveltyCurve> {
        let pts: Vec<(f64, f64)> = points
            .iter()
            .filter(|&&(k, r)| k > 0 && r > 0.0 && r.is_finite())
            .map(|&(k, r)| ((k as f64).ln(), r.ln()))
            .collect();
        if pts.len() < 2 {
            return None;
        }
        let n = pts.len() as f64;
        let (mx, my) = (pts.iter().map(|p| p.0).sum::<f64>() / n, pts.iter().map(|p| p.1).sum::<f64>() / n);
        let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
        if sxx <= 0.0 {
            return None;
        }
        let g = (pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>() / sxx).clamp(0.05, 1.0);
        let a = (my - g * mx).exp().min(1.0);
        Some(NoveltyCurve { a: a as f32, g: g as f32 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(per_user: &[Vec<u32>]) -> RepeatInput {
        let mut c = RepeatInput::new(vec![EventKind::Purchase]);
        for (u, items) in per_user.iter().enumerate() {
            c.observe(u, items.iter().map(|&i| (i, EventKind::Purchase)));
        }
        c
    }

    #[test]
    fn only_consumption_kinds_are_kept_in_order() {
        let mut c = RepeatInput::new(vec![EventKind::Purchase]);
        c.observe(1, [(1, EventKind::Purchase), (2, EventKind::View), (1, EventKind::Purchase)].into_iter());
        assert_eq!(c.sequences, vec![vec![], vec![1, 1]]);
    }

    #[test]
    fn exposures_follow_from_stretch_lengths() {
        let mut c = GapCounts::new();
        c.add(3, true);
        c.add(1, false);
        c.add(GAPS + 4, false);
        let e = c.exposures();
        assert_eq!(&e[..4], &[3, 2, 2, 1]);
        assert_eq!(e[GAPS - 1], 5, "gaps 32..=36 of the long stretch");
        assert_eq!(c.returns[2], 1);
    }

    #[test]
    fn data_without_returns_learns_an_inactive_model() {
        let rows: Vec<Vec<u32>> = (0..50).map(|u| vec![u % 7, 10 + u % 5, 20]).collect();
        let m = RepeatModel::learn(&input(&rows), &[0; 30], 50);
        assert!(!m.is_active());
        assert_eq!(m.probability(Some(0), ItemIdx(20), 1), 0.0);
    }

    #[test]
    fn a_cycle_is_learned_per_category_and_a_category_nobody_rebuys_is_zero() {
        // Items 0..5 are consumables (group 0) bought again every third purchase; 5..25
        // durables (group 1), bought once each.
        let rows: Vec<Vec<u32>> = (0..60u32)
            .map(|u| {
                let staple = u % 5;
                (0..12u32).map(|t| if t % 3 == 0 { staple } else { 5 + (u + t) % 20 }).collect()
            })
            .collect();
        let groups: Vec<u32> = (0..25).map(|i| u32::from(i >= 5)).collect();
        let m = RepeatModel::learn(&input(&rows), &groups, 60);
        assert!(m.is_active());
        let at = |gap| m.probability(Some(0), ItemIdx(0), gap);
        assert!(at(3) > 0.8, "due after three: {}", at(3));
        assert!(at(1) < 0.2 && at(2) < 0.2, "not due yet: {} {}", at(1), at(2));
        assert_eq!(m.probability(Some(0), ItemIdx(7), 3), 0.0, "durables never come back");
        let recent: Vec<RecentEvent> = [0u32, 7, 9]
            .iter()
            .map(|&i| RecentEvent { item: ItemIdx(i), kind: EventKind::Purchase, timestamp: None })
            .collect();
        let p = m.propensity(Some(0), &[ItemIdx(0), ItemIdx(7), ItemIdx(9)], &recent, 0.0);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].0 > 0.8 && p[0].1 == ItemIdx(0));
        assert_eq!(m.propensity(Some(0), &[ItemIdx(0), ItemIdx(7)], &recent, 1e-3).len(), 2, "a floor keeps it");
    }

    #[test]
    fn the_novelty_curve_fits_a_power_law() {
        let pts: Vec<(usize, f64)> = [1usize, 5, 10, 20, 50].iter().map(|&k| (k, 0.04 * (k as f64).powf(0.5))).collect();
        let c = NoveltyCurve::fit(&pts).unwrap();
        assert!((c.a - 0.04).abs() < 1e-3 && (c.g - 0.5).abs() < 1e-3, "{c:?}");
        assert!(c.at(1) > c.at(2) && c.at(2) > c.at(10));
        assert!(NoveltyCurve::fit(&[(10, 0.2)]).is_none());
    }
}

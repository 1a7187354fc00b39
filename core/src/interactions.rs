//! From raw events to the weighted user–item matrix every model learns from.
//!
//! Each event contributes `kind weight × value factor × time decay` to its (user, item)
//! cell. Decay halves a weight every `half_life` (days for unix timestamps, events of the
//! same user for order-only timestamps). Cell weights are then divided by their median, so
//! only their relative sizes matter: the same interactions labelled `view` or `purchase`,
//! or every kind weight multiplied by ten, give the same matrix, and the confidence and
//! regularisation of ALS mean the same on every data set. The same builder also keeps
//! each user's latest events, which serving uses for recency and session features.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::data::{Event, EventKind, TimeKind};
use crate::ids::{IdMap, ItemIdx};
use crate::repeat::RepeatInput;

/// Weight of each event kind before value and time factors.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EventWeights {
    /// Weight of a view (default 1).
    pub view: f32,
    /// Weight of a click (default 2).
    pub click: f32,
    /// Weight of an add to cart (default 4).
    pub cart: f32,
    /// Weight of a purchase (default 8).
    pub purchase: f32,
    /// Weight of a like (default 4).
    pub like: f32,
    /// Weight of a share (default 6).
    pub share: f32,
    /// Weight of a rating, whatever its value (default 4).
    pub rating: f32,
}

impl Default for EventWeights {
    fn default() -> Self {
        EventWeights {
            view: 1.0,
            click: 2.0,
            cart: 4.0,
            purchase: 8.0,
            like: 4.0,
            share: 6.0,
            rating: 4.0,
        }
    }
}

impl EventWeights {
    /// The base weight of an event of `kind`.
    pub fn of(&self, kind: EventKind) -> f32 {
        match kind {
            EventKind::View => self.view,
            EventKind::Click => self.click,
            EventKind::Cart => self.cart,
            EventKind::Purchase => self.purchase,
            EventKind::Like => self.like,
            EventKind::Share => self.share,
            EventKind::Rating => self.rating,
            EventKind::Impression => 0.0,
        }
    }
}

/// How events become weights.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WeightParams {
    /// Base weight of each event kind.
    pub event_weights: EventWeights,
    /// How strongly an event's `value` (play count, amount) scales its weight: the
    /// factor is `1 + value_scale · ln(1 + value)`.
    pub value_scale: f32,
    /// The same for `rating` events. Zero by default: a low rating still shows the user
    /// chose the item, which is what ranking for them has to predict.
    pub rating_value_scale: f32,
    /// Half-life of an event's weight: days for unix timestamps, a user's own events for
    /// order-only timestamps. Zero turns decay off.
    pub half_life: f64,
    /// Divide every cell weight by the median cell weight (on by default), so the scale
    /// of the event weights does not matter, only their ratios.
    pub normalize: bool,
}

/// The median of the positive cell weights (1 when there are none): the weight of a
/// typical interaction, robust to a tail of heavy cells (large amounts, many plays).
fn median_weight(rows: &[Vec<(u32, f32)>]) -> f32 {
    let mut w: Vec<f32> = rows.iter().flatten().map(|&(_, w)| w).filter(|&w| w > 0.0).collect();
    if w.is_empty() {
        return 1.0;
    }
    let mid = w.len() / 2;
    let (_, m, _) = w.select_nth_unstable_by(mid, f32::total_cmp);
    *m
}

/// A stored recent event of a user, oldest first in [`Interactions::recent`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RecentEvent {
    /// The item the event was on.
    pub item: ItemIdx,
    /// What the user did.
    pub kind: EventKind,
    /// The event's timestamp as given (unix seconds or an order number), if any.
    pub timestamp: Option<i64>,
}

/// The weighted user–item matrix plus per-user recent events.
#[derive(Debug, Clone)]
pub struct Interactions {
    /// User id ↔ row index: the users passed in first, then users seen only in events.
    pub users: IdMap,
    /// Item id ↔ column index: the catalogue items passed in first, then event-only items.
    pub items: IdMap,
    /// Per user: `(item, weight)` sorted by item, one entry per distinct item.
    pub rows: Vec<Vec<(u32, f32)>>,
    /// Per user: the latest events, oldest first.
    pub recent: Vec<Vec<RecentEvent>>,
    /// Per user: every item in chronological order, repeats in a row collapsed.
    pub sequences: Vec<Vec<u32>>,
    /// What every cell weight was divided by (the median raw cell weight; 1 when not
    /// normalised). A live event's weight divided by it is on the model's scale.
    pub weight_scale: f32,
    /// Each user's consumptions in order (purchases when there are any, else every
    /// event), from which returns are learned (see [`crate::repeat`]).
    pub repeats: RepeatInput,
}

impl Interactions {
    /// Builds the matrix. `items` seeds the item index (catalogue order) so catalogue
    /// items without events still get an index; event-only items follow.
    pub fn build(
        events: &[Event],
        items: IdMap,
        users: IdMap,
        time_kind: TimeKind,
        params: &WeightParams,
        recent_n: usize,
    ) -> Interactions {
        let mut items = items;
        let mut users = users;
        let mut per_user: Vec<Vec<(u32, usize)>> = vec![Vec::new(); users.len()];
        for (pos, e) in events.iter().enumerate() {
            if !e.kind.is_interaction() {
                continue;
            }
            let u = users.insert(&e.user_id) as usize;
            let i = items.insert(&e.item_id);
            if u >= per_user.len() {
                per_user.resize(u + 1, Vec::new());
            }
            per_user[u].push((i, pos));
        }
        per_user.resize(users.len(), Vec::new());
        let t_max = events.iter().filter_map(|e| e.timestamp).max().unwrap_or(0);
        let consumption = if events.iter().any(|e| e.kind == EventKind::Purchase) {
            vec![EventKind::Purchase]
        } else {
            EventKind::ALL.into_iter().filter(|k| k.is_interaction()).collect()
        };
        let mut repeats = RepeatInput::new(consumption);
        let mut rows: Vec<Vec<(u32, f32)>> = Vec::with_capacity(per_user.len());
        let mut recent = Vec::with_capacity(per_user.len());
        let mut sequences = Vec::with_capacity(per_user.len());
        for list in &mut per_user {
            // Chronological per user: by timestamp, then file order.
            list.sort_by_key(|&(_, pos)| (events[pos].timestamp.unwrap_or(i64::MIN), pos));
            let n = list.len();
            repeats.observe(rows.len(), list.iter().map(|&(item, pos)| (item, events[pos].kind)));
            let mut acc: HashMap<u32, f32> = HashMap::with_capacity(n);
            for (rank, &(item, pos)) in list.iter().enumerate() {
                let e = &events[pos];
                let mut w = params.event_weights.of(e.kind);
                if let Some(v) = e.value {
                    let scale = if e.kind == EventKind::Rating {
                        params.rating_value_scale
                    } else {
                        params.value_scale
                    };
                    if v > 0.0 && scale != 0.0 {
                        w *= 1.0 + scale * v.ln_1p();
                    }
                }
                if params.half_life > 0.0 {
                    let age = match (time_kind, e.timestamp) {
                        (TimeKind::Unix, Some(t)) => (t_max - t) as f64 / 86_400.0,
                        (TimeKind::Unix, None) => 0.0,
                        _ => (n - 1 - rank) as f64,
                    };
                    w *= 0.5f64.powf(age / params.half_life) as f32;
                }
                *acc.entry(item).or_insert(0.0) += w.max(0.0);
            }
            let mut row: Vec<(u32, f32)> = acc.into_iter().collect();
            row.sort_unstable_by_key(|&(i, _)| i);
            rows.push(row);
            let mut seq: Vec<u32> = list.iter().map(|&(i, _)| i).collect();
            seq.dedup();
            sequences.push(seq);
            recent.push(
                list[n.saturating_sub(recent_n)..]
                    .iter()
                    .map(|&(item, pos)| RecentEvent {
                        item: ItemIdx(item),
                        kind: events[pos].kind,
                        timestamp: events[pos].timestamp,
                    })
                    .collect(),
            );
        }
        let weight_scale = if params.normalize { median_weight(&rows) } else { 1.0 };
        if weight_scale != 1.0 {
            for row in &mut rows {
                row.iter_mut().for_each(|(_, w)| *w /= weight_scale);
            }
        }
        Interactions {
            users,
            items,
            rows,
            recent,
            sequences,
            weight_scale,
            repeats,
        }
    }

    /// Number of users with at least one event per item.
    pub fn item_counts(&self) -> Vec<u32> {
        let mut counts = vec![0u32; self.items.len()];
        for row in &self.rows {
            for &(i, _) in row {
                counts[i as usize] += 1;
            }
        }
        counts
    }

    /// The transpose: per item, `(user, weight)` sorted by user.
    pub fn columns(&self) -> Vec<Vec<(u32, f32)>> {
        let mut cols: Vec<Vec<(u32, f32)>> = vec![Vec::new(); self.items.len()];
        for (u, row) in self.rows.iter().enumerate() {
            for &(i, w) in row {
                cols[i as usize].push((u as u32, w));
            }
        }
        cols
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(u: &str, i: &str, kind: EventKind, t: Option<i64>) -> Event {
        Event::new(u, i, kind, t)
    }

    #[test]
    fn aggregates_weights_and_keeps_recent_in_order() {
        let events = vec![
            ev("a", "x", EventKind::View, Some(3)),
            ev("a", "y", EventKind::Purchase, Some(1)),
            ev("a", "x", EventKind::Cart, Some(2)),
            ev("b", "y", EventKind::View, Some(1)),
            // Exposures are not interactions: no cell, no item, no recent event.
            ev("a", "y", EventKind::Impression, Some(4)),
            ev("a", "shown-only", EventKind::Impression, Some(5)),
        ];
        let raw = WeightParams {
            normalize: false,
            ..WeightParams::default()
        };
        let m = Interactions::build(&events, IdMap::from_ids(vec!["z".into()]), IdMap::default(), TimeKind::Order, &raw, 2);
        assert_eq!(m.items.ids(), ["z", "x", "y"]);
        let a = m.users.get("a").unwrap() as usize;
        assert_eq!(m.rows[a], vec![(1, 5.0), (2, 8.0)]);
        let recent: Vec<u32> = m.recent[a].iter().map(|r| r.item.0).collect();
        assert_eq!(recent, vec![1, 1], "latest two events, oldest first");
        assert_eq!(m.recent[a][1].kind, EventKind::View);
        assert_eq!(m.item_counts(), vec![0, 1, 2]);
    }

    #[test]
    fn decay_halves_per_half_life() {
        let day = 86_400;
        let events = vec![
            ev("a", "old", EventKind::View, Some(1_000_000_000)),
            ev("a", "new", EventKind::View, Some(1_000_000_000 + 10 * day)),
        ];
        let params = WeightParams {
            half_life: 10.0,
            normalize: false,
            ..WeightParams::default()
        };
        let m = Interactions::build(&events, IdMap::default(), IdMap::default(), TimeKind::Unix, &params, 10);
        assert!((m.rows[0][0].1 - 0.5).abs() < 1e-6);
        assert!((m.rows[0][1].1 - 1.0).abs() < 1e-6);
    }

    #[test]
    fn normalised_weights_depend_only_on_their_ratios() {
        let events = |kind: EventKind| {
            vec![ev("a", "x", kind, Some(1)), ev("a", "x", kind, Some(2)), ev("a", "y", kind, Some(3)), ev("b", "y", kind, Some(1))]
        };
        let build = |events: &[Event], params: &WeightParams| {
            Interactions::build(events, IdMap::default(), IdMap::default(), TimeKind::Order, params, 5)
        };
        let base = build(&events(EventKind::View), &WeightParams::default());
        // Cells 2, 1, 1: median 1.
        assert_eq!(base.weight_scale, 1.0);
        assert_eq!(base.rows[0][0].1, 2.0);
        let relabelled = build(&events(EventKind::Purchase), &WeightParams::default());
        let mut tenfold = WeightParams::default();
        tenfold.event_weights.view *= 10.0;
        let scaled = build(&events(EventKind::View), &tenfold);
        for other in [&relabelled, &scaled] {
            for (a, b) in base.rows.iter().flatten().zip(other.rows.iter().flatten()) {
                assert_eq!(a.0, b.0);
                assert!((a.1 - b.1).abs() < 1e-6, "{a:?} vs {b:?}");
            }
        }
    }
}

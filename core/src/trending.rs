//! Recent popularity and trends: what a segment took up in the last days, and what is
//! rising against its own past.
//!
//! Training keeps the interactions of the last [`KEPT_DAYS`] days before the data's
//! latest event (user, item, time): small next to the whole history, and enough for
//! windows of 1, 7 and 30 days and for a trend's baseline. A windowed list counts, per
//! item, the distinct users of the segment in the window, each weighted by how recent
//! their latest event is (half-life: half the window). A trend compares an item's
//! distinct users in the window against its mean distinct users per window in the
//! [`BASELINE_WINDOWS`] windows before (as many whole windows as the model kept and the
//! data covers; with none, nothing trends): `(recent − expected) / √(expected + 1)`, and needs at least
//! [`MIN_TREND_USERS`] users in the window and a score of at least [`MIN_TREND_SCORE`]
//! (the rise is two standard deviations of a count at the item's usual rate), so three
//! clicks on a cold item do not top the list, and a steady best-seller — high, but at
//! its usual rate — never does, even in a quiet week when nothing else rises.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::data::{Event, EventKind, TimeKind};
use crate::error::{Error, Result};
use crate::ids::{IdMap, ItemIdx, UserIdx};
use crate::model::Model;
use crate::segments::Segment;

/// Days of interactions a model keeps for windows and trends.
pub const KEPT_DAYS: i64 = 150;
/// Windows of the baseline a trend is measured against.
pub const BASELINE_WINDOWS: i64 = 4;
/// Fewest distinct users in the window for an item to trend.
pub const MIN_TREND_USERS: u32 = 5;
/// Least growth score for an item to trend: noise around a steady rate stays below it.
pub const MIN_TREND_SCORE: f32 = 2.0;

const DAY: i64 = 86_400;

/// One kept event.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Recent {
    /// User index.
    pub user: u32,
    /// Item index.
    pub item: u32,
    /// Unix seconds.
    pub time: i64,
    /// What happened (impressions too: item metrics count them).
    pub kind: EventKind,
    /// The event's value (a purchase's amount), 0 when absent.
    pub value: f32,
}

/// The events of the last [`KEPT_DAYS`] days of `events` (unix times only) by users and
/// items of the model, by time; empty for data without unix timestamps.
pub fn keep_recent(events: &[Event], users: &IdMap, items: &IdMap, time_kind: TimeKind) -> Vec<Recent> {
    if time_kind != TimeKind::Unix {
        return Vec::new();
    }
    let Some(now) = events.iter().filter(|e| e.kind.is_interaction()).filter_map(|e| e.timestamp).max() else { return Vec::new() };
    let mut kept: Vec<Recent> = events
        .iter()
        .filter_map(|e| {
            let t = e.timestamp.filter(|&t| t > now - KEPT_DAYS * DAY && t <= now)?;
            Some(Recent {
                user: users.get(&e.user_id)?,
                item: items.get(&e.item_id)?,
                time: t,
                kind: e.kind,
                value: e.value.unwrap_or(0.0),
            })
        })
        .collect();
    kept.sort_by_key(|r| r.time);
    kept
}

/// Where a windowed question stands: the time its window ends at, and the interactions
/// the server took in since the model was trained (so windows, trends and item metrics
/// see today's events, not only the training data's).
#[derive(Debug, Clone, Copy, Default)]
pub struct At<'a> {
    /// The window's end as the request gives it; default: the latest event time known
    /// (the model's or a live one, whichever is later).
    pub now: Option<i64>,
    /// Interactions since training, in any order. A user index at or beyond the model's
    /// user count is someone the model does not know: counted for everyone, in no
    /// segment.
    pub live: &'a [Recent],
}

/// A time window for popularity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// Every event the model holds.
    All,
    /// The last `n` days before "now" (1, 7 or 30 from the API).
    Days(u32),
}

impl Model {
    fn segment_members(&self, segment: &Segment) -> Vec<bool> {
        (0..self.n_users()).map(|u| self.in_segment(segment, UserIdx(u as u32))).collect()
    }

    /// "Now" for windows: `now` if given, else the latest event time known.
    fn window_now(&self, at: At<'_>) -> Result<i64> {
        if self.manifest().time_kind != TimeKind::Unix {
            return Err(Error::FailedPrecondition(
                "time windows need unix timestamps and this model's data has only an order (or none); use the window `all`".into(),
            ));
        }
        // Live events may be stamped up to a day ahead (client clocks): they never move
        // "now" past the wall clock, or one such event would empty every window.
        let live = at.live.iter().map(|r| r.time).max().map(|t| t.min(crate::data::unix_now()));
        let latest = self.activity.now.max(live);
        at.now.or(latest).ok_or_else(|| Error::FailedPrecondition("the model holds no event times".into()))
    }

    /// The kept and live events in `(from, to]`.
    fn in_window<'a>(&'a self, live: &'a [Recent], from: i64, to: i64) -> impl Iterator<Item = &'a Recent> + 'a {
        let start = self.activity.recent.partition_point(|r| r.time <= from);
        self.activity.recent[start..]
            .iter()
            .take_while(move |r| r.time <= to)
            .chain(live.iter().filter(move |r| r.time > from && r.time <= to))
    }

    /// Per item, the distinct users of `members` with an event in `(from, to]`, each
    /// weighted by `weight(time of their latest event there)`; users beyond `members`
    /// (live strangers) count when `everyone`.
    fn window_counts(&self, members: &[bool], everyone: bool, live: &[Recent], from: i64, to: i64, weight: impl Fn(i64) -> f32) -> HashMap<ItemIdx, f32> {
        let mut latest: HashMap<(u32, u32), i64> = HashMap::new();
        for r in self.in_window(live, from, to).filter(|r| r.kind.is_interaction()) {
            if members.get(r.user as usize).copied().unwrap_or(everyone) {
                let t = latest.entry((r.user, r.item)).or_insert(r.time);
                *t = (*t).max(r.time);
            }
        }
        let mut counts: HashMap<ItemIdx, f32> = HashMap::new();
        for ((_, item), t) in latest {
            *counts.entry(ItemIdx(item)).or_insert(0.0) += weight(t);
        }
        counts
    }

    /// Per item, the segment's recency-weighted distinct users in the last `days` days
    /// before `now`, and the users the segment holds.
    ///
    /// # Errors
    /// `FailedPrecondition` on data without unix timestamps.
    pub fn windowed_popularity(&self, segment: &Segment, days: u32, at: At<'_>) -> Result<(HashMap<ItemIdx, f32>, usize)> {
        let now = self.window_now(at)?;
        let members = self.segment_members(segment);
        let users = members.iter().filter(|&&m| m).count();
        let half_life = (f64::from(days) * DAY as f64 / 2.0).max(1.0);
        let weight = |t: i64| (0.5f64).powf((now - t) as f64 / half_life) as f32;
        let counts = self.window_counts(&members, segment.is_everyone(), at.live, now - i64::from(days) * DAY, now, weight);
        Ok((counts, users))
    }

    /// Items rising fastest in `segment` over the last `days` days against their own
    /// rate in the [`BASELINE_WINDOWS`] windows before, with the growth score (see the
    /// module docs); best first, at most `k`, passing `allowed`; also the users the
    /// segment holds.
    ///
    /// # Errors
    /// `FailedPrecondition` on data without unix timestamps.
    pub fn trending(&self, segment: &Segment, days: u32, at: At<'_>, k: usize, allowed: impl Fn(ItemIdx) -> bool) -> Result<(Vec<(f32, ItemIdx)>, usize)> {
        let now = self.window_now(at)?;
        let members = self.segment_members(segment);
        let everyone = segment.is_everyone();
        let users = members.iter().filter(|&&m| m).count();
        let w = i64::from(days.max(1)) * DAY;
        let recent = self.window_counts(&members, everyone, at.live, now - w, now, |_| 1.0);
        // The baseline: distinct users per earlier window (so loyal regulars count once a
        // window, as in the recent one), averaged over the whole windows the model kept.
        // Without one whole window of past there is nothing to grow against: no trend.
        let horizon = self.activity.now.map_or(i64::MIN, |n| n - KEPT_DAYS * DAY);
        let first = self.activity.recent.first().map_or(i64::MIN, |r| r.time - 1);
        let kept_from = horizon.max(first);
        let windows = ((now - w).saturating_sub(kept_from) / w).clamp(0, BASELINE_WINDOWS);
        if windows == 0 {
            return Ok((Vec::new(), users));
        }
        let mut before: HashMap<ItemIdx, f32> = HashMap::new();
        for b in 1..=windows {
            for (i, n) in self.window_counts(&members, everyone, at.live, now - w * (b + 1), now - w * b, |_| 1.0) {
                *before.entry(i).or_insert(0.0) += n;
            }
        }
        let mut scored: Vec<(f32, ItemIdx)> = recent
            .into_iter()
            .filter(|&(i, n)| n >= MIN_TREND_USERS as f32 && allowed(i))
            .map(|(i, n)| {
                let expected = before.get(&i).copied().unwrap_or(0.0) / windows as f32;
                ((n - expected) / (expected + 1.0).sqrt(), i)
            })
            .filter(|&(s, _)| s >= MIN_TREND_SCORE)
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        scored.truncate(k);
        Ok((scored, users))
    }
}

/// What happened to one item in a window, for merchandisers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ItemStats {
    /// Events per kind, in [`EventKind::ALL`] order.
    pub counts: [u32; 8],
    /// Distinct users with any event.
    pub users: u32,
    /// Sum of purchase amounts.
    pub revenue: f64,
}

impl ItemStats {
    /// Events of `kind`.
    pub fn count(&self, kind: EventKind) -> u32 {
        EventKind::ALL.iter().position(|&k| k == kind).map_or(0, |n| self.counts[n])
    }

    fn rate(&self, num: EventKind, den: EventKind) -> Option<f32> {
        let d = self.count(den);
        (d > 0).then(|| self.count(num) as f32 / d as f32)
    }

    /// Clicks per impression.
    pub fn ctr(&self) -> Option<f32> {
        self.rate(EventKind::Click, EventKind::Impression)
    }

    /// Add-to-carts per view.
    pub fn cart_rate(&self) -> Option<f32> {
        self.rate(EventKind::Cart, EventKind::View)
    }

    /// Purchases per view.
    pub fn conversion(&self) -> Option<f32> {
        self.rate(EventKind::Purchase, EventKind::View)
    }
}

impl Model {
    /// What happened to `item_id` among `segment`'s users in the last `days` days before
    /// `now` (at most [`KEPT_DAYS`]).
    ///
    /// # Errors
    /// `NotFound` for an unknown item; `InvalidArgument` for a window beyond what the
    /// model keeps; `FailedPrecondition` on data without unix timestamps.
    pub fn item_stats(&self, item_id: &str, segment: &Segment, days: u32, at: At<'_>) -> Result<ItemStats> {
        segment.validate()?;
        // Items added while serving count too: their events are in the live window.
        let item = self
            .item_index(item_id)
            .ok_or_else(|| Error::NotFound(format!("item `{}` is not in model {}", crate::ids::shown(item_id), self.version())))?;
        if days == 0 || i64::from(days) > KEPT_DAYS {
            return Err(Error::invalid_argument("window", format!("item metrics cover 1 to {KEPT_DAYS} days")));
        }
        let now = self.window_now(at)?;
        let members = self.segment_members(segment);
        let everyone = segment.is_everyone();
        let from = now - i64::from(days) * DAY;
        let mut stats = ItemStats::default();
        let mut users = std::collections::HashSet::new();
        for r in self.in_window(at.live, from, now) {
            if r.item != item.0 || !members.get(r.user as usize).copied().unwrap_or(everyone) {
                continue;
            }
            if let Some(n) = EventKind::ALL.iter().position(|&k| k == r.kind) {
                stats.counts[n] += 1;
            }
            if r.kind == EventKind::Purchase {
                stats.revenue += f64::from(r.value);
            }
            users.insert(r.user);
        }
        stats.users = users.len() as u32;
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Dataset, EventKind};
    use crate::rules::Rules;
    use crate::testing::fast_params;
    use crate::train::{train, NoProgress};

    const T0: i64 = 1_700_000_000;

    /// Nine weeks: a steady best-seller (30 users a week), a seasonal item that sells a
    /// little and spikes in the last week, a cold item three users found last week, and
    /// background items.
    fn store() -> Dataset {
        let mut events = Vec::new();
        let mut push = |u: usize, item: &str, day: i64| events.push(Event::new(format!("u{u}"), item, EventKind::View, Some(T0 + day * DAY + u as i64)));
        for week in 0..9i64 {
            for n in 0..30 {
                push((week as usize * 31 + n) % 400, "steady", week * 7 + (n as i64 % 7));
            }
            let seasonal = if week == 8 { 25 } else { 2 };
            for n in 0..seasonal {
                push((week as usize * 17 + n * 3) % 400, "seasonal", week * 7 + (n as i64 % 7));
            }
            for n in 0..40 {
                push((week as usize * 13 + n * 7) % 400, &format!("bg{}", n % 20), week * 7 + (n as i64 % 7));
            }
        }
        for u in 0..3 {
            push(u, "cold", 60);
        }
        Dataset { events, ..Dataset::default() }
    }

    fn ids(m: &Model, r: &[(f32, ItemIdx)]) -> Vec<String> {
        r.iter().map(|x| m.item_id(x.1).to_string()).collect()
    }

    #[test]
    fn a_planted_spike_trends_in_its_window_only_and_a_steady_seller_never() {
        let m = train(&store(), TimeKind::Unix, &fast_params(), &NoProgress);
        let everyone = Segment::default();
        let now = m.activity.now.unwrap();
        let (top, users) = m.trending(&everyone, 7, At::default(), 10, |_| true).unwrap();
        assert_eq!(users, m.n_users());
        assert_eq!(ids(&m, &top).first().map(String::as_str), Some("seasonal"), "{:?}", ids(&m, &top));
        assert!(!ids(&m, &top).contains(&"steady".to_string()) && !ids(&m, &top).contains(&"cold".to_string()));
        // Two weeks earlier the spike had not happened.
        let (before, _) = m.trending(&everyone, 7, At { now: Some(now - 14 * DAY), ..At::default() }, 10, |_| true).unwrap();
        assert!(!ids(&m, &before).contains(&"seasonal".to_string()), "{:?}", ids(&m, &before));
        // The last day's popular list counts only the last day.
        let (day, _) = m.windowed_popularity(&everyone, 1, At::default()).unwrap();
        assert!(day.keys().all(|&i| m.item_id(i) != "seasonal" || day[&i] > 0.0));
        let (r, users) = m.popular_in(&everyone, None, &Rules::default(), 3, Window::Days(7), At::default()).unwrap();
        assert_eq!(users, m.n_users());
        assert_eq!(m.item_id(r.items[0].item), "steady");
        // Order-only data has no windows.
        let order = train(&store(), TimeKind::Order, &fast_params(), &NoProgress);
        assert!(matches!(order.trending(&everyone, 7, At::default(), 10, |_| true), Err(Error::FailedPrecondition(_))));
        assert!(order.popular_in(&everyone, None, &Rules::default(), 3, Window::All, At::default()).is_ok());
    }

    #[test]
    fn loyal_regulars_do_not_trend_and_without_a_past_window_nothing_does() {
        let mut data = store();
        // The same twenty users buy "coffee" every week for nine weeks.
        for week in 0..9i64 {
            for u in 0..20 {
                data.events.push(Event::new(format!("u{u}"), "coffee", EventKind::Purchase, Some(T0 + week * 7 * DAY + u as i64)));
            }
        }
        let m = train(&data, TimeKind::Unix, &fast_params(), &NoProgress);
        let everyone = Segment::default();
        let (top, _) = m.trending(&everyone, 7, At::default(), 10, |_| true).unwrap();
        assert!(!ids(&m, &top).contains(&"coffee".to_string()), "{:?}", ids(&m, &top));
        // A window ending before the data has a whole earlier window: no baseline, no trend.
        let first = T0 + 7 * DAY;
        let (early, _) = m.trending(&everyone, 7, At { now: Some(first), ..At::default() }, 10, |_| true).unwrap();
        assert!(early.is_empty(), "{:?}", ids(&m, &early));
    }

    #[test]
    fn live_events_join_windows_trends_and_item_metrics() {
        let m = train(&store(), TimeKind::Unix, &fast_params(), &NoProgress);
        let everyone = Segment::default();
        let now = m.activity.now.unwrap();
        let cold = m.item_index("cold").unwrap().0;
        // Twelve users the model never saw view the cold item a day after its data ends.
        let live: Vec<Recent> = (0..12)
            .map(|k| Recent { user: m.n_users() as u32 + k, item: cold, time: now + DAY, kind: EventKind::View, value: 0.0 })
            .collect();
        let at = At { now: None, live: &live };
        let (top, _) = m.trending(&everyone, 7, at, 10, |_| true).unwrap();
        assert_eq!(ids(&m, &top).first().map(String::as_str), Some("cold"), "{:?}", ids(&m, &top));
        let (week, _) = m.windowed_popularity(&everyone, 7, at).unwrap();
        assert!(week[&ItemIdx(cold)] > 12.0 * 0.5, "{:?}", week.get(&ItemIdx(cold)));
        let stats = m.item_stats("cold", &everyone, 7, at).unwrap();
        assert_eq!((stats.count(EventKind::View), stats.users), (15, 15));
        // Strangers belong to no segment.
        let north = Segment { region: Some("north".into()), ..Segment::default() };
        assert_eq!(m.item_stats("cold", &north, 7, at).unwrap().users, 0);
        // Without them, the window ends at the model's own latest event.
        assert_eq!(m.item_stats("cold", &everyone, 7, At::default()).unwrap().users, 3);
    }

    #[test]
    fn item_stats_count_each_kind_in_the_window_and_give_rates() {
        let mut data = store();
        let t = T0 + 62 * DAY;
        for (u, kind, value) in [(1, EventKind::Impression, None), (2, EventKind::Impression, None), (1, EventKind::Click, None), (1, EventKind::Purchase, Some(12.5))] {
            data.events.push(Event { value, ..Event::new(format!("u{u}"), "steady", kind, Some(t)) });
        }
        let m = train(&data, TimeKind::Unix, &fast_params(), &NoProgress);
        let s = m.item_stats("steady", &Segment::default(), 1, At::default()).unwrap();
        assert_eq!((s.count(EventKind::Impression), s.count(EventKind::Click), s.count(EventKind::Purchase)), (2, 1, 1));
        assert_eq!((s.ctr(), s.revenue), (Some(0.5), 12.5));
        let week = m.item_stats("steady", &Segment::default(), 7, At::default()).unwrap();
        assert!(week.count(EventKind::View) >= 30 && week.users >= 30);
        assert!(matches!(m.item_stats("nope", &Segment::default(), 7, At::default()), Err(Error::NotFound(_))));
        assert!(matches!(m.item_stats("steady", &Segment::default(), 400, At::default()), Err(Error::InvalidArgument { .. })));
    }
}

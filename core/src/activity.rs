//! What each user did, summarised at training time, and the profile built on it: RFM
//! scores and label, lifecycle stage, churn risk, behaviour counts and rates.
//!
//! The model keeps per user a few numbers (first and last event, counts per kind,
//! purchases, revenue, purchase gaps, the longest silence) rather than every event, so a
//! profile costs a lookup and RFM quintiles one sort of the buyers, done once per model.
//! Times are the data's unix seconds; on data with only an order, the stages and
//! recency that need days are not available and say so.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::data::{Event, EventKind, TimeKind};
use crate::error::{Error, Result};
use crate::ids::{shown, IdMap};
use crate::model::Model;
use crate::recommend::LiveEvent;

/// Seconds in a day.
const DAY: f64 = 86_400.0;

/// One user's activity.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Activity {
    /// Earliest and latest event time.
    pub first: Option<i64>,
    /// Latest event time.
    pub last: Option<i64>,
    /// Events per kind, in [`EventKind::ALL`] order.
    pub counts: [u32; 8],
    /// Sum of purchase values (amounts).
    pub revenue: f64,
    /// Latest purchase time.
    pub last_purchase: Option<i64>,
    /// Mean days between consecutive purchases (two purchases or more).
    pub purchase_gap_days: Option<f32>,
    /// Longest silence between two consecutive events, in days (the won-back check).
    pub longest_gap_days: f32,
    /// Distinct days (UTC) with an event: visits.
    pub active_days: u32,
}

impl Activity {
    /// Mean days between visits (two visit days or more).
    pub fn visit_gap_days(&self) -> Option<f32> {
        let (first, last) = (self.first?, self.last?);
        (self.active_days >= 2).then(|| ((last - first) as f64 / DAY / f64::from(self.active_days - 1)) as f32)
    }
}

impl Activity {
    /// Events of `kind`.
    pub fn count(&self, kind: EventKind) -> u32 {
        EventKind::ALL.iter().position(|&k| k == kind).map_or(0, |n| self.counts[n])
    }

    /// Purchases.
    pub fn purchases(&self) -> u32 {
        self.count(EventKind::Purchase)
    }
}

/// Every user's activity (by user index) and the data's latest event time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActivityTable {
    /// Per user index.
    pub users: Vec<Activity>,
    /// The latest event time in the data: "now" for profiles unless a request says.
    pub now: Option<i64>,
    /// The interactions of the last days, by time (see [`crate::trending`]).
    pub recent: Vec<crate::trending::Recent>,
}

impl ActivityTable {
    /// Summarises `events` per user of `users` (events of other users are skipped).
    /// Times count only when `timed` (unix seconds).
    pub fn build(events: &[Event], users: &IdMap, timed: bool) -> ActivityTable {
        let mut per_user: Vec<Vec<&Event>> = vec![Vec::new(); users.len()];
        for e in events {
            if let Some(u) = users.get(&e.user_id) {
                per_user[u as usize].push(e);
            }
        }
        let mut now = None;
        let users = per_user
            .into_iter()
            .map(|mut list| {
                let mut a = Activity::default();
                list.sort_by_key(|e| e.timestamp);
                let mut previous: Option<i64> = None;
                let mut purchase_times = Vec::new();
                for e in &list {
                    if let Some(n) = EventKind::ALL.iter().position(|&k| k == e.kind) {
                        a.counts[n] += 1;
                    }
                    if e.kind == EventKind::Purchase {
                        a.revenue += f64::from(e.value.unwrap_or(0.0));
                    }
                    let Some(t) = e.timestamp.filter(|_| timed) else { continue };
                    a.first = Some(a.first.map_or(t, |f: i64| f.min(t)));
                    a.last = Some(a.last.map_or(t, |l: i64| l.max(t)));
                    if let Some(p) = previous {
                        a.longest_gap_days = a.longest_gap_days.max(((t - p) as f64 / DAY) as f32);
                    }
                    if previous.is_none_or(|p| p.div_euclid(86_400) != t.div_euclid(86_400)) {
                        a.active_days += 1;
                    }
                    previous = Some(t);
                    if e.kind == EventKind::Purchase {
                        purchase_times.push(t);
                        a.last_purchase = Some(t);
                    }
                }
                if purchase_times.len() >= 2 {
                    let span = (purchase_times[purchase_times.len() - 1] - purchase_times[0]) as f64 / DAY;
                    a.purchase_gap_days = Some((span / (purchase_times.len() - 1) as f64) as f32);
                }
                now = now.max(a.last);
                a
            })
            .collect();
        ActivityTable { users, now, recent: Vec::new() }
    }
}

/// Thresholds of the lifecycle stages, in days.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lifecycle {
    /// A user whose first event is this recent is new.
    pub new_days: f32,
    /// A user whose last event is this recent is active (or won back, after a silence of
    /// `churn_days` or more).
    pub active_days: f32,
    /// A user silent longer than this has churned; between `active_days` and this, dormant.
    pub churn_days: f32,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle { new_days: 30.0, active_days: 30.0, churn_days: 90.0 }
    }
}

/// Where a user is in their life with the shop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// First seen within `new_days`.
    New,
    /// Seen within `active_days`.
    Active,
    /// Silent for longer than `active_days`, at most `churn_days`.
    Dormant,
    /// Silent for longer than `churn_days`.
    Churned,
    /// Active again after a silence of `churn_days` or more.
    WonBack,
}

impl Stage {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::New => "new",
            Stage::Active => "active",
            Stage::Dormant => "dormant",
            Stage::Churned => "churned",
            Stage::WonBack => "won-back",
        }
    }
}

/// The stage of `a` at `now` (unix seconds); `None` without event times.
pub fn stage(a: &Activity, now: i64, t: &Lifecycle) -> Option<Stage> {
    let (first, last) = (a.first?, a.last?);
    let days = |since: i64| now.saturating_sub(since) as f64 / DAY;
    let silent = days(last) as f32;
    Some(if days(first) as f32 <= t.new_days {
        Stage::New
    } else if silent <= t.active_days && a.longest_gap_days >= t.churn_days {
        Stage::WonBack
    } else if silent <= t.active_days {
        Stage::Active
    } else if silent <= t.churn_days {
        Stage::Dormant
    } else {
        Stage::Churned
    })
}

/// RFM quintile scores (1–5, 5 best) and their label.
#[derive(Debug, Clone, PartialEq)]
pub struct Rfm {
    /// Recency score: 5 for the most recent fifth of buyers.
    pub recency: u8,
    /// Frequency score: 5 for the fifth with the most purchases.
    pub frequency: u8,
    /// Monetary score: 5 for the fifth who spent most.
    pub monetary: u8,
    /// Champions, loyal, potential, new customers, at risk, hibernating, lost.
    pub label: &'static str,
}

/// The buyers' recency (days before `now`), frequency and revenue, sorted, for quintiles.
#[derive(Debug, Clone, Default)]
pub struct Quintiles {
    recency: Vec<f64>,
    frequency: Vec<f64>,
    monetary: Vec<f64>,
}

/// The quintile (1–5) of `v` among `sorted` values, higher values scoring higher: the
/// share of values strictly below `v`, plus half the ties.
fn quintile(sorted: &[f64], v: f64) -> u8 {
    let below = sorted.partition_point(|&x| x < v);
    let equal = sorted.partition_point(|&x| x <= v) - below;
    let rank = (below as f64 + equal as f64 / 2.0) / sorted.len().max(1) as f64;
    ((rank * 5.0).floor() as u8 + 1).min(5)
}

impl Quintiles {
    /// The distributions over every buyer (users with a purchase and its time) at `now`.
    pub fn of(table: &ActivityTable, now: i64) -> Quintiles {
        let mut q = Quintiles::default();
        for a in table.users.iter().filter(|a| a.purchases() > 0) {
            let Some(lp) = a.last_purchase else { continue };
            q.recency.push(-(now.saturating_sub(lp) as f64));
            q.frequency.push(f64::from(a.purchases()));
            q.monetary.push(a.revenue);
        }
        for v in [&mut q.recency, &mut q.frequency, &mut q.monetary] {
            v.sort_by(f64::total_cmp);
        }
        q
    }

    /// The scores of `a` at `now`; `None` for a user without a timed purchase.
    pub fn score(&self, a: &Activity, now: i64) -> Option<Rfm> {
        let lp = a.last_purchase.filter(|_| a.purchases() > 0)?;
        let r = quintile(&self.recency, -(now.saturating_sub(lp) as f64));
        let f = quintile(&self.frequency, f64::from(a.purchases()));
        let m = quintile(&self.monetary, a.revenue);
        let label = match (r, f) {
            (4..=5, 4..=5) => "champions",
            (3..=5, 3..=5) => "loyal",
            (4..=5, _) => "new customers",
            (3, _) => "potential",
            (_, 3..=5) => "at risk",
            (2, _) => "hibernating",
            _ => "lost",
        };
        Some(Rfm { recency: r, frequency: f, monetary: m, label })
    }
}

/// Churn risk in [0, 1] and why: the days since the user's last purchase (a buyer with
/// two or more) or visit, against their own usual gap between purchases or visits —
/// `t / (t + gap)`, one half when the silence equals the usual gap. A user with a single
/// visit has no habit to come back to and counts a gap of one day, so their risk rises
/// fastest: on MovieLens-100K this ranks who leaves in the next 30 days better than the
/// days since the last event alone (`lab/tests/churn.rs`).
pub fn churn_risk(a: &Activity, now: i64) -> Option<(f32, String)> {
    let (since, what, own) = match (a.last_purchase, a.purchase_gap_days) {
        (Some(t), Some(g)) => (t, "purchase", Some(g)),
        _ => (a.last?, "visit", a.visit_gap_days()),
    };
    let t = (now.saturating_sub(since) as f64 / DAY).max(0.0) as f32;
    let (gap, whose) = match own.filter(|g| *g > 0.0) {
        Some(g) => (g.max(1.0), "their usual gap"),
        None => (1.0, "a single visit so far, a gap"),
    };
    Some((t / (t + gap), format!("{t:.0} days since the last {what}, against {whose} of {gap:.1} days")))
}

/// The RFM labels [`Quintiles::score`] gives.
pub const RFM_LABELS: [&str; 7] = ["champions", "loyal", "new customers", "potential", "at risk", "hibernating", "lost"];

/// Which users a campaign wants (every set field must hold).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserFilter {
    /// Users of this segment.
    pub segment: crate::segments::Segment,
    /// Users in this lifecycle stage.
    pub stage: Option<Stage>,
    /// Users with this RFM label.
    pub rfm_label: Option<String>,
    /// Users whose churn risk is at least this.
    pub min_churn_risk: Option<f32>,
    /// Users whose churn risk is at most this.
    pub max_churn_risk: Option<f32>,
}

/// One user of a [`Model::list_users`] page.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    /// The user.
    pub user_id: String,
    /// Their stage, RFM scores and churn risk (see [`UserProfile`]).
    pub stage: Option<Stage>,
    /// See [`UserProfile::rfm`].
    pub rfm: Option<Rfm>,
    /// See [`UserProfile::churn`].
    pub churn_risk: Option<f32>,
}

impl Stage {
    /// Every stage.
    pub const ALL: [Stage; 5] = [Stage::New, Stage::Active, Stage::Dormant, Stage::Churned, Stage::WonBack];
}

impl std::str::FromStr for Stage {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Stage, String> {
        Stage::ALL.into_iter().find(|x| x.as_str() == s).ok_or_else(|| format!("`{s}` is not one of new, active, dormant, churned, won-back"))
    }
}

/// Everything `GetUserProfile` says about a user.
#[derive(Debug, Clone, PartialEq)]
pub struct UserProfile {
    /// The time the profile is computed at (unix seconds), when the data has times.
    pub now: Option<i64>,
    /// The trained summary with the user's live events added (live purchases carry no
    /// amount into `revenue`).
    pub activity: Activity,
    /// Lifecycle stage (needs event times).
    pub stage: Option<Stage>,
    /// RFM scores and label (buyers only).
    pub rfm: Option<Rfm>,
    /// Churn risk in [0, 1] and its reason.
    pub churn: Option<(f32, String)>,
    /// The user's strongest categories and brands, by interaction weight, best first.
    pub top_categories: Vec<(String, f32)>,
    /// See `top_categories`.
    pub top_brands: Vec<(String, f32)>,
    /// Who the user is among others (none for a deleted or unknown user).
    pub social: SocialProfile,
}

/// A user's place among others: their contacts and communities as they stand (live
/// changes included) and their trained influence.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SocialProfile {
    /// Friends (both ways).
    pub friends: u32,
    /// Accounts the user follows or trusts.
    pub following: u32,
    /// Communities the user belongs to, by id.
    pub communities: Vec<String>,
    /// Influence score (mean 1 over users, see [`crate::influence`]), where the model has
    /// a social graph.
    pub influence: Option<f32>,
}

impl UserProfile {
    /// Carts per view, when the user viewed anything.
    pub fn view_to_cart(&self) -> Option<f32> {
        let views = self.activity.count(EventKind::View);
        (views > 0).then(|| self.activity.count(EventKind::Cart) as f32 / views as f32)
    }

    /// Purchases per cart, when the user carted anything.
    pub fn cart_to_purchase(&self) -> Option<f32> {
        let carts = self.activity.count(EventKind::Cart);
        (carts > 0).then(|| self.activity.purchases() as f32 / carts as f32)
    }
}

/// The `n` heaviest names of `weights`, best first (ties by name).
fn top(weights: HashMap<&str, f32>, n: usize) -> Vec<(String, f32)> {
    let mut all: Vec<(String, f32)> = weights.into_iter().filter(|(k, _)| !k.is_empty()).map(|(k, w)| (k.to_string(), w)).collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    all.truncate(n);
    all
}

impl Model {
    /// The profile of `user_id`: the trained summary (unless `use_stored` is off: a
    /// deleted user) plus `live` events, at `now` (default: the data's latest time).
    ///
    /// # Errors
    /// `NotFound` for a user the model does not know and who has no live events.
    pub fn user_profile(&self, user_id: &str, live: &[LiveEvent], now: Option<i64>, lifecycle: &Lifecycle, use_stored: bool) -> Result<UserProfile> {
        let stored = self.user_index(user_id).filter(|_| use_stored);
        if stored.is_none() && live.is_empty() {
            return Err(Error::NotFound(format!("user `{}` has no history in model {} and no live events", shown(user_id), self.version())));
        }
        let mut a = stored.map(|u| self.activity.users[u.get()].clone()).unwrap_or_default();
        let timed = self.manifest().time_kind == TimeKind::Unix;
        for e in live {
            if let Some(n) = EventKind::ALL.iter().position(|&k| k == e.kind) {
                a.counts[n] += 1;
            }
            let Some(t) = e.timestamp.filter(|_| timed) else { continue };
            if let Some(last) = a.last {
                a.longest_gap_days = a.longest_gap_days.max((t.saturating_sub(last) as f64 / DAY) as f32);
            }
            a.first = Some(a.first.map_or(t, |f| f.min(t)));
            a.last = Some(a.last.map_or(t, |l| l.max(t)));
            if e.kind == EventKind::Purchase {
                a.last_purchase = Some(a.last_purchase.map_or(t, |l| l.max(t)));
            }
        }
        let now = now.or(self.activity.now.max(a.last));
        let (stage, rfm, churn) = match now {
            None => (None, None, None),
            Some(now) => {
                let fresh;
                let q = if Some(now) == self.activity.now {
                    self.quintiles.get_or_init(|| Quintiles::of(&self.activity, now))
                } else {
                    fresh = Quintiles::of(&self.activity, now);
                    &fresh
                };
                (stage(&a, now, lifecycle), q.score(&a, now), churn_risk(&a, now))
            }
        };
        let (mut categories, mut brands): (HashMap<&str, f32>, HashMap<&str, f32>) = (HashMap::new(), HashMap::new());
        let weighted = stored.into_iter().flat_map(|u| self.history(u).seen()).chain(live.iter().filter_map(|e| self.item_index(&e.item_id).map(|i| (i, 1.0))));
        for (i, w) in weighted {
            let item = self.item(i);
            *categories.entry(item.category.as_str()).or_insert(0.0) += w;
            *brands.entry(item.brand.as_str()).or_insert(0.0) += w;
        }
        let social = stored.map_or_else(SocialProfile::default, |u| {
            // Forgotten users are no contact of anyone's (`contacts_of` leaves them out).
            let contacts = self.contacts_of(u);
            let friends = contacts.iter().filter(|c| c.friend).count() as u32;
            SocialProfile {
                friends,
                following: contacts.len() as u32 - friends,
                communities: self.communities_of(u).into_iter().map(|(c, _)| c).collect(),
                influence: (!self.influence().is_empty()).then(|| self.influence().score(u)),
            }
        });
        Ok(UserProfile {
            now,
            activity: a,
            stage,
            rfm,
            churn,
            top_categories: top(categories, 5),
            top_brands: top(brands, 5),
            social,
        })
    }
}

impl Model {
    /// The model's users who pass `filter` at `now` (default: the data's latest time),
    /// in user order from index `from`, at most `page` of them; also the index to
    /// continue from, if any users are left. Scans users from `from` until the page
    /// fills.
    ///
    /// # Errors
    /// `InvalidArgument` naming the field for a bad filter.
    pub fn list_users(&self, filter: &UserFilter, now: Option<i64>, lifecycle: &Lifecycle, from: usize, page: usize) -> Result<(Vec<Listed>, Option<usize>)> {
        filter.segment.validate()?;
        if let Some(l) = &filter.rfm_label {
            if !RFM_LABELS.contains(&l.as_str()) {
                return Err(Error::invalid_argument("rfm_label", format!("`{}` is not one of {}", shown(l), RFM_LABELS.join(", "))));
            }
        }
        for (field, v) in [("min_churn_risk", filter.min_churn_risk), ("max_churn_risk", filter.max_churn_risk)] {
            if v.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
                return Err(Error::invalid_argument(field, "must be between 0 and 1"));
            }
        }
        let now = now.or(self.activity.now);
        let fresh;
        let q = match now {
            Some(n) if Some(n) == self.activity.now => Some(self.quintiles.get_or_init(|| Quintiles::of(&self.activity, n))),
            Some(n) => {
                fresh = Quintiles::of(&self.activity, n);
                Some(&fresh)
            }
            None => None,
        };
        let mut out = Vec::new();
        for u in from..self.n_users() {
            if out.len() == page {
                return Ok((out, Some(u)));
            }
            let user = crate::ids::UserIdx(u as u32);
            if !self.in_segment(&filter.segment, user) {
                continue;
            }
            let a = &self.activity.users[u];
            let (stage, rfm, churn) = match (now, q) {
                (Some(now), Some(q)) => (stage(a, now, lifecycle), q.score(a, now), churn_risk(a, now).map(|c| c.0)),
                _ => (None, None, None),
            };
            let keep = filter.stage.is_none_or(|s| stage == Some(s))
                && filter.rfm_label.as_deref().is_none_or(|l| rfm.as_ref().is_some_and(|r| r.label == l))
                && filter.min_churn_risk.is_none_or(|m| churn.is_some_and(|c| c >= m))
                && filter.max_churn_risk.is_none_or(|m| churn.is_some_and(|c| c <= m));
            if keep {
                out.push(Listed { user_id: self.user_ids()[u].clone(), stage, rfm, churn_risk: churn });
            }
        }
        Ok((out, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000;

    fn ev(u: &str, kind: EventKind, day: i64, value: Option<f32>) -> Event {
        Event { value, ..Event::new(u, "i", kind, Some(T0 + day * 86_400)) }
    }

    #[test]
    fn planted_users_land_in_their_stage() {
        let mut events = vec![
            ev("new", EventKind::View, 395, None),
            ev("dormant", EventKind::View, 0, None),
            ev("dormant", EventKind::View, 340, None),
            ev("churned", EventKind::View, 0, None),
            ev("churned", EventKind::View, 200, None),
            ev("wonback", EventKind::View, 0, None),
            ev("wonback", EventKind::View, 150, None),
            ev("wonback", EventKind::View, 395, None),
            ev("clock", EventKind::View, 400, None),
        ];
        // Active: a visit every 50 days for a year.
        events.extend((0..8).map(|n| ev("active", EventKind::View, 40 + 50 * n, None)));
        let users = IdMap::from_ids(["new", "active", "dormant", "churned", "wonback", "clock"].map(String::from).to_vec());
        let t = ActivityTable::build(&events, &users, true);
        let now = t.now.unwrap();
        let got: Vec<&str> = (0..5).map(|u| stage(&t.users[u], now, &Lifecycle::default()).unwrap().as_str()).collect();
        assert_eq!(got, ["new", "active", "dormant", "churned", "won-back"]);
        assert_eq!(ActivityTable::build(&events, &users, false).users[0].first, None, "no times: no stage");
    }

    #[test]
    fn rfm_quintiles_equal_a_direct_ranking() {
        // Ten buyers: buyer n bought n + 1 times, last on day 10·n, spending 5·(n+1)².
        let mut events = Vec::new();
        for n in 0..10i64 {
            for k in 0..=n {
                events.push(ev(&format!("b{n}"), EventKind::Purchase, 10 * n - k, Some((5 * (n + 1)) as f32)));
            }
        }
        let users = IdMap::from_ids((0..10).map(|n| format!("b{n}")).collect());
        let t = ActivityTable::build(&events, &users, true);
        let now = t.now.unwrap();
        let q = Quintiles::of(&t, now);
        for n in 0..10usize {
            let rfm = q.score(&t.users[n], now).unwrap();
            // Ranks 0..9 map to quintiles 1,1,2,2,…,5,5 on every axis here.
            let want = (n / 2 + 1) as u8;
            assert_eq!((rfm.recency, rfm.frequency, rfm.monetary), (want, want, want), "buyer {n}");
        }
        assert_eq!(q.score(&t.users[9], now).unwrap().label, "champions");
        assert_eq!(q.score(&t.users[0], now).unwrap().label, "lost");
        let (risk, why) = churn_risk(&t.users[5], now + 40 * 86_400).unwrap();
        assert!(risk > 0.5 && why.contains("their usual gap"), "{risk} {why}");
    }
}

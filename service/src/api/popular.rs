//! `Popular`, `Trending`, `GetItemStats`, and the wire shape of user attributes (also `Recommend`'s cold start):
//! `UserAttributes` → [`Segment`], popular items → wire reply.

use affinity_core::recommend::Recommendations;
use affinity_core::segments::Segment;
use affinity_core::data::EventKind;
use affinity_core::trending::{ItemStats, Window};
use affinity_core::Error;

use super::{scored_items, Answer};
use crate::proto;
use crate::status::ApiError;

/// The segment `a` describes; `prefix` is the request field (`segment`, `attributes`)
/// errors name.
pub(crate) fn segment(a: Option<proto::UserAttributes>, prefix: &'static str) -> Result<Segment, ApiError> {
    let Some(a) = a else { return Ok(Segment::default()) };
    let text = |v: Option<String>| v.map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let age_band = match text(a.age) {
        None => None,
        Some(age) => Some(age.parse().map_err(|why: String| {
            let field = if prefix == "segment" { "segment.age" } else { "attributes.age" };
            Error::invalid_argument(field, why)
        })?),
    };
    Ok(Segment {
        region: text(a.region),
        age_band,
        gender: text(a.gender),
        occupation: text(a.occupation),
        income: text(a.income),
        community: text(a.community),
    })
}

/// A `Popular` request in domain terms.
pub(crate) struct PopularQuery {
    pub(crate) segment: Segment,
    pub(crate) category: Option<String>,
    pub(crate) k: usize,
    pub(crate) rules: affinity_core::rules::Rules,
    pub(crate) window: Window,
    pub(crate) now: Option<i64>,
}

pub(crate) fn window(w: i32) -> Result<Window, ApiError> {
    match proto::Window::try_from(w) {
        Ok(proto::Window::All) => Ok(Window::All),
        Ok(proto::Window::Window1Day) => Ok(Window::Days(1)),
        Ok(proto::Window::Window7Days) => Ok(Window::Days(7)),
        Ok(proto::Window::Window30Days) => Ok(Window::Days(30)),
        Err(_) => Err(Error::invalid_argument("window", format!("unknown value {w}")).into()),
    }
}

impl TryFrom<proto::TrendingRequest> for PopularQuery {
    type Error = ApiError;

    /// The same fields as `Popular`; the window defaults to 7 days.
    fn try_from(r: proto::TrendingRequest) -> Result<Self, ApiError> {
        let as_popular = proto::PopularRequest {
            segment: r.segment,
            category: r.category,
            k: r.k,
            rules: r.rules,
            window: r.window,
            now: r.now,
        };
        let mut q = PopularQuery::try_from(as_popular)?;
        if q.window == Window::All {
            q.window = Window::Days(7);
        }
        Ok(q)
    }
}

/// Checks a request's `now` (unix seconds, 0 to `MAX_TIMESTAMP`, the year 5138, as
/// `events.csv` takes them: beyond it window arithmetic would overflow); absent stays
/// absent.
pub(crate) fn now(now: Option<i64>) -> Result<Option<i64>, ApiError> {
    use affinity_core::data::MAX_TIMESTAMP;
    match now {
        Some(t) if !(0..=MAX_TIMESTAMP).contains(&t) => Err(Error::invalid_argument("now", format!("unix seconds from 0 to {MAX_TIMESTAMP}, got {t}")).into()),
        t => Ok(t),
    }
}

impl TryFrom<proto::PopularRequest> for PopularQuery {
    type Error = ApiError;

    fn try_from(r: proto::PopularRequest) -> Result<Self, ApiError> {
        Ok(PopularQuery {
            segment: segment(r.segment, "segment")?,
            category: r.category.filter(|c| !c.is_empty()),
            k: r.k as usize,
            rules: super::rules::rules(r.rules),
            window: window(r.window)?,
            now: now(r.now)?,
        })
    }
}

impl From<Answer<(Recommendations, usize)>> for proto::PopularResponse {
    fn from(a: Answer<(Recommendations, usize)>) -> Self {
        let (r, users) = a.value;
        proto::PopularResponse {
            model_version: a.live.model.version().to_string(),
            items: scored_items(&a.live, r.items),
            segment_users: users as u64,
            shortfall: super::rules::shortfall(r.shortfall),
        }
    }
}

impl From<Answer<(String, u32, ItemStats)>> for proto::ItemStats {
    fn from(a: Answer<(String, u32, ItemStats)>) -> Self {
        let (item_id, days, s) = a.value;
        proto::ItemStats {
            item_id,
            model_version: a.live.model.version().to_string(),
            window_days: days,
            event_counts: EventKind::ALL.iter().map(|&k| (k.to_string(), s.count(k))).collect(),
            users: s.users,
            revenue: s.revenue,
            ctr: s.ctr(),
            cart_rate: s.cart_rate(),
            conversion_rate: s.conversion(),
        }
    }
}

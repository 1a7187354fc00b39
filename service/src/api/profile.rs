//! `GetUserProfile` and `ListUsers`: wire requests → lifecycle thresholds and user
//! filters, profiles and listed users → wire replies.

use affinity_core::activity::{Lifecycle, Listed, Rfm, UserFilter, UserProfile};
use affinity_core::data::EventKind;
use affinity_core::Error;

use super::Answer;
use crate::proto;
use crate::status::ApiError;

/// Lifecycle thresholds from a request's three optional fields; unset ones keep the
/// defaults.
pub(crate) fn lifecycle(new_days: Option<f32>, active_days: Option<f32>, churn_days: Option<f32>) -> Result<Lifecycle, ApiError> {
    let d = Lifecycle::default();
    let days = |field: &'static str, v: Option<f32>, default: f32| match v {
        Some(x) if !x.is_finite() || x <= 0.0 => Err(ApiError::from(Error::invalid_argument(field, format!("must be a positive number of days, got {x}")))),
        Some(x) => Ok(x),
        None => Ok(default),
    };
    Ok(Lifecycle {
        new_days: days("new_days", new_days, d.new_days)?,
        active_days: days("active_days", active_days, d.active_days)?,
        churn_days: days("churn_days", churn_days, d.churn_days)?,
    })
}

fn rfm(r: &Rfm) -> proto::Rfm {
    proto::Rfm {
        recency: u32::from(r.recency),
        frequency: u32::from(r.frequency),
        monetary: u32::from(r.monetary),
        label: r.label.to_string(),
    }
}

/// Most users one `ListUsers` page may hold.
pub const MAX_PAGE: usize = 1000;

/// A `ListUsers` request in domain terms.
pub(crate) struct ListQuery {
    pub(crate) filter: UserFilter,
    pub(crate) lifecycle: Lifecycle,
    pub(crate) now: Option<i64>,
    pub(crate) from: usize,
    pub(crate) page: usize,
}

impl TryFrom<proto::ListUsersRequest> for ListQuery {
    type Error = ApiError;

    fn try_from(r: proto::ListUsersRequest) -> Result<Self, ApiError> {
        let stage = match r.stage.filter(|s| !s.is_empty()) {
            Some(s) => Some(s.parse().map_err(|why: String| Error::invalid_argument("stage", why))?),
            None => None,
        };
        let page = match r.page_size as usize {
            0 => 100,
            n if n > MAX_PAGE => return Err(Error::invalid_argument("page_size", format!("at most {MAX_PAGE}, got {n}")).into()),
            n => n,
        };
        let from = match r.page_token.as_str() {
            "" => 0,
            t => t.parse().map_err(|_| Error::invalid_argument("page_token", "not a token this server gave"))?,
        };
        Ok(ListQuery {
            filter: UserFilter {
                segment: super::popular::segment(r.segment, "segment")?,
                stage,
                rfm_label: r.rfm_label.filter(|s| !s.is_empty()),
                min_churn_risk: r.min_churn_risk,
                max_churn_risk: r.max_churn_risk,
            },
            lifecycle: lifecycle(r.new_days, r.active_days, r.churn_days)?,
            now: super::popular::now(r.now)?,
            from,
            page,
        })
    }
}

impl From<Answer<(Vec<Listed>, Option<usize>)>> for proto::ListUsersResponse {
    fn from(a: Answer<(Vec<Listed>, Option<usize>)>) -> Self {
        let (users, next) = a.value;
        proto::ListUsersResponse {
            users: users
                .into_iter()
                .map(|u| proto::ListedUser {
                    user_id: u.user_id,
                    stage: u.stage.map(|s| s.as_str().to_string()).unwrap_or_default(),
                    rfm: u.rfm.as_ref().map(rfm),
                    churn_risk: u.churn_risk,
                })
                .collect(),
            next_page_token: next.map(|n| n.to_string()).unwrap_or_default(),
            model_version: a.live.model.version().to_string(),
        }
    }
}

impl From<Answer<(String, UserProfile)>> for proto::UserProfile {
    fn from(a: Answer<(String, UserProfile)>) -> Self {
        let (user_id, p) = a.value;
        let named = |v: &[(String, f32)]| v.iter().map(|(name, weight)| proto::NamedWeight { name: name.clone(), weight: *weight }).collect();
        proto::UserProfile {
            user_id,
            model_version: a.live.model.version().to_string(),
            now: p.now,
            first_event_time: p.activity.first,
            last_event_time: p.activity.last,
            event_counts: EventKind::ALL.iter().map(|&k| (k.to_string(), p.activity.count(k))).collect(),
            revenue: p.activity.revenue,
            stage: p.stage.map(|s| s.as_str().to_string()).unwrap_or_default(),
            rfm: p.rfm.as_ref().map(rfm),
            churn_risk: p.churn.as_ref().map(|c| c.0),
            churn_reason: p.churn.as_ref().map(|c| c.1.clone()).unwrap_or_default(),
            top_categories: named(&p.top_categories),
            top_brands: named(&p.top_brands),
            view_to_cart: p.view_to_cart(),
            cart_to_purchase: p.cart_to_purchase(),
            friends: p.social.friends,
            following: p.social.following,
            communities: p.social.communities,
            influence: p.social.influence,
        }
    }
}

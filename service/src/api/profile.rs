//! `GetUserProfile`: wire request → lifecycle thresholds, [`UserProfile`] → wire reply.

use affinity_core::activity::{Lifecycle, UserProfile};
use affinity_core::data::EventKind;
use affinity_core::Error;

use super::Answer;
use crate::proto;
use crate::status::ApiError;

/// Lifecycle thresholds from the request; unset fields keep the defaults.
pub(crate) fn lifecycle(r: &proto::GetUserProfileRequest) -> Result<Lifecycle, ApiError> {
    let d = Lifecycle::default();
    let days = |field: &'static str, v: Option<f32>, default: f32| match v {
        Some(x) if !x.is_finite() || x <= 0.0 => Err(ApiError::from(Error::invalid_argument(field, format!("must be a positive number of days, got {x}")))),
        Some(x) => Ok(x),
        None => Ok(default),
    };
    Ok(Lifecycle {
        new_days: days("new_days", r.new_days, d.new_days)?,
        active_days: days("active_days", r.active_days, d.active_days)?,
        churn_days: days("churn_days", r.churn_days, d.churn_days)?,
    })
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
            rfm: p.rfm.as_ref().map(|r| proto::Rfm {
                recency: u32::from(r.recency),
                frequency: u32::from(r.frequency),
                monetary: u32::from(r.monetary),
                label: r.label.to_string(),
            }),
            churn_risk: p.churn.as_ref().map(|c| c.0),
            churn_reason: p.churn.as_ref().map(|c| c.1.clone()).unwrap_or_default(),
            top_categories: named(&p.top_categories),
            top_brands: named(&p.top_brands),
            view_to_cart: p.view_to_cart(),
            cart_to_purchase: p.cart_to_purchase(),
        }
    }
}

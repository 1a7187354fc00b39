//! `Rules` and `Shortfall`: the wire shape of business rules, shared by `Recommend` and
//! `SimilarItems`. Checking is the engine's (`Rules::validate`).

use affinity_core::data::GeoPoint;
use affinity_core::rules::{Near, NewArrivals, Rules, Shortfall, DEFAULT_NEAR_BOOST, DEFAULT_NEW_ARRIVAL_BOOST};

use crate::proto;

/// The engine's rules from the wire's (absent: none).
pub(crate) fn rules(r: Option<proto::Rules>) -> Rules {
    let Some(r) = r else { return Rules::default() };
    // proto3: 0 is "unset" for the caps.
    let cap = |n: u32| (n > 0).then_some(n as usize);
    Rules {
        include_categories: r.include_categories,
        exclude_categories: r.exclude_categories,
        include_brands: r.include_brands,
        exclude_brands: r.exclude_brands,
        min_price: r.min_price,
        max_price: r.max_price,
        include_unavailable: r.include_unavailable,
        exclude_interacted: r.exclude_interacted,
        promoted: r.promoted.into_iter().map(|p| (p.item_id, p.boost)).collect(),
        max_per_category: cap(r.max_per_category),
        max_per_brand: cap(r.max_per_brand),
        mmr_lambda: r.mmr_lambda,
        near: r.near.map(|n| Near {
            point: GeoPoint { lat: n.latitude, lon: n.longitude },
            radius_km: n.radius_km,
            within_only: n.within_only,
            boost: n.boost.unwrap_or(DEFAULT_NEAR_BOOST),
        }),
        new_arrivals: r.new_arrival_days.map(|days| NewArrivals {
            days,
            boost: r.new_arrival_boost.unwrap_or(DEFAULT_NEW_ARRIVAL_BOOST),
        }),
    }
}

/// The wire value of a shortfall.
pub(crate) fn shortfall(s: Option<Shortfall>) -> i32 {
    let wire = match s {
        None => proto::Shortfall::None,
        Some(Shortfall::Filters) => proto::Shortfall::Filters,
        Some(Shortfall::Diversity) => proto::Shortfall::Diversity,
    };
    wire as i32
}

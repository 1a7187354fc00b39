//! Repeat consumption on a store with planted rebuy cycles: on its leave-one-out split
//! (each user's last purchase held out), the trained seen-items policy finds the
//! rebuys that excluding seen items never can, and costs the other targets (< 1%
//! relative HR@10) nothing that matters.

use std::collections::HashSet;

use affinity_core::data::{Dataset, Event, TimeKind};
use affinity_core::model::Model;
use affinity_core::params::TrainParams;
use affinity_core::recommend::{RecommendQuery, ReasonKind};
use affinity_core::repeat::SeenPolicy;
use affinity_core::train::{train, NoProgress};
use affinity_lab::autotune::{autotune, Budget};
use affinity_lab::synth::{rebuy_store, RebuySize};

/// HR@10 over `targets` (user, held-out item) under `policy`.
fn hit_rate(m: &Model, targets: &[(String, String)], policy: SeenPolicy) -> f64 {
    let s = m.default_settings();
    let hits = targets
        .iter()
        .filter(|(user, item)| {
            let q = RecommendQuery {
                seen: policy,
                ..RecommendQuery::for_user(user.as_str(), 10)
            };
            m.recommend(&q, &s).unwrap().items.iter().any(|x| m.item_id(x.item) == item)
        })
        .count();
    hits as f64 / targets.len().max(1) as f64
}

#[test]
fn the_trained_policy_finds_rebuys_and_keeps_new_item_quality() {
    let data = rebuy_store(RebuySize::default(), 7);
    // Leave-one-out: every user's last purchase is the target.
    let mut last: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (n, e) in data.events.iter().enumerate() {
        last.insert(&e.user_id, n);
    }
    let held: HashSet<usize> = last.values().copied().collect();
    let fit: Vec<Event> = data.events.iter().enumerate().filter(|(n, _)| !held.contains(n)).map(|(_, e)| e.clone()).collect();
    let had: HashSet<(&str, &str)> = fit.iter().map(|e| (e.user_id.as_str(), e.item_id.as_str())).collect();
    let (mut repeat, mut fresh) = (Vec::new(), Vec::new());
    for &n in &held {
        let e = &data.events[n];
        let t = (e.user_id.clone(), e.item_id.clone());
        if had.contains(&(e.user_id.as_str(), e.item_id.as_str())) {
            repeat.push(t);
        } else {
            fresh.push(t);
        }
    }
    assert!(repeat.len() > 150 && fresh.len() > 500, "{} repeat, {} new targets", repeat.len(), fresh.len());

    // What `affinity-trainer train` does: tune on a slice of the input, fit on all of it.
    let fit_data = Dataset { events: fit, ..data };
    let budget = Budget { trials: 2, ..Budget::default() };
    let (params, tuning) = autotune(&fit_data, TimeKind::Order, &TrainParams::default(), &budget, &NoProgress);
    assert!(tuning.novelty.is_some(), "the search measures the hit curve of new items: {tuning:?}");
    let mut m = train(&fit_data, TimeKind::Order, &params, &NoProgress);
    m.record_tuning(tuning);
    assert!(m.repeat().is_active(), "the store has returns to learn");

    let trained_repeat = hit_rate(&m, &repeat, SeenPolicy::Trained);
    let excluded_repeat = hit_rate(&m, &repeat, SeenPolicy::Exclude);
    let trained_fresh = hit_rate(&m, &fresh, SeenPolicy::Trained);
    let excluded_fresh = hit_rate(&m, &fresh, SeenPolicy::Exclude);
    eprintln!(
        "repeat targets: trained {trained_repeat:.4} vs exclude-seen {excluded_repeat:.4}; \
         new targets: trained {trained_fresh:.4} vs exclude-seen {excluded_fresh:.4}"
    );
    assert_eq!(excluded_repeat, 0.0, "excluding seen items can never return a rebuy");
    assert!(trained_repeat >= 0.5 && trained_repeat >= 2.0 * excluded_repeat, "{trained_repeat}");
    assert!(excluded_fresh > 0.05, "new items are learnable here: {excluded_fresh}");
    assert!(trained_fresh >= excluded_fresh * 0.99, "new targets lost {trained_fresh} vs {excluded_fresh}");

    // Durables (a category nobody rebuys) never come back; "buy it again" lists only
    // what the user had.
    let durable: HashSet<&str> = m.items().iter().filter(|i| i.category.starts_with("durable")).map(|i| i.item_id.as_str()).collect();
    let s = m.default_settings();
    for (user, _) in repeat.iter().chain(&fresh).take(300) {
        let u = m.user_index(user).unwrap();
        let history: HashSet<&str> = m.history(u).seen().map(|(i, _)| m.item_id(i)).collect();
        let r = m.recommend(&RecommendQuery::for_user(user.as_str(), 20), &s).unwrap();
        for x in &r.items {
            let id = m.item_id(x.item);
            assert!(!(durable.contains(id) && history.contains(id)), "{user} got durable {id} again");
            assert_eq!(x.reason == ReasonKind::Repeat, history.contains(id), "{user}: {id}");
        }
        let again = RecommendQuery {
            seen: SeenPolicy::BuyAgain,
            ..RecommendQuery::for_user(user.as_str(), 50)
        };
        let r = m.recommend(&again, &s).unwrap();
        assert_eq!(r.items.len(), history.len().min(50));
        assert!(r.items.iter().all(|x| history.contains(m.item_id(x.item))));
    }
}

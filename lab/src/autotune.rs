//! Self-tuning for `train`: carve a validation slice out of the training input, search
//! the parameters that matter on it within a budget, and hand back the best.
//!
//! Nobody should need a parameter file to get the quality the benchmarks report, and the
//! data a storefront sends is not the data the defaults were chosen on. So `train`
//! (unless told `--no-tune`) holds out a fifth of each user's distinct items: where events
//! have an order, the user's latest item plus a random draw from the others (the job is
//! the user's next items, but a slice of only the latest rewards recency alone, which on
//! data like MovieLens does not carry over to the rest of a user's taste); where events
//! have no order, a random fifth. With mixed event kinds the target is
//! drawn from purchases when there are any (what a shop wants more of), else from every
//! kind. A log of more than `Budget::max_events` interactions is searched on every event of
//! a seeded sample of its users (the final fit uses all of them), so the search costs
//! about the same on ten million events as on one and a half million. Candidates are
//! fitted on the rest and ranked on the slice through the serving code path, each fitted
//! candidate also re-scored with every neighbour blend of
//! [`BLEND_SWEEP`](crate::tune::BLEND_SWEEP) and, where the data has a social graph,
//! every social weight of [`SOCIAL_SWEEP`](crate::tune::SOCIAL_SWEEP), where it has
//! communities every community weight of
//! [`COMMUNITY_SWEEP`](crate::tune::COMMUNITY_SWEEP) (serving settings, no refit). The search
//! is seeded, so the same input and seed give the same parameters as long as the
//! wall-clock cap is not what stops it (the report says which stopped it). The chosen
//! candidate's recall at 1…50 also gives the hit curve of new items by rank, which the
//! trained seen-items policy needs to weigh returns against new items.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use affinity_core::data::{Dataset, Event, EventKind, TimeKind};
use affinity_core::params::{TrainParams, TuningReport};
use affinity_core::repeat::NoveltyCurve;
use affinity_core::train::{train_for, NoProgress, Progress};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::eval;
use crate::rank::AffinityBlends;
use crate::split::Target;
use crate::tune::{affinity_candidates, blend_variants, given_blend, with_blend, Signals};

/// Users need at least this many distinct items to give some to validation.
const MIN_ITEMS: usize = 3;

/// ALS sweeps per candidate fit during the search (the final fit makes the full count).
const SEARCH_ITERATIONS: usize = 8;

/// Cut-offs each candidate is scored at: 10 chooses, all of them fit the hit curve of
/// new items by rank ([`NoveltyCurve`]) that places returning items among new ones.
const CURVE_KS: &[usize] = &[1, 5, 10, 20, 50];
const AT_10: usize = 2;

/// Relative validation NDCG@10 gain a candidate needs over the given parameters to be
/// chosen instead of them.
const MIN_GAIN: f64 = 0.01;

/// How much searching `train` may do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// Candidate fits, the defaults included; 0 or 1 means no search.
    pub trials: usize,
    /// Wall-clock cap in seconds: no new candidate starts after it.
    pub max_seconds: f64,
    /// Validation users scored per candidate at most (a seeded sample beyond).
    pub max_valid_users: usize,
    /// Interaction events the search fits candidates on at most: a larger log is
    /// searched on every event of a seeded sample of its users, so the search's cost
    /// stops growing with the log (the final fit still uses every event).
    pub max_events: usize,
    /// Seeds the validation carve, the user sample and the candidates.
    pub seed: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            trials: 12,
            max_seconds: 20.0,
            max_valid_users: 2_000,
            max_events: 1_500_000,
            seed: 42,
        }
    }
}

/// The training part and the scoring target carved from one event log.
#[derive(Debug, Clone)]
pub struct Carve {
    pub fit: Vec<Event>,
    pub target: Target,
    /// How the slice was chosen, in words.
    pub how: String,
    pub target_kinds: Vec<EventKind>,
}

/// Holds out the last (ordered data) or a random (unordered) fifth of every user's
/// distinct items with at least [`MIN_ITEMS`]; `None` when nothing can be held out.
pub fn carve(events: &[Event], time_kind: TimeKind, seed: u64) -> Option<Carve> {
    // Per user: distinct items in order of their last occurrence (file order breaks ties).
    let mut last: HashMap<(&str, &str), (i64, usize)> = HashMap::new();
    for (pos, e) in events.iter().enumerate().filter(|(_, e)| e.kind.is_interaction()) {
        let t = if time_kind == TimeKind::None { 0 } else { e.timestamp.unwrap_or(i64::MIN) };
        let slot = last.entry((&e.user_id, &e.item_id)).or_insert((t, pos));
        *slot = (*slot).max((t, pos));
    }
    // Per user: (time, file position) of each item's last interaction, and the item.
    type Last<'a> = Vec<((i64, usize), &'a str)>;
    let mut per_user: BTreeMap<&str, Last<'_>> = BTreeMap::new();
    for ((user, item), when) in last {
        per_user.entry(user).or_default().push((when, item));
    }
    let ordered = time_kind != TimeKind::None;
    let mut held: HashSet<(&str, &str)> = HashSet::new();
    for (user, mut items) in per_user {
        if items.len() < MIN_ITEMS {
            continue;
        }
        let n = ((items.len() as f64 * 0.2).round() as usize).max(1);
        items.sort_unstable();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ affinity_core::ids::stable_hash(user.as_bytes()));
        // With an order, the latest item always goes to validation and the rest of the
        // fifth is drawn at random from the others: the slice rewards predicting what
        // comes next without rewarding only that.
        let latest = if ordered { items.pop() } else { None };
        items.shuffle(&mut rng);
        for &(_, item) in latest.iter().chain(&items[..n - usize::from(latest.is_some())]) {
            held.insert((user, item));
        }
    }
    if held.is_empty() {
        return None;
    }
    let present: Vec<EventKind> = EventKind::ALL.into_iter().filter(|&k| k.is_interaction() && events.iter().any(|e| e.kind == k)).collect();
    let target_kinds = if present.contains(&EventKind::Purchase) { vec![EventKind::Purchase] } else { present };
    let mut fit = Vec::with_capacity(events.len());
    let mut relevant: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in events {
        if !held.contains(&(e.user_id.as_str(), e.item_id.as_str())) {
            fit.push(e.clone());
        } else if target_kinds.contains(&e.kind) {
            let items = relevant.entry(e.user_id.clone()).or_default();
            if !items.contains(&e.item_id) {
                items.push(e.item_id.clone());
            }
        }
    }
    if relevant.is_empty() || fit.is_empty() {
        return None;
    }
    let how = if ordered {
        "a fifth of each user's items: the latest by time and the rest at random"
    } else {
        "a random fifth of each user's items"
    };
    Some(Carve {
        fit,
        target: Target {
            relevant,
            keep_relevant_seen: false,
        },
        how: how.to_string(),
        target_kinds,
    })
}

/// `events` when they hold at most `max` interactions, else every event of a seeded
/// sample of users holding about `max`, with the sample described in words.
fn sample_log(events: &[Event], max: usize, seed: u64) -> (Cow<'_, [Event]>, Option<String>) {
    let n = events.iter().filter(|e| e.kind.is_interaction()).count();
    if n <= max.max(1) {
        return (Cow::Borrowed(events), None);
    }
    let share = max.max(1) as f64 / n as f64;
    let cut = (share * u64::MAX as f64) as u64;
    let kept: Vec<Event> = events
        .iter()
        .filter(|e| (affinity_core::ids::stable_hash(e.user_id.as_bytes()) ^ seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) <= cut)
        .cloned()
        .collect();
    let how = format!("searched on the events of a seeded {:.1}% of users ({} of {} events)", share * 100.0, kept.len(), events.len());
    (Cow::Owned(kept), Some(how))
}

/// Keeps at most `n` users of `target`, a seeded sample.
fn sample_users(target: Target, n: usize, seed: u64) -> Target {
    if target.relevant.len() <= n {
        return target;
    }
    let mut users: Vec<String> = target.relevant.keys().cloned().collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    users.shuffle(&mut rng);
    users.truncate(n);
    let keep: HashSet<String> = users.into_iter().collect();
    Target {
        relevant: target.relevant.into_iter().filter(|(u, _)| keep.contains(u)).collect(),
        keep_relevant_seen: target.keep_relevant_seen,
    }
}

/// Searches parameters for `data` starting from `base`; returns the best found (or
/// `base`, with the reason, when no search is possible) and what the search did.
pub fn autotune(
    data: &Dataset,
    time_kind: TimeKind,
    base: &TrainParams,
    budget: &Budget,
    progress: &dyn Progress,
) -> (TrainParams, TuningReport) {
    let skip = |why: &str| {
        (
            *base,
            TuningReport {
                skipped: Some(why.to_string()),
                ..TuningReport::default()
            },
        )
    };
    if budget.trials == 0 {
        return skip("the tuning budget is 0 trials");
    }
    let (events, sampled) = sample_log(&data.events, budget.max_events, budget.seed);
    let Some(mut carved) = carve(&events, time_kind, budget.seed) else {
        return skip("too little data to hold out a validation slice (users need 3 or more items)");
    };
    drop(events);
    if let Some(sampled) = sampled {
        carved.how = format!("{}; {sampled}", carved.how);
    }
    let started = Instant::now();
    let target = sample_users(carved.target, budget.max_valid_users.max(1), budget.seed);
    let fit_data = Dataset {
        events: carved.fit,
        items: data.items.clone(),
        users: data.users.clone(),
        social: data.social.clone(),
        memberships: data.memberships.clone(),
    };
    let candidates = affinity_candidates(base, time_kind, budget.trials, budget.seed);
    // Only the scored users need vectors in the candidate models.
    let mut scored_users: HashSet<String> = target.relevant.keys().cloned().collect();
    // ... and their contacts, whose taste weighs their social votes.
    let contacts: Vec<String> = data
        .social
        .iter()
        .filter_map(|e| match (scored_users.contains(&e.user_id), scored_users.contains(&e.other_id)) {
            (true, false) => Some(e.other_id.clone()),
            (false, true) => Some(e.user_id.clone()),
            _ => None,
        })
        .collect();
    scored_users.extend(contacts);
    let mut report = TuningReport {
        validation: carved.how,
        target_events: carved.target_kinds.iter().map(|k| k.to_string()).collect(),
        valid_users: target.relevant.len(),
        stopped_by: "budget".into(),
        ..TuningReport::default()
    };
    let mut best: Option<(f64, f64, TrainParams, Option<NoveltyCurve>)> = None;
    let mut given: (f64, Option<NoveltyCurve>) = (0.0, None);
    progress.begin("tuning on a held-out slice", candidates.len() as u64);
    for (n, mut p) in candidates.into_iter().enumerate() {
        if n > 0 && started.elapsed().as_secs_f64() > budget.max_seconds {
            report.stopped_by = "time".into();
            break;
        }
        // A sparse-EASE candidate tries its neighbour weighting on the best embeddings
        // found so far, so the comparison is about the neighbours alone.
        if let (true, Some((_, _, b, _))) = (p.sequence.ease_lambda > 0.0, &best) {
            p.als = b.als;
            p.weights = b.weights;
        }
        // Candidates are compared after fewer ALS sweeps than the final fit makes: the
        // ranking of candidates settles early, and the search costs less.
        let mut quick = p;
        quick.als.iterations = p.als.iterations.min(SEARCH_ITERATIONS);
        let model = train_for(&fit_data, time_kind, &quick, &NoProgress, Some(&scored_users));
        report.fits += 1;
        let blends = blend_variants(&p, Signals::of(data));
        let ranker = AffinityBlends {
            model: &model,
            // Candidates have no indexes (see `train_for`) and are compared exactly.
            settings: model.default_settings().exact(),
            blends: blends.clone(),
        };
        for (blend, metrics) in blends.into_iter().zip(eval::score_variants(&ranker, &model, &target, CURVE_KS)) {
            let m = &metrics[AT_10];
            let curve = NoveltyCurve::fit(&metrics.iter().map(|m| (m.k, m.recall_full)).collect::<Vec<_>>());
            report.scored += 1;
            tracing::info!(
                fit = n,
                factors = p.als.factors,
                lambda = p.als.regularization,
                nu = p.als.reg_exponent,
                alpha = p.als.alpha,
                ease = p.sequence.ease_lambda,
                blend = blend.sequence,
                social = blend.social,
                community = blend.community,
                ndcg10 = m.ndcg,
                "tuning candidate scored"
            );
            if n == 0 && blend == given_blend(&p) {
                report.given_ndcg10 = m.ndcg;
                given = (m.recall, curve);
            }
            if best.as_ref().is_none_or(|(b, _, _, _)| m.ndcg > *b) {
                best = Some((m.ndcg, m.recall, with_blend(p, blend), curve));
            }
        }
        progress.advance();
    }
    progress.finish();
    report.seconds = started.elapsed().as_secs_f64();
    let Some((ndcg, recall, params, curve)) = best else {
        return skip("no candidate could be fitted");
    };
    // The given parameters are the prior: a candidate must beat them by a clear margin,
    // not by the noise of one validation slice.
    if ndcg <= report.given_ndcg10 * (1.0 + MIN_GAIN) {
        report.kept_given = true;
        report.best_ndcg10 = report.given_ndcg10;
        (report.best_recall10, report.novelty) = given;
        return (*base, report);
    }
    report.best_ndcg10 = ndcg;
    report.best_recall10 = recall;
    report.novelty = curve;
    (params, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(u: &str, i: &str, kind: EventKind, t: Option<i64>) -> Event {
        Event::new(u, i, kind, t)
    }

    #[test]
    fn ordered_data_holds_out_each_users_latest_item_and_a_random_rest() {
        let mut events = Vec::new();
        for u in 0..4 {
            for i in 0..10 {
                events.push(ev(&format!("u{u}"), &format!("i{i}"), EventKind::View, Some(100 + i)));
            }
        }
        events.push(ev("tiny", "i1", EventKind::View, Some(1)));
        let c = carve(&events, TimeKind::Order, 1).unwrap();
        assert_eq!(c.target.relevant.len(), 4, "the user with one item gives nothing");
        for items in c.target.relevant.values() {
            assert_eq!(items.len(), 2, "a fifth of ten");
            assert!(items.contains(&"i9".to_string()), "the latest item is always held out: {items:?}");
        }
        assert_eq!(c.fit.len(), 4 * 8 + 1);
        assert!(c.how.contains("latest by time"));
    }

    #[test]
    fn purchases_are_the_target_when_there_are_any() {
        let mut events = Vec::new();
        for u in 0..5 {
            for i in 0..10 {
                let kind = if i % 2 == 0 { EventKind::Purchase } else { EventKind::View };
                events.push(ev(&format!("u{u}"), &format!("i{i}"), kind, None));
            }
        }
        let c = carve(&events, TimeKind::None, 3).unwrap();
        assert_eq!(c.target_kinds, vec![EventKind::Purchase]);
        for items in c.target.relevant.values() {
            assert!(items.iter().all(|i| i.trim_start_matches('i').parse::<u32>().unwrap() % 2 == 0), "{items:?}");
        }
        assert_eq!(c.fit.len() + 5 * 2, events.len(), "two of ten items per user held out");
        assert_eq!(carve(&events, TimeKind::None, 3).unwrap().fit, c.fit, "seeded");
    }

    #[test]
    fn a_large_log_is_searched_on_whole_users_of_a_seeded_sample() {
        let events: Vec<Event> = (0..200).flat_map(|u| (0..50).map(move |i| ev(&format!("u{u}"), &format!("i{i}"), EventKind::View, Some(i)))).collect();
        let (all, how) = sample_log(&events, events.len(), 7);
        assert!(matches!(all, Cow::Borrowed(_)) && how.is_none(), "a log within the budget is used as it is");
        let (kept, how) = sample_log(&events, 2_000, 7);
        assert!((1_000..3_000).contains(&kept.len()), "about a fifth of 10,000 events: {}", kept.len());
        let mut per_user: HashMap<&str, usize> = HashMap::new();
        for e in kept.iter() {
            *per_user.entry(e.user_id.as_str()).or_default() += 1;
        }
        assert!(per_user.values().all(|&n| n == 50), "every kept user keeps all their events");
        assert!(how.unwrap().contains("20.0% of users"));
        assert_eq!(sample_log(&events, 2_000, 7).0, kept, "seeded");
        assert_ne!(sample_log(&events, 2_000, 8).0, kept, "another seed, another sample");
    }

    #[test]
    fn no_budget_or_too_little_data_keeps_the_parameters_and_says_why() {
        let base = TrainParams::default();
        let data = Dataset {
            events: vec![ev("a", "x", EventKind::View, None), ev("a", "y", EventKind::View, None)],
            ..Dataset::default()
        };
        let none = Budget { trials: 0, ..Budget::default() };
        let (p, r) = autotune(&data, TimeKind::None, &base, &none, &NoProgress);
        assert_eq!(p, base);
        assert!(r.skipped.unwrap().contains("budget"));
        let (p, r) = autotune(&data, TimeKind::None, &base, &Budget::default(), &NoProgress);
        assert_eq!(p, base);
        assert!(r.skipped.unwrap().contains("too little data"));
    }
}

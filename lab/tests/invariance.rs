//! Weight-scale invariance on MovieLens-100K: the same interactions under another label,
//! or with every kind weight multiplied by ten, rank the same (Recall@10 within 1%
//! relative), because `train` normalises cell weights by their median.

use std::path::Path;

use affinity_core::data::{Dataset, Event, EventKind, TimeKind};
use affinity_core::params::TrainParams;
use affinity_core::train::{train, NoProgress};
use affinity_lab::eval;
use affinity_lab::import::{import, Source};
use affinity_lab::rank::Affinity;
use affinity_lab::split::{self, Protocol};

fn recall_at_10(fit: Vec<Event>, test: &[Event], params: &TrainParams) -> f64 {
    let target = split::target(Protocol::Random, &fit, test);
    let data = Dataset {
        events: fit,
        ..Dataset::default()
    };
    let m = train(&data, TimeKind::Unix, params, &NoProgress);
    eval::score(&Affinity::new(&m), &m, &target, &[10])[0].recall
}

#[test]
fn relabelling_or_rescaling_events_does_not_change_quality() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets/movielens-100k");
    assert!(dir.is_dir(), "data set missing: {} (tests need ../shared/datasets)", dir.display());
    let data = import(Source::MovieLens, &dir).expect("import MovieLens");
    let s = split::split(data.events, Protocol::Random, 42, TimeKind::Unix).expect("split");
    let fit: Vec<Event> = s.train.iter().chain(&s.valid).cloned().collect();
    let relabel = |kind: EventKind| -> Vec<Event> {
        fit.iter()
            .map(|e| Event {
                kind,
                value: None,
                ..e.clone()
            })
            .collect()
    };
    let defaults = TrainParams::default();
    let mut recalls = Vec::new();
    for kind in [EventKind::View, EventKind::Purchase, EventKind::Rating] {
        recalls.push((format!("{kind}"), recall_at_10(relabel(kind), &s.test, &defaults)));
    }
    // Kinds as imported (ratings), every kind weight ×10.
    let mut tenfold = defaults;
    let w = &mut tenfold.weights.event_weights;
    for x in [&mut w.view, &mut w.click, &mut w.cart, &mut w.purchase, &mut w.like, &mut w.share, &mut w.rating] {
        *x *= 10.0;
    }
    recalls.push(("as imported".into(), recall_at_10(fit.clone(), &s.test, &defaults)));
    recalls.push(("as imported, weights ×10".into(), recall_at_10(fit.clone(), &s.test, &tenfold)));
    let base = recalls[0].1;
    assert!(base > 0.35, "Recall@10 {base} is implausibly low");
    for (label, r) in &recalls {
        assert!((r - base).abs() <= 0.01 * base, "{label}: Recall@10 {r} vs {base} (views): {recalls:?}");
    }
}

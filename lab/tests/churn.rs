//! Churn risk on MovieLens-100K, split in time: profiles at a cutoff 30 days before the
//! data ends, each user labelled churned when they have no event in the 30 days after.
//! Reports the AUC of the model's churn risk next to the plain days-since-last-event
//! baseline (every user with an event before the cutoff).

use std::collections::HashSet;
use std::path::Path;

use affinity_core::activity::{churn_risk, ActivityTable};
use affinity_core::data::Event;
use affinity_core::ids::IdMap;
use affinity_lab::import::{import, Source};

/// Area under the ROC curve of `scores` for `labels` (ties count half).
fn auc(scores: &[f64], labels: &[bool]) -> f64 {
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    for (&s, &l) in scores.iter().zip(labels) {
        if l { pos.push(s) } else { neg.push(s) }
    }
    let mut wins = 0.0;
    for p in &pos {
        for n in &neg {
            wins += if p > n { 1.0 } else if p == n { 0.5 } else { 0.0 };
        }
    }
    wins / (pos.len() * neg.len()).max(1) as f64
}

#[test]
fn churn_risk_ranks_who_leaves_at_least_as_well_as_days_since_last_event() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets/movielens-100k");
    assert!(dir.is_dir(), "data set missing: {} (tests need ../shared/datasets)", dir.display());
    let data = import(Source::MovieLens, &dir).expect("import MovieLens");
    let end = data.events.iter().filter_map(|e| e.timestamp).max().unwrap();
    let cutoff = end - 30 * 86_400;
    let before: Vec<Event> = data.events.iter().filter(|e| e.timestamp.is_some_and(|t| t <= cutoff)).cloned().collect();
    let after: HashSet<&str> = data.events.iter().filter(|e| e.timestamp.is_some_and(|t| t > cutoff)).map(|e| e.user_id.as_str()).collect();
    let mut ids: Vec<String> = before.iter().map(|e| e.user_id.clone()).collect();
    ids.sort();
    ids.dedup();
    let users = IdMap::from_ids(ids.clone());
    let table = ActivityTable::build(&before, &users, true);
    let (mut risk, mut silence, mut churned) = (Vec::new(), Vec::new(), Vec::new());
    for (u, id) in ids.iter().enumerate() {
        let a = &table.users[u];
        risk.push(f64::from(churn_risk(a, cutoff).unwrap().0));
        silence.push((cutoff - a.last.unwrap()) as f64);
        churned.push(!after.contains(id.as_str()));
    }
    let share = churned.iter().filter(|&&c| c).count() as f64 / churned.len() as f64;
    let (model, baseline) = (auc(&risk, &churned), auc(&silence, &churned));
    eprintln!("{} users at the cutoff, {:.1}% churned in the next 30 days · AUC churn risk {model:.4} · days since last event {baseline:.4}", ids.len(), share * 100.0);
    assert!(model > 0.5 && baseline > 0.5);
    assert!(model > baseline, "churn risk {model} against the baseline {baseline}");
}

//! The training pipeline: a [`Dataset`] in, a complete [`Model`] out.
//!
//! Steps: weight events into the user–item matrix, learn collaborative item factors with
//! iALS, fold every user in, embed items by content, learn item neighbours, count
//! popularity and returns to items already had, and build the HNSW indexes when the catalogue is too large to score
//! exactly. The trainer binary and the evaluator both call [`train`], and the server's
//! demo mode does too, so every path uses one implementation.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use ndarray::Array2;
use rayon::prelude::*;

use crate::als::CollabModel;
use crate::content;
use crate::data::{Dataset, Event, Item, TimeKind, User};
use crate::ids::{IdMap, ItemIdx};
use crate::interactions::Interactions;
use crate::model::format::{new_version_name, FORMAT_VERSION};
use crate::model::{Counts, Manifest, Model, ModelParts, UserHistory};
use crate::params::TrainParams;
use crate::repeat::{RepeatInput, RepeatModel};
use crate::settings::ServingSettings;

/// Receives progress from long training steps (the trainer shows progress bars).
pub trait Progress: Sync {
    /// A new step begins; `total` is the number of units it will report, if known.
    fn begin(&self, step: &str, total: u64);
    /// One more unit of the current step is done.
    fn advance(&self);
    /// The current step is finished.
    fn finish(&self);
}

/// Ignores progress.
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&self, _: &str, _: u64) {}
    fn advance(&self) {}
    fn finish(&self) {}
}

/// The catalogue in model order: catalogue rows first (first occurrence wins), then items
/// seen only in events, as bare entries. An item whose row gives no listing time gets
/// the time of its first event (on data with unix times), so "new arrival" means the
/// same thing with or without a `listed_at` column.
fn catalogue(dataset: &Dataset, item_ids: &IdMap, time_kind: TimeKind) -> Vec<Item> {
    let mut by_id: HashMap<&str, &Item> = HashMap::with_capacity(dataset.items.len());
    for item in &dataset.items {
        by_id.entry(item.item_id.as_str()).or_insert(item);
    }
    let mut first_seen: Vec<Option<i64>> = vec![None; item_ids.len()];
    if time_kind == TimeKind::Unix {
        for e in &dataset.events {
            if let (Some(i), Some(t)) = (item_ids.get(&e.item_id), e.timestamp) {
                let f = &mut first_seen[i as usize];
                *f = Some(f.map_or(t, |f| f.min(t)));
            }
        }
    }
    item_ids
        .ids()
        .iter()
        .zip(first_seen)
        .map(|(id, first)| {
            let mut item = by_id.get(id.as_str()).map_or_else(|| Item::bare(id.clone()), |i| (*i).clone());
            item.listed_at = item.listed_at.or(first);
            item
        })
        .collect()
}

/// Trains a model on `dataset`.
pub fn train(dataset: &Dataset, time_kind: TimeKind, params: &TrainParams, progress: &dyn Progress) -> Model {
    train_for(dataset, time_kind, params, progress, None)
}

/// Trains a model whose stored user vectors are folded in only for the users in `only`
/// (every user when `None`); the others keep a zero vector and are served popular items.
/// Tuning needs vectors only for the users it scores, and folding in every user is a
/// large share of a fit on data with many users. Such a model gets no HNSW indexes:
/// score it with exact settings.
pub fn train_for(
    dataset: &Dataset,
    time_kind: TimeKind,
    params: &TrainParams,
    progress: &dyn Progress,
    only: Option<&HashSet<String>>,
) -> Model {
    let started = Instant::now();
    progress.begin("weighting events", 1);
    let item_seed = IdMap::from_ids(dataset.items.iter().map(|i| i.item_id.clone()).collect());
    // Users listed in users.csv or in the social graph are users even without events: a
    // user with friends but no history of their own is served from the friends' tastes.
    let social_ids = dataset.social.iter().flat_map(|e| [e.user_id.clone(), e.other_id.clone()]);
    let member_ids = dataset.memberships.iter().map(|m| m.user_id.clone());
    let user_seed = IdMap::from_ids(dataset.users.iter().map(|u| u.user_id.clone()).chain(social_ids).chain(member_ids).collect());
    let matrix = Interactions::build(
        &dataset.events,
        item_seed,
        user_seed,
        time_kind,
        &params.weights,
        params.recent_events,
    );
    let items = catalogue(dataset, &matrix.items, time_kind);
    progress.advance();
    progress.finish();

    progress.begin("collaborative embeddings (iALS)", 1);
    let collab = CollabModel::train(&matrix.rows, items.len(), &params.als);
    progress.advance();
    progress.finish();

    let wanted: Vec<bool> = match only {
        Some(users) => matrix.users.ids().iter().map(|u| users.contains(u)).collect(),
        None => vec![true; matrix.rows.len()],
    };
    let user_factors = fold_in(&collab, &matrix.rows, &wanted, progress);

    progress.begin("content embeddings", 1);
    let content = content::embed(&items, &params.content);
    progress.advance();
    progress.finish();

    progress.begin("item neighbours", 1);
    let neighbours = crate::neighbors::learn(&matrix.rows, &matrix.sequences, items.len(), &params.sequence);
    progress.advance();
    progress.finish();

    let popularity: Vec<f32> = matrix.item_counts().into_iter().map(|c| c as f32).collect();
    let mut attrs: HashMap<&str, &User> = HashMap::new();
    for u in &dataset.users {
        attrs.entry(u.user_id.as_str()).or_insert(u);
    }
    let user_attributes: Vec<User> = matrix
        .users
        .ids()
        .iter()
        .map(|id| {
            attrs.get(id.as_str()).map_or_else(
                || User {
                    user_id: id.clone(),
                    ..User::default()
                },
                |u| (*u).clone(),
            )
        })
        .collect();
    let histories: Vec<UserHistory> = matrix
        .rows
        .into_iter()
        .zip(matrix.recent)
        .map(|(seen, recent)| UserHistory::new(seen, recent))
        .collect();
    let counts = Counts {
        users: matrix.users.len(),
        items: items.len(),
        events: dataset.events.len(),
        items_with_events: popularity.iter().filter(|&&p| p > 0.0).count(),
        // Filled in from the assembled model, which derives which items have content.
        items_with_content: 0,
    };
    let serving = ServingSettings::from_params(params);
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        version: new_version_name(),
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        counts,
        time_kind,
        params: *params,
        serving,
        weight_scale: matrix.weight_scale,
        tuning: None,
        ef_calibration: None,
        train_seconds: 0.0,
        log_position: 0,
        files: Default::default(),
    };
    let repeat = learn_repeats(&matrix.repeats, &items, matrix.users.len());
    let mut activity = crate::activity::ActivityTable::build(&dataset.events, &matrix.users, time_kind == TimeKind::Unix);
    activity.recent = crate::trending::keep_recent(&dataset.events, &matrix.users, &matrix.items, time_kind);
    progress.begin("model (HNSW indexes if scored by ANN)", 1);
    let mut model = Model::from_parts(ModelParts {
        manifest,
        items,
        users: matrix.users,
        user_attributes,
        histories,
        popularity,
        collab,
        user_factors,
        content,
        neighbours,
        repeat,
        activity,
    });
    if !dataset.social.is_empty() {
        let (graph, report) = crate::social::SocialGraph::build(&dataset.social, model.users());
        tracing::debug!(edges = report.edges, self_loops = report.self_loops, merged = report.merged, contacts = graph.n_contacts(), "social graph built");
        model.set_social(graph);
        let firsts = first_seen(&dataset.events, &model);
        let influence = crate::influence::Influence::compute(model.social(), model.n_users(), &firsts, |i| model.item(ItemIdx(i)).category.as_str());
        model.set_influence(influence);
    }
    if !dataset.memberships.is_empty() {
        let (communities, unknown) = crate::communities::Communities::build(&dataset.memberships, model.users());
        tracing::debug!(memberships = dataset.memberships.len(), unknown, "communities built");
        model.set_communities(communities);
    }
    // A model fitted for some users only is a tuning candidate, scored exactly: building
    // its indexes would cost more than the fit.
    if only.is_none() {
        model.ensure_indexes(&serving);
    }
    progress.advance();
    progress.finish();
    if only.is_none() && model.has_indexes() {
        // The search list size that finds the exact top 10 on this catalogue.
        progress.begin("search list size (ef) from measured recall", 1);
        model.calibrate_ef();
        progress.advance();
        progress.finish();
        // Users who had so much that a search must look past it all get their best unseen
        // items listed now (see `model::shortlist`).
        progress.begin("candidate lists for users with long histories", 1);
        let listed = model.build_shortlists();
        tracing::debug!(users = listed, "candidate lists built");
        progress.advance();
        progress.finish();
    }
    let items_with_content = (0..model.n_items() as u32).filter(|&i| model.has_content(ItemIdx(i))).count();
    let manifest = model.manifest_mut();
    manifest.counts.items_with_content = items_with_content;
    manifest.train_seconds = started.elapsed().as_secs_f64();
    model
}

/// Return hazards with each item's category as its group (items without a category
/// form one group).
fn learn_repeats(input: &RepeatInput, items: &[Item], n_users: usize) -> RepeatModel {
    let mut groups: HashMap<&str, u32> = HashMap::new();
    let group: Vec<u32> = items
        .iter()
        .map(|it| {
            let next = groups.len() as u32;
            *groups.entry(it.category.as_str()).or_insert(next)
        })
        .collect();
    RepeatModel::learn(input, &group, n_users)
}

/// Folds each wanted user's history into a user vector, exactly as serving does; the
/// others stay zero.
fn fold_in(collab: &CollabModel, rows: &[Vec<(u32, f32)>], wanted: &[bool], progress: &dyn Progress) -> Array2<f32> {
    let d = collab.factors();
    progress.begin("user vectors", rows.len() as u64);
    let vectors: Vec<Option<Vec<f32>>> = rows
        .par_iter()
        .zip(wanted)
        .map(|(row, &want)| {
            let v = want.then(|| collab.user_vector(row));
            progress.advance();
            v
        })
        .collect();
    progress.finish();
    let mut out = Array2::<f32>::zeros((rows.len(), d));
    for (mut dst, v) in out.rows_mut().into_iter().zip(vectors) {
        if let Some(v) = v {
            dst.iter_mut().zip(v).for_each(|(a, b)| *a = b);
        }
    }
    out
}

/// Per user, the items they had with the earliest time each was had, sorted by item:
/// what influence counts adoptions from.
fn first_seen(events: &[Event], model: &Model) -> Vec<Vec<crate::influence::FirstSeen>> {
    let mut firsts: Vec<Vec<crate::influence::FirstSeen>> = vec![Vec::new(); model.n_users()];
    for e in events {
        if let (Some(u), Some(i)) = (model.user_index(&e.user_id), model.item_index(&e.item_id)) {
            firsts[u.0 as usize].push((i.0, e.timestamp));
        }
    }
    firsts.par_iter_mut().for_each(|f| {
        // Earliest first within an item, an event without a time after every timed one.
        f.sort_unstable_by_key(|&(i, t)| (i, t.is_none(), t));
        f.dedup_by_key(|&mut (i, _)| i);
    });
    firsts
}

//! Reading canonical input files, and the `import` and `train` subcommands.

use std::fs;
use std::path::Path;

use affinity_core::data::{self, Dataset, Event, Item, ReadOptions, ReadReport, SocialEdge, TimeKind};
use affinity_core::model::format;
use affinity_core::model::publish::Retention;
use affinity_core::params::TrainParams;
use affinity_core::train;
use affinity_lab::autotune::{autotune, Budget};
use affinity_lab::import::{self, Source};
use anyhow::{bail, Context, Result};

use crate::cli::{ImportArgs, InputArgs, SourceArg, SplitArgs, TimeKindArg, TrainArgs};
use crate::progress::Bars;

pub fn import(args: ImportArgs) -> Result<()> {
    let source = match args.source {
        SourceArg::Movielens => Source::MovieLens,
        SourceArg::Lastfm => Source::LastFm,
        SourceArg::Filmtrust => Source::FilmTrust,
        SourceArg::Sequence => Source::Sequence,
    };
    let dataset = import::import(source, &args.input)?;
    fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    data::write_events(&args.out.join("events.csv"), &dataset.events)?;
    let mut written = vec![format!("events.csv ({} events)", dataset.events.len())];
    if !dataset.items.is_empty() {
        data::write_items(&args.out.join("items.csv"), &dataset.items)?;
        written.push(format!("items.csv ({} items)", dataset.items.len()));
    }
    if !dataset.users.is_empty() {
        data::write_users(&args.out.join("users.csv"), &dataset.users)?;
        written.push(format!("users.csv ({} users)", dataset.users.len()));
    }
    if !dataset.social.is_empty() {
        data::write_social(&args.out.join("social.csv"), &dataset.social)?;
        written.push(format!("social.csv ({} edges)", dataset.social.len()));
    }
    println!("wrote to {}: {}", args.out.display(), written.join(", "));
    Ok(())
}

/// Reads `social.csv` (the social graph's edges).
pub fn load_social(path: &Path, skip_invalid: bool) -> Result<Vec<data::SocialEdge>> {
    Ok(report(path, data::read_social(path, ReadOptions { skip_invalid })?))
}

/// Reads `communities.csv` (who belongs to which community).
pub fn load_memberships(path: &Path, skip_invalid: bool) -> Result<Vec<data::Membership>> {
    Ok(report(path, data::read_memberships(path, ReadOptions { skip_invalid })?))
}

/// Unwraps a read report, telling the user about skipped rows.
fn report<T>(path: &Path, r: ReadReport<T>) -> Vec<T> {
    if r.skipped > 0 {
        eprintln!(
            "warning: skipped {} invalid row(s) ({} line(s)) in {} (first: {})",
            r.skipped,
            r.skipped_lines,
            path.display(),
            r.first_error.unwrap_or_default()
        );
    }
    r.rows
}

/// Loads the parameters file, or the defaults.
pub fn load_params(path: Option<&Path>) -> Result<TrainParams> {
    match path {
        None => Ok(TrainParams::default()),
        Some(p) => {
            let text = fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
            let given: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}: invalid parameters", p.display()))?;
            // A misspelt key would otherwise be ignored and its default used in silence.
            let known = serde_json::to_value(TrainParams::default()).context("cannot describe the parameters")?;
            if let Some(key) = unknown_key(&given, &known, "") {
                bail!("{}: unknown parameter `{key}`", p.display());
            }
            let params: TrainParams = serde_json::from_value(given).with_context(|| format!("{}: invalid parameters", p.display()))?;
            params.validate().map_err(|why| anyhow::anyhow!("{}: {why}", p.display()))?;
            Ok(params)
        }
    }
}

/// The first key of `given` (an object, recursively) that `known` does not have, as a
/// dotted path. Values `known` holds as something other than an object (maps keyed by
/// the user, such as event weights) are not looked into.
fn unknown_key(given: &serde_json::Value, known: &serde_json::Value, prefix: &str) -> Option<String> {
    let (serde_json::Value::Object(given), serde_json::Value::Object(known)) = (given, known) else { return None };
    given.iter().find_map(|(k, v)| {
        let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match known.get(k) {
            None => Some(path),
            Some(kv) if kv.is_object() && !is_open_map(&path) => unknown_key(v, kv, &path),
            Some(_) => None,
        }
    })
}

/// Parameter maps whose keys are the user's to choose.
fn is_open_map(path: &str) -> bool {
    matches!(path, "weights.event_weights")
}

/// Reads and checks an events file.
pub fn load_events(path: &Path, skip_invalid: bool) -> Result<Vec<Event>> {
    let events = report(path, data::read_events(path, ReadOptions { skip_invalid })?);
    if events.is_empty() {
        bail!("{}: no events", path.display());
    }
    Ok(events)
}

/// Reads an optional items file.
pub fn load_items(path: Option<&Path>, skip_invalid: bool) -> Result<Vec<Item>> {
    let Some(p) = path else { return Ok(Vec::new()) };
    let items = report(p, data::read_items(p, ReadOptions { skip_invalid })?);
    let mut ids = std::collections::HashSet::new();
    let repeated = items.iter().filter(|i| !ids.insert(i.item_id.as_str())).count();
    if repeated > 0 {
        eprintln!("{}: {repeated} row(s) repeat an item id listed before; the first row of each item is used", p.display());
    }
    Ok(items)
}

/// Refuses unix times more than a day after `now`: a placeholder such as 9999999999
/// would be every other event's "now" for time decay and windows, weighing them all to
/// nothing.
fn check_not_ahead(events: &[Event], now: i64) -> Result<()> {
    let ahead: Vec<&Event> = events.iter().filter(|e| e.timestamp.is_some_and(|t| t > now + data::MAX_FUTURE_SECONDS)).collect();
    if let Some(e) = ahead.first() {
        bail!(
            "{} event(s) are stamped more than a day after now ({now}), e.g. user {}, item {} at {}: fix or drop them (placeholder dates?)",
            ahead.len(),
            e.user_id,
            e.item_id,
            e.timestamp.unwrap_or_default()
        );
    }
    Ok(())
}

/// What the timestamps of `events` mean, given the user's choice.
pub fn time_kind(arg: TimeKindArg, events: &[Event]) -> TimeKind {
    match (arg, TimeKind::detect(events)) {
        (TimeKindArg::Auto, k) => k,
        (_, TimeKind::None) => TimeKind::None,
        (TimeKindArg::Unix, _) => TimeKind::Unix,
        (TimeKindArg::Order, _) => TimeKind::Order,
    }
}

/// What [`load_inputs`] read.
pub struct Inputs {
    pub dataset: Dataset,
    pub time_kind: TimeKind,
    /// The last log position read (0 without a log).
    pub log_position: u64,
    /// The log's social edge and membership changes, in log order, for
    /// [`with_log_social`] and [`with_log_memberships`].
    pub social_changes: Vec<affinity_eventlog::Entry>,
    /// Users who asked to be forgotten (empty without a log).
    pub deleted: affinity_eventlog::DeletedUsers,
}

/// Reads events (from the CSV, the event log or both) and items named by `args`.
pub fn load_inputs(args: &InputArgs) -> Result<Inputs> {
    let mut events = match &args.events {
        Some(path) => load_events(path, args.read.skip_invalid)?,
        None => Vec::new(),
    };
    let mut position = 0;
    let mut catalogue = Vec::new();
    let mut social_changes = Vec::new();
    if let Some(dir) = &args.events_log {
        let records = affinity_eventlog::read_dir(dir, 1).with_context(|| format!("cannot read the event log {}", dir.display()))?;
        position = records.last().map_or(0, |r| r.seq);
        let before = events.len();
        for r in records {
            match r.entry {
                affinity_eventlog::Entry::Event(e) => events.push(e.event),
                social @ (affinity_eventlog::Entry::Social(_) | affinity_eventlog::Entry::Membership(_)) => social_changes.push(social),
                change => catalogue.push(change),
            }
        }
        eprintln!(
            "{}: {} event(s), {} catalogue change(s) and {} social edge or membership change(s) from the event log (through position {position})",
            dir.display(),
            events.len() - before,
            catalogue.len(),
            social_changes.len()
        );
    }
    let mut deleted = affinity_eventlog::DeletedUsers::default();
    if let Some(dir) = &args.events_log {
        // Users who asked to be forgotten stay forgotten, whatever the input.
        deleted = affinity_eventlog::DeletedUsers::load(dir).with_context(|| format!("cannot read the deleted-users list in {}", dir.display()))?;
        if !deleted.is_empty() {
            let before = events.len();
            events.retain(|e| !deleted.contains(&e.user_id));
            eprintln!("{}: dropped {} event(s) of deleted users", dir.display(), before - events.len());
        }
    }
    if events.is_empty() {
        bail!("no events to train on");
    }
    // Impressions are logged for item metrics and never trained on: with nothing else the
    // model would be empty, and publishing it would replace a good one.
    if !events.iter().any(|e| e.kind.is_interaction()) {
        bail!("no events to train on: all {} are impressions (items shown), which are never trained on", events.len());
    }
    let mut items = load_items(args.items.as_deref(), args.read.skip_invalid)?;
    // The log's catalogue changes (entries written while serving, availability) are
    // newer than the catalogue file.
    affinity_eventlog::apply_to_catalogue(&mut items, &catalogue);
    let kind = time_kind(args.read.time_kind, &events);
    if kind == TimeKind::Unix {
        check_not_ahead(&events, data::unix_now())?;
    }
    Ok(Inputs {
        dataset: Dataset {
            events,
            items,
            ..Dataset::default()
        },
        time_kind: kind,
        log_position: position,
        social_changes,
        deleted,
    })
}

/// `memberships` (from `communities.csv`, or none) with the event log's membership
/// changes applied in order, less those of users who asked to be forgotten.
pub fn with_log_memberships(mut memberships: Vec<data::Membership>, inputs: &Inputs) -> Vec<data::Membership> {
    let applied = affinity_eventlog::apply_to_memberships(&mut memberships, &inputs.social_changes);
    if applied > 0 {
        eprintln!("applied {applied} membership change(s) from the event log");
    }
    if !inputs.deleted.is_empty() {
        memberships.retain(|m| !inputs.deleted.contains(&m.user_id));
    }
    memberships
}

/// `edges` (from `social.csv`, or none) with the event log's social edge changes applied
/// in order, less every edge naming a user who asked to be forgotten.
pub fn with_log_social(mut edges: Vec<SocialEdge>, inputs: &Inputs) -> Vec<SocialEdge> {
    let applied = affinity_eventlog::apply_to_social(&mut edges, &inputs.social_changes);
    if applied > 0 {
        eprintln!("applied {applied} social edge change(s) from the event log");
    }
    if !inputs.deleted.is_empty() {
        edges.retain(|e| !inputs.deleted.contains(&e.user_id) && !inputs.deleted.contains(&e.other_id));
    }
    edges
}

/// The `split` subcommand.
pub fn split(args: SplitArgs) -> Result<()> {
    let events = load_events(&args.events, args.skip_invalid)?;
    let kind = time_kind(args.time_kind, &events);
    let s = affinity_lab::split::split_with(events, args.protocol.into(), args.seed, kind, args.shares.into())?;
    s.write(&args.out)?;
    println!(
        "{} split (seed {}) written to {}: train {} · valid {} · test {} events",
        s.protocol.as_str(),
        s.seed,
        args.out.display(),
        s.train.len(),
        s.valid.len(),
        s.test.len()
    );
    Ok(())
}

pub fn train(args: TrainArgs) -> Result<()> {
    let inputs = load_inputs(&args.input)?;
    let (time_kind, log_position) = (inputs.time_kind, inputs.log_position);
    let opts = ReadOptions {
        skip_invalid: args.input.read.skip_invalid,
    };
    let file_edges = match &args.social {
        Some(p) => load_social(p, args.input.read.skip_invalid)?,
        None => Vec::new(),
    };
    let social = with_log_social(file_edges, &inputs);
    let file_memberships = match &args.communities {
        Some(p) => load_memberships(p, args.input.read.skip_invalid)?,
        None => Vec::new(),
    };
    let memberships = with_log_memberships(file_memberships, &inputs);
    let mut dataset = inputs.dataset;
    dataset.social = social;
    if let Some(p) = &args.users {
        dataset.users = report(p, data::read_users(p, opts)?);
    }
    dataset.memberships = memberships;
    let mut params = load_params(args.input.read.params.as_deref())?;
    if let Some(n) = args.recent {
        params.recent_events = n;
    }
    let budget = Budget {
        trials: if args.tune.no_tune { 0 } else { args.tune.tune_budget },
        max_seconds: args.tune.tune_seconds,
        seed: args.tune.tune_seed,
        ..Budget::default()
    };
    let (params, tuning) = autotune(&dataset, time_kind, &params, &budget, &Bars::default());
    match &tuning.skipped {
        Some(why) if !args.tune.no_tune => eprintln!("note: trained with the parameters as given: {why}"),
        Some(_) => {}
        None => eprintln!(
            "tuned in {:.1}s on {} ({} users, target events: {}): {} fits, stopped by {}; validation NDCG@10 {:.4} (as given {:.4}){}; \
             factors {}, λ {:.1}, α {:.2}, blend {}{}{}",
            tuning.seconds,
            tuning.validation,
            tuning.valid_users,
            tuning.target_events.join("|"),
            tuning.fits,
            tuning.stopped_by,
            tuning.best_ndcg10,
            tuning.given_ndcg10,
            if tuning.kept_given { ", kept the parameters as given: no candidate beat them by 1%" } else { "" },
            params.als.factors,
            params.als.regularization,
            params.als.alpha,
            params.sequence.blend,
            if params.sequence.ease_lambda > 0.0 {
                format!(", neighbours as sparse EASE (λ {:.2} × users per item)", params.sequence.ease_lambda)
            } else {
                String::new()
            },
            if dataset.social.is_empty() { String::new() } else { format!(", social weight {}", params.social_blend) },
        ),
    }
    if !dataset.social.is_empty() {
        eprintln!("social graph: {} edge(s) from {}", dataset.social.len(), args.social.as_deref().map(|p| p.display().to_string()).unwrap_or_default());
    }
    let mut m = train::train(&dataset, time_kind, &params, &Bars::default());
    m.record_tuning(tuning);
    m.record_log_position(log_position);
    let retention = Retention {
        keep: args.keep,
        grace: std::time::Duration::from_secs(args.prune_grace),
    };
    let dir = format::save(&mut m, &args.out, retention)?;
    let c = &m.manifest().counts;
    println!(
        "model {} written to {} ({} users, {} items, {} events; {:.1}s; timestamps: {:?}; scoring: {})",
        m.version(),
        dir.display(),
        c.users,
        c.items,
        c.events,
        m.manifest().train_seconds,
        m.manifest().time_kind,
        match &m.manifest().ef_calibration {
            _ if m.default_settings().scores_exactly(m.n_items()) => "exact".to_string(),
            Some(c) => format!(
                "HNSW, ef {} (recall@10 {:.3} against exact for {} users)",
                c.ef_search,
                c.recall_at_10.iter().find(|(ef, _)| *ef == c.ef_search).map_or(0.0, |x| x.1),
                c.queries
            ),
            None => "HNSW".to_string(),
        },
    );
    Ok(())
}

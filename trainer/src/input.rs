//! Reading canonical input files, and the `import` and `train` subcommands.

use std::fs;
use std::path::Path;

use affinity_core::data::{self, Dataset, ReadOptions, ReadReport, TimeKind};
use affinity_core::import::{self, Source};
use affinity_core::model;
use affinity_core::params::TrainParams;
use affinity_core::train;
use anyhow::{bail, Context, Result};

use crate::cli::{ImportArgs, InputArgs, SourceArg, TimeKindArg, TrainArgs};
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

/// Unwraps a read report, telling the user about skipped rows.
fn report<T>(path: &Path, r: ReadReport<T>) -> Vec<T> {
    if r.skipped > 0 {
        eprintln!(
            "warning: skipped {} invalid row(s) in {} (first: {})",
            r.skipped,
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
            serde_json::from_str(&text).with_context(|| format!("{}: invalid parameters", p.display()))
        }
    }
}

/// Reads events (and items) named by `args`; returns the data set and the time kind.
pub fn load_inputs(args: &InputArgs) -> Result<(Dataset, TimeKind)> {
    let opts = ReadOptions {
        skip_invalid: args.skip_invalid,
    };
    let events = report(&args.events, data::read_events(&args.events, opts)?);
    if events.is_empty() {
        bail!("{}: no events", args.events.display());
    }
    let items = match &args.items {
        Some(p) => report(p, data::read_items(p, opts)?),
        None => Vec::new(),
    };
    let detected = TimeKind::detect(&events);
    let time_kind = match (args.time_kind, detected) {
        (TimeKindArg::Auto, k) => k,
        (_, TimeKind::None) => TimeKind::None,
        (TimeKindArg::Unix, _) => TimeKind::Unix,
        (TimeKindArg::Order, _) => TimeKind::Order,
    };
    Ok((
        Dataset {
            events,
            items,
            ..Dataset::default()
        },
        time_kind,
    ))
}

pub fn train(args: TrainArgs) -> Result<()> {
    let (mut dataset, time_kind) = load_inputs(&args.input)?;
    let opts = ReadOptions {
        skip_invalid: args.input.skip_invalid,
    };
    if let Some(p) = &args.users {
        dataset.users = report(p, data::read_users(p, opts)?);
    }
    if let Some(p) = &args.social {
        dataset.social = report(p, data::read_social(p, opts)?);
    }
    let mut params = load_params(args.input.params.as_deref())?;
    if let Some(n) = args.recent {
        params.recent_events = n;
    }
    let mut m = train::train(&dataset, time_kind, &params, &Bars::default());
    let dir = model::save(&mut m, &args.out, args.keep)?;
    let c = &m.manifest.counts;
    println!(
        "model {} written to {} ({} users, {} items, {} events; {:.1}s; timestamps: {:?}; scoring: {})",
        m.version(),
        dir.display(),
        c.users,
        c.items,
        c.events,
        m.manifest.train_seconds,
        m.manifest.time_kind,
        if m.uses_exact_scoring() { "exact" } else { "ann" },
    );
    Ok(())
}

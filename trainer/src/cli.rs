//! Command-line arguments of `affinity-trainer`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(name = "affinity-trainer", version, about = "Train, evaluate and publish affinity recommendation models")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Convert a public data set to canonical events.csv / items.csv / users.csv / social.csv.
    Import(ImportArgs),
    /// Train a model and publish it as a new version under MODEL_ROOT.
    Train(TrainArgs),
    /// Compare affinity with baselines on a held-out split.
    Evaluate(EvaluateArgs),
    /// Write train / valid / test files so every system is scored on the same split.
    Split(SplitArgs),
    /// Search hyper-parameters on a split's validation part (never its test part).
    Tune(TuneArgs),
}

#[derive(Args, Debug)]
pub struct TuneArgs {
    /// A split written by `affinity-trainer split`.
    #[arg(long)]
    pub split: PathBuf,
    #[arg(long)]
    pub items: Option<PathBuf>,
    /// Social edges (social.csv): candidates are fitted with the graph and each is also
    /// scored with every social weight of the sweep.
    #[arg(long)]
    pub social: Option<PathBuf>,
    /// Community memberships (communities.csv): candidates are fitted with them and each
    /// is also scored with every community weight of the sweep.
    #[arg(long)]
    pub communities: Option<PathBuf>,
    /// Base parameters (JSON); candidates vary the searched fields of these.
    #[command(flatten)]
    pub read: ReadArgs,
    /// Candidates per system (affinity and each baseline get the same budget).
    #[arg(long, default_value_t = 24)]
    pub trials: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Where to write affinity's best parameters (JSON, for `train --params`).
    #[arg(long)]
    pub out: PathBuf,
    /// Baselines to tune with the same budget, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "itemknn,ease")]
    pub baselines: Vec<Baseline>,
    /// Where to write the baselines' best parameters (for `evaluate --baseline-params`).
    #[arg(long)]
    pub baselines_out: Option<PathBuf>,
    /// Also write every trial and its validation metrics here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum SourceArg {
    Movielens,
    Lastfm,
    Filmtrust,
    Sequence,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    pub source: SourceArg,
    /// The data set folder (a file for `sequence`).
    #[arg(long)]
    pub input: PathBuf,
    /// Folder to write the canonical CSV files into (created if missing).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeKindArg {
    /// Unix seconds if every timestamp is a plausible date, else an order.
    Auto,
    Unix,
    Order,
}

/// How input files are read and models parameterised, shared by `train` and `evaluate`.
#[derive(Args, Debug)]
pub struct ReadArgs {
    /// Skip malformed rows (reporting how many) instead of stopping at the first.
    #[arg(long)]
    pub skip_invalid: bool,
    /// What event timestamps mean.
    #[arg(long, value_enum, default_value = "auto")]
    pub time_kind: TimeKindArg,
    /// Training parameters as JSON (missing fields keep their defaults).
    #[arg(long)]
    pub params: Option<PathBuf>,
}

/// Input files of `train`.
#[derive(Args, Debug)]
pub struct InputArgs {
    /// Canonical events CSV.
    #[arg(long, required_unless_present = "events_log")]
    pub events: Option<PathBuf>,
    /// A server's event log directory (e.g. MODEL_ROOT/events), read alone or with
    /// --events; the model records the log position it includes.
    #[arg(long)]
    pub events_log: Option<PathBuf>,
    #[arg(long)]
    pub items: Option<PathBuf>,
    #[command(flatten)]
    pub read: ReadArgs,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub input: InputArgs,
    #[arg(long)]
    pub users: Option<PathBuf>,
    #[arg(long)]
    pub social: Option<PathBuf>,
    /// Community memberships (communities.csv: user_id,community_id): Popular, Trending
    /// and cold starts per community.
    #[arg(long)]
    pub communities: Option<PathBuf>,
    /// Model root: versions are written below it and `current` points at the newest.
    #[arg(long)]
    pub out: PathBuf,
    /// How many versions to keep (older ones are removed, but never the one `current`
    /// names nor one published within `--prune-grace`).
    #[arg(long, default_value_t = 3)]
    pub keep: usize,
    /// Seconds a published version is safe from pruning, so servers that loaded it
    /// keep its files while a newer one goes live.
    #[arg(long, default_value_t = 600)]
    pub prune_grace: u64,
    /// Latest events kept per user for scoring (overrides the params file).
    #[arg(long)]
    pub recent: Option<usize>,
    #[command(flatten)]
    pub tune: TuneBudgetArgs,
}

/// How much `train` may search for its parameters before the final fit.
#[derive(Args, Debug, Clone, Copy)]
pub struct TuneBudgetArgs {
    /// Candidate parameter sets to fit on a held-out slice of the input (the given
    /// parameters first); 0 trains with the parameters as given.
    #[arg(long, default_value_t = 12)]
    pub tune_budget: usize,
    /// Wall-clock cap on the search, in seconds (no new candidate starts after it).
    #[arg(long, default_value_t = 20.0)]
    pub tune_seconds: f64,
    /// Seed of the held-out slice and the candidates.
    #[arg(long, default_value_t = 42)]
    pub tune_seed: u64,
    /// Train with the parameters as given (defaults or `--params`), no search.
    #[arg(long)]
    pub no_tune: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Per user, a seeded random 20% of distinct items (users with ≥ 5 items).
    Random,
    /// Leave-one-out: each user's last event is test, the one before validation.
    Loo,
    /// Global cut at the 80% quantile of event time (needs unix timestamps).
    Temporal,
}

impl From<Protocol> for affinity_lab::split::Protocol {
    fn from(p: Protocol) -> Self {
        match p {
            Protocol::Random => affinity_lab::split::Protocol::Random,
            Protocol::Loo => affinity_lab::split::Protocol::Loo,
            Protocol::Temporal => affinity_lab::split::Protocol::Temporal,
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Baseline {
    Pop,
    Itemknn,
    Ease,
}

/// Shares of each user's items a `random` split holds out (8:1:1 is `--test-share 0.1
/// --valid-share 0.1`).
#[derive(Args, Debug, Clone, Copy)]
pub struct ShareArgs {
    /// Share of each user's distinct items for test.
    #[arg(long, default_value_t = 0.2)]
    pub test_share: f64,
    /// Share of each user's distinct items for validation.
    #[arg(long, default_value_t = 0.16)]
    pub valid_share: f64,
}

impl From<ShareArgs> for affinity_lab::split::Shares {
    fn from(a: ShareArgs) -> Self {
        affinity_lab::split::Shares { test: a.test_share, valid: a.valid_share }
    }
}

#[derive(Args, Debug)]
pub struct SplitArgs {
    #[arg(long)]
    pub events: PathBuf,
    #[arg(long, value_enum, default_value = "random")]
    pub protocol: Protocol,
    #[command(flatten)]
    pub shares: ShareArgs,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Folder for train.csv, valid.csv, test.csv and split.json.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub skip_invalid: bool,
    #[arg(long, value_enum, default_value = "auto")]
    pub time_kind: TimeKindArg,
}

#[derive(Args, Debug)]
pub struct EvaluateArgs {
    /// Events to split (or use --split).
    #[arg(long, required_unless_present = "split")]
    pub events: Option<PathBuf>,
    #[arg(long)]
    pub items: Option<PathBuf>,
    /// Social edges (social.csv): affinity is trained with the graph and also scored
    /// with social scoring off (`affinity-no-social`), on the same model.
    #[arg(long)]
    pub social: Option<PathBuf>,
    /// Community memberships (communities.csv): affinity is trained with them and the
    /// `affinity-no-social` row turns their picks off too.
    #[arg(long)]
    pub communities: Option<PathBuf>,
    /// A split written by `affinity-trainer split` (train.csv, valid.csv, test.csv).
    #[arg(long, conflicts_with_all = ["events", "seeds"])]
    pub split: Option<PathBuf>,
    #[command(flatten)]
    pub read: ReadArgs,
    /// Repeat over this many seeds (seed, seed+1, …) and report mean and standard deviation.
    #[arg(long, default_value_t = 1)]
    pub seeds: u64,
    /// Baselines to run, comma-separated (EASE needs items² memory: keep it to catalogues
    /// of tens of thousands of items).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "pop,itemknn,ease")]
    pub baselines: Vec<Baseline>,
    /// Also score affinity with exact and with ANN retrieval, to compare the two.
    #[arg(long)]
    pub exact: bool,
    /// Baseline parameters chosen by `tune` (otherwise EASE's λ is searched here on
    /// validation and ItemKNN uses --knn-neighbours).
    #[arg(long)]
    pub baseline_params: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "random")]
    pub protocol: Protocol,
    #[command(flatten)]
    pub shares: ShareArgs,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Cut-offs, comma-separated (each at least 1).
    #[arg(long, value_delimiter = ',', default_value = "10,20", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub k: Vec<usize>,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Neighbours per item for the ItemKNN baseline.
    #[arg(long, default_value_t = 100)]
    pub knn_neighbours: usize,
    /// Data set name for the report (default: the events file's folder name).
    #[arg(long)]
    pub dataset: Option<String>,
}

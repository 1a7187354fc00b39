//! `affinity-client`: a command-line client for affinity-server.
//!
//! `recommend`, `similar` and `info` map one-to-one to the gRPC methods. `recommend
//! --users-file F` is the batch mode: it sends many requests concurrently over one
//! HTTP/2 connection and writes the answers in input order. `smoke` checks a running
//! demo server end to end. `ingest --file events.csv` sends events to the server's log,
//! `upsert-items --file items.csv` catalogue entries.

mod smoke;

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;

use affinity_service::proto::recommend_request::Subject;
use affinity_service::proto::recommender_client::RecommenderClient;
use affinity_service::proto::similar_items_request::Mode;
use affinity_service::proto::{self, RecentItems};
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use futures::{StreamExt, TryStreamExt};
use affinity_service::client::{ApiKey, Keyed};

#[derive(Parser, Debug)]
#[command(name = "affinity-client", version, about = "Query an affinity server")]
struct Cli {
    /// Server address.
    #[arg(long, env = "AFFINITY_ADDR", default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// API key, sent as `authorization: Bearer KEY` on every call.
    #[arg(long, env = "AFFINITY_API_KEY", global = true, hide_env_values = true)]
    api_key: Option<String>,
    /// PEM CA certificate to verify an `https://` server with.
    #[arg(long, env = "AFFINITY_TLS_CA", global = true)]
    tls_ca: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table", global = true)]
    format: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Table,
    Json,
    Tsv,
}

/// `--strategy` values of `group`.
#[derive(ValueEnum, Clone, Copy, Debug)]
enum StrategyArg {
    Average,
    LeastMisery,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum ModeArg {
    Blend,
    Collaborative,
    Content,
}

/// `--repeat-policy` values.
#[derive(ValueEnum, Clone, Copy, Debug)]
enum RepeatPolicyArg {
    Trained,
    ExcludeSeen,
    BuyAgain,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Recommendations for a user, a session, or every user in a file.
    Recommend {
        /// One user id.
        #[arg(long, conflicts_with_all = ["recent", "users_file"])]
        user: Option<String>,
        /// An anonymous session: item ids, comma-separated, oldest first.
        #[arg(long, value_delimiter = ',', conflicts_with = "users_file")]
        recent: Option<Vec<String>>,
        /// Batch: one user id per line (blank lines ignored); `-` reads stdin.
        #[arg(long)]
        users_file: Option<PathBuf>,
        #[arg(long, default_value_t = 10)]
        k: u32,
        /// Score items the user already interacted with like any other (overrides
        /// --repeat-policy).
        #[arg(long)]
        include_seen: bool,
        /// Social scoring (what friends and followed accounts had): true or false;
        /// absent, as the model was trained.
        #[arg(long)]
        social: Option<bool>,
        /// Only items the user's friends and followed accounts had: a "friends bought"
        /// shelf.
        #[arg(long, conflicts_with = "recent")]
        from_contacts: bool,
        /// What to do with items the user already had: the model's trained policy (the
        /// server's default), never return them, or only them ("buy it again").
        #[arg(long, value_enum)]
        repeat_policy: Option<RepeatPolicyArg>,
        /// Item ids never to return, comma-separated.
        #[arg(long, value_delimiter = ',')]
        exclude: Vec<String>,
        /// Only items of this category.
        #[arg(long)]
        category: Option<String>,
        /// Requests in flight at once in batch mode.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[command(flatten)]
        rules: RuleArgs,
    },
    /// Items similar to one item.
    Similar {
        #[arg(long)]
        item: String,
        #[arg(long, default_value_t = 10)]
        k: u32,
        #[arg(long, value_enum, default_value = "blend")]
        mode: ModeArg,
        #[command(flatten)]
        rules: RuleArgs,
    },
    /// Items a whole group is likely to want, with each member's part in the score.
    Group {
        /// Members, comma-separated (1 to 100).
        #[arg(long, value_delimiter = ',', required = true)]
        users: Vec<String>,
        #[arg(long, default_value_t = 10)]
        k: u32,
        /// average: the most liked overall; least-misery: nobody left out.
        #[arg(long, value_enum, default_value = "average")]
        strategy: StrategyArg,
        #[arg(long)]
        category: Option<String>,
        #[command(flatten)]
        rules: RuleArgs,
    },
    /// Key opinion leaders and consumers: whose picks their contacts take up.
    Influencers {
        /// A category (none: across all).
        #[arg(long, default_value = "")]
        category: String,
        #[arg(long, default_value_t = 10)]
        k: u32,
    },
    /// The most popular items in a segment of users (no segment flag: every user).
    Popular {
        #[arg(long, default_value_t = 10)]
        k: u32,
        #[arg(long)]
        category: Option<String>,
        #[arg(long)]
        region: Option<String>,
        /// An age in years or a band (<18, 18-24, 25-34, 35-44, 45-54, 55+).
        #[arg(long)]
        age: Option<String>,
        #[arg(long)]
        gender: Option<String>,
        #[arg(long)]
        occupation: Option<String>,
        #[arg(long)]
        income: Option<String>,
        /// A community's members only.
        #[arg(long)]
        community: Option<String>,
        /// Time window: all (default), 1d, 7d or 30d.
        #[arg(long, value_enum, default_value = "all")]
        window: WindowArg,
        /// Items rising fastest against their own past instead (window default 7d).
        #[arg(long)]
        trending: bool,
        #[command(flatten)]
        rules: RuleArgs,
    },
    /// A user's profile: counts, rates, RFM, lifecycle stage, churn risk, top categories.
    Profile {
        #[arg(long)]
        user: String,
        /// Profile at this unix time (default: the latest the model knows).
        #[arg(long)]
        now: Option<i64>,
    },
    /// The loaded model's version and size.
    Info,
    /// Admin: make the server load the version `current` names now.
    Reload,
    /// Admin: forget a user (live state, event log, future retrains).
    DeleteUser {
        #[arg(long)]
        user: String,
    },
    /// Take items off sale (`--available false`) or back on; holds across restarts.
    SetAvailability {
        /// Item ids, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        items: Vec<String>,
        #[arg(long, action = clap::ArgAction::Set)]
        available: bool,
    },
    /// Send the events of a canonical events.csv (user_id,item_id,event,timestamp,value)
    /// to the server's event log, in batches; each batch is durable when acknowledged.
    Ingest {
        /// The events file.
        #[arg(long)]
        file: PathBuf,
        /// Events per call (at most 10,000).
        #[arg(long, default_value_t = 1_000)]
        batch: usize,
    },
    /// Send the entries of a catalogue file (items.csv, as the trainer reads it) to the
    /// server: known items get the new entry, unknown ones are added. Logged like events.
    UpsertItems {
        /// The items file.
        #[arg(long)]
        file: PathBuf,
        /// Items per call (at most 10,000).
        #[arg(long, default_value_t = 1_000)]
        batch: usize,
    },
    /// Send the edges of a social file (social.csv, as the trainer reads it) to the
    /// server: added, or with --remove taken away. Logged like events.
    SocialEdges {
        /// The social file.
        #[arg(long)]
        file: PathBuf,
        /// Take the edges away instead.
        #[arg(long)]
        remove: bool,
        /// Edges per call (at most 10,000).
        #[arg(long, default_value_t = 1_000)]
        batch: usize,
    },
    /// Send the memberships of a communities file (communities.csv: user_id,community_id)
    /// to the server: joined, or with --remove left. Logged like events.
    Memberships {
        /// The communities file.
        #[arg(long)]
        file: PathBuf,
        /// Leave instead.
        #[arg(long)]
        remove: bool,
        /// Memberships per call (at most 10,000).
        #[arg(long, default_value_t = 1_000)]
        batch: usize,
    },
    /// Wait for a demo server (`affinity-server --demo`) to serve, check its answers and
    /// exit 0 if all is well.
    Smoke {
        /// How long to wait for the server to report SERVING.
        #[arg(long, default_value_t = 60)]
        wait_seconds: u64,
    },
}

/// `--window` values.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum WindowArg {
    All,
    #[value(name = "1d")]
    Day,
    #[value(name = "7d")]
    Week,
    #[value(name = "30d")]
    Month,
}

impl WindowArg {
    fn proto(self) -> i32 {
        (match self {
            WindowArg::All => proto::Window::All,
            WindowArg::Day => proto::Window::Window1Day,
            WindowArg::Week => proto::Window::Window7Days,
            WindowArg::Month => proto::Window::Window30Days,
        }) as i32
    }
}

/// Business rules, as flags (lists comma-separated).
#[derive(Args, Debug, Default)]
struct RuleArgs {
    /// Only items of these categories.
    #[arg(long, value_delimiter = ',')]
    include_categories: Vec<String>,
    /// Never items of these categories.
    #[arg(long, value_delimiter = ',')]
    exclude_categories: Vec<String>,
    /// Only items of these brands.
    #[arg(long, value_delimiter = ',')]
    include_brands: Vec<String>,
    /// Never items of these brands.
    #[arg(long, value_delimiter = ',')]
    exclude_brands: Vec<String>,
    #[arg(long)]
    min_price: Option<f32>,
    #[arg(long)]
    max_price: Option<f32>,
    /// Let items taken off sale through.
    #[arg(long)]
    include_unavailable: bool,
    /// Never an item the user interacted with.
    #[arg(long)]
    exclude_interacted: bool,
    /// Promoted items as `item_id:boost`, comma-separated (boost 1 lifts the weakest
    /// candidate level with the best).
    #[arg(long, value_delimiter = ',', value_parser = parse_promotion)]
    promote: Vec<proto::Promotion>,
    /// At most this many items of one category.
    #[arg(long)]
    max_per_category: Option<u32>,
    /// At most this many items of one brand.
    #[arg(long)]
    max_per_brand: Option<u32>,
    /// Maximal marginal relevance λ in [0, 1] (1: off).
    #[arg(long)]
    mmr_lambda: Option<f32>,
    /// "Near you": the shopper's place as `latitude,longitude` (degrees).
    #[arg(long, value_parser = parse_place, allow_hyphen_values = true)]
    near: Option<(f64, f64)>,
    /// Radius around `--near`, in kilometres.
    #[arg(long, default_value_t = 10.0, requires = "near")]
    radius_km: f64,
    /// Only items within the radius (otherwise nearer items are only boosted).
    #[arg(long, requires = "near")]
    within_only: bool,
    /// Nearness boost (default 0.5).
    #[arg(long, requires = "near")]
    near_boost: Option<f32>,
    /// Boost items listed within this many days.
    #[arg(long)]
    new_arrival_days: Option<u32>,
    /// New-arrival boost (default 0.3).
    #[arg(long, requires = "new_arrival_days")]
    new_arrival_boost: Option<f32>,
}

fn parse_place(s: &str) -> std::result::Result<(f64, f64), String> {
    let (lat, lon) = s.split_once(',').ok_or_else(|| format!("`{s}`: expected latitude,longitude"))?;
    let lat = lat.trim().parse::<f64>().map_err(|e| format!("`{s}`: latitude: {e}"))?;
    let lon = lon.trim().parse::<f64>().map_err(|e| format!("`{s}`: longitude: {e}"))?;
    Ok((lat, lon))
}

fn parse_promotion(s: &str) -> std::result::Result<proto::Promotion, String> {
    let (id, boost) = s.rsplit_once(':').ok_or_else(|| format!("`{s}`: expected item_id:boost"))?;
    let boost = boost.parse::<f32>().map_err(|e| format!("`{s}`: boost: {e}"))?;
    Ok(proto::Promotion { item_id: id.to_string(), boost })
}

impl RuleArgs {
    fn into_proto(self) -> Option<proto::Rules> {
        let r = proto::Rules {
            include_categories: self.include_categories,
            exclude_categories: self.exclude_categories,
            include_brands: self.include_brands,
            exclude_brands: self.exclude_brands,
            min_price: self.min_price,
            max_price: self.max_price,
            include_unavailable: self.include_unavailable,
            exclude_interacted: self.exclude_interacted,
            promoted: self.promote,
            max_per_category: self.max_per_category.unwrap_or(0),
            max_per_brand: self.max_per_brand.unwrap_or(0),
            mmr_lambda: self.mmr_lambda,
            near: self.near.map(|(latitude, longitude)| proto::Near {
                latitude,
                longitude,
                radius_km: self.radius_km,
                within_only: self.within_only,
                boost: self.near_boost,
            }),
            new_arrival_days: self.new_arrival_days,
            new_arrival_boost: self.new_arrival_boost,
        };
        (r != proto::Rules::default()).then_some(r)
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

type Client = RecommenderClient<Keyed>;

/// The PEM CA of `--tls-ca`, if given.
fn read_ca(cli: &Cli) -> Result<Option<Vec<u8>>> {
    cli.tls_ca.as_ref().map(|p| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))).transpose()
}

async fn connect(cli: &Cli) -> Result<Client> {
    let ca = read_ca(cli)?;
    let channel = affinity_service::client::connect_tls(&cli.addr, ca.as_deref()).await?;
    Ok(RecommenderClient::with_interceptor(channel, ApiKey::new(cli.api_key.as_deref())?))
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
fn progress(total: usize, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total as u64);
    let style = indicatif::ProgressStyle::with_template(&format!("{{bar:40}} {{pos}}/{{len}} {what} · {{per_sec}} · eta {{eta}}"));
    if let Ok(style) = style {
        bar.set_style(style);
    }
    bar
}

/// Sends `rows` in calls of `batch` (1 to 10,000) rows, one at a time, with a progress
/// bar: `call` builds and sends one batch and says what it got back as two counts and a
/// log position. Returns the summed counts and the last position.
async fn in_batches<T, F>(rows: &[T], batch: usize, what: &str, mut call: impl FnMut(&[T]) -> F) -> Result<(u64, u64, u64)>
where
    F: std::future::Future<Output = Result<(u32, u32, u64)>>,
{
    let (mut first, mut second, mut last) = (0u64, 0u64, 0u64);
    let progress = progress(rows.len(), what);
    for chunk in rows.chunks(batch.clamp(1, 10_000)) {
        let (a, b, position) = call(chunk).await?;
        first += u64::from(a);
        second += u64::from(b);
        last = last.max(position);
        progress.inc(chunk.len() as u64);
    }
    progress.finish_and_clear();
    Ok((first, second, last))
}

fn status_msg(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}

async fn run(cli: Cli) -> Result<()> {
    if let Command::Smoke { wait_seconds } = cli.command {
        let ca = read_ca(&cli)?;
        return smoke::smoke(&cli.addr, ca.as_deref(), ApiKey::new(cli.api_key.as_deref())?, std::time::Duration::from_secs(wait_seconds)).await;
    }
    let mut client = connect(&cli).await?;
    let out = std::io::stdout();
    let mut out = BufWriter::new(out.lock());
    match cli.command {
        Command::Smoke { .. } => unreachable!("handled above"),
        Command::DeleteUser { user } => {
            let r = client.delete_user(proto::DeleteUserRequest { user_id: user }).await.map_err(status_msg)?.into_inner();
            writeln!(out, "deleted; {} event(s) removed from the log", r.removed_events)?;
        }
        Command::Reload => {
            let r = client.reload_model(proto::ReloadModelRequest {}).await.map_err(status_msg)?.into_inner();
            let what = if r.changed { "now serving" } else { "already serving" };
            writeln!(out, "{what} {} (trained through log position {})", r.version, r.log_position)?;
        }
        Command::SetAvailability { items, available } => {
            let request = proto::SetAvailabilityRequest {
                items: items.into_iter().map(|item_id| proto::ItemAvailability { item_id, available }).collect(),
            };
            let r = client.set_availability(request).await.map_err(status_msg)?.into_inner();
            writeln!(out, "stored {} change(s) ({} unknown to the loaded model); log position {}", r.stored, r.unknown, r.last_sequence)?;
        }
        Command::Ingest { file, batch } => {
            let events = affinity_core::data::read_events(&file, affinity_core::data::ReadOptions::default())?.rows;
            let (stored, duplicates, last) = in_batches(&events, batch, "events", |chunk| {
                let request = proto::IngestEventsRequest {
                    events: chunk
                        .iter()
                        .map(|e| proto::IngestEvent {
                            user_id: e.user_id.clone(),
                            item_id: e.item_id.clone(),
                            event: e.kind.to_string(),
                            timestamp: e.timestamp,
                            value: e.value,
                            ..Default::default()
                        })
                        .collect(),
                };
                let mut client = client.clone();
                async move {
                    let r = client.ingest_events(request).await.map_err(status_msg)?.into_inner();
                    Ok((r.stored, r.duplicates, r.last_sequence))
                }
            })
            .await?;
            writeln!(out, "stored {stored} event(s), {duplicates} duplicate(s) skipped; log position {last}")?;
        }
        Command::SocialEdges { file, remove, batch } => {
            let edges = affinity_core::data::read_social(&file, affinity_core::data::ReadOptions::default())?.rows;
            let (stored, pending, last) = in_batches(&edges, batch, "edges", |chunk| {
                let request = proto::IngestSocialEdgesRequest {
                    edges: chunk
                        .iter()
                        .map(|e| proto::SocialEdgeChange {
                            user_id: e.user_id.clone(),
                            other_id: e.other_id.clone(),
                            kind: match e.kind {
                                affinity_core::data::SocialKind::Friend => proto::SocialEdgeKind::Friend,
                                affinity_core::data::SocialKind::Follow => proto::SocialEdgeKind::Follow,
                            } as i32,
                            weight: e.weight,
                            remove,
                        })
                        .collect(),
                };
                let mut client = client.clone();
                async move {
                    let r = client.ingest_social_edges(request).await.map_err(status_msg)?.into_inner();
                    Ok((r.stored, r.pending, r.last_sequence))
                }
            })
            .await?;
            writeln!(out, "stored {stored} edge change(s), {pending} naming a user the model does not know yet; log position {last}")?;
        }
        Command::Memberships { file, remove, batch } => {
            let rows = affinity_core::data::read_memberships(&file, affinity_core::data::ReadOptions::default())?.rows;
            let (stored, pending, last) = in_batches(&rows, batch, "memberships", |chunk| {
                let memberships = chunk.iter().map(|m| proto::MembershipChange { user_id: m.user_id.clone(), community_id: m.community_id.clone(), remove }).collect();
                let mut client = client.clone();
                async move {
                    let r = client.ingest_memberships(proto::IngestMembershipsRequest { memberships }).await.map_err(status_msg)?.into_inner();
                    Ok((r.stored, r.pending, r.last_sequence))
                }
            })
            .await?;
            writeln!(out, "stored {stored} membership change(s), {pending} naming a user the model does not know yet; log position {last}")?;
        }
        Command::UpsertItems { file, batch } => {
            let items = affinity_core::data::read_items(&file, affinity_core::data::ReadOptions::default())?.rows;
            let (updated, added, last) = in_batches(&items, batch, "items", |chunk| {
                let request = proto::UpsertItemsRequest {
                    items: chunk
                        .iter()
                        .map(|i| proto::CatalogueItem {
                            item_id: i.item_id.clone(),
                            title: i.title.clone(),
                            category: i.category.clone(),
                            brand: i.brand.clone(),
                            price: i.price,
                            tags: i.tags.clone(),
                            available: Some(i.available),
                            latitude: i.location.map(|p| p.lat),
                            longitude: i.location.map(|p| p.lon),
                            listed_at: i.listed_at,
                        })
                        .collect(),
                };
                let mut client = client.clone();
                async move {
                    let r = client.upsert_items(request).await.map_err(status_msg)?.into_inner();
                    Ok((r.updated, r.added, r.last_sequence))
                }
            })
            .await?;
            writeln!(out, "{updated} item(s) updated, {added} added; log position {last}")?;
        }
        Command::Info => {
            let i = client.model_info(proto::ModelInfoRequest {}).await.map_err(status_msg)?.into_inner();
            match cli.format {
                Format::Json => writeln!(out, "{}", info_json(&i))?,
                Format::Tsv => writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    i.version, i.created_at, i.format_version, i.users, i.items, i.scoring
                )?,
                Format::Table => {
                    writeln!(out, "version         {}", i.version)?;
                    writeln!(out, "created at      {}", i.created_at)?;
                    writeln!(out, "format version  {}", i.format_version)?;
                    writeln!(out, "users           {}", i.users)?;
                    writeln!(out, "items           {} ({} with events, {} with content)", i.items, i.items_with_events, i.items_with_content)?;
                    writeln!(out, "events          {}", i.events)?;
                    writeln!(out, "scoring         {}", i.scoring)?;
                    writeln!(out, "train seconds   {:.2}", i.train_seconds)?;
                    writeln!(out, "log position    {} (trained through); next {}", i.log_position, i.log_next_position)?;
                    writeln!(out, "log since start {} record(s) appended, {} sync(s)", i.log_appended, i.log_syncs)?;
                    writeln!(
                        out,
                        "live state      {} user(s), {} event(s), ~{:.1} MB; {} user(s) evicted",
                        i.live_users,
                        i.live_events,
                        i.live_bytes as f64 / 1e6,
                        i.live_evicted
                    )?;
                }
            }
        }
        Command::Profile { user, now } => {
            let p = client
                .get_user_profile(proto::GetUserProfileRequest { user_id: user, now, ..Default::default() })
                .await
                .map_err(status_msg)?
                .into_inner();
            let counts: Vec<String> = p.event_counts.iter().filter(|(_, &n)| n > 0).map(|(k, n)| format!("{k} {n}")).collect();
            let names = |v: &[proto::NamedWeight]| v.iter().map(|n| n.name.clone()).collect::<Vec<_>>().join(", ");
            writeln!(out, "user            {} (model {})", p.user_id, p.model_version)?;
            writeln!(out, "events          {}", counts.join(", "))?;
            writeln!(out, "revenue         {:.2}", p.revenue)?;
            writeln!(out, "stage           {}", if p.stage.is_empty() { "unknown (no event times)" } else { &p.stage })?;
            match &p.rfm {
                Some(r) => writeln!(out, "RFM             {}{}{} ({})", r.recency, r.frequency, r.monetary, r.label)?,
                None => writeln!(out, "RFM             none (no timed purchase)")?,
            }
            if let Some(risk) = p.churn_risk {
                writeln!(out, "churn risk      {risk:.2}: {}", p.churn_reason)?;
            }
            writeln!(out, "top categories  {}", names(&p.top_categories))?;
            writeln!(out, "top brands      {}", names(&p.top_brands))?;
            if p.friends + p.following > 0 || !p.communities.is_empty() || p.influence.is_some() {
                writeln!(out, "contacts        {} friends, following {}", p.friends, p.following)?;
                writeln!(out, "communities     {}", p.communities.join(", "))?;
            }
            if let Some(score) = p.influence {
                writeln!(out, "influence       {score:.2} (mean 1)")?;
            }
        }
        Command::Popular { k, category, region, age, gender, occupation, income, community, window, trending, rules } => {
            let segment = Some(proto::UserAttributes { region, age, gender, occupation, income, community });
            let (rules, window) = (rules.into_proto(), window.proto());
            let r = if trending {
                client.trending(proto::TrendingRequest { segment, category, k, rules, window, now: None }).await
            } else {
                client.popular(proto::PopularRequest { segment, category, k, rules, window, now: None }).await
            }
            .map_err(status_msg)?
            .into_inner();
            print_items(&mut out, cli.format, &format!("segment of {} users", r.segment_users), &r.items, &r.model_version)?;
        }
        Command::Influencers { category, k } => {
            let r = client.list_influencers(proto::ListInfluencersRequest { category, k }).await.map_err(status_msg)?.into_inner();
            match cli.format {
                Format::Json => {
                    let list: Vec<serde_json::Value> = r
                        .influencers
                        .iter()
                        .map(|i| serde_json::json!({ "user_id": i.user_id, "score": i.score, "followers": i.followers, "adoptions": i.adoptions, "leader": i.leader }))
                        .collect();
                    writeln!(out, "{}", serde_json::json!({ "influencers": list, "model_version": r.model_version }))?;
                }
                Format::Tsv => {
                    for i in &r.influencers {
                        writeln!(out, "{}\t{}\t{}\t{}\t{}", i.user_id, i.score, i.followers, i.adoptions, if i.leader { "kol" } else { "koc" })?;
                    }
                }
                Format::Table => {
                    writeln!(out, "{:>4}  {:<24} {:>8} {:>9} {:>9}  kind", "rank", "user", "score", "followers", "adoptions")?;
                    for (n, i) in r.influencers.iter().enumerate() {
                        writeln!(out, "{:>4}  {:<24} {:>8.3} {:>9} {:>9.1}  {}", n + 1, i.user_id, i.score, i.followers, i.adoptions, if i.leader { "KOL" } else { "KOC" })?;
                    }
                    writeln!(out, "model {}", r.model_version)?;
                }
            }
        }
        Command::Group { users, k, strategy, category, rules } => {
            let r = client
                .recommend_for_group(proto::RecommendForGroupRequest {
                    user_ids: users.clone(),
                    k,
                    strategy: match strategy {
                        StrategyArg::Average => proto::GroupStrategy::Average,
                        StrategyArg::LeastMisery => proto::GroupStrategy::LeastMisery,
                    } as i32,
                    rules: rules.into_proto(),
                    category,
                })
                .await
                .map_err(status_msg)?
                .into_inner();
            match cli.format {
                Format::Json => {
                    let items: Vec<serde_json::Value> = r
                        .items
                        .iter()
                        .map(|i| serde_json::json!({ "item_id": i.item_id, "score": i.score, "member_scores": i.member_scores, "reason": i.reason }))
                        .collect();
                    writeln!(out, "{}", serde_json::json!({ "users": users, "items": items, "model_version": r.model_version }))?;
                }
                Format::Tsv => {
                    for i in &r.items {
                        let members: Vec<String> = i.member_scores.iter().map(|s| format!("{s:.3}")).collect();
                        writeln!(out, "{}\t{}\t{}", i.item_id, i.score, members.join(","))?;
                    }
                }
                Format::Table => {
                    writeln!(out, "{:>4}  {:<24} {:>8}  {:<24} members ({})", "rank", "item", "score", "reason", users.join(", "))?;
                    for (n, i) in r.items.iter().enumerate() {
                        let members: Vec<String> = i.member_scores.iter().map(|s| format!("{s:.2}")).collect();
                        writeln!(out, "{:>4}  {:<24} {:>8.4}  {:<24} {}", n + 1, i.item_id, i.score, i.reason, members.join(" "))?;
                    }
                    writeln!(out, "model {}", r.model_version)?;
                }
            }
        }
        Command::Similar { item, k, mode, rules } => {
            let mode = match mode {
                ModeArg::Blend => Mode::Blend,
                ModeArg::Collaborative => Mode::Collaborative,
                ModeArg::Content => Mode::Content,
            };
            let r = client
                .similar_items(proto::SimilarItemsRequest {
                    item_id: item.clone(),
                    k,
                    mode: mode as i32,
                    rules: rules.into_proto(),
                })
                .await
                .map_err(status_msg)?
                .into_inner();
            print_items(&mut out, cli.format, &item, &r.items, &r.model_version)?;
        }
        Command::Recommend {
            user,
            recent,
            users_file,
            k,
            include_seen,
            social,
            from_contacts,
            repeat_policy,
            exclude,
            category,
            concurrency,
            rules,
        } => {
            let template = proto::RecommendRequest {
                rules: rules.into_proto(),
                attributes: None,
                subject: None,
                k,
                exclude_seen: include_seen.then_some(false),
                social,
                from_contacts,
                exclude_item_ids: exclude,
                category,
                repeat_policy: match repeat_policy {
                    None | Some(RepeatPolicyArg::Trained) => proto::RepeatPolicy::Unspecified,
                    Some(RepeatPolicyArg::ExcludeSeen) => proto::RepeatPolicy::ExcludeSeen,
                    Some(RepeatPolicyArg::BuyAgain) => proto::RepeatPolicy::BuyAgain,
                } as i32,
            };
            if let Some(path) = users_file {
                batch(client, &path, template, concurrency, cli.format, &mut out).await?;
            } else {
                let (label, subject) = match (user, recent) {
                    (Some(u), _) => (u.clone(), Subject::UserId(u)),
                    (None, Some(items)) => ("session".to_string(), Subject::RecentItems(RecentItems { item_ids: items })),
                    (None, None) => bail!("give --user, --recent or --users-file"),
                };
                let r = client
                    .recommend(proto::RecommendRequest {
                        subject: Some(subject),
                        ..template
                    })
                    .await
                    .map_err(status_msg)?
                    .into_inner();
                print_items(&mut out, cli.format, &label, &r.items, &r.model_version)?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

fn info_json(i: &proto::ModelInfoResponse) -> serde_json::Value {
    serde_json::json!({
        "version": i.version, "created_at": i.created_at, "format_version": i.format_version,
        "users": i.users, "items": i.items, "events": i.events,
        "items_with_events": i.items_with_events, "items_with_content": i.items_with_content,
        "scoring": i.scoring, "train_seconds": i.train_seconds,
        "log_position": i.log_position, "log_next_position": i.log_next_position,
        "live_users": i.live_users, "live_events": i.live_events, "live_bytes": i.live_bytes, "live_evicted": i.live_evicted,
        "log_appended": i.log_appended, "log_syncs": i.log_syncs,
    })
}

fn reason_kind(item: &proto::ScoredItem) -> &'static str {
    match item.reason.as_ref().and_then(|r| proto::reason::Kind::try_from(r.kind).ok()) {
        Some(proto::reason::Kind::Personalized) => "personalized",
        Some(proto::reason::Kind::Popular) => "popular",
        Some(proto::reason::Kind::Similar) => "similar",
        Some(proto::reason::Kind::Repeat) => "repeat",
        _ => "unspecified",
    }
}

fn items_json(subject: &str, items: &[proto::ScoredItem], version: &str) -> serde_json::Value {
    serde_json::json!({
        "subject": subject,
        "model_version": version,
        "items": items.iter().map(|i| serde_json::json!({
            "item_id": i.item_id,
            "score": i.score,
            "reason": reason_kind(i),
            "reason_text": i.reason.as_ref().map(|r| r.text.as_str()).unwrap_or(""),
        })).collect::<Vec<_>>(),
    })
}

fn print_items(out: &mut impl Write, format: Format, subject: &str, items: &[proto::ScoredItem], version: &str) -> Result<()> {
    match format {
        Format::Json => writeln!(out, "{}", items_json(subject, items, version))?,
        Format::Tsv => {
            for i in items {
                writeln!(out, "{}\t{}\t{}", i.item_id, i.score, reason_kind(i))?;
            }
        }
        Format::Table => {
            writeln!(out, "{:>4}  {:<24} {:>10}  reason", "rank", "item", "score")?;
            for (n, i) in items.iter().enumerate() {
                let text = i.reason.as_ref().map(|r| r.text.as_str()).unwrap_or("");
                writeln!(out, "{:>4}  {:<24} {:>10.4}  {}", n + 1, i.item_id, i.score, text)?;
            }
            writeln!(out, "model {version}")?;
        }
    }
    Ok(())
}

/// Reads user ids, one per line, skipping blank lines.
fn read_users(path: &PathBuf) -> Result<Vec<String>> {
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        ))
    };
    let mut users = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("{}:{}: cannot read", path.display(), n + 1))?;
        let id = line.trim_end_matches('\r');
        if !id.trim().is_empty() {
            users.push(id.to_string());
        }
    }
    Ok(users)
}

async fn batch(
    client: Client,
    path: &PathBuf,
    template: proto::RecommendRequest,
    concurrency: usize,
    format: Format,
    out: &mut impl Write,
) -> Result<()> {
    let users = read_users(path)?;
    let mut answers = futures::stream::iter(users.into_iter().map(|user| {
        let mut client = client.clone();
        let req = proto::RecommendRequest {
            subject: Some(Subject::UserId(user.clone())),
            ..template.clone()
        };
        async move {
            match client.recommend(req).await {
                Ok(r) => Ok((user, r.into_inner())),
                Err(s) => Err(anyhow::anyhow!("user {user}: {:?}: {}", s.code(), s.message())),
            }
        }
    }))
    .buffered(concurrency.max(1));
    while let Some((user, r)) = answers.try_next().await? {
        match format {
            Format::Tsv => {
                let ids: Vec<&str> = r.items.iter().map(|i| i.item_id.as_str()).collect();
                writeln!(out, "{user}\t{}", ids.join(","))?;
            }
            Format::Json => writeln!(out, "{}", items_json(&user, &r.items, &r.model_version))?,
            Format::Table => {
                writeln!(out, "# {user}")?;
                print_items(out, Format::Table, &user, &r.items, &r.model_version)?;
            }
        }
    }
    Ok(())
}

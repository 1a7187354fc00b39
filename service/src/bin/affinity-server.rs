//! `affinity-server`: serves an affinity model over gRPC.
//!
//! `affinity-server --model MODEL_ROOT --listen 127.0.0.1:50051` serves a trained model;
//! `--demo` first trains a model on a built-in synthetic store if the model root holds
//! none. `affinity-client smoke` checks a running demo server. Ingested events are
//! logged in `events/` inside the model root unless `--events-dir` says elsewhere.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use affinity_service::ingest::SyncPolicy;
use affinity_service::live::LiveLimits;
use affinity_service::state::{Retrieval, ServerConfig, ServerState, SettingsOverrides};
use affinity_service::{demo, server};
use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use tokio::net::TcpListener;

#[derive(Parser, Debug)]
#[command(name = "affinity-server", version, about = "Serve affinity recommendations over gRPC")]
struct Args {
    /// Model root (holding `current`) or one version directory.
    #[arg(long, env = "AFFINITY_MODEL")]
    model: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, env = "AFFINITY_LISTEN", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Train a demo model on a built-in synthetic store if none exists (default model
    /// root: ./affinity-demo-model).
    #[arg(long)]
    demo: bool,
    /// How candidates are found (default: as the model was trained to be served: exact
    /// up to its `exact_max_items`, HNSW above).
    #[arg(long, value_enum)]
    retrieval: Option<RetrievalArg>,
    /// HNSW search list size (overrides the model's).
    #[arg(long)]
    ef_search: Option<usize>,
    /// Share of the score from recent items' neighbours, 0..=1 (overrides the model's).
    #[arg(long, value_parser = blend_in_range)]
    sequence_blend: Option<f32>,
    /// Expected share of each Recommend list given to items nobody has interacted with
    /// yet (new arrivals), 0..=1, at the list's tail; fixed per user and day. 0 turns
    /// exploration off (evaluation never explores).
    #[arg(long, value_parser = blend_in_range, default_value_t = 0.05)]
    explore_share: f32,
    /// Where ingested events are logged (default: `events/` inside the model root; with
    /// --model naming a version directory, ingest is off unless this is given).
    #[arg(long, env = "AFFINITY_EVENTS_DIR")]
    events_dir: Option<PathBuf>,
    /// Run without an event log: IngestEvents answers UNAVAILABLE.
    #[arg(long, conflicts_with = "events_dir")]
    no_ingest: bool,
    /// Seconds between looks for a new version under the model root (0: only on the
    /// ReloadModel RPC).
    #[arg(long, env = "AFFINITY_RELOAD_POLL", default_value_t = 10)]
    reload_poll: u64,
    /// Group-commit window in ms: after a batch arrives, wait this long for more before
    /// syncing the event log (0: sync at once; every batch waiting is still synced together).
    #[arg(long, default_value_t = 0)]
    fsync_window_ms: u64,
    /// Never sync the event log: acknowledged events survive a server crash but not a
    /// power cut. For throughput tests only.
    #[arg(long, conflicts_with = "fsync_window_ms")]
    no_fsync: bool,
    /// Remove event-log segments older than this many days once a loaded model was
    /// trained through them (0: keep the whole log).
    #[arg(long, default_value_t = 0)]
    log_retention_days: u64,
    /// Latest live events kept per user (ingested since the model's log position).
    #[arg(long, default_value_t = 100)]
    live_events_per_user: usize,
    /// Users kept in the live state; the least recently active are evicted beyond it
    /// (their events stay in the log).
    #[arg(long, default_value_t = 1_000_000)]
    live_max_users: usize,
    /// Interactions since training kept for time windows, trends and item metrics (the
    /// oldest go first; ~100 bytes each).
    #[arg(long, default_value_t = affinity_service::state::DEFAULT_WINDOW_EVENTS)]
    window_events: usize,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum RetrievalArg {
    Auto,
    Exact,
    Ann,
}

fn blend_in_range(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("expected a number from 0 to 1, got {s:?}")),
    }
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,hnsw_rs=warn".into()))
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: logs redirected to a file stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(run(args));
    // A model load cut short by shutdown may still be running on the blocking pool:
    // do not wait for it.
    runtime.shutdown_timeout(Duration::from_millis(100));
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<()> {
    let model_path = match (&args.model, args.demo) {
        (Some(p), _) => p.clone(),
        (None, true) => PathBuf::from("affinity-demo-model"),
        (None, false) => anyhow::bail!("--model is required (or use --demo)"),
    };
    if args.demo {
        let root = model_path.clone();
        let dir = tokio::task::spawn_blocking(move || demo::prepare_model(&root)).await??;
        println!("demo model: {}", dir.display());
    }
    let overrides = SettingsOverrides {
        retrieval: args.retrieval.map(|r| match r {
            RetrievalArg::Auto => Retrieval::Auto,
            RetrievalArg::Exact => Retrieval::Exact,
            RetrievalArg::Ann => Retrieval::Ann,
        }),
        ef_search: args.ef_search,
        sequence_blend: args.sequence_blend,
        explore_share: Some(args.explore_share),
    };
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("listening on {addr}");
    if args.demo {
        let url = format!("http://{addr}");
        println!("try it (in another terminal):");
        println!("  cargo run --release --bin affinity-client -- --addr {url} info");
        println!("  cargo run --release --bin affinity-client -- --addr {url} recommend --user user-0001 --k 5");
        println!("  cargo run --release --bin affinity-client -- --addr {url} similar --item sku-0001 --k 5 --mode content");
        println!("  cargo run --release --bin affinity-client -- --addr {url} smoke");
    }
    let events_dir = match (args.events_dir, args.no_ingest) {
        (_, true) => None,
        (Some(dir), false) => Some(dir),
        // A version directory is never written into: ingest needs --events-dir there.
        (None, false) if model_path.join("manifest.json").is_file() => {
            tracing::info!("ingest is off: --model names a version directory; give --events-dir to keep an event log");
            None
        }
        (None, false) => Some(model_path.join("events")),
    };
    let config = ServerConfig {
        overrides,
        events_dir,
        reload_poll: (args.reload_poll > 0).then(|| Duration::from_secs(args.reload_poll)),
        live: LiveLimits {
            per_user: args.live_events_per_user.max(1),
            max_users: args.live_max_users.max(1),
        },
        log_retention: (args.log_retention_days > 0).then(|| Duration::from_secs(args.log_retention_days * 86_400)),
        window_events: Some(args.window_events.max(1)),
        sync: match (args.no_fsync, args.fsync_window_ms) {
            (true, _) => {
                tracing::warn!("--no-fsync: acknowledged events are not synced to disk and a power cut can lose them");
                SyncPolicy::Off
            }
            (false, 0) => SyncPolicy::EveryRound,
            (false, ms) => SyncPolicy::Window(Duration::from_millis(ms)),
        },
    };
    let state = ServerState::configured(model_path, config);
    server::run(listener, state, server::shutdown_signal()).await
}

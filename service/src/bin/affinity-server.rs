//! `affinity-server`: serves an affinity model over gRPC.
//!
//! `affinity-server --model MODEL_ROOT --listen 127.0.0.1:50051` serves a trained model;
//! `--demo` first trains a model on a built-in synthetic store if the model root holds
//! none. `affinity-client smoke` checks a running demo server. Ingested events are
//! logged in `events/` inside the model root unless `--events-dir` says elsewhere.
//! Everything can also come from a TOML file (`--config`) and `AFFINITY__…` variables:
//! see `affinity_service::config` and `examples/server.toml`.

// Every request allocates its query, answer and HTTP/2 buffers and frees them on another
// thread: mimalloc's per-thread free lists cost a fifth less per Recommend than glibc's
// arenas (README, "Throughput under load").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use affinity_service::config::{Config, LogFormat, RetrievalMode};
use affinity_service::gate::keys::KeyStore;
use affinity_service::server::Options;
use affinity_service::state::ServerState;
use affinity_service::{demo, server};
use anyhow::{Context, Result};
use clap::Parser;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tonic::transport::{Identity, ServerTlsConfig};

#[derive(Parser, Debug)]
#[command(name = "affinity-server", version, about = "Serve affinity recommendations over gRPC")]
struct Args {
    /// TOML configuration file (keys as in examples/server.toml); flags and
    /// `AFFINITY__SECTION__KEY` variables override it.
    #[arg(long, env = "AFFINITY_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Model root (holding `current`) or one version directory.
    #[arg(long, env = "AFFINITY_MODEL")]
    model: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:50051); port 0 picks a free port (printed
    /// on stdout).
    #[arg(long, env = "AFFINITY_LISTEN")]
    listen: Option<SocketAddr>,
    /// Serve Prometheus metrics on this address (`GET /metrics`); port 0 picks one.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Train a demo model on a built-in synthetic store if none exists (default model
    /// root: ./affinity-demo-model).
    #[arg(long)]
    demo: bool,
    /// How candidates are found (default: as the model was trained to be served: exact
    /// up to its `exact_max_items`, HNSW above).
    #[arg(long, value_enum)]
    retrieval: Option<RetrievalMode>,
    /// HNSW search list size (overrides the model's).
    #[arg(long)]
    ef_search: Option<usize>,
    /// Share of the score from recent items' neighbours, 0..=1 (overrides the model's).
    #[arg(long)]
    sequence_blend: Option<f64>,
    /// Expected share of each Recommend list given to items nobody has interacted with
    /// yet (new arrivals), 0..=1, at the list's tail; fixed per user and day (default
    /// 0.05). 0 turns exploration off (evaluation never explores).
    #[arg(long)]
    explore_share: Option<f64>,
    /// Where ingested events are logged (default: `events/` inside the model root; with
    /// --model naming a version directory, ingest is off unless this is given).
    #[arg(long, env = "AFFINITY_EVENTS_DIR")]
    events_dir: Option<PathBuf>,
    /// Run without an event log: IngestEvents answers UNAVAILABLE (wins over
    /// --events-dir).
    #[arg(long)]
    no_ingest: bool,
    /// Seconds between looks for a new version under the model root (default 10; 0: only
    /// on the ReloadModel RPC).
    #[arg(long, env = "AFFINITY_RELOAD_POLL")]
    reload_poll: Option<u64>,
    /// Group-commit window in ms: after a batch arrives, wait this long for more before
    /// syncing the event log (default 0: sync at once; every batch waiting is still
    /// synced together).
    #[arg(long)]
    fsync_window_ms: Option<u64>,
    /// Never sync the event log: acknowledged events survive a server crash but not a
    /// power cut. For throughput tests only.
    #[arg(long, conflicts_with = "fsync_window_ms")]
    no_fsync: bool,
    /// Remove event-log segments older than this many days once a loaded model was
    /// trained through them (default 0: keep the whole log).
    #[arg(long)]
    log_retention_days: Option<u64>,
    /// Latest live events kept per user (default 100).
    #[arg(long)]
    live_events_per_user: Option<usize>,
    /// Users kept in the live state (default 1,000,000); the least recently active are
    /// evicted beyond it (their events stay in the log).
    #[arg(long)]
    live_max_users: Option<usize>,
    /// Interactions since training kept for time windows, trends and item metrics (the
    /// oldest go first; ~100 bytes each; default 500,000).
    #[arg(long)]
    window_events: Option<usize>,
    /// Requests served at once (default 1024); the excess gets RESOURCE_EXHAUSTED at once.
    /// 0: no limit.
    #[arg(long)]
    max_concurrent_requests: Option<usize>,
    /// After SIGTERM, seconds in-flight requests have to finish (default 20).
    #[arg(long)]
    drain_secs: Option<u64>,
    /// API keys file, one `ROLE KEY` per line (roles: read, write, admin); re-read when it
    /// changes. Keys may also come from AFFINITY_API_KEYS.
    #[arg(long)]
    api_keys_file: Option<PathBuf>,
    /// PEM certificate chain for TLS (with --tls-key).
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// PEM private key for TLS (with --tls-cert).
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Serve plaintext on a non-loopback address.
    #[arg(long)]
    plaintext: bool,
    /// Log lines as `human`, `json` or `auto` (human on a terminal, JSON otherwise).
    #[arg(long)]
    log_format: Option<String>,
}

impl Args {
    /// The flags that were given, shaped as a partial [`Config`].
    fn as_config(&self) -> Value {
        let mut top = Map::new();
        let mut sections: Map<String, Value> = Map::new();
        let mut put = |section: Option<&str>, key: &str, value: Value| match section {
            None => {
                top.insert(key.into(), value);
            }
            Some(s) => {
                if let Some(obj) = sections.entry(s.to_string()).or_insert_with(|| json!({})).as_object_mut() {
                    obj.insert(key.into(), value);
                }
            }
        };
        let given = [
            (None, "model", some(&self.model)),
            (None, "listen", some(&self.listen)),
            (None, "metrics_listen", some(&self.metrics_listen)),
            (None, "reload_poll_secs", some(&self.reload_poll)),
            (Some("serving"), "retrieval", some(&self.retrieval)),
            (Some("serving"), "ef_search", some(&self.ef_search)),
            (Some("serving"), "sequence_blend", some(&self.sequence_blend)),
            (Some("serving"), "explore_share", some(&self.explore_share)),
            (Some("ingest"), "events_dir", some(&self.events_dir)),
            (Some("ingest"), "enabled", self.no_ingest.then_some(json!(false))),
            (Some("ingest"), "fsync", self.no_fsync.then_some(json!(false))),
            (Some("ingest"), "fsync_window_ms", some(&self.fsync_window_ms)),
            (Some("ingest"), "log_retention_days", some(&self.log_retention_days)),
            (Some("live"), "events_per_user", some(&self.live_events_per_user)),
            (Some("live"), "max_users", some(&self.live_max_users)),
            (Some("live"), "window_events", some(&self.window_events)),
            (Some("limits"), "max_concurrent_requests", some(&self.max_concurrent_requests)),
            (Some("limits"), "drain_secs", some(&self.drain_secs)),
            (Some("auth"), "keys_file", some(&self.api_keys_file)),
            (Some("tls"), "cert", some(&self.tls_cert)),
            (Some("tls"), "key", some(&self.tls_key)),
            (Some("tls"), "plaintext", self.plaintext.then_some(json!(true))),
            (Some("log"), "format", some(&self.log_format)),
        ];
        for (section, key, value) in given {
            if let Some(v) = value {
                put(section, key, v);
            }
        }
        top.extend(sections);
        Value::Object(top)
    }
}

/// `v` as a configuration value, if given.
fn some(v: &Option<impl serde::Serialize>) -> Option<Value> {
    v.as_ref().and_then(|v| serde_json::to_value(v).ok())
}

/// Installs the log subscriber (and the OpenTelemetry export when configured); the guard
/// flushes the export at exit.
fn init_logging(config: &Config) -> Result<affinity_service::telemetry::Guard> {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| config.log.filter.as_str().into());
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let json = match config.log.format {
        LogFormat::Json => true,
        LogFormat::Human => false,
        LogFormat::Auto => !terminal,
    };
    let (otel, guard) = affinity_service::telemetry::layer(config.log.otlp_endpoint.as_deref()).map_err(anyhow::Error::msg)?;
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if json {
        fmt.json().with_current_span(true).with_span_list(false).boxed()
    } else {
        // Colour codes only on a terminal: logs redirected to a file stay plain text.
        fmt.with_ansi(terminal).boxed()
    };
    // The export sits on the registry; the filter above it applies to every layer.
    tracing_subscriber::registry().with(otel).with(filter).with(fmt).init();
    Ok(guard)
}

fn main() {
    let args = Args::parse();
    let config = match Config::load(args.config.as_deref(), &args.as_config()).and_then(|c| c.validate().map(|()| c)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    if args.print_config {
        match toml::to_string_pretty(&config) {
            Ok(text) => print!("{text}"),
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    // Inside the runtime: an OpenTelemetry exporter's connection runs on it.
    let telemetry = match runtime.block_on(async { init_logging(&config) }) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    };
    let result = runtime.block_on(run(config, args.demo));
    drop(telemetry);
    // A model load cut short by shutdown may still be running on the blocking pool:
    // do not wait for it.
    runtime.shutdown_timeout(Duration::from_millis(100));
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(config: Config, demo: bool) -> Result<()> {
    let model_path = config.model_path(demo)?;
    if demo {
        let root = model_path.clone();
        let dir = tokio::task::spawn_blocking(move || demo::prepare_model(&root)).await??;
        println!("demo model: {}", dir.display());
    }
    let keys = KeyStore::load(config.auth.keys_file.as_deref(), std::env::var("AFFINITY_API_KEYS").ok()).map_err(anyhow::Error::msg)?;
    if keys.keys().is_empty() {
        tracing::info!("no API keys configured: every RPC is open");
    } else {
        tracing::info!(keys = keys.keys().len(), "API keys required");
    }
    let tls = match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => {
            let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
            Some(ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?)))
        }
        _ => None,
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let metrics = match config.metrics_listen {
        Some(at) => {
            let l = TcpListener::bind(at).await.with_context(|| format!("cannot listen on {at} for metrics"))?;
            println!("metrics on http://{}/metrics", l.local_addr()?);
            Some(l)
        }
        None => None,
    };
    println!("listening on {addr}");
    if demo {
        let url = format!("http://{addr}");
        println!("try it (in another terminal):");
        println!("  cargo run --release --bin affinity-client -- --addr {url} info");
        println!("  cargo run --release --bin affinity-client -- --addr {url} recommend --user user-0001 --k 5");
        println!("  cargo run --release --bin affinity-client -- --addr {url} similar --item sku-0001 --k 5 --mode content");
        println!("  cargo run --release --bin affinity-client -- --addr {url} smoke");
    }
    if config.ingest.enabled && !config.ingest.fsync {
        tracing::warn!("ingest.fsync off: acknowledged events are not synced to disk and a power cut can lose them");
    }
    let state = ServerState::configured(model_path.clone(), config.server_config(&model_path));
    let options = Options {
        max_concurrent: config.limits.max_concurrent_requests,
        max_request_bytes: config.limits.max_request_bytes,
        request_timeout: (config.limits.request_timeout_ms > 0).then(|| Duration::from_millis(config.limits.request_timeout_ms)),
        drain: Duration::from_secs(config.limits.drain_secs),
        keys: Arc::clone(&keys),
        keys_reload: Duration::from_secs(config.auth.reload_secs.max(1)),
        tls,
        metrics,
    };
    server::run_with(listener, state, options, server::shutdown_signal()).await
}

//! The server's one typed configuration, and where each value comes from.
//!
//! Later sources override earlier ones: built-in defaults, then a TOML file
//! (`--config`, or `AFFINITY_CONFIG`), then `AFFINITY__SECTION__KEY` environment
//! variables (e.g. `AFFINITY__LIMITS__MAX_CONCURRENT_REQUESTS=64`), then command-line
//! flags (and the single-underscore variables `AFFINITY_MODEL`, `AFFINITY_LISTEN`,
//! `AFFINITY_EVENTS_DIR` and `AFFINITY_RELOAD_POLL` that the flags have always read).
//! Unknown keys in any source are refused, and [`Config::validate`] checks the values
//! together before anything starts. `affinity-server --print-config` shows the result;
//! `examples/server.toml` documents every key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::ingest::SyncPolicy;
use crate::live::LiveLimits;
use crate::state::{Retrieval, ServerConfig, SettingsOverrides, DEFAULT_WINDOW_EVENTS};

/// The largest concurrency limit accepted (beyond it, use 0: no limit).
const MAX_CONCURRENT: usize = 1_000_000;

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A source could not be read or holds a key or value of the wrong kind.
    #[error("{0}")]
    Load(#[from] Box<figment::Error>),
    /// Values that are each well-formed but do not work (together).
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Everything `affinity-server` can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Model root (holding `current`) or one version directory.
    pub model: Option<PathBuf>,
    /// gRPC address; port 0 picks a free port (printed on stdout).
    pub listen: SocketAddr,
    /// Prometheus `/metrics` address (plain HTTP); absent: no metrics endpoint.
    pub metrics_listen: Option<SocketAddr>,
    /// Seconds between looks for a new model version under the root (0: only on the
    /// `ReloadModel` RPC).
    pub reload_poll_secs: u64,
    pub serving: Serving,
    pub ingest: IngestConfig,
    pub live: Live,
    pub limits: Limits,
    pub auth: Auth,
    pub tls: Tls,
    pub log: Log,
}

/// Overrides of the model's recorded serving settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Serving {
    /// `auto` (as trained: exact up to the model's `exact_max_items`, HNSW above),
    /// `exact` or `ann`.
    pub retrieval: RetrievalMode,
    /// HNSW search list size (absent: the trainer's calibrated value).
    pub ef_search: Option<usize>,
    /// Share of the score from recent items' neighbours, 0..=1 (absent: the model's).
    pub sequence_blend: Option<f64>,
    /// Expected share of each Recommend list given to new arrivals, 0..=1.
    pub explore_share: f64,
    /// Stored users whose rankings are kept between requests (about 3 KiB each; 0
    /// keeps none and scores every request afresh).
    pub ranking_memo_users: usize,
}

/// [`Retrieval`] as a configuration value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RetrievalMode {
    Auto,
    Exact,
    Ann,
}

/// The event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Off: `IngestEvents` answers UNAVAILABLE.
    pub enabled: bool,
    /// Where events are logged (absent: `events/` in the model root; with `model`
    /// naming a version directory, ingest needs this).
    pub events_dir: Option<PathBuf>,
    /// Sync the log before acknowledging (off: a power cut can lose acknowledged events).
    pub fsync: bool,
    /// Group-commit window in ms (0: sync as soon as a round is written).
    pub fsync_window_ms: u64,
    /// Remove segments older than this many days once a model holds them (0: keep all).
    pub log_retention_days: u64,
}

/// Bounds of what the server keeps about users since training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Live {
    /// Latest live events kept per user.
    pub events_per_user: usize,
    /// Users kept in the live state (least recently active evicted beyond it).
    pub max_users: usize,
    /// Interactions kept for time windows, trends and item metrics.
    pub window_events: usize,
}

/// What one request may cost and how the server sheds and drains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Requests served at once; the excess is refused with RESOURCE_EXHAUSTED at once
    /// (health checks are never refused). 0: no limit.
    pub max_concurrent_requests: usize,
    /// Largest request message accepted, in bytes.
    pub max_request_bytes: usize,
    /// Longest a request may run, in ms, whatever deadline the client sets (0: only
    /// the client's deadline).
    pub request_timeout_ms: u64,
    /// After SIGTERM, how long in-flight requests have to finish, in seconds.
    pub drain_secs: u64,
}

/// API keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    /// File of keys, one `ROLE KEY` per line (`KEY` may be `sha256:HEX` to store only
    /// its digest); re-read when it changes. Keys may also come from `AFFINITY_API_KEYS`
    /// (same lines, or separated by `,`). No keys anywhere: every RPC is open.
    pub keys_file: Option<PathBuf>,
    /// Seconds between looks at the keys file for changes.
    pub reload_secs: u64,
}

/// Transport security.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    /// PEM certificate chain.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
    /// Serve plaintext on a non-loopback address (without it, such an address needs
    /// `cert` and `key`). Loopback addresses may always be plaintext.
    pub plaintext: bool,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    /// `human`, `json`, or `auto` (human on a terminal, JSON otherwise).
    pub format: LogFormat,
    /// `tracing` filter (`RUST_LOG` overrides it).
    pub filter: String,
    /// Export spans to this OpenTelemetry collector (OTLP over gRPC, e.g.
    /// `http://otel-collector:4317`); needs a server built with the `otel` feature.
    pub otlp_endpoint: Option<String>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Auto,
    Human,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            model: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            metrics_listen: None,
            reload_poll_secs: 10,
            serving: Serving::default(),
            ingest: IngestConfig::default(),
            live: Live::default(),
            limits: Limits::default(),
            auth: Auth::default(),
            tls: Tls::default(),
            log: Log::default(),
        }
    }
}

impl Default for Serving {
    fn default() -> Self {
        Serving {
            retrieval: RetrievalMode::Auto,
            ef_search: None,
            sequence_blend: None,
            explore_share: 0.05,
            ranking_memo_users: affinity_core::memo::DEFAULT_USERS,
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            enabled: true,
            events_dir: None,
            fsync: true,
            fsync_window_ms: 0,
            log_retention_days: 0,
        }
    }
}

impl Default for Live {
    fn default() -> Self {
        let limits = LiveLimits::default();
        Live {
            events_per_user: limits.per_user,
            max_users: limits.max_users,
            window_events: DEFAULT_WINDOW_EVENTS,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_concurrent_requests: 1024,
            max_request_bytes: 4 * 1024 * 1024,
            request_timeout_ms: 30_000,
            drain_secs: 20,
        }
    }
}

impl Default for Auth {
    fn default() -> Self {
        Auth { keys_file: None, reload_secs: 10 }
    }
}

impl Default for Log {
    fn default() -> Self {
        Log {
            format: LogFormat::Auto,
            filter: "info,hnsw_rs=warn".into(),
            otlp_endpoint: None,
        }
    }
}

impl Config {
    /// Defaults, then `file`, then `AFFINITY__…` variables, then `flags` (a partial
    /// configuration: only what was given on the command line).
    ///
    /// # Errors
    /// A source cannot be read, names an unknown key, or holds a value of the wrong type.
    pub fn load(file: Option<&Path>, flags: &serde_json::Value) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.is_file() {
                return Err(ConfigError::Invalid(format!("config file {} does not exist", file.display())));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = figment
            .merge(Env::prefixed("AFFINITY__").split("__").map(|k| k.as_str().to_ascii_lowercase().into()))
            .merge(Serialized::defaults(flags));
        figment.extract().map_err(|e| ConfigError::Load(Box::new(e)))
    }

    /// Checks the values together.
    ///
    /// # Errors
    /// The first value that does not work, named by its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |msg: String| Err(ConfigError::Invalid(msg));
        if !(0.0..=1.0).contains(&self.serving.explore_share) {
            return bad(format!("serving.explore_share must be from 0 to 1, got {}", self.serving.explore_share));
        }
        if let Some(b) = self.serving.sequence_blend.filter(|b| !(0.0..=1.0).contains(b)) {
            return bad(format!("serving.sequence_blend must be from 0 to 1, got {b}"));
        }
        if self.serving.ef_search == Some(0) {
            return bad("serving.ef_search must be at least 1".into());
        }
        if self.live.events_per_user == 0 || self.live.max_users == 0 || self.live.window_events == 0 {
            return bad("live.events_per_user, live.max_users and live.window_events must be at least 1".into());
        }
        if self.limits.max_concurrent_requests > MAX_CONCURRENT {
            return bad(format!(
                "limits.max_concurrent_requests must be at most {MAX_CONCURRENT} (0: no limit), got {}",
                self.limits.max_concurrent_requests
            ));
        }
        if self.limits.max_request_bytes < 1024 {
            return bad(format!("limits.max_request_bytes must be at least 1024, got {}", self.limits.max_request_bytes));
        }
        if self.ingest.log_retention_days > 36_500 {
            return bad(format!("ingest.log_retention_days must be at most 36500 (0: keep all), got {}", self.ingest.log_retention_days));
        }
        if !self.ingest.fsync && self.ingest.fsync_window_ms > 0 {
            return bad("ingest.fsync_window_ms has no effect with ingest.fsync off; set one of them".into());
        }
        match (&self.tls.cert, &self.tls.key) {
            (Some(_), None) | (None, Some(_)) => return bad("tls.cert and tls.key go together".into()),
            (Some(cert), Some(key)) => {
                for f in [cert, key] {
                    if !f.is_file() {
                        return bad(format!("TLS file {} does not exist", f.display()));
                    }
                }
                if self.tls.plaintext {
                    return bad("tls.plaintext with tls.cert and tls.key: choose one".into());
                }
            }
            (None, None) if !self.listen.ip().is_loopback() && !self.tls.plaintext => {
                return bad(format!(
                    "listening on {} (not loopback) needs tls.cert and tls.key, or tls.plaintext = true (--plaintext) to serve without TLS",
                    self.listen
                ))
            }
            (None, None) => {}
        }
        if self.log.otlp_endpoint.is_some() && !cfg!(feature = "otel") {
            return bad("log.otlp_endpoint needs a server built with the `otel` feature (cargo build --features otel)".into());
        }
        if let Some(f) = self.auth.keys_file.as_ref().filter(|f| !f.is_file()) {
            return bad(format!("auth.keys_file {} does not exist", f.display()));
        }
        Ok(())
    }

    /// The model path, with the demo's default root when `--demo` gives none.
    pub fn model_path(&self, demo: bool) -> Result<PathBuf, ConfigError> {
        match (&self.model, demo) {
            (Some(p), _) => Ok(p.clone()),
            (None, true) => Ok(PathBuf::from("affinity-demo-model")),
            (None, false) => Err(ConfigError::Invalid("`model` is required (--model, AFFINITY_MODEL, or the config file), or use --demo".into())),
        }
    }

    /// The state's configuration for `model_path`.
    pub fn server_config(&self, model_path: &Path) -> ServerConfig {
        let events_dir = match (&self.ingest.events_dir, self.ingest.enabled) {
            (_, false) => None,
            (Some(dir), true) => Some(dir.clone()),
            // A version directory is never written into: ingest needs events_dir there.
            (None, true) if model_path.join("manifest.json").is_file() => {
                tracing::info!("ingest is off: the model path names a version directory; set ingest.events_dir (--events-dir) to keep an event log");
                None
            }
            (None, true) => Some(model_path.join("events")),
        };
        ServerConfig {
            overrides: SettingsOverrides {
                retrieval: Some(match self.serving.retrieval {
                    RetrievalMode::Auto => Retrieval::Auto,
                    RetrievalMode::Exact => Retrieval::Exact,
                    RetrievalMode::Ann => Retrieval::Ann,
                }),
                ef_search: self.serving.ef_search,
                sequence_blend: self.serving.sequence_blend.map(|b| b as f32),
                explore_share: Some(self.serving.explore_share as f32),
                ranking_memo_users: Some(self.serving.ranking_memo_users),
            },
            events_dir,
            reload_poll: (self.reload_poll_secs > 0).then(|| Duration::from_secs(self.reload_poll_secs)),
            live: LiveLimits {
                per_user: self.live.events_per_user,
                max_users: self.live.max_users,
            },
            log_retention: (self.ingest.log_retention_days > 0).then(|| Duration::from_secs(self.ingest.log_retention_days.saturating_mul(86_400))),
            window_events: Some(self.live.window_events),
            sync: match (self.ingest.fsync, self.ingest.fsync_window_ms) {
                (false, _) => SyncPolicy::Off,
                (true, 0) => SyncPolicy::EveryRound,
                (true, ms) => SyncPolicy::Window(Duration::from_millis(ms)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
    fn file_then_environment_then_flags_and_unknown_keys_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "server.toml",
                "listen = \"127.0.0.1:7000\"\nreload_poll_secs = 3\n[limits]\nmax_concurrent_requests = 8\ndrain_secs = 5\n",
            )?;
            jail.set_env("AFFINITY__LIMITS__DRAIN_SECS", "7");
            jail.set_env("AFFINITY__SERVING__RETRIEVAL", "exact");
            let flags = serde_json::json!({ "reload_poll_secs": 0 });
            let c = Config::load(Some(Path::new("server.toml")), &flags).map_err(|e| e.to_string())?;
            assert_eq!(c.listen.port(), 7000, "from the file");
            assert_eq!(c.limits.max_concurrent_requests, 8, "from the file");
            assert_eq!(c.limits.drain_secs, 7, "the environment overrides the file");
            assert_eq!(c.serving.retrieval, RetrievalMode::Exact);
            assert_eq!(c.reload_poll_secs, 0, "flags override both");
            assert_eq!(c.limits.max_request_bytes, Limits::default().max_request_bytes, "defaults fill the rest");

            jail.create_file("typo.toml", "[limits]\nmax_concurent_requests = 8\n")?;
            let e = Config::load(Some(Path::new("typo.toml")), &serde_json::json!({})).unwrap_err().to_string();
            assert!(e.contains("max_concurent_requests"), "{e}");
            jail.set_env("AFFINITY__NO_SUCH_KEY", "1");
            let e = Config::load(None, &serde_json::json!({})).unwrap_err().to_string();
            assert!(e.contains("no_such_key"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn values_that_do_not_work_together_are_named() {
        let check = |edit: fn(&mut Config)| {
            let mut c = Config::default();
            edit(&mut c);
            c.validate().map_err(|e| e.to_string())
        };
        assert!(check(|_| {}).is_ok());
        assert!(check(|c| c.serving.explore_share = 1.5).unwrap_err().contains("serving.explore_share"));
        assert!(check(|c| c.tls.cert = Some("/nonexistent.pem".into())).unwrap_err().contains("tls.key"));
        let public = check(|c| c.listen = "0.0.0.0:50051".parse().unwrap_or(c.listen)).unwrap_err();
        assert!(public.contains("plaintext"), "{public}");
        assert!(check(|c| {
            c.listen = "0.0.0.0:50051".parse().unwrap_or(c.listen);
            c.tls.plaintext = true;
        })
        .is_ok());
        assert!(check(|c| c.auth.keys_file = Some("/nonexistent-keys".into())).unwrap_err().contains("auth.keys_file"));
        assert!(check(|c| c.limits.max_concurrent_requests = usize::MAX).unwrap_err().contains("max_concurrent_requests"));
    }
}

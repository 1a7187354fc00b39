//! Prometheus metrics: what every RPC did (by method and status code, with latency),
//! what is in flight and shed, the live model, ingest and reloads; served as text on
//! `/metrics` of a separate plain-HTTP port.
//!
//! Counters are updated where things happen (the gate for RPCs, ingest, reload); the
//! model gauges are read off the live model at scrape time, so they can never lag it.

use std::sync::Arc;

use prometheus::{Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use tokio::net::TcpListener;

use crate::state::ServerState;

/// Request latency buckets, in seconds: 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// gRPC status codes (0 to 16).
const CODES: usize = 17;

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    /// `affinity_rpc_requests_total{method, code}`.
    pub requests: IntCounterVec,
    /// `affinity_rpc_duration_seconds{method, code}`.
    pub latency: HistogramVec,
    /// `affinity_rpc_in_flight`.
    pub in_flight: IntGauge,
    /// `affinity_rpc_shed_total`: refused at the concurrency limit.
    pub shed: IntCounter,
    /// `affinity_events_ingested_total`: events made durable.
    pub events_ingested: IntCounter,
    /// `affinity_model_reloads_total{result}`: `loaded`, `unchanged` or `failed`.
    pub reloads: IntCounterVec,
    /// `affinity_model_info{version}` = 1 for the live version.
    model_info: IntGaugeVec,
    model_age: prometheus::Gauge,
    model_items: IntGauge,
    model_users: IntGauge,
    live_users: IntGauge,
    memo_users: IntGauge,
    memo_hits: IntGauge,
    memo_misses: IntGauge,
    model_load: Histogram,
    /// The request counter and latency histogram of each (label slot, code), looked up
    /// once: a label lookup hashes and locks, which every request would pay.
    per_rpc: Vec<std::sync::OnceLock<(IntCounter, Histogram)>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric at zero.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        // Registration fails only for a duplicate or malformed name: these are fixed.
        fn reg<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
            let _ = registry.register(Box::new(metric.clone()));
            metric
        }
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            reg(&registry, IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| unreachable!("metric {name}: {e}")))
        };
        let gauge = |name: &str, help: &str| reg(&registry, IntGauge::new(name, help).unwrap_or_else(|e| unreachable!("metric {name}: {e}")));
        let counter = |name: &str, help: &str| reg(&registry, IntCounter::new(name, help).unwrap_or_else(|e| unreachable!("metric {name}: {e}")));
        Metrics {
            requests: counter_vec("affinity_rpc_requests_total", "RPCs finished, by method and gRPC status code.", &["method", "code"]),
            latency: reg(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new("affinity_rpc_duration_seconds", "RPC latency from request to the end of the response, by method and gRPC status code.")
                        .buckets(LATENCY_BUCKETS.to_vec()),
                    &["method", "code"],
                )
                .unwrap_or_else(|e| unreachable!("latency histogram: {e}")),
            ),
            in_flight: gauge("affinity_rpc_in_flight", "RPCs admitted and not yet finished."),
            shed: counter("affinity_rpc_shed_total", "RPCs refused with RESOURCE_EXHAUSTED at the concurrency limit."),
            events_ingested: counter("affinity_events_ingested_total", "Events made durable in the event log."),
            reloads: counter_vec("affinity_model_reloads_total", "Looks for a new model version, by result (loaded, unchanged, failed).", &["result"]),
            model_info: reg(
                &registry,
                IntGaugeVec::new(Opts::new("affinity_model_info", "1 for the live model version."), &["version"])
                    .unwrap_or_else(|e| unreachable!("model info: {e}")),
            ),
            model_age: reg(
                &registry,
                prometheus::Gauge::new("affinity_model_age_seconds", "Seconds since the live model was trained.").unwrap_or_else(|e| unreachable!("model age: {e}")),
            ),
            model_items: gauge("affinity_model_items", "Items in the live model."),
            model_users: gauge("affinity_model_users", "Users in the live model."),
            live_users: gauge("affinity_live_users", "Users with events since the model was trained, held in memory."),
            memo_users: gauge("affinity_ranking_memo_users", "Stored users whose rankings the live model keeps between requests."),
            memo_hits: gauge("affinity_ranking_memo_hits", "Recommend requests answered from a kept ranking since the live model was installed."),
            memo_misses: gauge("affinity_ranking_memo_misses", "Recommend requests the memo could answer that were scored (nothing kept for the user's state, or filters left too few kept items) since the live model was installed."),
            model_load: reg(
                &registry,
                Histogram::with_opts(HistogramOpts::new("affinity_model_load_seconds", "Time to load a model version.").buckets(vec![0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0]))
                    .unwrap_or_else(|e| unreachable!("load histogram: {e}")),
            ),
            per_rpc: (0..crate::gate::access::labels().count() * CODES).map(|_| std::sync::OnceLock::new()).collect(),
            registry,
        }
    }

    /// Counts one finished RPC of `label` (at `slot` of the access labels) with `code`.
    pub fn record(&self, slot: usize, label: &'static str, code: tonic::Code, seconds: f64) {
        let (count, latency) = self.per_rpc[slot * CODES + code as usize].get_or_init(|| {
            let labels = [label, crate::gate::code_name(code)];
            (self.requests.with_label_values(&labels), self.latency.with_label_values(&labels))
        });
        count.inc();
        latency.observe(seconds);
    }

    /// Records a model load's duration.
    pub fn observe_load(&self, seconds: f64) {
        self.model_load.observe(seconds);
    }

    /// The text exposition of every metric, model gauges read off `state` now.
    pub fn render(&self, state: &ServerState) -> String {
        if let Ok(live) = state.live() {
            let m = &live.model;
            self.model_info.reset();
            self.model_info.with_label_values(&[m.version()]).set(1);
            if let Ok(created) = chrono::DateTime::parse_from_rfc3339(&m.manifest().created_at) {
                let age = chrono::Utc::now().signed_duration_since(created);
                self.model_age.set(age.num_milliseconds() as f64 / 1000.0);
            }
            self.model_items.set(m.n_items() as i64);
            self.model_users.set(m.n_users() as i64);
            let memo = m.ranking_memo_stats();
            self.memo_users.set(memo.kept as i64);
            self.memo_hits.set(memo.hits as i64);
            self.memo_misses.set(memo.misses as i64);
        }
        self.live_users.set(state.users().stats().users as i64);
        let mut out = Vec::new();
        // Encoding to a Vec fails only on a metric with invalid data, which ours never are.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves, with `/livez` (200
/// while the process answers) and `/readyz` (200 while health reports SERVING, else 503)
/// for probes that cannot speak gRPC (Kubernetes' gRPC probes have no TLS).
pub async fn serve(listener: TcpListener, state: Arc<ServerState>, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    let ready = Arc::clone(&state);
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let state = Arc::clone(&state);
                async move {
                    (
                        [(http::header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
                        state.metrics().render(&state),
                    )
                }
            }),
        )
        .route("/livez", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let serving = ready.is_serving();
                async move {
                    match serving {
                        true => (http::StatusCode::OK, "serving\n"),
                        false => (http::StatusCode::SERVICE_UNAVAILABLE, "not serving\n"),
                    }
                }
            }),
        );
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

//! The server shell: serve `affinity.v1.Recommender`, gRPC health and reflection on a
//! caller-supplied listener until a caller-supplied shutdown signal.
//!
//! The listener, the state and the shutdown future come from the caller, so `main` and
//! the tests run exactly this code. Health reports NOT_SERVING until a model is live;
//! when the state names a model path, the model is loaded off the async runtime after
//! the listener is up. A model that cannot be loaded ends `run` with an error naming the
//! bad file (the binary exits non-zero); a shutdown signal during the load ends it at once.
//!
//! Every RPC passes the [`crate::gate`] (keys, concurrency limit, span, metrics). On
//! shutdown, health turns NOT_SERVING, the listener stops accepting, connections are
//! told to go away (HTTP/2 GOAWAY) and in-flight requests get [`Options::drain`] to
//! finish; then the event log is synced and `run` returns.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::FutureExt;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tracing::info;

use crate::api::RecommenderApi;
use crate::gate::keys::KeyStore;
use crate::gate::{Gate, GateLayer};
use crate::proto::recommender_server::RecommenderServer;
use crate::state::ServerState;

/// The health service name that is SERVING for as long as the process answers.
pub const LIVENESS: &str = "liveness";

/// How the shell serves: limits, keys, TLS, metrics, draining.
pub struct Options {
    /// Requests served at once; the excess is shed (0: no limit).
    pub max_concurrent: usize,
    /// Largest request message accepted, in bytes.
    pub max_request_bytes: usize,
    /// Longest any request may run (`None`: only the client's deadline).
    pub request_timeout: Option<Duration>,
    /// After the shutdown signal, how long in-flight requests have to finish.
    pub drain: Duration,
    /// The API keys (none: every RPC open).
    pub keys: Arc<KeyStore>,
    /// How often to re-read the keys file.
    pub keys_reload: Duration,
    /// Serve TLS with this configuration (`None`: plaintext).
    pub tls: Option<ServerTlsConfig>,
    /// Serve Prometheus metrics on this listener.
    pub metrics: Option<TcpListener>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_concurrent: 0,
            max_request_bytes: 4 * 1024 * 1024,
            request_timeout: None,
            drain: Duration::from_secs(20),
            keys: KeyStore::open(),
            keys_reload: Duration::from_secs(10),
            tls: None,
            metrics: None,
        }
    }
}

/// Serves with default [`Options`] (no limit, no keys, plaintext, no metrics port)
/// until `shutdown` resolves.
///
/// # Errors
/// The model named by `state` cannot be loaded, or the server fails.
pub async fn run(listener: TcpListener, state: Arc<ServerState>, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
    run_with(listener, state, Options::default(), shutdown).await
}

/// Serves as `options` say until `shutdown` resolves, then drains.
///
/// # Errors
/// The model named by `state` cannot be loaded, TLS cannot be set up, or the server fails.
pub async fn run_with(listener: TcpListener, state: Arc<ServerState>, options: Options, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
    let shutdown = shutdown.boxed().shared();
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_service_status("", ServingStatus::NotServing).await;
    reporter.set_not_serving::<RecommenderServer<RecommenderApi>>().await;
    // For liveness probes: the process answers, whatever the model does (a probe on ""
    // would kill a pod that is still loading a large model).
    reporter.set_service_status(LIVENESS, ServingStatus::Serving).await;
    // Reflection in both versions: grpcurl and current clients use v1, Python's
    // grpcio-reflection and older grpcurl only v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().context("cannot build the reflection service")?;
    let reflection_v1alpha = reflection().build_v1alpha().context("cannot build the reflection service")?;
    let api = RecommenderServer::new(RecommenderApi::new(Arc::clone(&state))).max_decoding_message_size(options.max_request_bytes);
    let gate = Gate::new(Arc::clone(&options.keys), Arc::clone(state.metrics()), options.max_concurrent);
    let mut builder = Server::builder();
    if let Some(tls) = options.tls {
        builder = builder.tls_config(tls).context("cannot set up TLS")?;
    }
    if let Some(timeout) = options.request_timeout {
        builder = builder.timeout(timeout);
    }
    if let Some(listener) = options.metrics {
        let (state, stop) = (Arc::clone(&state), shutdown.clone());
        tokio::spawn(async move {
            if let Err(e) = crate::gate::metrics::serve(listener, state, stop).await {
                tracing::error!(cause = %e, "metrics endpoint failed");
            }
        });
    }
    if options.keys.has_file() {
        tokio::spawn(watch_keys(Arc::clone(&options.keys), options.keys_reload));
    }
    let mut serving = tokio::spawn(
        builder
            .layer(GateLayer(gate))
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(api)
            .serve_with_incoming_shutdown(
                // Small unary responses: without TCP_NODELAY, Nagle + delayed ACK add ~40 ms.
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                shutdown.clone(),
            ),
    );
    if let (false, Some(path)) = (state.is_ready(), state.model_path().cloned()) {
        let loader = Arc::clone(&state);
        let load = tokio::task::spawn_blocking(move || -> affinity_core::Result<()> {
            loader.install(loader.load_timed(&path)?);
            Ok(())
        });
        tokio::select! {
            loaded = load => {
                let failed = match loaded {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(anyhow::Error::new(e).context("cannot load the model")),
                    Err(e) => Some(anyhow::anyhow!("model loading failed: {e}")),
                };
                if let Some(e) = failed {
                    serving.abort();
                    return Err(e);
                }
            }
            () = shutdown.clone() => {
                info!("shutdown while the model was loading");
                return drain(&mut serving, options.drain, &state).await;
            }
        }
    }
    // The event log replays what the model was not trained on, so it opens after the load.
    let events = Arc::clone(&state);
    tokio::task::spawn_blocking(move || events.open_events()).await.context("opening the event log failed")?;
    if let Ok(live) = state.live() {
        info!(
            version = live.model.version(),
            users = live.model.n_users(),
            items = live.model.n_items(),
            scoring = if live.settings.scores_exactly(live.model.n_items()) { "exact" } else { "ann" },
            "model loaded"
        );
    }
    reporter.set_service_status("", ServingStatus::Serving).await;
    reporter.set_serving::<RecommenderServer<RecommenderApi>>().await;
    state.set_serving(true);
    state.apply_retention().await;
    if let Some(every) = state.reload_poll() {
        tokio::spawn(poll_for_new_versions(Arc::clone(&state), every));
    }
    let served = tokio::select! {
        finished = &mut serving => finished.context("server task failed").and_then(|r| r.context("server failed")),
        () = shutdown.clone() => {
            // The server saw the same signal: it accepts nothing new and has sent GOAWAY.
            state.set_serving(false);
            reporter.set_service_status("", ServingStatus::NotServing).await;
            reporter.set_not_serving::<RecommenderServer<RecommenderApi>>().await;
            drain(&mut serving, options.drain, &state).await
        }
    };
    // Whatever ended serving, what was written is synced.
    if let Ok(log) = state.ingest() {
        if let Err(e) = log.flush().await {
            tracing::error!(cause = %e, "cannot sync the event log at shutdown");
        }
    }
    info!("server stopped");
    served
}

/// Gives the in-flight calls of a server that saw the shutdown signal up to `within` to
/// finish, then cuts off what is left.
async fn drain(serving: &mut tokio::task::JoinHandle<Result<(), tonic::transport::Error>>, within: Duration, state: &ServerState) -> Result<()> {
    info!(in_flight = state.metrics().in_flight.get(), drain_secs = within.as_secs_f64(), "draining");
    match tokio::time::timeout(within, &mut *serving).await {
        Ok(finished) => finished.context("server task failed")?.context("server failed"),
        Err(_) => {
            tracing::warn!(in_flight = state.metrics().in_flight.get(), "drain time is over; cutting off what is still running");
            serving.abort();
            Ok(())
        }
    }
}

/// Re-reads the API keys file every `every`; a file that fails to parse is logged and the
/// keys in force stay.
async fn watch_keys(keys: Arc<KeyStore>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let k = Arc::clone(&keys);
        match tokio::task::spawn_blocking(move || k.reload()).await {
            Ok(Ok(true)) => info!(keys = keys.keys().len(), "API keys reloaded"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::error!(cause = %e, "API keys file refused; the keys in force stay"),
            Err(e) => tracing::error!(cause = %e, "API keys reload failed"),
        }
    }
}

/// Looks for a new version under the model root every `every`; a version that cannot be
/// loaded is logged once and the live one keeps serving.
async fn poll_for_new_versions(state: Arc<ServerState>, every: std::time::Duration) {
    let mut last_error = String::new();
    loop {
        tokio::time::sleep(every).await;
        let s = Arc::clone(&state);
        match tokio::task::spawn_blocking(move || s.reload()).await {
            Ok(Ok(r)) => {
                last_error.clear();
                if r.changed {
                    state.apply_retention().await;
                }
            }
            Ok(Err(e)) => {
                let e = e.to_string();
                if e != last_error {
                    tracing::error!(cause = %e, "new model version refused; the current one keeps serving");
                    last_error = e;
                }
            }
            Err(e) => tracing::error!(cause = %e, "reload task failed"),
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    info!("shutdown signal received");
}

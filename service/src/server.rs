//! The server shell: serve `affinity.v1.Recommender`, gRPC health and reflection on a
//! caller-supplied listener until a caller-supplied shutdown signal.
//!
//! The listener, the state and the shutdown future come from the caller, so `main` and
//! the tests run exactly this code. Health reports NOT_SERVING until a model is live;
//! when the state names a model path, the model is loaded off the async runtime after
//! the listener is up. A model that cannot be loaded ends `run` with an error naming the
//! bad file (the binary exits non-zero); a shutdown signal during the load ends it at once.

use std::future::Future;
use std::sync::Arc;

use affinity_core::model::format;
use anyhow::{Context, Result};
use futures::FutureExt;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tracing::info;

use crate::api::RecommenderApi;
use crate::proto::recommender_server::RecommenderServer;
use crate::state::ServerState;

/// Largest request the server accepts (a `recent_items` list or exclude list).
const MAX_DECODING_BYTES: usize = 4 * 1024 * 1024;

/// Serves until `shutdown` resolves.
///
/// # Errors
/// The model named by `state` cannot be loaded, or the server fails.
pub async fn run(listener: TcpListener, state: Arc<ServerState>, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
    let shutdown = shutdown.boxed().shared();
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_service_status("", ServingStatus::NotServing).await;
    reporter.set_not_serving::<RecommenderServer<RecommenderApi>>().await;
    // Reflection in both versions: grpcurl and current clients use v1, Python's
    // grpcio-reflection and older grpcurl only v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().context("cannot build the reflection service")?;
    let reflection_v1alpha = reflection().build_v1alpha().context("cannot build the reflection service")?;
    let api = RecommenderServer::new(RecommenderApi::new(Arc::clone(&state))).max_decoding_message_size(MAX_DECODING_BYTES);
    let serving = tokio::spawn(
        Server::builder()
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
            loader.install(format::load(&path)?);
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
                serving.await.context("server task failed")?.context("server failed")?;
                return Ok(());
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
    state.apply_retention().await;
    if let Some(every) = state.reload_poll() {
        tokio::spawn(poll_for_new_versions(Arc::clone(&state), every));
    }
    serving.await.context("server task failed")?.context("server failed")?;
    info!("server stopped");
    Ok(())
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

//! Server wiring: load the model, serve `affinity.v1.Recommender`, gRPC health and
//! reflection on a caller-supplied listener until a caller-supplied shutdown signal.
//!
//! The listener and the shutdown future come from the caller so `main`, the demo smoke
//! test and integration tests all run exactly this code. Health reports NOT_SERVING
//! while the model loads; a model that cannot be loaded ends `run` with an error naming
//! the bad file, which `main` turns into a non-zero exit.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use affinity_core::model;
use anyhow::{Context, Result};
use arc_swap::ArcSwapOption;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tracing::info;

use crate::api::{ModelSlot, RecommenderApi};
use crate::proto::recommender_server::RecommenderServer;

/// Largest request the server accepts (a `recent_items` list or exclude list).
const MAX_DECODING_BYTES: usize = 4 * 1024 * 1024;

/// Serves until `shutdown` resolves. Fails if the model at `model_path` cannot be loaded.
pub async fn run(listener: TcpListener, model_path: PathBuf, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
    let slot: ModelSlot = Arc::new(ArcSwapOption::empty());
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_service_status("", ServingStatus::NotServing).await;
    reporter.set_not_serving::<RecommenderServer<RecommenderApi>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("cannot build the reflection service")?;
    let api = RecommenderServer::new(RecommenderApi::new(Arc::clone(&slot))).max_decoding_message_size(MAX_DECODING_BYTES);
    let serving = tokio::spawn(
        Server::builder()
            .add_service(health)
            .add_service(reflection)
            .add_service(api)
            .serve_with_incoming_shutdown(
                // Small unary responses: without TCP_NODELAY, Nagle + delayed ACK add ~40 ms.
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                shutdown,
            ),
    );
    let path = model_path.clone();
    let loaded = tokio::task::spawn_blocking(move || model::load(&path)).await;
    let m = match loaded {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => {
            serving.abort();
            return Err(e).context("cannot load the model");
        }
        Err(e) => {
            serving.abort();
            return Err(anyhow::anyhow!("model loading failed: {e}"));
        }
    };
    info!(
        version = m.version(),
        users = m.manifest.counts.users,
        items = m.manifest.counts.items,
        scoring = if m.uses_exact_scoring() { "exact" } else { "ann" },
        "model loaded"
    );
    slot.store(Some(Arc::new(m)));
    reporter.set_service_status("", ServingStatus::Serving).await;
    reporter.set_serving::<RecommenderServer<RecommenderApi>>().await;
    serving.await.context("server task failed")?.context("server failed")?;
    info!("server stopped");
    Ok(())
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

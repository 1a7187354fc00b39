//! `--demo` and `--smoke`: a model with no external data, and a self-check against it.
//!
//! The demo trains on the deterministic synthetic store from `affinity_core::demo`
//! through the same pipeline as the trainer and publishes it like the trainer does, so
//! the server then loads it through its normal path. The smoke check talks to the running
//! server over gRPC like any client would.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use affinity_core::data::TimeKind;
use affinity_core::demo::{generate, DemoSize};
use affinity_core::model;
use affinity_core::params::TrainParams;
use affinity_core::train::{train, NoProgress};
use anyhow::{bail, ensure, Context, Result};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::proto::recommender_client::RecommenderClient;
use crate::proto::{self, recommend_request::Subject, similar_items_request::Mode};

/// Seed of the demo store.
pub const DEMO_SEED: u64 = 7;

/// Returns a model under `root`, training the demo one if none is there yet.
pub fn prepare_model(root: &Path) -> Result<PathBuf> {
    if let Ok(dir) = model::resolve(root) {
        return Ok(dir);
    }
    let data = generate(DemoSize::default(), DEMO_SEED);
    let mut m = train(&data, TimeKind::Unix, &TrainParams::default(), &NoProgress);
    let dir = model::save(&mut m, root, 3).with_context(|| format!("cannot write the demo model to {}", root.display()))?;
    Ok(dir)
}

/// Waits until the server's health check reports SERVING.
pub async fn wait_serving(addr: &str, timeout: Duration) -> Result<Channel> {
    let start = Instant::now();
    loop {
        if let Ok(channel) = Channel::from_shared(addr.to_string())?.tcp_nodelay(true).connect().await {
            let mut health = HealthClient::new(channel.clone());
            if let Ok(r) = health.check(HealthCheckRequest { service: String::new() }).await {
                if r.into_inner().status == ServingStatus::Serving as i32 {
                    return Ok(channel);
                }
            }
        }
        if start.elapsed() > timeout {
            bail!("server at {addr} did not report SERVING within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Queries the server the way a storefront would and checks the answers make sense.
pub async fn smoke(addr: &str) -> Result<()> {
    let channel = wait_serving(addr, Duration::from_secs(60)).await?;
    let mut client = RecommenderClient::new(channel);
    let info = client.model_info(proto::ModelInfoRequest {}).await?.into_inner();
    println!("smoke: model {} ({} users, {} items, scoring {})", info.version, info.users, info.items, info.scoring);
    ensure!(info.items > 0 && info.users > 0, "model is empty");

    let rec = |user: &str| proto::RecommendRequest {
        subject: Some(Subject::UserId(user.to_string())),
        k: 10,
        ..Default::default()
    };
    let a = client.recommend(rec("user-0001")).await?.into_inner();
    let b = client.recommend(rec("user-0002")).await?.into_inner();
    ensure!(a.items.len() == 10, "expected 10 items for user-0001, got {}", a.items.len());
    let ids = |r: &proto::RecommendResponse| r.items.iter().map(|i| i.item_id.clone()).collect::<Vec<_>>();
    ensure!(ids(&a) != ids(&b), "two users got identical recommendations");
    println!("smoke: user-0001 → {}", ids(&a).join(", "));
    if let Some(first) = a.items.first().and_then(|i| i.reason.as_ref()) {
        println!("smoke:   reason: {}", first.text);
    }

    let cold = client.recommend(rec("nobody-knows-me")).await?.into_inner();
    ensure!(cold.retrieval == proto::Retrieval::Popularity as i32, "unknown user should get popular items");

    let similar = client
        .similar_items(proto::SimilarItemsRequest {
            item_id: "sku-0001".into(),
            k: 5,
            mode: Mode::Blend as i32,
        })
        .await?
        .into_inner();
    ensure!(similar.items.len() == 5, "expected 5 similar items");
    println!("smoke: similar to sku-0001 → {}", similar.items.iter().map(|i| i.item_id.as_str()).collect::<Vec<_>>().join(", "));

    let bad = client
        .recommend(proto::RecommendRequest {
            k: 0,
            ..rec("user-0001")
        })
        .await;
    match bad {
        Err(s) if s.code() == tonic::Code::InvalidArgument => {}
        other => bail!("k = 0 should be INVALID_ARGUMENT, got {other:?}"),
    }
    println!("smoke: ok");
    Ok(())
}

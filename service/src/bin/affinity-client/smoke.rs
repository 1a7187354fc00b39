//! `affinity-client smoke`: checks a running server the way a storefront would use it.
//!
//! Written for the demo store (`affinity-server --demo`): it waits for the health check
//! to report SERVING, then asks for model info, two users' recommendations (they must
//! differ), an unknown user (popular items), similar items, and a bad request (it must
//! be refused with INVALID_ARGUMENT). Exits non-zero on the first thing that is wrong.

use std::time::Duration;

use affinity_service::proto::recommend_request::Subject;
use affinity_service::proto::recommender_client::RecommenderClient;
use affinity_service::proto::similar_items_request::Mode;
use affinity_service::client::{wait_serving_tls, ApiKey};
use affinity_service::proto;
use anyhow::{bail, ensure, Result};

/// Runs the checks against the server at `addr` (verified against `ca_pem` when it is
/// `https://`, sending `key` when given).
pub async fn smoke(addr: &str, ca_pem: Option<&[u8]>, key: ApiKey, timeout: Duration) -> Result<()> {
    let channel = wait_serving_tls(addr, ca_pem, timeout).await?;
    let mut client = RecommenderClient::with_interceptor(channel, key);
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
            rules: None,
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

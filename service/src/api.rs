//! The `affinity.v1.Recommender` service.
//!
//! Handlers validate and convert the request, run the scoring on the blocking pool (it is
//! CPU work and must not stall the async runtime), and convert the result. The model is
//! read through an [`ArcSwapOption`], so a request keeps the model it started with even
//! if a newer one is swapped in.

use std::sync::Arc;

use affinity_core::model::Model;
use affinity_core::recommend::{self, ReasonKind, RecommendRequest, Retrieval, Scored, SimilarMode, Subject};
use arc_swap::ArcSwapOption;
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::proto::{self, recommender_server::Recommender, similar_items_request::Mode};
use crate::status::{no_model, task_failed, to_status};

/// Shared handle to the live model (absent while loading).
pub type ModelSlot = Arc<ArcSwapOption<Model>>;

/// Implements the gRPC service over the live model.
#[derive(Clone)]
pub struct RecommenderApi {
    model: ModelSlot,
}

impl RecommenderApi {
    pub fn new(model: ModelSlot) -> Self {
        RecommenderApi { model }
    }

    fn current(&self) -> Result<Arc<Model>, Status> {
        self.model.load_full().ok_or_else(no_model)
    }
}

fn k_of(k: u32) -> Result<usize, Status> {
    recommend::validate_k(k as usize).map_err(to_status)?;
    Ok(k as usize)
}

fn to_proto(model: &Model, items: Vec<Scored>) -> Vec<proto::ScoredItem> {
    items
        .into_iter()
        .map(|s| proto::ScoredItem {
            item_id: model.items[s.item as usize].item_id.clone(),
            score: s.score,
            reason: Some(proto::Reason {
                kind: match s.reason {
                    ReasonKind::Personalized => proto::reason::Kind::Personalized,
                    ReasonKind::Popular => proto::reason::Kind::Popular,
                    ReasonKind::Similar => proto::reason::Kind::Similar,
                } as i32,
                text: s.reason_text,
            }),
        })
        .collect()
}

/// Runs CPU-heavy scoring on the blocking pool.
async fn off_runtime<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, affinity_core::Error> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(task_failed)?
        .map_err(to_status)
}

#[tonic::async_trait]
impl Recommender for RecommenderApi {
    #[instrument(skip_all, fields(k = request.get_ref().k))]
    async fn recommend(
        &self,
        request: Request<proto::RecommendRequest>,
    ) -> Result<Response<proto::RecommendResponse>, Status> {
        let req = request.into_inner();
        let k = k_of(req.k)?;
        let subject = req
            .subject
            .ok_or_else(|| Status::invalid_argument("`subject`: set user_id or recent_items"))?;
        if let proto::recommend_request::Subject::UserId(id) = &subject {
            if id.is_empty() {
                return Err(Status::invalid_argument("`user_id` must not be empty"));
            }
        }
        if req.exclude_item_ids.iter().any(String::is_empty) {
            return Err(Status::invalid_argument("`exclude_item_ids` must not contain empty ids"));
        }
        let model = self.current()?;
        let m = Arc::clone(&model);
        let (items, retrieval) = off_runtime(move || {
            let recent;
            let subject = match &subject {
                proto::recommend_request::Subject::UserId(id) => Subject::User(id),
                proto::recommend_request::Subject::RecentItems(r) => {
                    recent = r.item_ids.clone();
                    Subject::RecentItems(&recent)
                }
            };
            let r = m.recommend(&RecommendRequest {
                subject,
                k,
                exclude_seen: req.exclude_seen.unwrap_or(true),
                exclude_items: &req.exclude_item_ids,
                category: req.category.as_deref().filter(|c| !c.is_empty()),
            })?;
            Ok((to_proto(&m, r.items), r.retrieval))
        })
        .await?;
        Ok(Response::new(proto::RecommendResponse {
            items,
            model_version: model.version().to_string(),
            retrieval: match retrieval {
                Retrieval::Exact => proto::Retrieval::Exact,
                Retrieval::Ann => proto::Retrieval::Ann,
                Retrieval::Popularity => proto::Retrieval::Popularity,
            } as i32,
        }))
    }

    #[instrument(skip_all, fields(item = %request.get_ref().item_id, k = request.get_ref().k))]
    async fn similar_items(
        &self,
        request: Request<proto::SimilarItemsRequest>,
    ) -> Result<Response<proto::SimilarItemsResponse>, Status> {
        let req = request.into_inner();
        if req.item_id.is_empty() {
            return Err(Status::invalid_argument("`item_id` must not be empty"));
        }
        let k = k_of(req.k)?;
        let mode = match Mode::try_from(req.mode) {
            Ok(Mode::Collaborative) => SimilarMode::Collaborative,
            Ok(Mode::Content) => SimilarMode::Content,
            Ok(Mode::Blend) | Ok(Mode::Unspecified) => SimilarMode::Blend,
            Err(_) => return Err(Status::invalid_argument(format!("`mode`: unknown value {}", req.mode))),
        };
        let model = self.current()?;
        let m = Arc::clone(&model);
        let items = off_runtime(move || {
            let r = m.similar_items(&req.item_id, k, mode)?;
            Ok(to_proto(&m, r))
        })
        .await?;
        Ok(Response::new(proto::SimilarItemsResponse {
            items,
            model_version: model.version().to_string(),
        }))
    }

    async fn model_info(
        &self,
        _request: Request<proto::ModelInfoRequest>,
    ) -> Result<Response<proto::ModelInfoResponse>, Status> {
        let model = self.current()?;
        let m = &model.manifest;
        Ok(Response::new(proto::ModelInfoResponse {
            version: m.version.clone(),
            created_at: m.created_at.clone(),
            format_version: m.format_version,
            users: m.counts.users as u64,
            items: m.counts.items as u64,
            events: m.counts.events as u64,
            items_with_events: m.counts.items_with_events as u64,
            items_with_content: m.counts.items_with_content as u64,
            scoring: if model.uses_exact_scoring() { "exact" } else { "ann" }.to_string(),
            train_seconds: m.train_seconds,
        }))
    }
}

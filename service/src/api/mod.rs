//! The `affinity.v1.Recommender` service: one file per RPC for its wire conversions,
//! and here the handlers, each of the same shape:
//! `request.try_into()?` → scoring on the live model (off the async runtime) → `.into()`.
//!
//! Validation is the engine's (`RecommendQuery::validate` and friends); conversions only
//! map the wire shape. Every error leaves through [`crate::status`].

mod catalogue;
mod influence;
mod info;
mod ingest;
mod popular;
mod profile;
mod recommend;
mod rules;
mod similar;
mod social;

use std::sync::Arc;

use affinity_core::cancel::Cancel;
use affinity_core::data::Item;
use affinity_core::model::Upserted;
use affinity_core::recommend::{RecommendQuery, SimilarQuery, Subject};
use affinity_core::trending::At;
use tonic::{Request, Response, Status};
use tracing::{instrument, Instrument};

use crate::proto::{self, recommender_server::Recommender};
use crate::state::{LiveModel, ServerState};
use crate::status::ApiError;

/// A value computed on a live model, kept with that model so ids can be resolved
/// against the same version that produced it.
pub(crate) struct Answer<T> {
    pub(crate) live: Arc<LiveModel>,
    pub(crate) value: T,
}

/// Sets its flag when dropped (with the request future that owns it).
struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Checks a batch, makes it durable, applies it to the live state, and says what was
/// stored: `IngestEvents` and each message of `StreamEvents`.
async fn ingest_batch(state: &Arc<ServerState>, batch: proto::IngestEventsRequest) -> Result<proto::IngestEventsResponse, ApiError> {
    let events = ingest::checked(batch)?;
    let log = state.ingest()?;
    let (stored, seqs, duplicates) = log.store(events).await?;
    state.metrics().events_ingested.inc_by(stored.len() as u64);
    // Durable now: the next request of these users sees them. The window store may
    // re-resolve or trim hundreds of thousands of entries: off the async worker.
    state.users().apply(seqs.clone().zip(&stored));
    let (windows, numbered) = (Arc::clone(state), seqs.clone().zip(stored.iter().cloned()).collect::<Vec<_>>());
    tokio::task::spawn_blocking(move || windows.take_window_events(numbered.iter().map(|(seq, e)| (*seq, e)))).await.map_err(ApiError::from)?;
    Ok(proto::IngestEventsResponse {
        stored: stored.len() as u32,
        duplicates: duplicates as u32,
        last_sequence: seqs.end.saturating_sub(1),
    })
}

/// How long a StreamEvents call may send nothing before it is closed: an idle stream
/// holds a slot of the concurrency limit that other requests wait for.
const STREAM_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs a write (log, then apply) as a task of its own, in the request's span: a change
/// the log took is applied even if the client gives up (its deadline, a cancel) before
/// the answer.
async fn detached<T: Send + 'static>(work: impl std::future::Future<Output = Result<T, ApiError>> + Send + 'static) -> Result<T, ApiError> {
    tokio::spawn(work.in_current_span()).await.map_err(ApiError::from)?
}

/// How many records a committed range of log positions holds.
fn changes_len(seqs: std::ops::Range<u64>) -> u32 {
    (seqs.end - seqs.start) as u32
}

/// Implements the gRPC service over the server state.
#[derive(Clone)]
pub struct RecommenderApi {
    state: Arc<ServerState>,
}

impl RecommenderApi {
    /// Makes checked `changes` durable as log entries, then applies each with its log
    /// position (off the async runtime) through `apply`, which says whether the live
    /// model took it. Returns (stored, pending: not taken, last log position).
    async fn log_and_apply<C: Clone + Send + 'static>(
        &self,
        changes: Vec<C>,
        entry: fn(C) -> affinity_eventlog::Entry,
        apply: fn(&ServerState, u64, C) -> bool,
    ) -> Result<(u32, u32, u64), ApiError> {
        let state = Arc::clone(&self.state);
        detached(async move {
            let seqs = state.ingest()?.commit(changes.iter().cloned().map(entry).collect()).await.map_err(ApiError::from)?;
            // Durable now: apply to the live model (and to models installed later).
            let first = seqs.start;
            let pending = tokio::task::spawn_blocking(move || changes.into_iter().zip(first..).map(|(change, seq)| apply(&state, seq, change)).filter(|taken| !taken).count())
                .await
                .map_err(ApiError::from)?;
            Ok((changes_len(seqs.clone()), pending as u32, seqs.end.saturating_sub(1)))
        })
        .await
    }

    /// Gives a user's query what the server knows beyond the model: their live events,
    /// or, for a user who asked to be forgotten, no stored history at all.
    fn with_live_state(&self, query: &mut RecommendQuery) {
        if let Subject::User(user) = &query.subject {
            if self.state.is_deleted(user) {
                query.use_stored_history = false;
            } else {
                query.live = self.state.users().events_of(user);
            }
        }
    }

    /// Gives a user's query their contacts' live events (deleted contacts left out) when
    /// the ranking weighs what contacts had: a lock and a copy per contact, so it runs
    /// with the scoring, off the async workers.
    fn with_contacts_live(state: &ServerState, live: &LiveModel, query: &mut RecommendQuery) {
        let weighed = query.from_contacts || query.social == Some(true) || live.settings.social_blend > 0.0;
        let Subject::User(user) = &query.subject else { return };
        let model = &live.model;
        if !weighed || query.social == Some(false) || !query.use_stored_history || !model.has_social() {
            return;
        }
        let Some(u) = model.user_index(user) else { return };
        for c in model.contacts_of(u).iter().take(affinity_core::social::MAX_CONTACTS) {
            let id = model.users().id(c.user);
            let events = state.users().events_of(id);
            if !events.is_empty() && !state.is_deleted(id) {
                query.contacts_live.push((id.to_string(), events));
            }
        }
    }

    /// A service answering from `state`'s live model.
    pub fn new(state: Arc<ServerState>) -> Self {
        RecommenderApi { state }
    }

    /// Runs CPU work on the live model on the blocking pool, so it never stalls the
    /// async runtime. If this future is dropped first — the client's deadline passed or
    /// it went away — the work's [`Cancel`] flag is set and scoring stops at its next
    /// check instead of running on for nobody.
    async fn score<T: Send + 'static>(
        &self,
        f: impl FnOnce(&LiveModel, &Cancel) -> affinity_core::Result<T> + Send + 'static,
    ) -> Result<Answer<T>, ApiError> {
        self.score_if(|_| false, f).await
    }

    /// [`Self::score`], but work that `light` says is light on the live model runs right
    /// here on the async worker: the hop to the blocking pool and back (a thread wake-up
    /// each way) would cost more than the work (see `Model::is_light`).
    async fn score_if<T: Send + 'static>(
        &self,
        light: impl FnOnce(&LiveModel) -> bool,
        f: impl FnOnce(&LiveModel, &Cancel) -> affinity_core::Result<T> + Send + 'static,
    ) -> Result<Answer<T>, ApiError> {
        let live = self.state.live()?;
        if light(&live) {
            let value = f(&live, &Cancel::never())?;
            return Ok(Answer { live, value });
        }
        let on = Arc::clone(&live);
        let cancel = Cancel::new();
        let _stop_when_abandoned = CancelOnDrop(cancel.clone());
        let value = tokio::task::spawn_blocking(move || f(&on, &cancel)).await??;
        Ok(Answer { live, value })
    }
}

#[tonic::async_trait]
impl Recommender for RecommenderApi {
    #[instrument(skip_all, fields(k = request.get_ref().k))]
    async fn recommend(
        &self,
        request: Request<proto::RecommendRequest>,
    ) -> Result<Response<proto::RecommendResponse>, Status> {
        let mut query: RecommendQuery = request.into_inner().try_into()?;
        self.with_live_state(&mut query);
        let light = |l: &LiveModel| l.model.is_light_query(&l.settings, &query);
        let light = self.state.live().is_ok_and(|l| light(&l));
        let state = Arc::clone(&self.state);
        let answer = self
            .score_if(move |_| light, move |l, cancel| {
                Self::with_contacts_live(&state, l, &mut query);
                l.model.recommend_or_cancel(&query, &l.settings, cancel)
            })
            .await?;
        Ok(Response::new(answer.into()))
    }

    #[instrument(skip_all, fields(k = request.get_ref().k, members = request.get_ref().user_ids.len()))]
    async fn recommend_for_group(
        &self,
        request: Request<proto::RecommendForGroupRequest>,
    ) -> Result<Response<proto::RecommendForGroupResponse>, Status> {
        let r = request.into_inner();
        let strategy = recommend::group_strategy(r.strategy)?;
        // Size, k and rules are checked once, before a query is built per member (each
        // takes a copy of the rules).
        affinity_core::group::check_group(r.user_ids.len(), r.k as usize).map_err(ApiError::from)?;
        let (k, rules, category) = (r.k as usize, rules::rules(r.rules), r.category.filter(|c| !c.is_empty()));
        rules.validate().map_err(ApiError::from)?;
        // Each member as Recommend would see them: their live events, or nothing stored
        // for one who asked to be forgotten.
        let members: Vec<RecommendQuery> = r
            .user_ids
            .into_iter()
            .map(|user| {
                let mut q = RecommendQuery::for_user(user, k);
                q.rules = rules.clone();
                q.category = category.clone();
                self.with_live_state(&mut q);
                q
            })
            .collect();
        let state = Arc::clone(&self.state);
        let answer = self
            .score(move |l, cancel| {
                let mut members = members;
                for q in &mut members {
                    Self::with_contacts_live(&state, l, q);
                }
                l.model.recommend_for_group(&members, k, strategy, &l.settings, cancel)
            })
            .await?;
        Ok(Response::new(answer.into()))
    }

    #[instrument(skip_all, fields(k = request.get_ref().k))]
    async fn list_influencers(
        &self,
        request: Request<proto::ListInfluencersRequest>,
    ) -> Result<Response<proto::ListInfluencersResponse>, Status> {
        let r = request.into_inner();
        let (category, k) = (r.category, r.k as usize);
        // Users deleted since the model was trained are never named: the server marks
        // them forgotten on every model it installs, and the model leaves them out.
        let answer = self
            .score(move |l, _| Ok(l.model.influencers(&category, k)?.into_iter().map(|(u, i)| (u.to_string(), i)).collect::<Vec<_>>()))
            .await?;
        Ok(Response::new(answer.into()))
    }

    #[instrument(skip_all, fields(k = request.get_ref().k))]
    async fn similar_items(
        &self,
        request: Request<proto::SimilarItemsRequest>,
    ) -> Result<Response<proto::SimilarItemsResponse>, Status> {
        let query: SimilarQuery = request.into_inner().try_into()?;
        // Diversity rules compare candidates with each other: never light.
        let (k, diverse) = (query.k, query.rules.diversifies());
        let answer = self
            .score_if(move |l| !diverse && l.model.is_light(&l.settings, k, 0, 0), move |l, cancel| l.model.similar_items_with_shortfall(&query, &l.settings, cancel))
            .await?;
        Ok(Response::new(answer.into()))
    }

    #[instrument(skip_all, fields(k = request.get_ref().k))]
    async fn popular(&self, request: Request<proto::PopularRequest>) -> Result<Response<proto::PopularResponse>, Status> {
        let q: popular::PopularQuery = request.into_inner().try_into()?;
        let state = Arc::clone(&self.state);
        let answer = self
            .score(move |l, _| l.model.popular_in(&q.segment, q.category.as_deref(), &q.rules, q.k, q.window, At { now: q.now, live: &state.recent().snapshot(&l.model) }))
            .await?;
        Ok(Response::new(answer.into()))
    }

    async fn get_item_stats(&self, request: Request<proto::GetItemStatsRequest>) -> Result<Response<proto::ItemStats>, Status> {
        let r = request.into_inner();
        let segment = popular::segment(r.segment, "segment")?;
        let days = match popular::window(r.window)? {
            affinity_core::trending::Window::Days(d) => d,
            affinity_core::trending::Window::All => affinity_core::trending::KEPT_DAYS as u32,
        };
        if r.item_id.is_empty() || r.item_id.len() > affinity_core::recommend::MAX_ID_BYTES {
            return Err(ApiError::from(affinity_core::Error::invalid_argument("item_id", format!("ids are 1 to {} bytes, got {}", affinity_core::recommend::MAX_ID_BYTES, r.item_id.len()))).into());
        }
        let (item, now) = (r.item_id, popular::now(r.now)?);
        let state = Arc::clone(&self.state);
        let answer = self
            .score(move |l, _| Ok((item.clone(), days, l.model.item_stats(&item, &segment, days, At { now, live: &state.recent().snapshot(&l.model) })?)))
            .await?;
        Ok(Response::new(answer.into()))
    }

    #[instrument(skip_all, fields(k = request.get_ref().k))]
    async fn trending(&self, request: Request<proto::TrendingRequest>) -> Result<Response<proto::PopularResponse>, Status> {
        let q: popular::PopularQuery = request.into_inner().try_into()?;
        let days = match q.window {
            affinity_core::trending::Window::Days(d) => d,
            affinity_core::trending::Window::All => 7,
        };
        let state = Arc::clone(&self.state);
        let answer = self
            .score(move |l, _| l.model.trending_in(&q.segment, q.category.as_deref(), &q.rules, q.k, days, At { now: q.now, live: &state.recent().snapshot(&l.model) }))
            .await?;
        Ok(Response::new(answer.into()))
    }

    async fn get_user_profile(&self, request: Request<proto::GetUserProfileRequest>) -> Result<Response<proto::UserProfile>, Status> {
        let r = request.into_inner();
        let lifecycle = profile::lifecycle(r.new_days, r.active_days, r.churn_days)?;
        let query = RecommendQuery::for_user(r.user_id.as_str(), 1);
        query.validate().map_err(ApiError::from)?;
        let deleted = self.state.is_deleted(&r.user_id);
        let live = if deleted { Vec::new() } else { self.state.users().events_of(&r.user_id) };
        let (user, now) = (r.user_id, popular::now(r.now)?);
        let answer = self
            .score(move |l, _| Ok((user.clone(), l.model.user_profile(&user, &live, now, &lifecycle, !deleted)?)))
            .await?;
        Ok(Response::new(answer.into()))
    }

    async fn list_users(&self, request: Request<proto::ListUsersRequest>) -> Result<Response<proto::ListUsersResponse>, Status> {
        let q: profile::ListQuery = request.into_inner().try_into()?;
        let mut answer = self.score(move |l, _| l.model.list_users(&q.filter, q.now, &q.lifecycle, q.from, q.page)).await?;
        // Users who asked to be forgotten are never listed (a page may come back short).
        answer.value.0.retain(|u| !self.state.is_deleted(&u.user_id));
        Ok(Response::new(answer.into()))
    }

    #[instrument(skip_all, fields(events = request.get_ref().events.len()))]
    async fn ingest_events(
        &self,
        request: Request<proto::IngestEventsRequest>,
    ) -> Result<Response<proto::IngestEventsResponse>, Status> {
        let state = Arc::clone(&self.state);
        let batch = request.into_inner();
        Ok(Response::new(detached(async move { ingest_batch(&state, batch).await }).await?))
    }

    type StreamEventsStream = tokio_stream::wrappers::ReceiverStream<Result<proto::IngestEventsResponse, Status>>;

    async fn stream_events(
        &self,
        request: Request<tonic::Streaming<proto::IngestEventsRequest>>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let state = Arc::clone(&self.state);
        tokio::spawn(async move {
            loop {
                let next = tokio::time::timeout(STREAM_IDLE, inbound.message()).await;
                let answer = match next {
                    Ok(Ok(Some(batch))) => ingest_batch(&state, batch).await.map_err(Status::from),
                    Ok(Ok(None)) => break,
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(Status::from(ApiError::Idle(STREAM_IDLE.as_secs()))),
                };
                let failed = answer.is_err();
                if tx.send(answer).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    #[instrument(skip_all, fields(items = request.get_ref().items.len()))]
    async fn set_availability(
        &self,
        request: Request<proto::SetAvailabilityRequest>,
    ) -> Result<Response<proto::SetAvailabilityResponse>, Status> {
        let changes = catalogue::checked_availability(request.into_inner())?;
        let state = Arc::clone(&self.state);
        // Detached, and in the catalogue's turn: a change the log took is applied even if
        // the client gives up, and in the log's order.
        let work = async move {
            let _turn = state.catalogue_turn().await;
            let seqs = state.ingest()?.commit(changes.iter().cloned().map(affinity_eventlog::Entry::Availability).collect()).await.map_err(ApiError::from)?;
            // Durable now: apply to the live model (and to models installed later).
            let on = Arc::clone(&state);
            let unknown = tokio::task::spawn_blocking(move || changes.iter().filter(|c| !on.set_available(&c.item_id, c.available)).count())
                .await
                .map_err(ApiError::from)?;
            Ok::<_, ApiError>(proto::SetAvailabilityResponse {
                stored: changes_len(seqs.clone()),
                unknown: unknown as u32,
                last_sequence: seqs.end.saturating_sub(1),
            })
        };
        Ok(Response::new(detached(work).await?))
    }

    #[instrument(skip_all, fields(edges = request.get_ref().edges.len()))]
    async fn ingest_social_edges(
        &self,
        request: Request<proto::IngestSocialEdgesRequest>,
    ) -> Result<Response<proto::IngestSocialEdgesResponse>, Status> {
        let changes = social::checked(request.into_inner())?;
        let (stored, pending, last_sequence) = self.log_and_apply(changes, affinity_eventlog::Entry::Social, ServerState::change_social).await?;
        Ok(Response::new(proto::IngestSocialEdgesResponse { stored, pending, last_sequence }))
    }

    #[instrument(skip_all, fields(memberships = request.get_ref().memberships.len()))]
    async fn ingest_memberships(
        &self,
        request: Request<proto::IngestMembershipsRequest>,
    ) -> Result<Response<proto::IngestMembershipsResponse>, Status> {
        let changes = social::checked_memberships(request.into_inner())?;
        let (stored, pending, last_sequence) = self.log_and_apply(changes, affinity_eventlog::Entry::Membership, ServerState::change_membership).await?;
        Ok(Response::new(proto::IngestMembershipsResponse { stored, pending, last_sequence }))
    }

    #[instrument(skip_all, fields(items = request.get_ref().items.len()))]
    async fn upsert_items(&self, request: Request<proto::UpsertItemsRequest>) -> Result<Response<proto::UpsertItemsResponse>, Status> {
        let upserts = catalogue::checked_items(request.into_inner())?;
        let state = Arc::clone(&self.state);
        // Detached, and in the catalogue's turn (as SetAvailability): what an entry keeps
        // from the live catalogue is read in the same turn that logs and applies it.
        let work = async move {
            let _turn = state.catalogue_turn().await;
            let log = state.ingest()?;
            // An entry that does not say keeps the item's availability and listing time (a
            // new item is listed now): settle both before logging, so replaying the log
            // gives the same catalogue.
            let now = affinity_core::data::unix_now();
            let on = Arc::clone(&state);
            let items = tokio::task::spawn_blocking(move || {
                upserts
                    .into_iter()
                    .map(|u| Item {
                        available: u.available.unwrap_or_else(|| on.is_available(&u.item.item_id)),
                        // Only an item nobody knew is new now: a known item without a
                        // listing time keeps none rather than turning into a new arrival.
                        listed_at: u.item.listed_at.or_else(|| match on.knows_item(&u.item.item_id) {
                            true => on.listed_at(&u.item.item_id),
                            false => Some(now),
                        }),
                        ..u.item
                    })
                    .collect::<Vec<Item>>()
            })
            .await
            .map_err(ApiError::from)?;
            let seqs = log.commit(items.iter().cloned().map(affinity_eventlog::Entry::Item).collect()).await.map_err(ApiError::from)?;
            // Durable now: apply to the live model (embedding is CPU work: off the runtime).
            let on = Arc::clone(&state);
            let added = tokio::task::spawn_blocking(move || items.into_iter().map(|item| on.upsert_item(item)).filter(|u| matches!(u, Some(Upserted::Added(_)))).count())
                .await
                .map_err(ApiError::from)?;
            let stored = changes_len(seqs.clone());
            Ok::<_, ApiError>(proto::UpsertItemsResponse {
                updated: stored - added as u32,
                added: added as u32,
                last_sequence: seqs.end.saturating_sub(1),
            })
        };
        Ok(Response::new(detached(work).await?))
    }

    async fn reload_model(&self, _request: Request<proto::ReloadModelRequest>) -> Result<Response<proto::ReloadModelResponse>, Status> {
        let state = Arc::clone(&self.state);
        let reloaded = tokio::task::spawn_blocking(move || state.reload()).await.map_err(ApiError::from)?;
        let r = match reloaded {
            Ok(r) => r,
            Err(e @ affinity_core::Error::InvalidArgument { .. }) => return Err(ApiError::from(e).into()),
            Err(e) => return Err(ApiError::Reload(e.to_string()).into()),
        };
        if r.changed {
            self.state.apply_retention().await;
        }
        let position = self.state.live().map_or(0, |l| l.model.manifest().log_position);
        Ok(Response::new(proto::ReloadModelResponse {
            version: r.version,
            changed: r.changed,
            log_position: position,
        }))
    }

    async fn delete_user(&self, request: Request<proto::DeleteUserRequest>) -> Result<Response<proto::DeleteUserResponse>, Status> {
        let user = request.into_inner().user_id;
        let query = RecommendQuery::for_user(user.as_str(), 1);
        query.validate().map_err(ApiError::from)?;
        let removed = self.state.delete_user(&user).await?;
        tracing::info!(removed, "user deleted");
        Ok(Response::new(proto::DeleteUserResponse { removed_events: removed }))
    }

    async fn model_info(&self, _request: Request<proto::ModelInfoRequest>) -> Result<Response<proto::ModelInfoResponse>, Status> {
        let live = self.state.live()?;
        let mut info: proto::ModelInfoResponse = live.as_ref().into();
        let users = self.state.users().stats();
        info.live_users = users.users as u64;
        info.live_events = users.events as u64;
        info.live_bytes = users.bytes as u64;
        info.live_evicted = users.evicted;
        if let Ok(log) = self.state.ingest() {
            let m = log.metrics();
            info.log_next_position = log.next_position();
            info.log_appended = m.appended;
            info.log_syncs = m.syncs;
        }
        Ok(Response::new(info))
    }
}

/// Converts scored items, resolving ids against the model that scored them.
fn scored_items(live: &LiveModel, items: Vec<affinity_core::recommend::Scored>) -> Vec<proto::ScoredItem> {
    use affinity_core::recommend::ReasonKind;
    items
        .into_iter()
        .map(|s| proto::ScoredItem {
            item_id: live.model.item_id(s.item).to_string(),
            score: s.score,
            reason: Some(proto::Reason {
                kind: match s.reason {
                    ReasonKind::Personalized => proto::reason::Kind::Personalized,
                    ReasonKind::Popular => proto::reason::Kind::Popular,
                    ReasonKind::Similar => proto::reason::Kind::Similar,
                    ReasonKind::Repeat => proto::reason::Kind::Repeat,
                    ReasonKind::Trending => proto::reason::Kind::Trending,
                    ReasonKind::NewArrival => proto::reason::Kind::NewArrival,
                    ReasonKind::Nearby => proto::reason::Kind::Nearby,
                    ReasonKind::Social => proto::reason::Kind::Social,
                } as i32,
                text: s.reason_text,
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! Handlers called in process on the demo store's model, no network.

    use affinity_core::data::TimeKind;
    use affinity_core::demo;
    use affinity_core::params::TrainParams;
    use affinity_core::train::{train, NoProgress};
    use tonic::Code;

    use super::*;
    use crate::proto::recommend_request::Subject;
    use crate::state::SettingsOverrides;

    fn api() -> RecommenderApi {
        let data = demo::generate(demo::DemoSize::default(), demo::DEMO_SEED);
        let model = train(&data, TimeKind::Unix, &TrainParams::default(), &NoProgress);
        RecommenderApi::new(ServerState::with_model(model, SettingsOverrides::default()))
    }

    fn rec(subject: Option<Subject>, k: u32) -> Request<proto::RecommendRequest> {
        Request::new(proto::RecommendRequest {
            subject,
            k,
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn handlers_answer_and_refuse_in_process() {
        let api = api();
        let r = api.recommend(rec(Some(Subject::UserId("user-0001".into())), 7)).await.unwrap().into_inner();
        assert_eq!(r.items.len(), 7);
        assert_eq!(r.retrieval, proto::Retrieval::Exact as i32);
        assert!(!r.model_version.is_empty());

        let cold = api.recommend(rec(Some(Subject::UserId("stranger".into())), 3)).await.unwrap().into_inner();
        assert_eq!(cold.retrieval, proto::Retrieval::Popularity as i32);

        for (req, field) in [
            (rec(None, 5), "subject"),
            (rec(Some(Subject::UserId(String::new())), 5), "user_id"),
            (rec(Some(Subject::UserId("user-0001".into())), 0), "k"),
            (rec(Some(Subject::UserId("user-0001".into())), 1001), "k"),
        ] {
            let err = api.recommend(req).await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument);
            assert!(err.message().contains(&format!("`{field}`")), "{}", err.message());
        }

        let similar = api
            .similar_items(Request::new(proto::SimilarItemsRequest {
                rules: None,
                item_id: "sku-0001".into(),
                k: 4,
                mode: 99,
            }))
            .await
            .unwrap_err();
        assert_eq!(similar.code(), Code::InvalidArgument);
        assert!(similar.message().contains("`mode`"));
        let missing = api
            .similar_items(Request::new(proto::SimilarItemsRequest {
                rules: None,
                item_id: "no-such-sku".into(),
                k: 4,
                mode: 0,
            }))
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound);

        let info = api.model_info(Request::new(proto::ModelInfoRequest {})).await.unwrap().into_inner();
        assert_eq!(info.items, 407, "400 base items, the spike, the steady seller and five new arrivals");
        assert_eq!(info.scoring, "exact");
    }

    #[tokio::test]
    async fn a_dropped_request_cancels_its_scoring() {
        let api = api();
        let (seen, cancelled) = std::sync::mpsc::channel();
        let work = api.score(move |_, cancel| {
            // Stands in for long scoring: runs until cancelled (or 10 s pass).
            let start = std::time::Instant::now();
            while !cancel.is_cancelled() && start.elapsed() < std::time::Duration::from_secs(10) {
                std::thread::yield_now();
            }
            let _ = seen.send((cancel.is_cancelled(), start.elapsed()));
            Ok(())
        });
        // The client gives up after 50 ms: the request future is dropped.
        assert!(tokio::time::timeout(std::time::Duration::from_millis(50), work).await.is_err());
        let (was_cancelled, ran) = cancelled.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        assert!(was_cancelled, "the blocking work saw the cancellation");
        assert!(ran < std::time::Duration::from_secs(2), "it stopped soon after the drop: {ran:?}");
    }

    #[tokio::test]
    async fn no_model_is_unavailable() {
        let state = ServerState::new("/nonexistent".into(), SettingsOverrides::default());
        let api = RecommenderApi::new(state);
        let err = api.model_info(Request::new(proto::ModelInfoRequest {})).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
    }
}

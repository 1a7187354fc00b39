//! What every handler shares: the live model with the settings it is scored with, the
//! event log and the users' live state.
//!
//! The model sits behind an [`ArcSwapOption`]: a request takes an `Arc` to the model it
//! started with and keeps it to the end, so a model swapped in meanwhile never changes
//! an answer half-way (hot reload and metrics from later work hang off this same state).
//! Settings are resolved once per model: the trainer's recorded defaults, then the
//! server's configured overrides. The event log is opened once at start; ingested events
//! reach [`LiveUsers`] only after they are durable.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use affinity_core::data::Item;
use affinity_core::model::{format, Model, Upserted};
use affinity_core::settings::ServingSettings;
use arc_swap::ArcSwapOption;

use affinity_eventlog::{DeletedUsers, Entry};

use crate::catalogue::CatalogueChanges;
use crate::social::{MembershipChanges, SocialChanges};
use crate::gate::metrics::Metrics;
use crate::ingest::{Ingest, SyncPolicy};
use crate::live::{LiveLimits, LiveUsers};
use crate::recent::LiveInteractions;
use crate::status::ApiError;

/// How the server picks candidates, when configured to override the model's choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retrieval {
    /// Exact scoring up to the model's `exact_max_items`, ANN above (the default).
    Auto,
    /// Score every item exactly.
    Exact,
    /// Always go through the HNSW index (built at load if the model has none).
    Ann,
}

/// Serving settings the server's configuration overrides; `None` keeps the model's.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SettingsOverrides {
    pub retrieval: Option<Retrieval>,
    pub ef_search: Option<usize>,
    pub sequence_blend: Option<f32>,
    /// Share of Recommend slots for items without events (models carry 0).
    pub explore_share: Option<f32>,
    /// Stored users whose rankings each model keeps between requests (absent: the
    /// core's default; see `affinity_core::memo`).
    pub ranking_memo_users: Option<usize>,
}

impl SettingsOverrides {
    /// `base` with every configured override applied.
    pub fn apply(&self, base: ServingSettings) -> ServingSettings {
        let mut s = match self.retrieval {
            None | Some(Retrieval::Auto) => base,
            Some(Retrieval::Exact) => base.exact(),
            Some(Retrieval::Ann) => base.ann(),
        };
        if let Some(ef) = self.ef_search {
            s.ef_search = ef;
        }
        if let Some(b) = self.sequence_blend {
            s.sequence_blend = b;
        }
        if let Some(e) = self.explore_share {
            s.explore_share = e;
        }
        s
    }
}

/// A loaded model and the settings requests are scored with.
pub struct LiveModel {
    pub model: Model,
    pub settings: ServingSettings,
}

/// Shared by every handler and by the server shell.
pub struct ServerState {
    /// Where the model comes from (a model root or version directory); `None` when the
    /// caller installs a model itself.
    model_path: Option<PathBuf>,
    overrides: SettingsOverrides,
    live: ArcSwapOption<LiveModel>,
    /// Where the event log is kept; `None`: ingest is off.
    events_dir: Option<PathBuf>,
    /// The open event log, or why ingest is off; set once at start.
    ingest: OnceLock<Result<Ingest, String>>,
    /// What users did since the model was trained.
    users: LiveUsers,
    /// The same interactions, for time windows, trends and item metrics.
    recent: LiveInteractions,
    /// Catalogue changes since start, applied to every model installed, so a reload onto
    /// an older catalogue keeps them. Held while a change is applied to the live model
    /// and while a model is installed, so none falls between the two.
    catalogue: Mutex<CatalogueChanges>,
    /// Taken by a catalogue write (SetAvailability, UpsertItems) from before it is logged
    /// until it is applied: writes reach the live catalogue in the log's order, so live
    /// state and a restart's replay agree.
    catalogue_turn: tokio::sync::Mutex<()>,
    /// Social edges and memberships changed since start, applied to every model
    /// installed (as above).
    social: Mutex<SocialChanges>,
    memberships: Mutex<MembershipChanges>,
    /// Held while a reload runs.
    reloading: Mutex<()>,
    reload_poll: Option<Duration>,
    /// Users who asked to be forgotten (keyed hashes, beside the event log).
    deleted: Mutex<DeletedUsers>,
    sync: SyncPolicy,
    log_retention: Option<Duration>,
    /// What the server exports on `/metrics`.
    metrics: Arc<Metrics>,
    /// Whether health reports SERVING (model loaded, event log open, not draining).
    serving: std::sync::atomic::AtomicBool,
}

/// How a server from a model path is set up.
#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    /// Serving settings that override the model's.
    pub overrides: SettingsOverrides,
    /// Where the event log is kept (`None`: ingest off).
    pub events_dir: Option<PathBuf>,
    /// How often to look for a new model version (`None`: only on `ReloadModel`).
    pub reload_poll: Option<Duration>,
    /// Bounds of the live user state.
    pub live: LiveLimits,
    /// When the event log is synced (and batches acknowledged).
    pub sync: SyncPolicy,
    /// Log segments older than this that the live model holds are removed (`None`: keep).
    pub log_retention: Option<Duration>,
    /// Interactions since training kept for time windows (`None`: the default,
    /// [`DEFAULT_WINDOW_EVENTS`]).
    pub window_events: Option<usize>,
}

/// Interactions since training kept for windows, trends and item metrics by default.
pub const DEFAULT_WINDOW_EVENTS: usize = 500_000;

/// What a reload did.
#[derive(Debug, Clone, PartialEq)]
pub struct Reloaded {
    /// The version now live.
    pub version: String,
    /// Whether it replaced another.
    pub changed: bool,
}

impl ServerState {
    fn build(model_path: Option<PathBuf>, config: ServerConfig) -> ServerState {
        ServerState {
            model_path,
            overrides: config.overrides,
            live: ArcSwapOption::empty(),
            events_dir: config.events_dir,
            ingest: OnceLock::new(),
            users: LiveUsers::new(config.live),
            recent: LiveInteractions::new(config.window_events.unwrap_or(DEFAULT_WINDOW_EVENTS)),
            catalogue: Mutex::new(CatalogueChanges::default()),
            catalogue_turn: tokio::sync::Mutex::new(()),
            social: Mutex::new(SocialChanges::default()),
            memberships: Mutex::new(MembershipChanges::default()),
            reloading: Mutex::new(()),
            reload_poll: config.reload_poll,
            deleted: Mutex::new(DeletedUsers::default()),
            sync: config.sync,
            log_retention: config.log_retention,
            metrics: Arc::new(Metrics::new()),
            serving: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// State that will load its model from `model_path` when the server starts, with
    /// ingest off.
    pub fn new(model_path: PathBuf, overrides: SettingsOverrides) -> Arc<ServerState> {
        ServerState::configured(model_path, ServerConfig { overrides, ..ServerConfig::default() })
    }

    /// State that will load its model from `model_path`, configured by `config`.
    pub fn configured(model_path: PathBuf, config: ServerConfig) -> Arc<ServerState> {
        Arc::new(ServerState::build(Some(model_path), config))
    }

    /// Whether the server reports SERVING (for probes that cannot speak gRPC).
    pub fn is_serving(&self) -> bool {
        self.serving.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Set by the server shell as it reports SERVING, and cleared when it starts draining.
    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, std::sync::atomic::Ordering::Relaxed);
    }

    /// What the server exports on `/metrics`.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Loads the model at `path`, recording how long it took.
    ///
    /// # Errors
    /// The model cannot be read or verified.
    pub fn load_timed(&self, path: &std::path::Path) -> affinity_core::Result<Model> {
        let started = std::time::Instant::now();
        let model = format::load(path)?;
        self.metrics.observe_load(started.elapsed().as_secs_f64());
        Ok(model)
    }

    /// How often to look for a new model version (`None`: only on `ReloadModel`).
    pub fn reload_poll(&self) -> Option<Duration> {
        self.reload_poll
    }

    /// State serving `model` from the start (tests, embedded use), with ingest off.
    pub fn with_model(model: Model, overrides: SettingsOverrides) -> Arc<ServerState> {
        let state = ServerState::build(None, ServerConfig { overrides, ..ServerConfig::default() });
        state.install(model);
        Arc::new(state)
    }

    /// Opens the event log and replays what the live model was not trained on into the
    /// live state. Blocking: call it off the async runtime, after the model is loaded. A
    /// log that cannot be opened turns ingest off (reads keep serving); the reason is
    /// logged and returned by every ingest call.
    pub fn open_events(&self) {
        let after = self.live().map_or(0, |l| l.model.manifest().log_position);
        let result = match &self.events_dir {
            None => Err("the server runs without an event log (start it with --events-dir, or --model naming a model root)".to_string()),
            Some(dir) => match DeletedUsers::load(dir).and_then(|deleted| Ingest::open(dir, after, self.sync).map(|o| (deleted, o))) {
                Ok((deleted, (ingest, replay))) => {
                    let kept = || replay.events.iter().filter(|(_, e)| !deleted.contains(&e.user_id)).map(|(seq, e)| (*seq, e));
                    self.users.apply(kept());
                    self.recent.apply(self.live.load().as_ref().map(|l| &l.model), kept());
                    *self.deleted.lock().unwrap_or_else(|p| p.into_inner()) = deleted;
                    if let Some(live) = self.live.load().as_ref() {
                        self.forget_deleted(&live.model);
                    }
                    for entry in replay.catalogue {
                        self.apply_catalogue(entry);
                    }
                    for (seq, change) in replay.social {
                        if !self.is_deleted(&change.edge.user_id) && !self.is_deleted(&change.edge.other_id) {
                            self.change_social(seq, change);
                        }
                    }
                    for (seq, change) in replay.memberships {
                        if !self.is_deleted(&change.membership.user_id) {
                            self.change_membership(seq, change);
                        }
                    }
                    tracing::info!(dir = %dir.display(), after, replayed = replay.events.len(), "event log open");
                    Ok(ingest)
                }
                Err(e) => {
                    tracing::error!(dir = %dir.display(), cause = %e, "event log cannot be opened; ingest is off");
                    Err(format!("the event log cannot be opened: {e}"))
                }
            },
        };
        let _ = self.ingest.set(result);
    }

    /// The event log, or why ingest is off.
    pub fn ingest(&self) -> Result<&Ingest, ApiError> {
        match self.ingest.get() {
            Some(Ok(i)) => Ok(i),
            Some(Err(why)) => Err(ApiError::IngestOff(why.clone())),
            None => Err(ApiError::IngestOff("the event log is not open yet".into())),
        }
    }

    /// What users did since the model was trained.
    pub fn users(&self) -> &LiveUsers {
        &self.users
    }

    /// Takes in events just made durable: live user state and time windows.
    pub fn take_events<'a>(&self, events: impl Iterator<Item = (u64, &'a affinity_core::data::Event)> + Clone) {
        self.users.apply(events.clone());
        self.take_window_events(events);
    }

    /// Takes events just made durable into the time windows' store. Blocking (it may
    /// re-resolve or trim the whole store): off the async runtime.
    pub fn take_window_events<'a>(&self, events: impl IntoIterator<Item = (u64, &'a affinity_core::data::Event)>) {
        self.recent.apply(self.live.load().as_ref().map(|l| &l.model), events);
    }

    /// Interactions since training, for time windows.
    pub fn recent(&self) -> &LiveInteractions {
        &self.recent
    }

    /// Applies log retention, if configured: segments the live model holds and older than
    /// the retention age are removed. Failures are logged; the log keeps working.
    pub async fn apply_retention(&self) {
        let (Some(age), Ok(log), Ok(live)) = (self.log_retention, self.ingest(), self.live()) else { return };
        let position = live.model.manifest().log_position;
        let older_than = std::time::SystemTime::now().checked_sub(age).unwrap_or(std::time::UNIX_EPOCH);
        match log.prune(position, older_than).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(segments = n, position, "old event-log segments removed"),
            Err(e) => tracing::warn!(cause = %e, "event-log retention failed"),
        }
    }

    /// Whether `user_id` asked to be forgotten.
    pub fn is_deleted(&self, user_id: &str) -> bool {
        self.deleted.lock().unwrap_or_else(|p| p.into_inner()).contains(user_id)
    }

    /// Forgets `user_id`: listed as deleted (durably, as a keyed hash), gone from the live
    /// state at once, then every record of theirs removed from the log's segments.
    /// Returns how many log records were removed. The list is written (and synced) on the
    /// blocking pool; the compaction runs on the log's writer thread.
    ///
    /// # Errors
    /// Ingest is off (the list lives beside the log), or the list or log cannot be written.
    pub async fn delete_user(self: &Arc<Self>, user_id: &str) -> Result<u64, ApiError> {
        self.ingest()?;
        let (state, user) = (Arc::clone(self), user_id.to_string());
        tokio::task::spawn_blocking(move || -> Result<(), ApiError> {
            let mut deleted = state.deleted.lock().unwrap_or_else(|p| p.into_inner());
            deleted.add(&user).map_err(|e| ApiError::IngestOff(format!("cannot record the deletion: {e}")))?;
            drop(deleted);
            state.users.remove(&user);
            state.social().retain(|c| !c.names(&user));
            state.memberships().retain(|c| !c.names(&user));
            state.recent.remove_user(&user, state.live.load().as_ref().map(|l| &l.model));
            // Nor do their friends' recommendations or their communities count them any more.
            if let Some(live) = state.live.load().as_ref() {
                if let Some(u) = live.model.user_index(&user) {
                    live.model.forget_user(u);
                }
            }
            Ok(())
        })
        .await??;
        Ok(self.ingest()?.forget(user_id).await?)
    }

    /// Loads the version the model root's `current` names if it is not the live one,
    /// verifies it, swaps it in (requests in flight finish on the old one) and re-bases
    /// the live state onto it: events the new model was trained through are dropped,
    /// those after it replayed from the log. Blocking: call it off the async runtime.
    /// Concurrent calls run one at a time.
    ///
    /// # Errors
    /// No model path, or the new version cannot be read or verified (naming the file);
    /// the live model keeps serving.
    pub fn reload(&self) -> affinity_core::Result<Reloaded> {
        let result = self.reload_inner();
        let outcome = match &result {
            Ok(r) if r.changed => "loaded",
            Ok(_) => "unchanged",
            Err(_) => "failed",
        };
        self.metrics.reloads.with_label_values(&[outcome]).inc();
        result
    }

    fn reload_inner(&self) -> affinity_core::Result<Reloaded> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let Some(path) = &self.model_path else {
            return Err(affinity_core::Error::invalid_argument("model", "this server was given its model in process; there is nothing to reload"));
        };
        let dir = format::resolve(path)?;
        let version = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if self.live.load().as_ref().is_some_and(|l| l.model.version() == version) {
            return Ok(Reloaded { version, changed: false });
        }
        let model = self.load_timed(&dir)?;
        let position = model.manifest().log_position;
        self.install(model);
        self.users.forget_through(position);
        if let Some(live) = self.live.load().as_ref() {
            self.recent.forget_through(position, &live.model);
        }
        if let (Some(events_dir), Some(Ok(_))) = (&self.events_dir, self.ingest.get()) {
            match affinity_eventlog::read_dir(events_dir, position + 1) {
                Ok(records) => {
                    let events: Vec<(u64, affinity_core::data::Event)> =
                        records.into_iter().filter_map(|r| r.entry.into_event().map(|e| (r.seq, e.event))).collect();
                    self.take_events(events.iter().map(|(seq, e)| (*seq, e)));
                }
                Err(e) => tracing::error!(cause = %e, "cannot replay the event log onto the new model; live state may miss events"),
            }
        }
        tracing::info!(version = %version, log_position = position, "model reloaded");
        Ok(Reloaded { version, changed: true })
    }

    fn catalogue(&self) -> std::sync::MutexGuard<'_, CatalogueChanges> {
        self.catalogue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a catalogue change read from the log and applies it to the live model.
    fn apply_catalogue(&self, entry: Entry) {
        match entry {
            Entry::Availability(c) => {
                self.set_available(&c.item_id, c.available);
            }
            Entry::Item(_) | Entry::ItemV1(_) => {
                if let Some(item) = entry.catalogue_item() {
                    self.upsert_item(item);
                }
            }
            Entry::Event(_) | Entry::Social(_) | Entry::Membership(_) => {}
        }
    }

    /// Waits for the catalogue's turn (see the field): hold it from reading what the
    /// write depends on, through logging, to applying.
    pub async fn catalogue_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.catalogue_turn.lock().await
    }

    fn social(&self) -> std::sync::MutexGuard<'_, SocialChanges> {
        self.social.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a social edge change (stored at log position `seq`) and applies it to the
    /// live model (and to every model installed later). Returns whether the live model
    /// took it: it knows both users, neither was forgotten, and the follower is below
    /// the live cap ([`affinity_core::social::MAX_LIVE_CONTACTS`]).
    pub fn change_social(&self, seq: u64, change: affinity_eventlog::SocialChange) -> bool {
        // A forgotten user gains no edges: a restart's replay leaves such changes out too.
        if self.is_deleted(&change.edge.user_id) || self.is_deleted(&change.edge.other_id) {
            return false;
        }
        let mut social = self.social();
        let live = self.live.load();
        social.apply(live.as_ref().map(|l| &l.model), seq, change)
    }

    fn memberships(&self) -> std::sync::MutexGuard<'_, MembershipChanges> {
        self.memberships.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a membership change (stored at log position `seq`) and applies it to the
    /// live model (and to every model installed later). Returns whether the live model
    /// took it: it knows the user, who was not forgotten and is below the live cap
    /// ([`affinity_core::communities::MAX_LIVE_JOINS`]).
    pub fn change_membership(&self, seq: u64, change: affinity_eventlog::MembershipChange) -> bool {
        if self.is_deleted(&change.membership.user_id) {
            return false;
        }
        let mut memberships = self.memberships();
        let live = self.live.load();
        memberships.apply(live.as_ref().map(|l| &l.model), seq, change)
    }

    /// Records an availability change and applies it to the live model (and to every
    /// model installed later). Returns whether the live model knows the item.
    pub fn set_available(&self, item_id: &str, available: bool) -> bool {
        let live = self.live.load();
        self.catalogue().set_available(live.as_ref().map(|l| &l.model), item_id, available)
    }

    /// Records a catalogue entry and applies it to the live model (and to every model
    /// installed later). Returns what the live model did with it. CPU-heavy the first
    /// time (the model's content space is built): call it off the async runtime.
    pub fn upsert_item(&self, item: Item) -> Option<Upserted> {
        let mut catalogue = self.catalogue();
        let live = self.live.load();
        catalogue.upsert(live.as_ref().map(|l| &l.model), item)
    }

    /// Whether `item_id` is available now (an item nobody has heard of counts as
    /// available): what an upsert that does not say keeps.
    pub fn is_available(&self, item_id: &str) -> bool {
        let live = self.live.load();
        self.catalogue().is_available(live.as_ref().map(|l| &l.model), item_id)
    }

    /// Whether the live model or a catalogue change knows the item.
    pub fn knows_item(&self, item_id: &str) -> bool {
        let live = self.live.load();
        self.catalogue().knows(item_id) || live.as_ref().is_some_and(|l| l.model.item_index(item_id).is_some())
    }

    /// When the item was listed, as the catalogue changes and the live model know it.
    pub fn listed_at(&self, item_id: &str) -> Option<i64> {
        let live = self.live.load();
        self.catalogue().listed_at(live.as_ref().map(|l| &l.model), item_id)
    }

    /// Where the model is loaded from, if the server loads it.
    pub fn model_path(&self) -> Option<&PathBuf> {
        self.model_path.as_ref()
    }

    /// The live model, or `NotReady` while none is loaded.
    pub fn live(&self) -> Result<Arc<LiveModel>, ApiError> {
        self.live.load_full().ok_or(ApiError::NotReady)
    }

    /// Keeps users who asked to be forgotten out of their contacts' recommendations,
    /// their communities and segment counts on `model` (a model trained before they
    /// asked still holds them).
    fn forget_deleted(&self, model: &Model) {
        let deleted = self.deleted.lock().unwrap_or_else(|p| p.into_inner());
        if deleted.is_empty() {
            return;
        }
        let gone: Vec<affinity_core::ids::UserIdx> =
            model.user_ids().iter().enumerate().filter(|(_, id)| deleted.contains(id)).map(|(u, _)| affinity_core::ids::UserIdx(u as u32)).collect();
        model.forget_users(&gone);
    }

    /// Whether a model is live.
    pub fn is_ready(&self) -> bool {
        self.live.load().is_some()
    }

    /// Resolves `model`'s settings, builds any index they need, and makes it live.
    /// CPU-heavy when indexes are built: call it off the async runtime.
    pub fn install(&self, mut model: Model) {
        let settings = self.overrides.apply(model.default_settings());
        if let Some(users) = self.overrides.ranking_memo_users {
            model.keep_rankings(users);
        }
        model.ensure_indexes(&settings);
        let catalogue = self.catalogue();
        catalogue.apply_to(&model);
        let social = self.social();
        social.apply_to(&model);
        let memberships = self.memberships();
        memberships.apply_to(&model);
        self.forget_deleted(&model);
        self.recent.rebase(&model);
        self.live.store(Some(Arc::new(LiveModel { model, settings })));
    }
}

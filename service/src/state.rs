//! What every handler shares: the live model with the settings it is scored with.
//!
//! The model sits behind an [`ArcSwapOption`]: a request takes an `Arc` to the model it
//! started with and keeps it to the end, so a model swapped in meanwhile never changes
//! an answer half-way (hot reload, live events and metrics from later work hang off this
//! same state). Settings are resolved once per model: the trainer's recorded defaults,
//! then the server's configured overrides.

use std::path::PathBuf;
use std::sync::Arc;

use affinity_core::model::Model;
use affinity_core::settings::ServingSettings;
use arc_swap::ArcSwapOption;

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
}

impl ServerState {
    /// State that will load its model from `model_path` when the server starts.
    pub fn new(model_path: PathBuf, overrides: SettingsOverrides) -> Arc<ServerState> {
        Arc::new(ServerState {
            model_path: Some(model_path),
            overrides,
            live: ArcSwapOption::empty(),
        })
    }

    /// State serving `model` from the start (tests, embedded use).
    pub fn with_model(model: Model, overrides: SettingsOverrides) -> Arc<ServerState> {
        let state = ServerState {
            model_path: None,
            overrides,
            live: ArcSwapOption::empty(),
        };
        state.install(model);
        Arc::new(state)
    }

    /// Where the model is loaded from, if the server loads it.
    pub fn model_path(&self) -> Option<&PathBuf> {
        self.model_path.as_ref()
    }

    /// The live model, or `NotReady` while none is loaded.
    pub fn live(&self) -> Result<Arc<LiveModel>, ApiError> {
        self.live.load_full().ok_or(ApiError::NotReady)
    }

    /// Whether a model is live.
    pub fn is_ready(&self) -> bool {
        self.live.load().is_some()
    }

    /// Resolves `model`'s settings, builds any index they need, and makes it live.
    /// CPU-heavy when indexes are built: call it off the async runtime.
    pub fn install(&self, mut model: Model) {
        let settings = self.overrides.apply(model.default_settings());
        model.ensure_indexes(&settings);
        self.live.store(Some(Arc::new(LiveModel { model, settings })));
    }
}

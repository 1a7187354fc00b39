//! Fixtures for the engine's unit tests: small models trained on the seeded demo store,
//! so no test needs external data.

use crate::data::TimeKind;
use crate::demo::{generate, DemoSize, DEMO_SEED};
use crate::model::Model;
use crate::params::TrainParams;
use crate::train::{train, NoProgress};

/// A small store: 120 users, 96 items (12 per category), 12 views each.
pub(crate) fn small_store() -> crate::data::Dataset {
    generate(
        DemoSize {
            users: 120,
            items: 96,
            events_per_user: 12,
            planted: false,
        },
        DEMO_SEED,
    )
}

/// A model of [`small_store`] trained with `params`.
pub(crate) fn small_model(params: &TrainParams) -> Model {
    train(&small_store(), TimeKind::Unix, params, &NoProgress)
}

/// Parameters that train fast: 8 factors, 4 iterations.
pub(crate) fn fast_params() -> TrainParams {
    let mut p = TrainParams::default();
    p.als.factors = 8;
    p.als.iterations = 4;
    p
}

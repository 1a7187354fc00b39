//! Hyper-parameter search space for affinity and its baselines.
//!
//! `affinity-trainer tune` draws candidates from here, fits each on the training part of
//! a split and keeps the one that ranks the validation part best. The test part is never
//! looked at. Baselines draw the same number of candidates (fits) from their own spaces;
//! serving-time settings of a fitted affinity model (the neighbour blend) are swept
//! without refitting.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use affinity_core::data::{Dataset, TimeKind};
use affinity_core::params::TrainParams;
use affinity_core::recommend::Blend;

/// `trials` affinity parameter sets: the defaults first, then random draws.
pub fn affinity_candidates(base: &TrainParams, time_kind: TimeKind, trials: usize, seed: u64) -> Vec<TrainParams> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = vec![*base];
    while out.len() < trials {
        let mut p = *base;
        p.als.factors = *[32usize, 64, 96, 128].choose(&mut rng).unwrap_or(&64);
        // Regularisation λ·n^ν (n: a user's or an item's interactions). The exponent takes
        // turns, so every budget tries each; λ is log-uniform over a range that suits it
        // (frequency-scaled λ has a sharp optimum an order of magnitude lower).
        let (nu, lo, hi) = [(0.5f32, 2.5f32, 10.0f32), (1.0, 0.25, 1.5), (0.0, 5.0, 150.0)][(out.len() - 1) % 3];
        p.als.reg_exponent = nu;
        p.als.regularization = rng.gen_range(lo.ln()..hi.ln()).exp();
        // Weights are normalised (a typical interaction weighs 1), so α is the confidence
        // of a typical interaction.
        p.als.alpha = *[1.0f32, 2.0, 4.0, 8.0, 16.0].choose(&mut rng).unwrap_or(&4.0);
        p.weights.value_scale = *[0.0f32, 0.5, 1.0].choose(&mut rng).unwrap_or(&1.0);
        // Without timestamps the file order means nothing: no decay by it, and
        // transitions may be switched off.
        p.weights.half_life = match time_kind {
            TimeKind::Unix => *[0.0f64, 30.0, 180.0, 720.0].choose(&mut rng).unwrap_or(&0.0),
            TimeKind::Order => *[0.0f64, 10.0, 50.0].choose(&mut rng).unwrap_or(&0.0),
            TimeKind::None => 0.0,
        };
        // A decay of 1 over many recent items makes the neighbour vote an item-KNN over
        // the whole recent history rather than a next-item signal.
        p.sequence.recency_decay = *[0.5f32, 0.7, 0.8, 0.9, 1.0].choose(&mut rng).unwrap_or(&0.8);
        p.sequence.max_recent = *[10usize, 20, 50].choose(&mut rng).unwrap_or(&20);
        p.sequence.transition_weight = match time_kind {
            TimeKind::None => *[0.0f32, 1.0].choose(&mut rng).unwrap_or(&1.0),
            _ => *[1.0f32, 3.0, 10.0, 30.0].choose(&mut rng).unwrap_or(&1.0),
        };
        p.sequence.window = *[1usize, 3, 5].choose(&mut rng).unwrap_or(&3);
        p.sequence.neighbours = *[50usize, 100, 200].choose(&mut rng).unwrap_or(&100);
        // Every fourth draw re-weights the neighbours as a sparse EASE, voted for by the
        // whole recent history alike (as EASE scores a user's whole history); the search
        // gives it the best embeddings found before it.
        if out.len() % 4 == 0 {
            p.sequence.ease_lambda = rng.gen_range(0.25f32.ln()..8.0f32.ln()).exp();
            p.sequence.neighbours = *[50usize, 100].choose(&mut rng).unwrap_or(&100);
            p.sequence.recency_decay = *[0.9f32, 1.0].choose(&mut rng).unwrap_or(&1.0);
            p.sequence.max_recent = 50;
        }
        out.push(p);
    }
    out.truncate(trials.max(1));
    out
}

/// Neighbour blend weights tried on every fitted candidate. The blend is read at serving
/// time, so sweeping it re-scores a fitted model and costs no extra fit.
pub const BLEND_SWEEP: [f32; 7] = [0.0, 0.02, 0.1, 0.2, 0.3, 0.5, 0.8];

/// Social vote weights tried on every fitted candidate of data with a social graph
/// (also read at serving time: no extra fit).
pub const SOCIAL_SWEEP: [f32; 6] = [0.0, 0.03, 0.1, 0.2, 0.4, 0.8];

/// Community weights tried on every fitted candidate of data with communities (read at
/// serving time too).
pub const COMMUNITY_SWEEP: [f32; 6] = [0.0, 0.03, 0.1, 0.2, 0.4, 0.8];

/// What the data has besides events, which decides the blends a search sweeps.
#[derive(Debug, Clone, Copy, Default)]
pub struct Signals {
    /// A social graph.
    pub social: bool,
    /// Communities.
    pub communities: bool,
}

impl Signals {
    /// What `data` has.
    pub fn of(data: &Dataset) -> Signals {
        Signals { social: !data.social.is_empty(), communities: !data.memberships.is_empty() }
    }
}

/// The blends a fitted candidate is ranked with: its own first, then every neighbour
/// blend of [`BLEND_SWEEP`], with a social graph every social weight of
/// [`SOCIAL_SWEEP`] and with communities every community weight of [`COMMUNITY_SWEEP`]
/// (one axis at a time, from the candidate's own).
pub fn blend_variants(p: &TrainParams, signals: Signals) -> Vec<Blend> {
    let own = given_blend(p);
    let mut blends = vec![own];
    blends.extend(BLEND_SWEEP.iter().map(|&b| Blend { sequence: b, ..own }));
    if signals.social {
        blends.extend(SOCIAL_SWEEP.iter().map(|&g| Blend { social: g, ..own }));
    }
    if signals.communities {
        blends.extend(COMMUNITY_SWEEP.iter().map(|&g| Blend { community: g, ..own }));
    }
    let mut unique: Vec<Blend> = Vec::with_capacity(blends.len());
    for b in blends {
        if !unique.contains(&b) {
            unique.push(b);
        }
    }
    unique
}

/// `p` serving with `blend`.
pub fn with_blend(p: TrainParams, blend: Blend) -> TrainParams {
    let mut q = p;
    q.sequence.blend = blend.sequence;
    q.social_blend = blend.social;
    q.community_blend = blend.community;
    q
}

/// The blend `p` itself serves with.
pub fn given_blend(p: &TrainParams) -> Blend {
    Blend { sequence: p.sequence.blend, social: p.social_blend, community: p.community_blend }
}

/// `trials` neighbourhood sizes for ItemKNN, spread from 5 to 1000.
pub fn knn_candidates(trials: usize) -> Vec<usize> {
    spread(trials, 5.0, 1000.0).into_iter().map(|x| x.round() as usize).collect()
}

/// `trials` EASE regularisation values, log-spaced from 10 to 10,000.
pub fn ease_candidates(trials: usize) -> Vec<f32> {
    spread(trials, 10.0, 10_000.0).into_iter().map(|x| x as f32).collect()
}

fn spread(n: usize, lo: f64, hi: f64) -> Vec<f64> {
    if n <= 1 {
        return vec![(lo * hi).sqrt()];
    }
    let mut v: Vec<f64> = (0..n).map(|i| (lo.ln() + (hi.ln() - lo.ln()) * i as f64 / (n - 1) as f64).exp()).collect();
    v.dedup_by(|a, b| (*a - *b).abs() < 0.5);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_start_with_defaults_and_are_reproducible() {
        let base = TrainParams::default();
        let a = affinity_candidates(&base, TimeKind::Unix, 8, 1);
        assert_eq!(a.len(), 8);
        assert_eq!(a[0], base);
        assert_eq!(a, affinity_candidates(&base, TimeKind::Unix, 8, 1));
        assert!(a.iter().all(|p| (0.25..=150.0).contains(&p.als.regularization) || *p == base));
        let exponents: std::collections::BTreeSet<u32> = a.iter().map(|p| (p.als.reg_exponent * 2.0) as u32).collect();
        assert_eq!(exponents.len(), 3, "every budget of 4 or more tries ν = 0, 0.5 and 1");
        assert!(a.iter().any(|p| p.sequence.ease_lambda > 0.0), "every budget of 4 or more tries a sparse EASE");
        let k = knn_candidates(6);
        assert_eq!((k[0], *k.last().unwrap()), (5, 1000));
        assert_eq!(ease_candidates(4).len(), 4);
    }
}

//! Implicit alternating least squares (iALS) for collaborative item embeddings.
//!
//! Minimises `Σ c_ui (p_ui − x_u·y_i)² + λ_u |x_u|² + λ_i |y_i|²` over all user–item pairs
//! with preference `p = 1` where a user interacted and confidence `c = 1 + α w` (Hu,
//! Koren & Volinsky 2008). Training alternates conjugate-gradient solves per user and per
//! item (Takács et al. 2011), in parallel with rayon. Regularisation can be scaled by
//! activity, `λ · n^ν` (Rendle et al. 2022). The same normal equations, solved exactly,
//! fold a user's history into a user vector at serving time, so a user seen at training
//! and a fresh history are scored the same way.

use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use faer::linalg::solvers::DenseSolveCore;
use faer::Mat;

use crate::linalg::{self, dot};

/// Hyper-parameters of iALS.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AlsParams {
    /// Embedding size.
    pub factors: usize,
    /// Alternating sweeps while training (each solves all users, then all items).
    pub iterations: usize,
    /// λ: L2 regularisation.
    pub regularization: f32,
    /// ν: λ is scaled by (number of interactions)^ν for each user and item.
    pub reg_exponent: f32,
    /// α: confidence per unit of event weight.
    pub alpha: f32,
    /// Conjugate-gradient steps per solve while training.
    pub cg_steps: usize,
    /// Seed of the random initial item factors, so training is reproducible.
    pub seed: u64,
}

impl Default for AlsParams {
    fn default() -> Self {
        AlsParams {
            factors: 96,
            iterations: 15,
            regularization: 40.0,
            reg_exponent: 0.0,
            alpha: 4.0,
            cg_steps: 3,
            seed: 42,
        }
    }
}

/// Learned item factors plus what is needed to fold in users.
#[derive(Debug, Clone)]
pub struct CollabModel {
    /// `items × factors`; rows of items without interactions are zero.
    pub item_factors: Array2<f32>,
    /// `YᵀY` (row-major `factors × factors`, f64), shared by every fold-in.
    pub gram: Vec<f64>,
    /// The parameters it was trained with; fold-in uses the same λ, ν and α.
    pub params: AlsParams,
    /// `R` with `R Rᵀ = (YᵀY + λI)⁻¹` (derived from the factors) for each history length
    /// up to [`short_limit`] (one for all when λ does not depend on it, ν = 0): folds in
    /// a short history without a `factors³` solve (see [`solve_short`]).
    priors: Vec<Array2<f64>>,
}

/// Histories up to this many items fold in through [`solve_short`]: below about half
/// the factor count it costs less than the full solve.
fn short_limit(d: usize) -> usize {
    d / 2
}

/// `R` with `R Rᵀ = (YᵀY + λ(n)I)⁻¹` for `n` = 1 ..= [`short_limit`] (one matrix when
/// λ is the same for every length); empty if any is not positive definite.
fn prior_factors(gram: &[f64], d: usize, params: &AlsParams) -> Vec<Array2<f64>> {
    if d == 0 || gram.len() != d * d {
        return Vec::new();
    }
    let lengths = if params.reg_exponent == 0.0 { 1 } else { short_limit(d) };
    let factor = |n: usize| -> Option<Array2<f64>> {
        let lam = lambda(params, n);
        let a = Mat::<f64>::from_fn(d, d, |p, q| gram[p * d + q] + if p == q { lam } else { 0.0 });
        let inverse = a.llt(faer::Side::Lower).ok()?.inverse();
        let l = inverse.llt(faer::Side::Lower).ok()?.L().to_owned();
        Some(Array2::from_shape_fn((d, d), |(p, q)| l[(p, q)]))
    };
    (1..=lengths).into_par_iter().map(factor).collect::<Option<Vec<_>>>().unwrap_or_default()
}

/// The fold-in of a history of `n` items through the Woodbury identity, given `R` with
/// `R Rᵀ = A₀⁻¹`, `A₀ = YᵀY + λI`: the same solution as [`solve_exact`] in
/// `n·factors² + n²·factors + n³` operations instead of `factors³`, so it pays for
/// histories shorter than about half the factor count (most users').
///
/// With `W = S Y_e` (`S = diag √(α w)`) and `b = Y_eᵀ p` (`p = 1 + α w`), the system is
/// `(A₀ + WᵀW) x = b`, so `x = A₀⁻¹ Y_eᵀ (p − S M⁻¹ S G p)`, where `G = Y_e A₀⁻¹ Y_eᵀ`
/// and `M = I + S G S`; `V = Y_e R` gives `G = V Vᵀ` and `A₀⁻¹ Y_eᵀ a = R Vᵀ a`.
///
/// The products go through ndarray (matrixmultiply): on these short, wide shapes faer's
/// kernels took up to five times as long here, depending on what the thread ran before
/// (a 20-item session: 52–275 µs, against 51–57 µs).
fn solve_short(entries: &[(u32, f32)], data: &[f32], d: usize, r: &Array2<f64>, alpha: f64) -> Option<Vec<f32>> {
    let n = entries.len();
    let ye = Array2::<f64>::from_shape_fn((n, d), |(row, col)| f64::from(data[entries[row].0 as usize * d + col]));
    let v = ye.dot(r);
    let g = v.dot(&v.t());
    let c: Vec<f64> = entries.iter().map(|&(_, w)| alpha * f64::from(w)).collect();
    let s: Vec<f64> = c.iter().map(|&c| c.max(0.0).sqrt()).collect();
    let p: Vec<f64> = c.iter().map(|&c| 1.0 + c).collect();
    // t = S G p, then M r = t.
    let t: Vec<f64> = (0..n).map(|i| s[i] * (0..n).map(|j| g[[i, j]] * p[j]).sum::<f64>()).collect();
    let m = Mat::<f64>::from_fn(n, n, |i, j| s[i] * g[[i, j]] * s[j] + if i == j { 1.0 } else { 0.0 });
    let rr = linalg::cholesky_solve(&m, &t)?;
    let a: Vec<f64> = (0..n).map(|i| p[i] - s[i] * rr[i]).collect();
    // x = R (Vᵀ a).
    let vta: Vec<f64> = (0..d).map(|col| (0..n).map(|i| v[[i, col]] * a[i]).sum()).collect();
    Some((0..d).map(|row| (0..=row).map(|col| r[[row, col]] * vta[col]).sum::<f64>() as f32).collect())
}

fn lambda(params: &AlsParams, n: usize) -> f64 {
    let base = params.regularization as f64;
    if params.reg_exponent == 0.0 {
        base
    } else {
        base * (n.max(1) as f64).powf(params.reg_exponent as f64)
    }
}

/// `YᵀY` computed in fixed chunks and summed in order, so it is bit-for-bit reproducible
/// whatever the thread count.
pub fn gram(factors: &Array2<f32>) -> Vec<f64> {
    let d = factors.ncols();
    let data = factors.as_slice().unwrap_or(&[]);
    if d == 0 {
        return Vec::new();
    }
    let partials: Vec<Vec<f64>> = data
        .par_chunks(1024 * d)
        .map(|chunk| {
            let mut g = vec![0.0f64; d * d];
            for y in chunk.chunks_exact(d) {
                for a in 0..d {
                    let ya = y[a] as f64;
                    if ya == 0.0 {
                        continue;
                    }
                    let row = &mut g[a * d..a * d + d];
                    for b in 0..=a {
                        row[b] += ya * y[b] as f64;
                    }
                }
            }
            g
        })
        .collect();
    let mut g = vec![0.0f64; d * d];
    for p in partials {
        for (x, y) in g.iter_mut().zip(p) {
            *x += y;
        }
    }
    for a in 0..d {
        for b in 0..a {
            g[b * d + a] = g[a * d + b];
        }
    }
    g
}

/// Rows solved together: the Gram products of a block are one matrix product.
const BLOCK: usize = 256;

/// `out = A v` for every row of a block: `YᵀY v + λ v + Σ (c−1)(y·v) y`.
struct BlockSystem<'a> {
    entries: &'a [Vec<(u32, f32)>],
    other: &'a [f32],
    gram: &'a [f32],
    lambdas: Vec<f32>,
    alpha: f32,
    d: usize,
}

impl BlockSystem<'_> {
    fn apply(&self, v: &[f32], out: &mut [f32]) {
        let d = self.d;
        linalg::matmul_block(out, v, self.gram, d);
        for (((o, v), e), &lam) in out
            .chunks_exact_mut(d)
            .zip(v.chunks_exact(d))
            .zip(self.entries)
            .zip(&self.lambdas)
        {
            linalg::axpy(lam, v, o);
            for &(j, w) in e {
                let y = &self.other[j as usize * d..j as usize * d + d];
                linalg::axpy(self.alpha * w * dot(y, v), y, o);
            }
        }
    }
}

/// Approximately solves the normal equations of a block of rows with warm-started
/// conjugate gradient (a fixed number of steps, as in Takács et al. 2011); rows without
/// entries become zero.
fn cg_block(x: &mut [f32], entries: &[Vec<(u32, f32)>], other: &[f32], gram: &[f32], d: usize, params: &AlsParams) {
    let system = BlockSystem {
        entries,
        other,
        gram,
        lambdas: entries.iter().map(|e| lambda(params, e.len()) as f32).collect(),
        alpha: params.alpha,
        d,
    };
    let n = entries.len() * d;
    let mut r = vec![0.0f32; n];
    system.apply(x, &mut r);
    for ((r, x), e) in r.chunks_exact_mut(d).zip(x.chunks_exact_mut(d)).zip(entries) {
        if e.is_empty() {
            x.iter_mut().for_each(|v| *v = 0.0);
            r.iter_mut().for_each(|v| *v = 0.0);
            continue;
        }
        r.iter_mut().for_each(|v| *v = -*v);
        for &(j, w) in e {
            let y = &other[j as usize * d..j as usize * d + d];
            linalg::axpy(1.0 + params.alpha * w, y, r);
        }
    }
    let mut p = r.clone();
    let mut rs: Vec<f32> = r.chunks_exact(d).map(|r| dot(r, r)).collect();
    let mut ap = vec![0.0f32; n];
    for _ in 0..params.cg_steps {
        system.apply(&p, &mut ap);
        for ((((x, r), p), ap), rs) in x
            .chunks_exact_mut(d)
            .zip(r.chunks_exact_mut(d))
            .zip(p.chunks_exact_mut(d))
            .zip(ap.chunks_exact(d))
            .zip(rs.iter_mut())
        {
            if *rs < 1e-20 {
                continue;
            }
            let denom = dot(p, ap);
            if denom <= 0.0 || !denom.is_finite() {
                *rs = 0.0;
                continue;
            }
            let step = *rs / denom;
            linalg::axpy(step, p, x);
            linalg::axpy(-step, ap, r);
            let rs_new = dot(r, r);
            let beta = rs_new / *rs;
            for (pi, ri) in p.iter_mut().zip(r.iter()) {
                *pi = ri + beta * *pi;
            }
            *rs = rs_new;
        }
    }
}

/// `YᵀY` in f32 for training: fixed blocks summed in order, so it does not depend on the
/// thread count.
fn gram_f32(factors: &Array2<f32>) -> Vec<f32> {
    let d = factors.ncols();
    let data = factors.as_slice().unwrap_or(&[]);
    let partials: Vec<Vec<f32>> = data.par_chunks(4096 * d.max(1)).map(|c| linalg::gram_block(c, d)).collect();
    let mut g = vec![0.0f32; d * d];
    for p in partials {
        linalg::axpy(1.0, &p, &mut g);
    }
    g
}

/// Exact solve of the user normal equations (Cholesky, f64): the fold-in.
pub fn solve_exact(entries: &[(u32, f32)], other: &Array2<f32>, gram: &[f64], params: &AlsParams) -> Vec<f32> {
    let d = other.ncols();
    if entries.is_empty() || d == 0 {
        return vec![0.0; d];
    }
    let data = other.as_slice().unwrap_or(&[]);
    let lam = lambda(params, entries.len());
    let alpha = params.alpha as f64;
    // A = YᵀY + λI + Wᵀ W with rows w = √(c−1) y; only the lower triangle is read.
    let mut w = Array2::<f64>::zeros((entries.len(), d));
    let mut b = vec![0.0f64; d];
    for (r, &(j, wt)) in entries.iter().enumerate() {
        let y = &data[j as usize * d..j as usize * d + d];
        let c1 = alpha * wt as f64;
        let s = c1.max(0.0).sqrt();
        for (p, &yp) in y.iter().enumerate() {
            b[p] += (1.0 + c1) * yp as f64;
            w[[r, p]] = s * yp as f64;
        }
    }
    // WᵀW through ndarray, as in `solve_short`.
    let wtw = w.t().dot(&w);
    let a = Mat::<f64>::from_fn(d, d, |p, q| gram[p * d + q] + wtw[[p, q]] + if p == q { lam } else { 0.0 });
    match linalg::cholesky_solve(&a, &b) {
        Some(x) => x.into_iter().map(|v| v as f32).collect(),
        None => vec![0.0; d],
    }
}

impl CollabModel {
    /// Trains on per-user rows; `n_items` sizes the item side.
    pub fn train(rows: &[Vec<(u32, f32)>], n_items: usize, params: &AlsParams) -> CollabModel {
        let d = params.factors.max(1);
        let n_users = rows.len();
        let mut cols: Vec<Vec<(u32, f32)>> = vec![Vec::new(); n_items];
        for (u, row) in rows.iter().enumerate() {
            for &(i, w) in row {
                cols[i as usize].push((u as u32, w));
            }
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(params.seed);
        let scale = 0.1 / (d as f32).sqrt();
        let mut y = Array2::<f32>::zeros((n_items, d));
        for (i, mut row) in y.rows_mut().into_iter().enumerate() {
            if !cols[i].is_empty() {
                row.iter_mut().for_each(|v| *v = rng.gen_range(-1.0..1.0) * scale);
            }
        }
        let mut x = Array2::<f32>::zeros((n_users, d));
        for _ in 0..params.iterations {
            Self::half_step(&mut x, rows, &y, params);
            Self::half_step(&mut y, &cols, &x, params);
        }
        CollabModel::from_factors(y, *params)
    }

    fn half_step(target: &mut Array2<f32>, entries: &[Vec<(u32, f32)>], other: &Array2<f32>, params: &AlsParams) {
        let d = other.ncols();
        let g = gram_f32(other);
        let other_data = other.as_slice().unwrap_or(&[]);
        if let Some(t) = target.as_slice_mut() {
            t.par_chunks_mut(BLOCK * d)
                .zip(entries.par_chunks(BLOCK))
                .for_each(|(x, e)| cg_block(x, e, other_data, &g, d, params));
        }
    }

    /// Embedding size (the number of columns of `item_factors`).
    pub fn factors(&self) -> usize {
        self.item_factors.ncols()
    }

    /// A user vector for a weighted history of `(item, weight)`.
    pub fn user_vector(&self, history: &[(u32, f32)]) -> Vec<f32> {
        let d = self.factors();
        let n = history.len();
        let prior = if self.params.reg_exponent == 0.0 { self.priors.first() } else { n.checked_sub(1).and_then(|i| self.priors.get(i)) };
        if let (Some(r), Some(data)) = (prior, self.item_factors.as_slice()) {
            if n > 0 && n <= short_limit(d) && history.iter().all(|&(j, _)| (j as usize) < self.item_factors.nrows()) {
                if let Some(x) = solve_short(history, data, d, r, f64::from(self.params.alpha)) {
                    return x;
                }
            }
        }
        solve_exact(history, &self.item_factors, &self.gram, &self.params)
    }

    /// Rebuilds from stored factors (the Gram matrix is derived, not stored).
    pub fn from_factors(item_factors: Array2<f32>, params: AlsParams) -> CollabModel {
        let gram = gram(&item_factors);
        let priors = prior_factors(&gram, item_factors.ncols(), &params);
        CollabModel {
            item_factors,
            gram,
            params,
            priors,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two disjoint groups of users and items: a user of group A must score A's items
    /// above B's.
    #[test]
    fn separates_two_communities() {
        let mut rows = Vec::new();
        for u in 0..40u32 {
            let base = if u < 20 { 0 } else { 10 };
            let row: Vec<(u32, f32)> = (0..10u32).filter(|i| (i + u) % 3 != 0).map(|i| (base + i, 1.0)).collect();
            rows.push(row);
        }
        let params = AlsParams {
            factors: 8,
            iterations: 10,
            ..AlsParams::default()
        };
        let m = CollabModel::train(&rows, 20, &params);
        let u = m.user_vector(&[(0, 1.0), (1, 1.0), (2, 1.0)]);
        let score = |i: usize| dot(&u, m.item_factors.row(i).as_slice().unwrap());
        let worst_a = (0..10).map(score).fold(f32::MAX, f32::min);
        let best_b = (10..20).map(score).fold(f32::MIN, f32::max);
        assert!(worst_a > best_b, "A {worst_a} vs B {best_b}");
    }

    #[test]
    fn cg_converges_to_exact_solution() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let y = Array2::from_shape_fn((30, 6), |_| rng.gen_range(-1.0f32..1.0));
        let params = AlsParams {
            cg_steps: 50,
            alpha: 3.0,
            ..AlsParams::default()
        };
        let rows = vec![vec![(1u32, 1.0f32), (4, 2.0), (9, 0.5)], vec![], vec![(0, 1.0), (29, 3.0)]];
        let g = gram(&y);
        let g32: Vec<f32> = g.iter().map(|&v| v as f32).collect();
        let mut x = vec![0.5f32; 6 * rows.len()];
        cg_block(&mut x, &rows, y.as_slice().unwrap(), &g32, 6, &params);
        for (r, row) in rows.iter().enumerate() {
            let exact = solve_exact(row, &y, &g, &params);
            for (a, b) in x[r * 6..r * 6 + 6].iter().zip(&exact) {
                assert!((a - b).abs() < 1e-3, "row {r}: {x:?} vs {exact:?}");
            }
        }
    }

    #[test]
    fn short_histories_fold_in_as_the_full_solve_does() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let y = Array2::from_shape_fn((200, 16), |_| rng.gen_range(-0.5f32..0.5));
        // λ the same for every history, and λ scaled by the history's length.
        for (nu, priors) in [(0.0, 1), (0.5, 8)] {
            let m = CollabModel::from_factors(y.clone(), AlsParams { factors: 16, alpha: 3.0, reg_exponent: nu, regularization: 4.0, ..AlsParams::default() });
            assert_eq!(m.priors.len(), priors);
            for n in 1..=8 {
                let mut history: Vec<(u32, f32)> = (0..n).map(|i| ((i * 23 + n) as u32 % 200, 0.5 + i as f32)).collect();
                history.sort_by_key(|x| x.0);
                let short = m.user_vector(&history);
                let full = solve_exact(&history, &y, &m.gram, &m.params);
                for (a, b) in short.iter().zip(&full) {
                    assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "ν {nu}, {n} items: {short:?} vs {full:?}");
                }
            }
        }
    }

    #[test]
    fn gram_is_deterministic_and_symmetric() {
        let y = Array2::from_shape_fn((3000, 4), |(i, j)| ((i * 7 + j * 3) % 11) as f32 * 0.1);
        let a = gram(&y);
        let b = gram(&y);
        assert_eq!(a, b);
        assert_eq!(a[1], a[4]);
    }
}

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

use crate::linalg::{self, cholesky_solve, dot};

/// Hyper-parameters of iALS.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AlsParams {
    /// Embedding size.
    pub factors: usize,
    pub iterations: usize,
    /// λ: L2 regularisation.
    pub regularization: f32,
    /// ν: λ is scaled by (number of interactions)^ν for each user and item.
    pub reg_exponent: f32,
    /// α: confidence per unit of event weight.
    pub alpha: f32,
    /// Conjugate-gradient steps per solve while training.
    pub cg_steps: usize,
    pub seed: u64,
}

impl Default for AlsParams {
    fn default() -> Self {
        AlsParams {
            factors: 96,
            iterations: 15,
            regularization: 40.0,
            reg_exponent: 0.0,
            alpha: 1.0,
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
    pub params: AlsParams,
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

/// Solves one side's normal equations approximately with warm-started CG.
fn cg_solve(
    x: &mut [f32],
    entries: &[(u32, f32)],
    other: &[f32],
    gram: &[f64],
    d: usize,
    params: &AlsParams,
) {
    let lam = lambda(params, entries.len()) as f32;
    let alpha = params.alpha;
    // A v = YᵀY v + Σ (c−1)(y·v) y + λ v
    let apply = |v: &[f32], out: &mut [f32]| {
        for a in 0..d {
            let row = &gram[a * d..a * d + d];
            let mut s = 0.0f64;
            for b in 0..d {
                s += row[b] * v[b] as f64;
            }
            out[a] = s as f32 + lam * v[a];
        }
        for &(j, w) in entries {
            let y = &other[j as usize * d..j as usize * d + d];
            let c1 = alpha * w;
            linalg::axpy(c1 * dot(y, v), y, out);
        }
    };
    let mut r = vec![0.0f32; d];
    apply(x, &mut r);
    for v in r.iter_mut() {
        *v = -*v;
    }
    for &(j, w) in entries {
        let y = &other[j as usize * d..j as usize * d + d];
        linalg::axpy(1.0 + alpha * w, y, &mut r);
    }
    let mut p = r.clone();
    let mut rs_old = dot(&r, &r);
    let mut ap = vec![0.0f32; d];
    for _ in 0..params.cg_steps {
        if rs_old < 1e-20 {
            break;
        }
        apply(&p, &mut ap);
        let denom = dot(&p, &ap);
        if denom <= 0.0 || !denom.is_finite() {
            break;
        }
        let step = rs_old / denom;
        linalg::axpy(step, &p, x);
        linalg::axpy(-step, &ap, &mut r);
        let rs_new = dot(&r, &r);
        let beta = rs_new / rs_old;
        for (pi, ri) in p.iter_mut().zip(&r) {
            *pi = ri + beta * *pi;
        }
        rs_old = rs_new;
    }
}

/// Exact solve of the user normal equations (Cholesky, f64): the fold-in.
pub fn solve_exact(entries: &[(u32, f32)], other: &Array2<f32>, gram: &[f64], params: &AlsParams) -> Vec<f32> {
    let d = other.ncols();
    if entries.is_empty() || d == 0 {
        return vec![0.0; d];
    }
    let data = other.as_slice().unwrap_or(&[]);
    let mut a = gram.to_vec();
    let lam = lambda(params, entries.len());
    for k in 0..d {
        a[k * d + k] += lam;
    }
    let mut b = vec![0.0f64; d];
    let alpha = params.alpha as f64;
    for &(j, w) in entries {
        let y = &data[j as usize * d..j as usize * d + d];
        let c1 = alpha * w as f64;
        for p in 0..d {
            let yp = y[p] as f64;
            b[p] += (1.0 + c1) * yp;
            let cy = c1 * yp;
            let row = &mut a[p * d..p * d + d];
            for q in 0..=p {
                row[q] += cy * y[q] as f64;
            }
        }
    }
    for p in 0..d {
        for q in 0..p {
            a[q * d + p] = a[p * d + q];
        }
    }
    if !cholesky_solve(&mut a, &mut b, d) {
        return vec![0.0; d];
    }
    b.into_iter().map(|v| v as f32).collect()
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
        let gram = gram(&y);
        CollabModel {
            item_factors: y,
            gram,
            params: *params,
        }
    }

    fn half_step(target: &mut Array2<f32>, entries: &[Vec<(u32, f32)>], other: &Array2<f32>, params: &AlsParams) {
        let d = other.ncols();
        let g = gram(other);
        let other_data = other.as_slice().unwrap_or(&[]);
        if let Some(t) = target.as_slice_mut() {
            t.par_chunks_mut(d)
                .zip(entries.par_iter())
                .for_each(|(x, e)| {
                    if e.is_empty() {
                        x.iter_mut().for_each(|v| *v = 0.0);
                    } else {
                        cg_solve(x, e, other_data, &g, d, params);
                    }
                });
        }
    }

    pub fn factors(&self) -> usize {
        self.item_factors.ncols()
    }

    /// A user vector for a weighted history of `(item, weight)`.
    pub fn user_vector(&self, history: &[(u32, f32)]) -> Vec<f32> {
        solve_exact(history, &self.item_factors, &self.gram, &self.params)
    }

    /// Rebuilds from stored factors (the Gram matrix is derived, not stored).
    pub fn from_factors(item_factors: Array2<f32>, params: AlsParams) -> CollabModel {
        let gram = gram(&item_factors);
        CollabModel {
            item_factors,
            gram,
            params,
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
        let entries = vec![(1u32, 1.0f32), (4, 2.0), (9, 0.5)];
        let g = gram(&y);
        let exact = solve_exact(&entries, &y, &g, &params);
        let mut x = vec![0.0f32; 6];
        cg_solve(&mut x, &entries, y.as_slice().unwrap(), &g, 6, &params);
        for (a, b) in x.iter().zip(&exact) {
            assert!((a - b).abs() < 1e-3, "{x:?} vs {exact:?}");
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

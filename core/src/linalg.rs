//! Small dense linear-algebra kernels used by training and scoring.
//!
//! The hot loops are a dot product written so the compiler vectorises it; block matrix
//! products and the Cholesky solve for the `d × d` normal equations of alternating least
//! squares go through faer's SIMD kernels (d is the embedding size, so these systems are
//! small and solved many times in parallel).

use faer::linalg::matmul::matmul;
use faer::linalg::solvers::Solve;
use faer::{Accum, ColRef, Mat, MatMut, MatRef, Par, Side};

/// Dot product with eight independent accumulators so it vectorises without `unsafe`.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f32; 8];
    let chunks_a = a.chunks_exact(8);
    let chunks_b = b.chunks_exact(8);
    let tail: f32 = chunks_a
        .remainder()
        .iter()
        .zip(chunks_b.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (ca, cb) in chunks_a.zip(chunks_b) {
        for i in 0..8 {
            acc[i] += ca[i] * cb[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Euclidean norm.
#[inline]
pub fn norm(a: &[f32]) -> f32 {
    dot(a, a).sqrt()
}

/// Scales `a` to unit length in place; returns the old norm (zero vectors stay zero).
pub fn normalize(a: &mut [f32]) -> f32 {
    let n = norm(a);
    if n > 0.0 {
        a.iter_mut().for_each(|x| *x /= n);
    }
    n
}

/// `y += alpha * x`.
#[inline]
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// `out = a · g` for a row-major `rows × d` block `a` and a row-major `d × d` matrix `g`,
/// on the calling thread (callers parallelise over blocks, which keeps results identical
/// whatever the thread count).
pub fn matmul_block(out: &mut [f32], a: &[f32], g: &[f32], d: usize) {
    let rows = a.len() / d.max(1);
    debug_assert_eq!(out.len(), rows * d);
    debug_assert_eq!(g.len(), d * d);
    let a = MatRef::from_row_major_slice(a, rows, d);
    let g = MatRef::from_row_major_slice(g, d, d);
    let out = MatMut::from_row_major_slice_mut(out, rows, d);
    matmul(out, Accum::Replace, a, g, 1.0f32, Par::Seq);
}

/// `out = a · v` for a row-major `rows × d` block `a` (one dot product per row), on the
/// calling thread through faer's SIMD kernels: scoring every item of a catalogue at once.
pub fn mat_vec(out: &mut [f32], a: &[f32], v: &[f32]) {
    let d = v.len();
    let rows = a.len() / d.max(1);
    debug_assert_eq!(out.len(), rows);
    let a = MatRef::from_row_major_slice(a, rows, d);
    let v = MatRef::from_column_major_slice(v, d, 1);
    let out = MatMut::from_column_major_slice_mut(out, rows, 1);
    matmul(out, Accum::Replace, a, v, 1.0f32, Par::Seq);
}

/// `aᵀa` (row-major `d × d`) of a row-major `rows × d` block, on the calling thread.
pub fn gram_block(a: &[f32], d: usize) -> Vec<f32> {
    let rows = a.len() / d.max(1);
    let mut g = vec![0.0f32; d * d];
    let a = MatRef::from_row_major_slice(a, rows, d);
    matmul(
        MatMut::from_row_major_slice_mut(&mut g, d, d),
        Accum::Replace,
        a.transpose(),
        a,
        1.0f32,
        Par::Seq,
    );
    g
}

/// Solves `A x = b` for a symmetric positive definite `A` of which only the lower
/// triangle is read. Returns `None` if `A` is not positive definite (callers regularise
/// so this does not happen).
pub fn cholesky_solve(a: &Mat<f64>, b: &[f64]) -> Option<Vec<f64>> {
    let llt = a.llt(Side::Lower).ok()?;
    let x = llt.solve(ColRef::from_slice(b));
    Some(x.iter().copied().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_naive() {
        let a: Vec<f32> = (0..19).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..19).map(|i| 1.0 - i as f32 * 0.1).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-4);
    }

    #[test]
    fn cholesky_solves_spd_system() {
        // A = [[4,2,0],[2,5,1],[0,1,3]], x = [1,-2,3] → b = A x.
        let a0 = [4.0, 2.0, 0.0, 2.0, 5.0, 1.0, 0.0, 1.0, 3.0];
        let x = [1.0, -2.0, 3.0];
        let b: Vec<f64> = (0..3).map(|i| (0..3).map(|j| a0[i * 3 + j] * x[j]).sum()).collect();
        let a = Mat::from_fn(3, 3, |i, j| a0[i * 3 + j]);
        let got = cholesky_solve(&a, &b).unwrap();
        for i in 0..3 {
            assert!((got[i] - x[i]).abs() < 1e-9, "{got:?}");
        }
    }

    #[test]
    fn cholesky_rejects_indefinite() {
        let a = Mat::from_fn(2, 2, |i, j| if i == j { 1.0 } else { 2.0 });
        assert!(cholesky_solve(&a, &[1.0, 1.0]).is_none());
    }

    #[test]
    fn mat_vec_matches_dot_per_row() {
        let d = 19;
        let a: Vec<f32> = (0..7 * d).map(|i| (i as f32 * 0.37).sin()).collect();
        let v: Vec<f32> = (0..d).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut out = vec![0.0f32; 7];
        mat_vec(&mut out, &a, &v);
        for r in 0..7 {
            assert!((out[r] - dot(&a[r * d..(r + 1) * d], &v)).abs() < 1e-5);
        }
    }

    #[test]
    fn block_products_match_naive() {
        let d = 5;
        let a: Vec<f32> = (0..3 * d).map(|i| (i as f32 * 0.37).sin()).collect();
        let g: Vec<f32> = (0..d * d).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut out = vec![0.0f32; 3 * d];
        matmul_block(&mut out, &a, &g, d);
        for r in 0..3 {
            for c in 0..d {
                let want: f32 = (0..d).map(|k| a[r * d + k] * g[k * d + c]).sum();
                assert!((out[r * d + c] - want).abs() < 1e-5);
            }
        }
        let gram = gram_block(&a, d);
        for p in 0..d {
            for q in 0..d {
                let want: f32 = (0..3).map(|r| a[r * d + p] * a[r * d + q]).sum();
                assert!((gram[p * d + q] - want).abs() < 1e-5);
            }
        }
    }
}

//! Approximate nearest-neighbour search over vectors in the unit ball with hnsw_rs.
//!
//! Every index ranks by inner product (`1 − u·v`): over unit vectors that is cosine
//! similarity (similar items); over item vectors scaled into the unit ball by
//! [`ip_item`] it is inner-product order for user–item scoring. An index is either built in memory (trainer,
//! evaluation) or loaded from its dump in a model directory, its vectors memory-mapped
//! from the dump's data file; a loaded graph owns its loader and mapping, so dropping an
//! [`AnnIndex`] frees everything and a later hot reload can swap models cleanly.

use std::path::Path;

use hnsw_rs::hnswio::{HnswIo, ReloadOptions};
use hnsw_rs::prelude::{AnnT, Distance, Hnsw};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::linalg;

/// `1 − u·v` for vectors of norm at most one, clamped at zero against rounding.
///
/// hnsw_rs's own `DistDot` asserts on rounding above one, which would turn a harmless
/// float error into a panic; this one cannot.
#[derive(Debug, Default, Clone, Copy)]
pub struct UnitDot;

impl Distance<f32> for UnitDot {
    fn eval(&self, va: &[f32], vb: &[f32]) -> f32 {
        (1.0 - linalg::dot(va, vb)).max(0.0)
    }
}

/// Graph construction and search parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HnswParams {
    /// Links per node per layer (HNSW's M).
    pub max_connections: usize,
    /// Candidate list size while building.
    pub ef_construction: usize,
    /// Minimum candidate list size while searching (raised to the number of results asked).
    pub ef_search: usize,
}

/// The defaults trade a little recall for much time (scale bench, 100k items, 200 user
/// queries, recall@10 against exact): building with a list of 50 rather than 100 takes
/// 28 s rather than 47 s for the three indexes and costs 0.3–0.5 points of recall; a
/// search list of 40 finds 98% of the exact top 10 at over 10× exact speed, where 100
/// found 99.7% at under 4×.
impl Default for HnswParams {
    fn default() -> Self {
        HnswParams {
            max_connections: 16,
            ef_construction: 50,
            ef_search: 40,
        }
    }
}

type Graph<'a> = Hnsw<'a, f32, UnitDot>;

/// The loader of a graph whose vectors stay in its memory-mapped data file: hnsw_rs maps
/// the file through `&mut HnswIo` while loading, and the graph then borrows the mapping.
struct Loader(std::cell::UnsafeCell<HnswIo>);

// SAFETY: the cell is borrowed mutably exactly once, in the builder of
// `LoadedGraph::try_new`, before the graph exists or anything is shared. Afterwards it is
// reached only through the graph's shared borrows of the read-only mapping; no method
// reads or writes the cell, so sharing a `Loader` between threads shares only that.
unsafe impl Sync for Loader {}

self_cell::self_cell!(
    /// A graph reloaded from a dump together with the loader (and mapping) it borrows from.
    struct LoadedGraph {
        owner: Loader,
        #[not_covariant]
        dependent: Graph,
    }
);

enum Inner {
    Built(Graph<'static>),
    Loaded(LoadedGraph),
}

/// One HNSW index over item vectors, addressed by item index.
pub struct AnnIndex {
    inner: Inner,
    len: usize,
    dim: usize,
}

impl std::fmt::Debug for AnnIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnnIndex").field("len", &self.len).field("dim", &self.dim).finish()
    }
}

/// A search hit: item index and its inner product with the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// Index of the item, as given to [`AnnIndex::build`].
    pub item: u32,
    /// Inner product with the query (`1 −` distance): cosine for unit vectors.
    pub similarity: f32,
}

impl AnnIndex {
    /// Builds an index over `(item index, unit vector)` pairs, in parallel.
    pub fn build(points: &[(u32, Vec<f32>)], dim: usize, params: HnswParams) -> AnnIndex {
        let n = points.len().max(1);
        // hnsw_rs can only dump graphs allocated with its maximum layer count.
        let layers = 16; // NB_LAYER_MAX in hnsw_rs (private there)
        let graph: Graph<'static> = Hnsw::new(
            params.max_connections.clamp(4, 255),
            n,
            layers,
            params.ef_construction.max(params.max_connections),
            UnitDot,
        );
        let data: Vec<(&Vec<f32>, usize)> = points.iter().map(|(i, v)| (v, *i as usize)).collect();
        graph.parallel_insert(&data);
        AnnIndex {
            inner: Inner::Built(graph),
            len: points.len(),
            dim,
        }
    }

    /// Number of vectors in the index.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the index holds no vectors (every search then returns nothing).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Length of the indexed vectors; a query of another length finds nothing.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The `k` nearest items to a unit `query`, best first.
    pub fn search(&self, query: &[f32], k: usize, ef: usize) -> Vec<Hit> {
        if self.len == 0 || k == 0 || query.len() != self.dim {
            return Vec::new();
        }
        let k = k.min(self.len);
        let ef = ef.max(k);
        let run = |g: &Graph<'_>| {
            g.search(query, k, ef)
                .into_iter()
                .map(|n| Hit {
                    item: n.d_id as u32,
                    similarity: 1.0 - n.distance,
                })
                .collect()
        };
        match &self.inner {
            Inner::Built(g) => run(g),
            Inner::Loaded(l) => l.with_dependent(|_, g| run(g)),
        }
    }

    /// Writes `<basename>.hnsw.graph` and `<basename>.hnsw.data` into `dir`; returns the
    /// file names written.
    pub fn dump(&self, dir: &Path, basename: &str) -> Result<Vec<String>> {
        let dumped = match &self.inner {
            Inner::Built(g) => g.file_dump(dir, basename),
            Inner::Loaded(l) => l.with_dependent(|_, g| g.file_dump(dir, basename)),
        }
        .map_err(|e| Error::model(dir.join(basename), format!("cannot write HNSW index: {e}")))?;
        if dumped != basename {
            return Err(Error::model(
                dir.join(basename),
                format!("HNSW dump went to unexpected basename {dumped}"),
            ));
        }
        Ok(vec![
            format!("{basename}.hnsw.graph"),
            format!("{basename}.hnsw.data"),
        ])
    }

    /// Loads a dump written by [`AnnIndex::dump`], checking it holds `len` points of one
    /// of the dimensions `dims`.
    ///
    /// The data file is memory-mapped for as long as the index lives, so it must not be
    /// truncated or rewritten meanwhile: model versions are never changed once published,
    /// and a replaced version is removed only after a grace period (removing a mapped
    /// file is safe on Unix; the mapping keeps its pages).
    ///
    /// The model loader verifies checksums before calling this, so the files are the ones
    /// the trainer wrote; a panic inside hnsw_rs on a malformed file is still caught and
    /// reported as an error rather than taking the process down.
    pub fn load(dir: &Path, basename: &str, len: usize, dims: &[usize]) -> Result<AnnIndex> {
        let graph_path = dir.join(format!("{basename}.hnsw.graph"));
        // The vectors are read from the memory-mapped data file rather than copied into
        // memory: loading is quicker, and their pages are the file's (shared, and given
        // back under memory pressure) rather than the heap's.
        let io = HnswIo::new_with_options(dir, basename, ReloadOptions::new(true));
        let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            LoadedGraph::try_new(Loader(std::cell::UnsafeCell::new(io)), |loader| {
                // SAFETY: the only access to the cell (see `Loader`), before anything
                // borrows from it.
                let io = unsafe { &mut *loader.0.get() };
                io.load_hnsw::<f32, UnitDot>()
            })
        }));
        let loaded = match loaded {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => return Err(Error::model(&graph_path, format!("cannot load HNSW index: {e}"))),
            Err(_) => return Err(Error::model(&graph_path, "HNSW index is malformed")),
        };
        let (points, data_dim) = loaded.with_dependent(|_, g| {
            (g.get_nb_point(), g.get_point_indexation().get_data_dimension())
        });
        if points != len || (len > 0 && !dims.contains(&data_dim)) {
            let dims: Vec<String> = dims.iter().map(usize::to_string).collect();
            return Err(Error::model(
                &graph_path,
                format!("HNSW index holds {points} points of dimension {data_dim}, expected {len} of {}", dims.join(" or ")),
            ));
        }
        Ok(AnnIndex {
            inner: Inner::Loaded(loaded),
            len,
            dim: data_dim,
        })
    }
}

/// Maps an item vector into the inner-product index: `y / M`, where `M` is the largest
/// item norm, so every item lies in the unit ball and `1 − u·y/M` is a non-negative
/// "distance" to a unit query `u` that orders items by inner product. The graph is built
/// and searched on that order directly (ip-NSW, Morozov & Babenko 2018), which finds
/// the top inner products far more reliably than the cosine search of the transformed
/// vectors of [`mips_item`]: that transform crowds the many low-norm items together.
pub fn ip_item(y: &[f32], max_norm: f32) -> Vec<f32> {
    let m = if max_norm > 0.0 { max_norm } else { 1.0 };
    y.iter().map(|&x| x / m).collect()
}

/// The query for an inner-product index of dimension `dim` over `d`-dimensional item
/// vectors: the unit user vector, with the trailing zero of [`mips_query`] when the index
/// holds transformed vectors (`dim == d + 1`, models published before [`ip_item`]).
pub fn ip_query(u: &[f32], dim: usize) -> Vec<f32> {
    if dim == u.len() + 1 {
        return mips_query(u);
    }
    let mut v = u.to_vec();
    linalg::normalize(&mut v);
    v
}

/// Maps an item vector to the unit vector used for maximum-inner-product search:
/// `[y / M, sqrt(1 − |y|²/M²)]`, where `M` is the largest item norm. For a query
/// `[u/|u|, 0]` the inner product is `u·y / (|u| M)`, so nearest-neighbour order is
/// inner-product order.
pub fn mips_item(y: &[f32], max_norm: f32) -> Vec<f32> {
    let mut v = Vec::with_capacity(y.len() + 1);
    let m = if max_norm > 0.0 { max_norm } else { 1.0 };
    let mut sq = 0.0f32;
    for &x in y {
        let s = x / m;
        sq += s * s;
        v.push(s);
    }
    v.push((1.0 - sq).max(0.0).sqrt());
    v
}

/// The query side of [`mips_item`]: `[u/|u|, 0]` (a zero vector stays zero).
pub fn mips_query(u: &[f32]) -> Vec<f32> {
    let mut v = u.to_vec();
    linalg::normalize(&mut v);
    v.push(0.0);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random_unit(rng: &mut impl Rng, dim: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim).map(|_| rng.gen_range(-1.0..1.0)).collect();
        linalg::normalize(&mut v);
        v
    }

    #[test]
    fn finds_exact_neighbours_and_survives_dump_and_load() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let points: Vec<(u32, Vec<f32>)> = (0..500).map(|i| (i, random_unit(&mut rng, 16))).collect();
        let index = AnnIndex::build(&points, 16, HnswParams::default());
        let query = random_unit(&mut rng, 16);
        let mut exact: Vec<(u32, f32)> = points.iter().map(|(i, v)| (*i, linalg::dot(v, &query))).collect();
        exact.sort_by(|a, b| b.1.total_cmp(&a.1));
        let hits = index.search(&query, 10, 200);
        assert_eq!(hits.len(), 10);
        let found: Vec<u32> = hits.iter().map(|h| h.item).collect();
        let truth: Vec<u32> = exact.iter().take(10).map(|e| e.0).collect();
        let overlap = found.iter().filter(|i| truth.contains(i)).count();
        assert!(overlap >= 9, "recall {overlap}/10");
        assert!((hits[0].similarity - exact[0].1).abs() < 1e-5);

        let dir = tempfile::tempdir().unwrap();
        let files = index.dump(dir.path(), "t").unwrap();
        assert_eq!(files.len(), 2);
        let loaded = AnnIndex::load(dir.path(), "t", 500, &[16]).unwrap();
        assert_eq!(loaded.search(&query, 10, 200), hits);
        // The vectors are mapped from the data file: removing it (as pruning an old
        // version does) leaves a loaded index working.
        for f in &files {
            std::fs::remove_file(dir.path().join(f)).unwrap();
        }
        assert_eq!(loaded.search(&query, 10, 200), hits);
        assert!(AnnIndex::load(dir.path(), "t", 501, &[16]).is_err());
        assert!(AnnIndex::load(dir.path(), "missing", 500, &[16]).is_err());
    }

    #[test]
    fn mips_transform_preserves_inner_product_order() {
        let items = [vec![3.0, 0.0], vec![1.0, 1.0], vec![0.0, 0.5]];
        let max = items.iter().map(|y| linalg::norm(y)).fold(0.0, f32::max);
        let u = [0.6, 0.8];
        let q = mips_query(&u);
        let mut by_dot: Vec<usize> = (0..3).collect();
        by_dot.sort_by(|&a, &b| linalg::dot(&items[b], &u).total_cmp(&linalg::dot(&items[a], &u)));
        let mut by_mips: Vec<usize> = (0..3).collect();
        let t: Vec<Vec<f32>> = items.iter().map(|y| mips_item(y, max)).collect();
        by_mips.sort_by(|&a, &b| linalg::dot(&t[b], &q).total_cmp(&linalg::dot(&t[a], &q)));
        assert_eq!(by_dot, by_mips);
        for v in &t {
            assert!((linalg::norm(v) - 1.0).abs() < 1e-5);
        }
    }
}

//! Approximate nearest-neighbour search over vectors in the unit ball: HNSW graphs built
//! by hnsw_rs, kept and searched as plain link lists.
//!
//! Every index ranks by inner product (`1 − u·v`): over unit vectors that is cosine
//! similarity (similar items); over item vectors scaled into the unit ball by
//! [`ip_item`] it is inner-product order for user–item scoring. hnsw_rs builds the graph
//! (trainer, evaluation); its links are then copied into flat tables ([`AnnIndex`]) and
//! the builder dropped. Searches measure against the model's own matrices ([`Rows`]), so
//! an index costs its links only, and a published one is a single table that loads in a
//! fraction of a second. Models before format 6 carry hnsw_rs dumps instead; those are
//! read once with hnsw_rs and converted.

use std::path::Path;

use hnsw_rs::hnswio::{HnswIo, ReloadOptions};
use hnsw_rs::prelude::{Distance, Hnsw};
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

/// The vectors a search measures against: item `i`'s is row `i` of `data` (`dim` wide),
/// its inner product with the query multiplied by `scale` (the inner-product index's
/// `1 / M`, see [`ip_item`]; 1 for unit vectors). A model passes its own matrices, so
/// an index holds links only.
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    /// Row-major vectors by item index.
    pub data: &'a [f32],
    /// Length of each row.
    pub dim: usize,
    /// Multiplies every inner product.
    pub scale: f32,
}

/// An HNSW graph as plain link lists, by item index: what hnsw_rs built, without its
/// per-link allocations. Published as one table (`NAME.graph.bin`), it loads in a
/// fraction of a second where reloading hnsw_rs's dump rebuilds every point and link
/// one allocation at a time (about 20 s for a million-item model's three graphs).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Links {
    /// Points in the graph.
    len: u32,
    /// Length of the indexed vectors.
    dim: u32,
    /// Where every search starts: an item of the top layer.
    entry: u32,
    /// The bottom layer over item indices `0..start.len() - 1`: item `i`'s links are
    /// `links[start[i]..start[i + 1]]`, nearest first (none for items not indexed).
    start: Vec<u32>,
    links: Vec<u32>,
    /// The layers above, bottom up.
    upper: Vec<Layer>,
}

/// One upper layer: its items (sorted) and their links, `links[start[p]..start[p + 1]]`
/// for `items[p]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Layer {
    items: Vec<u32>,
    start: Vec<u32>,
    links: Vec<u32>,
}

impl Layer {
    fn of(mut rows: Vec<(u32, Vec<u32>)>) -> Layer {
        rows.sort_unstable_by_key(|r| r.0);
        let mut layer = Layer { items: Vec::with_capacity(rows.len()), start: vec![0], links: Vec::new() };
        for (item, links) in rows {
            layer.items.push(item);
            layer.links.extend(links);
            layer.start.push(layer.links.len() as u32);
        }
        layer
    }

    fn links_of(&self, item: u32) -> &[u32] {
        match self.items.binary_search(&item) {
            Ok(p) => &self.links[self.start[p] as usize..self.start[p + 1] as usize],
            Err(_) => &[],
        }
    }
}

impl Links {
    /// The links of a graph hnsw_rs built or reloaded, and (for `keep_vectors`) the
    /// vectors it holds, by item index.
    fn of_graph(g: &Graph<'_>, keep_vectors: bool) -> (Links, Option<Vec<f32>>) {
        let points = g.get_point_indexation();
        let dim = points.get_data_dimension();
        let top = points.get_max_level_observed() as usize;
        let mut layers: Vec<Vec<(u32, Vec<u32>)>> = vec![Vec::new(); top + 1];
        let mut own: Vec<(u32, Vec<f32>)> = Vec::new();
        let mut len = 0u32;
        for point in points {
            let item = point.get_origin_id() as u32;
            let level = (point.get_point_id().0 as usize).min(top);
            for (l, neighbours) in point.get_neighborhood_id().into_iter().enumerate().take(level + 1) {
                layers[l].push((item, neighbours.iter().map(|n| n.d_id as u32).collect()));
            }
            if keep_vectors {
                own.push((item, point.get_v().to_vec()));
            }
            len += 1;
        }
        let entry = points.get_layer_iterator(top).next().map_or(0, |p| p.get_origin_id() as u32);
        let mut bottom = std::mem::take(&mut layers[0]);
        bottom.sort_unstable_by_key(|r| r.0);
        let n = bottom.last().map_or(0, |r| r.0 as usize + 1);
        let mut start = Vec::with_capacity(n + 1);
        let mut links = Vec::new();
        let mut rows = bottom.into_iter().peekable();
        start.push(0);
        for i in 0..n as u32 {
            while let Some((_, l)) = rows.next_if(|r| r.0 == i) {
                links.extend(l);
            }
            start.push(links.len() as u32);
        }
        let own = keep_vectors.then(|| {
            let mut v = vec![0.0f32; n * dim];
            for (item, x) in own {
                v[item as usize * dim..(item as usize + 1) * dim].copy_from_slice(&x);
            }
            v
        });
        let upper = layers.into_iter().skip(1).map(Layer::of).collect();
        (Links { len, dim: dim as u32, entry, start, links, upper }, own)
    }

    /// Item indices the links cover (`0..span`).
    fn span(&self) -> usize {
        self.start.len().saturating_sub(1)
    }

    fn bottom(&self, item: u32) -> &[u32] {
        let i = item as usize;
        match (self.start.get(i), self.start.get(i + 1)) {
            (Some(&a), Some(&b)) => &self.links[a as usize..b as usize],
            _ => &[],
        }
    }

    /// Whether the entry point is in the top layer and the layers are no more than
    /// hnsw_rs makes.
    fn enters_at_the_top(&self) -> bool {
        self.upper.len() < 16 && self.upper.last().is_none_or(|top| top.items.binary_search(&self.entry).is_ok())
    }

    /// Whether every link, offset and the entry point stay inside the tables: what a
    /// loaded table must show before it is searched.
    fn is_consistent(&self) -> bool {
        let span = self.span() as u32;
        let offsets_ok = |start: &[u32], links: &[u32]| {
            start.first() == Some(&0) && start.windows(2).all(|w| w[0] <= w[1]) && start.last().is_some_and(|&e| e as usize == links.len())
        };
        (self.len == 0 || (self.entry < span && offsets_ok(&self.start, &self.links)))
            && self.links.iter().all(|&j| j < span)
            && self.upper.iter().all(|l| {
                l.start.len() == l.items.len() + 1
                    && offsets_ok(&l.start, &l.links)
                    && l.items.windows(2).all(|w| w[0] < w[1])
                    && l.items.iter().chain(&l.links).all(|&j| j < span)
            })
    }
}

/// Visit marks for graph searches, one table per thread reused across searches: a
/// search marks with the next stamp instead of clearing a table the catalogue's size.
struct Visited {
    stamps: Vec<u16>,
    stamp: u16,
}

impl Visited {
    fn begin(&mut self, n: usize) {
        if self.stamps.len() < n {
            self.stamps.resize(n, 0);
        }
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.stamps.fill(0);
            self.stamp = 1;
        }
    }

    /// Marks `i`; whether it was unmarked.
    fn first_visit(&mut self, i: u32) -> bool {
        let s = &mut self.stamps[i as usize];
        let first = *s != self.stamp;
        *s = self.stamp;
        first
    }
}

thread_local! {
    static VISITED: std::cell::RefCell<Visited> = const { std::cell::RefCell::new(Visited { stamps: Vec::new(), stamp: 0 }) };
}

/// A distance and an item, ordered by distance (then item): heap entries.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Near(f32, u32);

impl Eq for Near {}

impl PartialOrd for Near {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Near {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
    }
}

/// One HNSW index over item vectors, addressed by item index.
pub struct AnnIndex {
    links: Links,
    /// The vectors, by item index, of an older model's inner-product graph over
    /// transformed vectors, which no model matrix holds (see [`AnnIndex::holds_vectors`]).
    own: Option<Vec<f32>>,
}

impl std::fmt::Debug for AnnIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnnIndex").field("len", &self.len()).field("dim", &self.dim()).finish()
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
    /// Builds an index over `(item index, vector)` pairs with hnsw_rs, in parallel, and
    /// keeps its links; searches then measure against the model's rows (see [`Rows`]).
    pub fn build(points: &[(u32, Vec<f32>)], dim: usize, params: HnswParams) -> AnnIndex {
        if points.is_empty() {
            return AnnIndex { links: Links { dim: dim as u32, ..Links::default() }, own: None };
        }
        let (mut links, _) = Links::of_graph(&hnsw_graph(points, params), false);
        links.dim = dim as u32;
        AnnIndex { links, own: None }
    }

    /// Number of vectors in the index.
    pub fn len(&self) -> usize {
        self.links.len as usize
    }

    /// Whether the index holds no vectors (every search then returns nothing).
    pub fn is_empty(&self) -> bool {
        self.links.len == 0
    }

    /// Length of the indexed vectors; a query of another length finds nothing.
    pub fn dim(&self) -> usize {
        self.links.dim as usize
    }

    /// The `k` nearest items to a unit `query`, best first, measured against `rows`
    /// (ignored by an index that holds its own vectors). Rows too short for the graph's
    /// items find nothing.
    pub fn search(&self, query: &[f32], k: usize, ef: usize, rows: Rows<'_>) -> Vec<Hit> {
        let dim = self.dim();
        let (data, scale) = match &self.own {
            Some(own) => (own.as_slice(), 1.0),
            None => (rows.data, rows.scale),
        };
        let span = self.links.span();
        if self.is_empty() || k == 0 || query.len() != dim || (self.own.is_none() && rows.dim != dim) || data.len() < span * dim {
            return Vec::new();
        }
        let k = k.min(self.len());
        let ef = ef.max(k);
        let dist = |i: u32| 1.0 - scale * linalg::dot(query, &data[i as usize * dim..(i as usize + 1) * dim]);
        // Greedy descent through the upper layers to the bottom layer's start.
        let mut at = Near(dist(self.links.entry), self.links.entry);
        for layer in self.links.upper.iter().rev() {
            loop {
                let mut moved = false;
                for &j in layer.links_of(at.1) {
                    let d = dist(j);
                    if d < at.0 {
                        at = Near(d, j);
                        moved = true;
                    }
                }
                if !moved {
                    break;
                }
            }
        }
        // Best-first search of the bottom layer, keeping the `ef` nearest seen.
        let mut found = VISITED.with_borrow_mut(|visited| {
            visited.begin(span);
            visited.first_visit(at.1);
            let mut frontier = std::collections::BinaryHeap::from([std::cmp::Reverse(at)]);
            let mut best = std::collections::BinaryHeap::from([at]);
            while let Some(std::cmp::Reverse(c)) = frontier.pop() {
                if best.len() >= ef && best.peek().is_some_and(|w| c.0 > w.0) {
                    break;
                }
                for &j in self.links.bottom(c.1) {
                    if !visited.first_visit(j) {
                        continue;
                    }
                    let d = dist(j);
                    if best.len() < ef || best.peek().is_some_and(|w| d < w.0) {
                        frontier.push(std::cmp::Reverse(Near(d, j)));
                        best.push(Near(d, j));
                        if best.len() > ef {
                            best.pop();
                        }
                    }
                }
            }
            best.into_sorted_vec()
        });
        found.truncate(k);
        found.into_iter().map(|n| Hit { item: n.1, similarity: 1.0 - n.0 }).collect()
    }

    /// The index as one table, for `NAME.graph.bin` (read back by [`AnnIndex::decode`]).
    /// Refused for an index that holds its own vectors (see [`AnnIndex::holds_vectors`]):
    /// its links mean nothing over the model's rows.
    pub fn encode(&self) -> std::result::Result<Vec<u8>, String> {
        if self.own.is_some() {
            return Err("the index holds vectors no model matrix has (an older model's transformed graph): rebuild it".into());
        }
        bincode::serialize(&self.links).map_err(|e| e.to_string())
    }

    /// Whether the index searches vectors of its own rather than the model's rows: an
    /// older model's inner-product graph over transformed vectors (one longer than the
    /// factors, see [`mips_item`]).
    pub fn holds_vectors(&self) -> bool {
        self.own.is_some()
    }

    /// Reads a table written by [`AnnIndex::encode`], checking it holds `len` points of
    /// dimension `dim` over at most `items` item indices and that every link stays in
    /// range (a damaged table is refused, never searched).
    pub fn decode(bytes: &[u8], len: usize, dim: usize, items: usize) -> std::result::Result<AnnIndex, String> {
        let links: Links = bincode::deserialize(bytes).map_err(|e| format!("cannot decode: {e}"))?;
        if links.len as usize != len || (len > 0 && links.dim as usize != dim) {
            return Err(format!("holds {} points of dimension {}, expected {len} of {dim}", links.len, links.dim));
        }
        if links.span() > items || !links.is_consistent() || !links.enters_at_the_top() {
            return Err("links point outside the graph or the item table".into());
        }
        Ok(AnnIndex { links, own: None })
    }

    /// Loads an hnsw_rs dump (`<basename>.hnsw.graph` and `.hnsw.data`, written by
    /// models before format 6), checking it holds `len` points of one of the dimensions
    /// `dims` over at most `items` item indices, and keeps its links (and its vectors
    /// when they are not of the first of `dims`, the model's rows): the dump and its
    /// mapping are released once read.
    ///
    /// The model loader verifies checksums before calling this, so the files are the ones
    /// the trainer wrote; a panic inside hnsw_rs on a malformed file is still caught and
    /// reported as an error rather than taking the process down.
    pub fn load_dump(dir: &Path, basename: &str, len: usize, dims: &[usize], items: usize) -> Result<AnnIndex> {
        let graph_path = dir.join(format!("{basename}.hnsw.graph"));
        let mut io = HnswIo::new_with_options(dir, basename, ReloadOptions::new(true));
        // Vectors are kept only when they are not the model's rows: those of the first
        // of `dims` are.
        let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            io.load_hnsw::<f32, UnitDot>().map(|g| {
                let own = g.get_point_indexation().get_data_dimension() != dims[0];
                Links::of_graph(&g, own)
            })
        }));
        let (links, own) = match loaded {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => return Err(Error::model(&graph_path, format!("cannot load HNSW index: {e}"))),
            Err(_) => return Err(Error::model(&graph_path, "HNSW index is malformed")),
        };
        let (points, data_dim) = (links.len as usize, links.dim as usize);
        if points != len || (len > 0 && !dims.contains(&data_dim)) {
            let dims: Vec<String> = dims.iter().map(usize::to_string).collect();
            return Err(Error::model(
                &graph_path,
                format!("HNSW index holds {points} points of dimension {data_dim}, expected {len} of {}", dims.join(" or ")),
            ));
        }
        if links.span() > items || !links.is_consistent() {
            return Err(Error::model(&graph_path, "HNSW index links items outside the item table"));
        }
        Ok(AnnIndex { links, own })
    }

    /// Writes an hnsw_rs dump of `points` (`<basename>.hnsw.graph` and `.hnsw.data`), the
    /// layout models before format 6 carry: for tests of their loading.
    #[cfg(test)]
    pub(crate) fn dump_legacy(points: &[(u32, Vec<f32>)], params: HnswParams, dir: &Path, basename: &str) -> Result<()> {
        use hnsw_rs::prelude::AnnT;
        hnsw_graph(points, params)
            .file_dump(dir, basename)
            .map(drop)
            .map_err(|e| Error::model(dir.join(basename), format!("cannot write HNSW index: {e}")))
    }
}

/// The hnsw_rs graph over `(item index, vector)` pairs, built in parallel.
fn hnsw_graph(points: &[(u32, Vec<f32>)], params: HnswParams) -> Graph<'static> {
    // hnsw_rs can only dump graphs allocated with its maximum layer count.
    let layers = 16; // NB_LAYER_MAX in hnsw_rs (private there)
    let graph: Graph<'static> = Hnsw::new(
        params.max_connections.clamp(4, 255),
        points.len().max(1),
        layers,
        params.ef_construction.max(params.max_connections),
        UnitDot,
    );
    let data: Vec<(&Vec<f32>, usize)> = points.iter().map(|(i, v)| (v, *i as usize)).collect();
    graph.parallel_insert(&data);
    graph
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

    /// Top-10 overlap of `hits` with the exact top 10 of `points` for `query`.
    fn overlap(points: &[(u32, Vec<f32>)], query: &[f32], hits: &[Hit]) -> usize {
        let mut exact: Vec<(u32, f32)> = points.iter().map(|(i, v)| (*i, linalg::dot(v, query))).collect();
        exact.sort_by(|a, b| b.1.total_cmp(&a.1));
        let truth: Vec<u32> = exact.iter().take(10).map(|e| e.0).collect();
        hits.iter().filter(|h| truth.contains(&h.item)).count()
    }

    #[test]
    fn finds_exact_neighbours_and_survives_encoding() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        // Item 3 has no vector (not indexed): its row stays zero and it is never found.
        let points: Vec<(u32, Vec<f32>)> = (0..500).filter(|&i| i != 3).map(|i| (i, random_unit(&mut rng, 16))).collect();
        let mut matrix = vec![0.0f32; 500 * 16];
        for (i, v) in &points {
            matrix[*i as usize * 16..(*i as usize + 1) * 16].copy_from_slice(v);
        }
        let rows = Rows { data: &matrix, dim: 16, scale: 1.0 };
        let index = AnnIndex::build(&points, 16, HnswParams::default());
        assert_eq!((index.len(), index.dim()), (499, 16));
        let query = random_unit(&mut rng, 16);
        let hits = index.search(&query, 10, 200, rows);
        assert_eq!(hits.len(), 10);
        assert!(overlap(&points, &query, &hits) >= 9, "recall {}/10", overlap(&points, &query, &hits));
        assert!(hits.windows(2).all(|w| w[0].similarity >= w[1].similarity));
        assert!(hits.iter().all(|h| h.item != 3));
        let best = points.iter().map(|(_, v)| linalg::dot(v, &query)).fold(f32::MIN, f32::max);
        assert!((hits[0].similarity - best).abs() < 1e-5);
        // A scale multiplies similarities and keeps the order.
        let halved = index.search(&query, 10, 200, Rows { scale: 0.5, ..rows });
        assert_eq!(halved.iter().map(|h| h.item).collect::<Vec<_>>(), hits.iter().map(|h| h.item).collect::<Vec<_>>());

        let bytes = index.encode().unwrap();
        let back = AnnIndex::decode(&bytes, 499, 16, 500).unwrap();
        assert_eq!(back.search(&query, 10, 200, rows), hits);
        // Wrong counts, a smaller item table, damage and short rows are refused or find nothing.
        assert!(AnnIndex::decode(&bytes, 500, 16, 500).is_err());
        assert!(AnnIndex::decode(&bytes, 499, 8, 500).is_err());
        assert!(AnnIndex::decode(&bytes, 499, 16, 100).is_err());
        assert!(AnnIndex::decode(&bytes[..bytes.len() / 2], 499, 16, 500).is_err());
        let mut damaged = bytes.clone();
        let n = damaged.len();
        damaged[n - 8..].copy_from_slice(&[0xff; 8]);
        assert!(AnnIndex::decode(&damaged, 499, 16, 500).is_err());
        assert!(back.search(&query, 10, 200, Rows { data: &matrix[..100 * 16], ..rows }).is_empty());
        assert!(back.search(&query[..8], 10, 200, rows).is_empty());
    }

    #[test]
    fn an_empty_index_finds_nothing() {
        let index = AnnIndex::build(&[], 8, HnswParams::default());
        assert!(index.is_empty());
        assert!(index.search(&[0.5; 8], 10, 40, Rows { data: &[], dim: 8, scale: 1.0 }).is_empty());
        let back = AnnIndex::decode(&index.encode().unwrap(), 0, 8, 10).unwrap();
        assert!(back.is_empty());
    }

    #[test]
    fn dumps_of_older_models_load_with_their_own_vectors() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let points: Vec<(u32, Vec<f32>)> = (0..400).map(|i| (i, random_unit(&mut rng, 12))).collect();
        let dir = tempfile::tempdir().unwrap();
        AnnIndex::dump_legacy(&points, HnswParams::default(), dir.path(), "t").unwrap();
        let loaded = AnnIndex::load_dump(dir.path(), "t", 400, &[12], 400).unwrap();
        assert!(!loaded.holds_vectors());
        // Read as the transformed vectors of a longer-factor model, it keeps its own.
        let own = AnnIndex::load_dump(dir.path(), "t", 400, &[11, 12], 400).unwrap();
        assert!(own.holds_vectors() && own.encode().is_err());
        assert!(AnnIndex::load_dump(dir.path(), "t", 400, &[12], 100).is_err());
        // The dump and its mapping are released once read.
        for ext in ["hnsw.graph", "hnsw.data"] {
            std::fs::remove_file(dir.path().join(format!("t.{ext}"))).unwrap();
        }
        let query = random_unit(&mut rng, 12);
        let mut matrix = vec![0.0f32; 400 * 12];
        for (i, v) in &points {
            matrix[*i as usize * 12..(*i as usize + 1) * 12].copy_from_slice(v);
        }
        let hits = loaded.search(&query, 10, 200, Rows { data: &matrix, dim: 12, scale: 1.0 });
        assert!(overlap(&points, &query, &hits) >= 9);
        let none = Rows { data: &[], dim: 11, scale: 1.0 };
        assert_eq!(own.search(&query, 10, 200, none), hits);
        assert!(AnnIndex::load_dump(dir.path(), "t", 400, &[12], 400).is_err());
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

//! Item-to-item neighbours: co-occurrence and sequential transitions, optionally
//! re-weighted as a sparse EASE.
//!
//! For every item the model keeps its `k` strongest neighbours, weighted by cosine
//! co-occurrence over users plus a weight for "chosen right after" transitions in users'
//! chronological sequences (within a short window, nearer steps counting more). At
//! serving time a user's recent items, most recent strongest, vote for their neighbours;
//! this carries the order of a session that a user vector alone does not. Memory grows
//! with items × k, never items².
//!
//! With `ease_lambda > 0` the weights are instead those of EASE (a ridge regression of
//! every item's column on the other items' columns) restricted to each item's `k`
//! most co-occurring items: for target `j` with neighbours `S`, `w = (G_SS + λI)⁻¹ G_Sj`, where `G`
//! counts co-occurring users. Each `G_SS` is assembled from every item's strongest
//! co-occurrence counts (the `4k` strongest; pairs outside them count as 0), so the cost
//! is items × k³ and the memory items × k: EASE's item-item strength on data where it wins, without its
//! items² matrix. `λ` is `ease_lambda` × the mean number of users per item, so one value
//! suits data of any size.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// How neighbours are learned and used.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SequenceParams {
    /// Neighbours kept per item (0 turns the component off).
    pub neighbours: usize,
    /// Transitions counted up to this many steps ahead.
    pub window: usize,
    /// Weight of transitions relative to co-occurrence.
    pub transition_weight: f32,
    /// Each step back in a user's recent items multiplies its vote by this.
    pub recency_decay: f32,
    /// Recent items that vote.
    pub max_recent: usize,
    /// Share of the final score from neighbours (the rest from the collaborative
    /// embedding): 0 = embeddings only, 1 = neighbours only.
    pub blend: f32,
    /// Above 0, neighbour weights are a sparse EASE with this relative regularisation
    /// (see the module docs); 0 keeps co-occurrence and transition weights.
    pub ease_lambda: f32,
}

impl Default for SequenceParams {
    fn default() -> Self {
        SequenceParams {
            neighbours: 100,
            window: 3,
            transition_weight: 1.0,
            recency_decay: 0.8,
            max_recent: 20,
            blend: 0.02,
            ease_lambda: 0.0,
        }
    }
}

/// Per item: `(neighbour, weight)`, strongest first.
pub type Neighbours = Vec<Vec<(u32, f32)>>;

/// Distinct items of one user that count toward co-occurrence: a heavier user counts
/// only their latest this many. Co-occurrence costs the sum of every user's items
/// squared, so on a heavy-tailed store one bot-like account with 100k items would cost
/// more than everyone else together; the cap bounds it (as item-based systems at scale
/// down-sample heavy users) and leaves ordinary users untouched.
pub const MAX_USER_ITEMS: usize = 2_000;

/// `rows` with every user above [`MAX_USER_ITEMS`] cut to their latest distinct items
/// (by `sequences`, chronological), sorted by item; lighter users are borrowed as they are.
fn capped_rows<'a>(rows: &'a [Vec<(u32, f32)>], sequences: &[Vec<u32>]) -> Vec<std::borrow::Cow<'a, [(u32, f32)]>> {
    use std::borrow::Cow;
    rows.par_iter()
        .enumerate()
        .map(|(u, row)| {
            if row.len() <= MAX_USER_ITEMS {
                return Cow::Borrowed(row.as_slice());
            }
            let mut latest: Vec<u32> = Vec::with_capacity(MAX_USER_ITEMS);
            let mut taken = std::collections::HashSet::with_capacity(MAX_USER_ITEMS);
            for &i in sequences.get(u).map_or(&[][..], |s| s.as_slice()).iter().rev() {
                if latest.len() == MAX_USER_ITEMS {
                    break;
                }
                if taken.insert(i) {
                    latest.push(i);
                }
            }
            // Without a sequence (never in practice), the first items by index.
            if latest.is_empty() {
                return Cow::Owned(row[..MAX_USER_ITEMS].to_vec());
            }
            latest.sort_unstable();
            Cow::Owned(latest.iter().filter_map(|i| row.binary_search_by_key(i, |x| x.0).ok().map(|at| row[at])).collect())
        })
        .collect()
}

/// Learns neighbours from per-user distinct item sets (`rows`) and chronological
/// sequences.
pub fn learn(rows: &[Vec<(u32, f32)>], sequences: &[Vec<u32>], n_items: usize, p: &SequenceParams) -> Neighbours {
    if p.neighbours == 0 || n_items == 0 {
        return vec![Vec::new(); n_items];
    }
    let rows = capped_rows(rows, sequences);
    let mut users_of: Vec<Vec<u32>> = vec![Vec::new(); n_items];
    for (u, row) in rows.iter().enumerate() {
        for &(i, _) in row.iter() {
            users_of[i as usize].push(u as u32);
        }
    }
    // Transitions out of each item: (user, position) of its occurrences.
    let mut occurrences: Vec<Vec<(u32, u32)>> = vec![Vec::new(); n_items];
    for (u, seq) in sequences.iter().enumerate() {
        for (pos, &i) in seq.iter().enumerate() {
            occurrences[i as usize].push((u as u32, pos as u32));
        }
    }
    let counts: Vec<f32> = users_of.iter().map(|u| u.len() as f32).collect();
    let steps: Vec<f32> = (0..p.window).map(|s| 1.0 / (s + 1) as f32).collect();
    // Co-occurrence counts kept per item for the sparse EASE (sorted by item).
    let keep_counts = if p.ease_lambda > 0.0 { 4 * p.neighbours } else { 0 };
    // Per item: its neighbour list and its kept co-occurrence counts.
    type Learned = (Vec<(u32, f32)>, Vec<(u32, f32)>);
    let learned: Vec<Learned> = (0..n_items)
        .into_par_iter()
        .map_init(
            || (vec![0.0f32; n_items], vec![0.0f32; n_items], Vec::<u32>::new()),
            |(co, tr, touched), i| {
                for &u in &users_of[i] {
                    for &(j, _) in rows[u as usize].iter() {
                        if j as usize != i {
                            if co[j as usize] == 0.0 && tr[j as usize] == 0.0 {
                                touched.push(j);
                            }
                            co[j as usize] += 1.0;
                        }
                    }
                }
                let mut out_total = 0.0f32;
                for &(u, pos) in &occurrences[i] {
                    let seq = &sequences[u as usize];
                    for (s, w) in steps.iter().enumerate() {
                        let Some(&j) = seq.get(pos as usize + 1 + s) else { break };
                        if j as usize != i {
                            if co[j as usize] == 0.0 && tr[j as usize] == 0.0 {
                                touched.push(j);
                            }
                            tr[j as usize] += w;
                            out_total += w;
                        }
                    }
                }
                let mut raw: Vec<(u32, f32)> = Vec::new();
                let list: Vec<(u32, f32)> = touched
                    .drain(..)
                    .map(|j| {
                        let ju = j as usize;
                        let cos = co[ju] / (counts[i] * counts[ju]).sqrt().max(1.0);
                        // Share of i's next steps that go to j, damped for rare targets.
                        let trans = if out_total > 0.0 { tr[ju] / (out_total * counts[ju].max(1.0)).sqrt() } else { 0.0 };
                        if keep_counts > 0 && co[ju] > 0.0 {
                            raw.push((j, co[ju]));
                        }
                        co[ju] = 0.0;
                        tr[ju] = 0.0;
                        (j, cos + p.transition_weight * trans)
                    })
                    .collect();
                let mut list = strongest(list, p.neighbours);
                if keep_counts > 0 {
                    raw = strongest(raw, keep_counts);
                    // The sparse EASE regresses on the items most often chosen together.
                    list = raw.iter().take(p.neighbours).copied().collect();
                    raw.sort_unstable_by_key(|x| x.0);
                }
                (list, raw)
            },
        )
        .collect();
    let (lists, cooc): (Neighbours, Vec<Vec<(u32, f32)>>) = learned.into_iter().unzip();
    if p.ease_lambda > 0.0 {
        sparse_ease(&lists, &cooc, &counts, p)
    } else {
        lists
    }
}

/// The `k` largest weights of `list`, largest first (ties by item), in a vector of
/// their own size: an item can co-occur with most of the catalogue, and a list cut
/// down in place would keep all of that capacity for the life of the model.
fn strongest(mut list: Vec<(u32, f32)>, k: usize) -> Vec<(u32, f32)> {
    let order = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if list.len() > k {
        list.select_nth_unstable_by(k, order);
        list.truncate(k);
    }
    list.sort_by(order);
    list.shrink_to_fit();
    list
}

/// Re-weights `lists` as a sparse EASE (see the module docs): solves one `k × k` ridge
/// regression per target item over its neighbours, then turns the per-target weights
/// around into per-predictor lists (what a recent item votes for), the `k` largest in
/// magnitude each (EASE's negative weights included: they balance the positive ones).
///
/// Pairs outside every item's `4k` strongest co-occurrence counts count as 0. On sparse
/// data that loses little (on Amazon Beauty, λ = 4 and neighbours alone: HR@10 0.0811
/// against dense EASE's 0.0782); on dense data such as MovieLens it loses much, and the
/// validation search does not choose it there.
fn sparse_ease(lists: &Neighbours, cooc: &[Vec<(u32, f32)>], counts: &[f32], p: &SequenceParams) -> Neighbours {
    let n_items = lists.len();
    let used: Vec<f32> = counts.iter().copied().filter(|&c| c > 0.0).collect();
    let mean = used.iter().sum::<f32>() / used.len().max(1) as f32;
    let lambda = f64::from(p.ease_lambda * mean.max(1.0));
    let pair = |a: u32, b: u32| -> f64 {
        let list = &cooc[a as usize];
        list.binary_search_by_key(&b, |x| x.0).map_or(0.0, |at| f64::from(list[at].1))
    };
    let per_target: Vec<Vec<(u32, f32)>> = (0..n_items)
        .into_par_iter()
        .map(|j| {
            let s: Vec<u32> = lists[j].iter().map(|x| x.0).collect();
            if s.is_empty() {
                return Vec::new();
            }
            let k = s.len();
            let g = faer::Mat::<f64>::from_fn(k, k, |r, c| {
                if r == c {
                    f64::from(counts[s[r] as usize]) + lambda
                } else {
                    // Symmetric counts may be kept on one side only.
                    pair(s[r], s[c]).max(pair(s[c], s[r]))
                }
            });
            let rhs: Vec<f64> = s.iter().map(|&a| pair(a, j as u32).max(pair(j as u32, a))).collect();
            let Some(w) = crate::linalg::cholesky_solve(&g, &rhs) else { return Vec::new() };
            s.iter().zip(w).filter(|(_, w)| *w != 0.0).map(|(&a, w)| (a, w as f32)).collect()
        })
        .collect();
    let mut out: Neighbours = vec![Vec::new(); n_items];
    for (j, weights) in per_target.into_iter().enumerate() {
        for (a, w) in weights {
            out[a as usize].push((j as u32, w));
        }
    }
    out.par_iter_mut().for_each(|list| {
        list.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()).then(a.0.cmp(&b.0)));
        list.truncate(p.neighbours);
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_point_forward_and_cooccurrence_is_symmetric() {
        // Every user goes 0 → 1 → 2; item 3 is unrelated.
        let seqs: Vec<Vec<u32>> = (0..10).map(|_| vec![0, 1, 2]).chain([vec![3]]).collect();
        let rows: Vec<Vec<(u32, f32)>> = seqs.iter().map(|s| {
            let mut r: Vec<(u32, f32)> = s.iter().map(|&i| (i, 1.0)).collect();
            r.sort_by_key(|x| x.0);
            r
        }).collect();
        let n = learn(&rows, &seqs, 4, &SequenceParams::default());
        let w = |a: usize, b: u32| n[a].iter().find(|x| x.0 == b).map_or(0.0, |x| x.1);
        assert!(w(0, 1) > w(1, 0), "forward transition is stronger than backward");
        assert!(w(0, 1) > w(0, 2), "the next step beats two steps ahead");
        assert_eq!(w(0, 3), 0.0);
        assert!(n[3].is_empty());
    }

    #[test]
    fn a_heavy_user_counts_only_their_latest_items() {
        // User 0 had MAX_USER_ITEMS + 2 items in index order: items 0 and 1 are their
        // oldest and fall outside the cap. User 1 had items 0 and 1 only.
        let n_items = MAX_USER_ITEMS + 2;
        let heavy: Vec<u32> = (0..n_items as u32).collect();
        let seqs = vec![heavy.clone(), vec![0, 1]];
        let rows: Vec<Vec<(u32, f32)>> = seqs.iter().map(|s| s.iter().map(|&i| (i, 1.0)).collect()).collect();
        let p = SequenceParams { transition_weight: 0.0, ..SequenceParams::default() };
        let n = learn(&rows, &seqs, n_items, &p);
        let w = |a: usize, b: u32| n[a].iter().find(|x| x.0 == b).map_or(0.0, |x| x.1);
        // Items 0 and 1 co-occur only through user 1: cosine 1 / sqrt(1 · 1).
        assert!((w(0, 1) - 1.0).abs() < 1e-6, "{}", w(0, 1));
        // (Transitions still count the whole sequence; here they weigh nothing.)
        assert!(n[0].iter().all(|&(j, w)| j == 1 || w == 0.0), "the heavy user's latest items do not co-occur with item 0: {:?}", &n[0][..n[0].len().min(5)]);
        // The heavy user's latest items still co-occur with each other.
        let last = &n[n_items - 1];
        assert!(!last.is_empty() && last.iter().all(|&(j, w)| j >= 2 && w > 0.0), "{:?}", &last[..last.len().min(5)]);
    }

    /// Dense EASE for comparison: `B = I − P·diag(1/diag P)`, `P = (XᵀX + λI)⁻¹`.
    fn dense_ease(rows: &[Vec<(u32, f32)>], n: usize, lambda: f64) -> Vec<Vec<f64>> {
        let mut g = faer::Mat::<f64>::zeros(n, n);
        for row in rows {
            for &(a, _) in row {
                for &(b, _) in row {
                    g[(a as usize, b as usize)] += 1.0;
                }
            }
        }
        for i in 0..n {
            g[(i, i)] += lambda;
        }
        // Column j of P = (XᵀX + λI)⁻¹.
        let p: Vec<Vec<f64>> = (0..n)
            .map(|j| crate::linalg::cholesky_solve(&g, &(0..n).map(|i| f64::from(u8::from(i == j))).collect::<Vec<_>>()).unwrap())
            .collect();
        (0..n).map(|i| (0..n).map(|j| if i == j { 0.0 } else { -p[j][i] / p[j][j] }).collect()).collect()
    }

    #[test]
    fn with_every_item_a_neighbour_the_sparse_ease_is_ease() {
        // 6 items, 40 users with overlapping baskets and two who bought everything: every
        // item is every other's neighbour, so the restricted regression is the full one.
        let rows: Vec<Vec<(u32, f32)>> = (0..42u32)
            .map(|u| {
                if u >= 40 {
                    return (0..6).map(|i| (i, 1.0)).collect();
                }
                let mut r: Vec<u32> = vec![u % 6, (u / 2) % 6, (u * 7 + 3) % 6];
                r.sort_unstable();
                r.dedup();
                r.into_iter().map(|i| (i, 1.0)).collect()
            })
            .collect();
        let seqs: Vec<Vec<u32>> = rows.iter().map(|r| r.iter().map(|x| x.0).collect()).collect();
        let p = SequenceParams {
            neighbours: 10,
            ease_lambda: 0.5,
            transition_weight: 0.0,
            ..SequenceParams::default()
        };
        let n = learn(&rows, &seqs, 6, &p);
        let counts: Vec<f64> = (0..6).map(|i| rows.iter().filter(|r| r.iter().any(|x| x.0 == i)).count() as f64).collect();
        let lambda = 0.5 * counts.iter().sum::<f64>() / 6.0;
        let b = dense_ease(&rows, 6, lambda);
        for a in 0..6 {
            for (j, &want) in b[a].iter().enumerate() {
                let got = n[a].iter().find(|x| x.0 == j as u32).map_or(0.0, |x| f64::from(x.1));
                assert!((got - want).abs() < 1e-4, "B[{a}][{j}]: sparse {got} vs dense {want}");
            }
        }
    }
}

//! Item-to-item neighbours: co-occurrence and sequential transitions.
//!
//! For every item the model keeps its `k` strongest neighbours, weighted by cosine
//! co-occurrence over users plus a weight for "chosen right after" transitions in users'
//! chronological sequences (within a short window, nearer steps counting more). At
//! serving time a user's recent items, most recent strongest, vote for their neighbours;
//! this carries the order of a session that a user vector alone does not. Memory grows
//! with items × k, never items².

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
        }
    }
}

/// Per item: `(neighbour, weight)`, strongest first.
pub type Neighbours = Vec<Vec<(u32, f32)>>;

/// Learns neighbours from per-user distinct item sets (`rows`) and chronological
/// sequences.
pub fn learn(rows: &[Vec<(u32, f32)>], sequences: &[Vec<u32>], n_items: usize, p: &SequenceParams) -> Neighbours {
    if p.neighbours == 0 || n_items == 0 {
        return vec![Vec::new(); n_items];
    }
    let mut users_of: Vec<Vec<u32>> = vec![Vec::new(); n_items];
    for (u, row) in rows.iter().enumerate() {
        for &(i, _) in row {
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
    (0..n_items)
        .into_par_iter()
        .map_init(
            || (vec![0.0f32; n_items], vec![0.0f32; n_items], Vec::<u32>::new()),
            |(co, tr, touched), i| {
                for &u in &users_of[i] {
                    for &(j, _) in &rows[u as usize] {
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
                let mut list: Vec<(u32, f32)> = touched
                    .drain(..)
                    .map(|j| {
                        let ju = j as usize;
                        let cos = co[ju] / (counts[i] * counts[ju]).sqrt().max(1.0);
                        // Share of i's next steps that go to j, damped for rare targets.
                        let trans = if out_total > 0.0 { tr[ju] / (out_total * counts[ju].max(1.0)).sqrt() } else { 0.0 };
                        co[ju] = 0.0;
                        tr[ju] = 0.0;
                        (j, cos + p.transition_weight * trans)
                    })
                    .collect();
                list.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                list.truncate(p.neighbours);
                list
            },
        )
        .collect()
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
}

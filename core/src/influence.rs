//! Who moves whom: an influence score per user, and per category the users whose picks
//! their contacts take up (KOL and KOC candidates).
//!
//! Social commerce sells through key opinion leaders (accounts many follow) and key
//! opinion consumers (shoppers whose purchases friends copy). A follower count alone
//! does not tell them from an account everyone follows and nobody listens to; what does
//! is *adoption*: a contact having an item *after* the user had it. So influence is a
//! PageRank on the contact graph in which a user passes their rank to each of their
//! contacts in proportion to `edge weight × (ADOPTION_PRIOR + items adopted from them)`:
//! a follower who copies an account votes for it almost alone, one who never does gives
//! it a sliver. When the events carry no times, an item both had counts half (either may
//! have led). Scores are scaled so the mean user has 1.
//!
//! Per category the score is shared out by where the adoptions fell:
//! `score × (adopted_c + had_c / had) / (adopted + 1)` — an account whose followers copy
//! its cameras is a camera influencer even if it also posts shoes. The top
//! [`MAX_LISTED`] of each category (and of all categories, under `""`) are kept with the
//! model (`influence.bin`), with the follower count that makes one a KOL (many
//! followers) or a KOC (few, but copied).
//!
//! Recommend weighs a contact's votes by `√score` (at least 1): a leader whose picks are
//! copied speaks louder in their followers' lists than an average contact. Only when the
//! events had times: without them an "adoption" is merely an item both had, which the
//! taste similarity of the two users already counts (on LastFM, whose listening counts
//! have no times, weighing votes by it cost 0.0006 of Recall@10).

use std::collections::BTreeMap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ids::UserIdx;
use crate::model::Model;
use crate::social::{SocialGraph, MAX_CONTACTS};

/// Users kept per category, best first: the most a `ListInfluencers` can ask for.
pub const MAX_LISTED: usize = 100;

/// What a contact earns for being a contact at all, against one adopted item: small, so
/// adoption decides where there is any, and the plain graph where there is none.
const ADOPTION_PRIOR: f32 = 0.1;

/// PageRank's damping: the chance a walker follows an edge rather than jumping anywhere.
const DAMPING: f64 = 0.85;

/// One user's first interaction with one item: `(item index, time)` (`None` without one).
pub type FirstSeen = (u32, Option<i64>);

/// A user who moves their contacts, in one category or in all.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Influencer {
    /// The user's index.
    pub user: u32,
    /// Influence in this category (global influence × the category's share).
    pub score: f32,
    /// Users who count them as a contact.
    pub followers: u32,
    /// Items of this category their contacts had after them (halves where times were missing).
    pub adoptions: f32,
    /// Whether their follower count is among the largest (a key opinion leader) rather
    /// than a consumer whose picks are copied (a key opinion consumer).
    pub leader: bool,
}

/// Every user's influence and each category's most influential users.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Influence {
    /// Per user, mean 1 (empty: no graph).
    score: Vec<f32>,
    /// Category (`""` for all) → its top users, best first.
    top: BTreeMap<String, Vec<Influencer>>,
    /// Whether most items shared along an edge had times on both sides, so who had them
    /// first is known: only then do scores weigh votes (without times an adoption is a
    /// shared item, which the taste similarity already counts).
    timed: bool,
}

impl Influence {
    /// Computes influence on `graph` for `n_users` users. `firsts[u]` lists user `u`'s
    /// items with the time each was first had, sorted by item; `category_of(item)`
    /// names an item's category (`""` for none).
    pub fn compute<'c>(graph: &SocialGraph, n_users: usize, firsts: &[Vec<FirstSeen>], category_of: impl Fn(u32) -> &'c str + Sync) -> Influence {
        if graph.is_empty() || n_users == 0 {
            return Influence::default();
        }
        let empty = Vec::new();
        let firsts_of = |u: u32| firsts.get(u as usize).unwrap_or(&empty);
        // Per follower: the share of their rank each contact gets (graph order, summing to
        // 1; empty for a user without contacts), and the
        // adoptions as (contact, category, amount); with counts of all and untimed ones.
        // Nothing per item is kept: at a million users the lists would cost gigabytes.
        type Pass<'a> = (Vec<f32>, Vec<(u32, &'a str, f32)>, usize, usize);
        let passes: Vec<Pass<'c>> = (0..n_users as u32)
            .into_par_iter()
            .map(|f| {
                let mine = firsts_of(f);
                let (mut raw, mut tally, mut untimed, mut all) = (Vec::new(), Vec::new(), 0, 0);
                for c in graph.contacts(UserIdx(f)).iter().take(MAX_CONTACTS) {
                    let mut adopted = 0.0f32;
                    adopted_from(mine, firsts_of(c.user), |item, amount| {
                        adopted += amount;
                        all += 1;
                        untimed += usize::from(amount < 1.0);
                        tally.push((c.user, category_of(item), amount));
                    });
                    raw.push(f64::from(c.weight) * f64::from(ADOPTION_PRIOR + adopted));
                }
                // Shared out in f64: weights up to MAX_EDGE_WEIGHT times many adoptions
                // stay finite, and every share lands in [0, 1].
                let total: f64 = raw.iter().sum();
                let shares = if total > 0.0 && total.is_finite() { raw.iter().map(|&s| (s / total) as f32).collect() } else { Vec::new() };
                (shares, tally, untimed, all)
            })
            .collect();
        let untimed: usize = passes.iter().map(|p| p.2).sum();
        let all: usize = passes.iter().map(|p| p.3).sum();
        let rank = pagerank(graph, n_users, |f| &passes[f as usize].0);
        let score: Vec<f32> = rank.iter().map(|&r| (r * n_users as f64) as f32).collect();

        // Per leader: followers and adoptions by category.
        // Followers count every user who has them as a contact, not only those for whom they
        // are among the strongest MAX_CONTACTS (whose picks carry rank).
        let mut followers = vec![0u32; n_users];
        for f in 0..n_users as u32 {
            for c in graph.contacts(UserIdx(f)) {
                followers[c.user as usize] += 1;
            }
        }
        let mut by_category: Vec<foldhash::HashMap<&str, f32>> = vec![Default::default(); n_users];
        for (_, tally, _, _) in passes {
            for (leader, category, amount) in tally {
                *by_category[leader as usize].entry(category).or_default() += amount;
            }
        }
        let leader_threshold = leader_threshold(&followers);
        let mut top: BTreeMap<String, Vec<Influencer>> = BTreeMap::new();
        for u in 0..n_users {
            if followers[u] == 0 {
                continue;
            }
            let adopted_all: f32 = by_category[u].values().sum();
            let base = Influencer { user: u as u32, score: score[u], followers: followers[u], adoptions: adopted_all, leader: followers[u] >= leader_threshold };
            top.entry(String::new()).or_default().push(base);
            let mut had: foldhash::HashMap<&str, f32> = Default::default();
            for &(i, _) in firsts_of(u as u32) {
                *had.entry(category_of(i)).or_default() += 1.0;
            }
            let n_had = firsts_of(u as u32).len().max(1) as f32;
            let mut categories: Vec<&str> = had.keys().chain(by_category[u].keys()).copied().filter(|c| !c.is_empty()).collect();
            categories.sort_unstable();
            categories.dedup();
            for c in categories {
                let adopted_c = by_category[u].get(c).copied().unwrap_or(0.0);
                let share = (adopted_c + had.get(c).copied().unwrap_or(0.0) / n_had) / (adopted_all + 1.0);
                top.entry(c.to_string()).or_default().push(Influencer { score: score[u] * share, adoptions: adopted_c, ..base });
            }
        }
        for list in top.values_mut() {
            list.sort_unstable_by(|a, b| b.score.total_cmp(&a.score).then(a.user.cmp(&b.user)));
            list.truncate(MAX_LISTED);
        }
        // Timed when adoptions known to follow outnumber shared items without times.
        Influence { score, top, timed: all > 2 * untimed }
    }

    /// Whether there is no score (the model has no social graph).
    pub fn is_empty(&self) -> bool {
        self.score.is_empty()
    }

    /// `user`'s influence (1, the mean, without a graph).
    pub fn score(&self, user: UserIdx) -> f32 {
        self.score.get(user.0 as usize).copied().unwrap_or(1.0)
    }

    /// How much louder `user`'s votes are in their followers' lists: `√score`, at least 1
    /// (1 for everyone when events had no times).
    pub fn vote_factor(&self, user: UserIdx) -> f32 {
        if self.is_empty() || !self.timed {
            1.0
        } else {
            self.score(user).sqrt().max(1.0)
        }
    }

    /// The most influential users in `category` (`""`: in all), best first, at most
    /// [`MAX_LISTED`]; none for a category nobody moves.
    pub fn top(&self, category: &str) -> &[Influencer] {
        self.top.get(category).map_or(&[], Vec::as_slice)
    }

    /// Whether the table fits a model of `n_users` users.
    pub fn fits(&self, n_users: usize) -> bool {
        (self.score.is_empty() || self.score.len() == n_users)
            && self.score.iter().all(|s| s.is_finite() && *s >= 0.0)
            && self.top.values().flatten().all(|i| (i.user as usize) < n_users && i.score.is_finite())
    }
}

impl Model {
    /// The `k` most influential users in `category` (`""`: in all), best first; users
    /// who asked to be forgotten are left out.
    pub fn influencers(&self, category: &str, k: usize) -> Result<Vec<(&str, Influencer)>> {
        if !(1..=MAX_LISTED).contains(&k) {
            return Err(Error::invalid_argument("k", format!("must be between 1 and {MAX_LISTED}, got {k}")));
        }
        if self.influence.is_empty() {
            return Err(Error::FailedPrecondition("the model has no social graph: train it with --social".into()));
        }
        Ok(self
            .influence
            .top(category)
            .iter()
            .filter(|i| !self.is_forgotten(UserIdx(i.user)))
            .take(k)
            .map(|i| (self.users().id(i.user), *i))
            .collect())
    }
}

/// Calls `visit(item, amount)` for each item `mine` had after `theirs` had it (both
/// sorted by item): amount 1, or ½ when either had it without a time.
fn adopted_from(mine: &[FirstSeen], theirs: &[FirstSeen], mut visit: impl FnMut(u32, f32)) {
    let (mut a, mut b) = (mine.iter().peekable(), theirs.iter().peekable());
    while let (Some(&&(i, t_mine)), Some(&&(j, t_theirs))) = (a.peek(), b.peek()) {
        match i.cmp(&j) {
            std::cmp::Ordering::Less => {
                a.next();
            }
            std::cmp::Ordering::Greater => {
                b.next();
            }
            std::cmp::Ordering::Equal => {
                match (t_mine, t_theirs) {
                    (Some(m), Some(t)) if t < m => visit(i, 1.0),
                    (Some(_), Some(_)) => {}
                    _ => visit(i, 0.5),
                }
                a.next();
                b.next();
            }
        }
    }
}

/// The follower count from which a user is a leader: the top 1% of users with any
/// follower, and at least 10.
fn leader_threshold(followers: &[u32]) -> u32 {
    let mut counts: Vec<u32> = followers.iter().copied().filter(|&f| f > 0).collect();
    if counts.is_empty() {
        return u32::MAX;
    }
    let at = counts.len() - 1 - (counts.len() - 1) / 100;
    let (_, &mut nth, _) = counts.select_nth_unstable(at);
    nth.max(10)
}

/// Weighted PageRank: user `f` passes its rank to its contacts (graph order, at most
/// [`MAX_CONTACTS`]) by `shares(f)` (summing to 1; empty: none); users passing nothing
/// spread theirs over everyone. Returns ranks summing to 1.
fn pagerank<'s>(graph: &SocialGraph, n: usize, shares: impl Fn(u32) -> &'s [f32]) -> Vec<f64> {
    let mut rank = vec![1.0 / n as f64; n];
    for _ in 0..50 {
        let dangling: f64 = (0..n as u32).filter(|&f| shares(f).is_empty()).map(|f| rank[f as usize]).sum();
        let base = (1.0 - DAMPING) / n as f64 + DAMPING * dangling / n as f64;
        let mut next = vec![base; n];
        for f in 0..n as u32 {
            let r = rank[f as usize];
            for (c, &share) in graph.contacts(UserIdx(f)).iter().zip(shares(f)) {
                next[c.user as usize] += DAMPING * r * f64::from(share);
            }
        }
        let change: f64 = next.iter().zip(&rank).map(|(a, b)| (a - b).abs()).sum();
        rank = next;
        if change < 1e-9 {
            break;
        }
    }
    rank
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{SocialEdge, SocialKind};
    use crate::ids::IdMap;

    fn follow(a: usize, b: usize) -> SocialEdge {
        SocialEdge { user_id: format!("u{a}"), other_id: format!("u{b}"), kind: SocialKind::Follow, weight: 1.0 }
    }

    #[test]
    fn adoption_needs_the_contact_first_and_counts_half_without_times() {
        let mine = [(1, Some(10)), (2, Some(5)), (3, None), (4, Some(7))];
        let theirs = [(1, Some(3)), (2, Some(9)), (3, Some(1)), (5, Some(0))];
        let mut adopted = Vec::new();
        adopted_from(&mine, &theirs, |i, amount| adopted.push((i, amount)));
        assert_eq!(adopted, vec![(1, 1.0), (3, 0.5)], "2 was mine first, 4 and 5 not shared");
    }

    #[test]
    fn the_copied_account_outranks_the_merely_followed_one() {
        // Users 2..42 follow both 0 and 1; they copy 0's picks (after 0), never 1's.
        let n = 42;
        let edges: Vec<SocialEdge> = (2..n).flat_map(|f| [follow(f, 0), follow(f, 1)]).collect();
        let users = IdMap::from_ids((0..n).map(|u| format!("u{u}")).collect());
        let (graph, _) = SocialGraph::build(&edges, &users);
        let mut firsts = vec![Vec::new(); n];
        firsts[0] = vec![(10, Some(1)), (11, Some(1))];
        firsts[1] = vec![(20, Some(1)), (21, Some(1))];
        for f in firsts.iter_mut().skip(2) {
            *f = vec![(10, Some(5)), (11, Some(6)), (30, Some(2))];
        }
        let category = |i: u32| if i < 20 { "cameras" } else { "shoes" };
        let inf = Influence::compute(&graph, n, &firsts, category);
        assert!(inf.score(UserIdx(0)) > 3.0 * inf.score(UserIdx(1)), "{} vs {}", inf.score(UserIdx(0)), inf.score(UserIdx(1)));
        assert!((inf.score.iter().sum::<f32>() / n as f32 - 1.0).abs() < 1e-3, "mean 1");
        let cams = inf.top("cameras");
        assert_eq!(cams[0].user, 0);
        assert_eq!((cams[0].followers, cams[0].adoptions, cams[0].leader), (40, 80.0, true));
        assert_eq!(inf.top("shoes")[0].user, 1, "only 1 had shoes");
        assert!(inf.top("shoes")[0].score < cams[0].score);
        assert!(inf.top("").iter().all(|i| i.followers > 0), "users nobody follows are not listed");
        assert!(inf.top("jewellery").is_empty());
        assert!(inf.vote_factor(UserIdx(0)) > inf.vote_factor(UserIdx(1)) && inf.vote_factor(UserIdx(1)) >= 1.0);
        assert!(inf.fits(n) && !inf.fits(n + 1));
        assert_eq!(Influence::default().vote_factor(UserIdx(0)), 1.0);
        // The same without times: every shared item half an adoption, no vote weighed.
        let untimed: Vec<Vec<FirstSeen>> = firsts.iter().map(|f| f.iter().map(|&(i, _)| (i, None)).collect()).collect();
        let inf = Influence::compute(&graph, n, &untimed, category);
        assert_eq!(inf.top("cameras")[0].adoptions, 40.0);
        assert_eq!(inf.vote_factor(UserIdx(0)), 1.0);
        // Weights far past the cap are held to it: every score finite, the model
        // loadable, the same leader.
        let heavy: Vec<SocialEdge> = edges.iter().map(|e| SocialEdge { weight: 3e38, ..e.clone() }).collect();
        let (graph, _) = SocialGraph::build(&heavy, &users);
        let inf = Influence::compute(&graph, n, &firsts, category);
        assert!(inf.fits(n) && inf.score.iter().all(|s| s.is_finite()));
        assert_eq!(inf.top("cameras")[0].user, 0);
    }
}

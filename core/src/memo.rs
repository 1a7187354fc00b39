//! Stored users' rankings, kept between requests.
//!
//! A storefront asks for the same user's recommendations on every page they open, and
//! between two of their events nothing that ranks items for them changes: their vector,
//! their recent items' neighbour votes and the items they had are the model's and their
//! live events', all fixed until one of them moves. Scoring the whole catalogue again for
//! each page (a matrix–vector product, a vote tally, a selection) is most of what such a
//! request costs. So the first request for a user keeps the best [`RANKED`] items new to
//! them, by the score the request ranked with, and later requests filter that list
//! instead: the request's own filters (exclusions, categories, availability, rules) still
//! apply item by item, so catalogue changes show at once, and a filter that leaves fewer
//! than `k` of the kept items falls back to scoring everything. The answer is the one a
//! full scoring gives: the kept items are the best of all items new to the user, and
//! filters only take items away.
//!
//! An entry stands for one state of the user: a fingerprint of their live events, whether
//! the stored history counts, and the settings the scores came from. Any change of those
//! misses and ranks afresh. Each loaded model has its own memo (a hot reload starts
//! empty); the memo holds at most a set number of users (the least used go first).

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use crate::ids::ItemIdx;

/// Items kept per user: room for `k` up to 100 under filters that drop most of the list.
pub const RANKED: usize = 256;

/// Users kept by default: about 3 KiB each, so at most ~100 MiB.
pub const DEFAULT_USERS: usize = 32_768;

/// What one user's kept ranking stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StateKey(u64);

impl StateKey {
    /// The key of everything in `state` (the caller names what a ranking depends on).
    pub(crate) fn of(state: impl Hash) -> StateKey {
        let mut h = foldhash::fast::FixedState::with_seed(0x6d656d6f).build_hasher();
        state.hash(&mut h);
        StateKey(h.finish())
    }
}

/// One user's best items new to them, best first, as (score, item).
#[derive(Debug)]
pub(crate) struct Ranking {
    pub(crate) state: StateKey,
    pub(crate) items: Vec<(f32, ItemIdx)>,
    /// Per kept item, the recent item its reason names, found when first asked (see
    /// [`Ranking::because`]).
    because: Vec<AtomicU32>,
    /// Whether `items` holds every item new to the user (a catalogue smaller than
    /// [`RANKED`] plus their history): then a short filtered list is the whole answer.
    pub(crate) complete: bool,
}

/// [`Ranking::because`] not yet found.
const UNSET: u32 = u32::MAX;
/// [`Ranking::because`] found: no recent item to name.
const NONE: u32 = u32::MAX - 1;

impl Ranking {
    /// A ranking of `items` (best first) for `state`.
    pub(crate) fn new(state: StateKey, items: Vec<(f32, ItemIdx)>, complete: bool) -> Ranking {
        let because = items.iter().map(|_| AtomicU32::new(UNSET)).collect();
        Ranking { state, items, because, complete }
    }

    /// The recent item the reason of the kept item at `at` names: `find`'s answer,
    /// found once per kept item (the recent items are part of the state).
    pub(crate) fn because(&self, at: usize, find: impl FnOnce() -> Option<ItemIdx>) -> Option<ItemIdx> {
        let Some(slot) = self.because.get(at) else { return find() };
        match slot.load(Ordering::Relaxed) {
            UNSET => {
                let found = find();
                slot.store(found.map_or(NONE, |i| i.0), Ordering::Relaxed);
                found
            }
            NONE => None,
            i => Some(ItemIdx(i)),
        }
    }
}

/// How a model's memo has done since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoStats {
    /// Users with a kept ranking now.
    pub kept: usize,
    /// Requests answered from a kept ranking.
    pub hits: u64,
    /// Requests the memo could have answered that were scored: nothing kept for the
    /// user's state (it is ranked and kept now), or filters that left too few of the
    /// kept items.
    pub misses: u64,
}

/// The kept rankings of one model, by user index.
pub(crate) struct RankingMemo {
    cache: Option<quick_cache::sync::Cache<u32, Arc<Ranking>>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl RankingMemo {
    /// A memo for at most `users` users; 0 keeps none.
    pub(crate) fn new(users: usize) -> RankingMemo {
        RankingMemo {
            cache: (users > 0).then(|| quick_cache::sync::Cache::new(users)),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Whether rankings are kept at all.
    pub(crate) fn is_on(&self) -> bool {
        self.cache.is_some()
    }

    /// The user's kept ranking, if it stands for `state`.
    pub(crate) fn get(&self, user: u32, state: StateKey) -> Option<Arc<Ranking>> {
        self.cache.as_ref()?.get(&user).filter(|r| r.state == state)
    }

    /// Counts one request the memo could have answered: a hit when a kept ranking did.
    pub(crate) fn count(&self, hit: bool) {
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Keeps `ranking` for `user`, replacing any older one.
    pub(crate) fn put(&self, user: u32, ranking: Arc<Ranking>) {
        if let Some(c) = &self.cache {
            c.insert(user, ranking);
        }
    }

    /// Drops `user`'s kept ranking, if any.
    pub(crate) fn forget(&self, user: u32) {
        if let Some(c) = &self.cache {
            c.remove(&user);
        }
    }

    /// How many users have a kept ranking.
    pub(crate) fn len(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.len())
    }

    /// Kept users, hits and misses so far.
    pub(crate) fn stats(&self) -> MemoStats {
        MemoStats { kept: self.len(), hits: self.hits.load(Ordering::Relaxed), misses: self.misses.load(Ordering::Relaxed) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_ranking_answers_only_for_its_state_and_none_are_kept_when_off() {
        let (a, b) = (StateKey::of(("u", 1)), StateKey::of(("u", 2)));
        assert_ne!(a, b);
        assert_eq!(a, StateKey::of(("u", 1)));
        let memo = RankingMemo::new(4);
        memo.put(7, Arc::new(Ranking::new(a, vec![(1.0, ItemIdx(3))], true)));
        assert!(memo.get(7, a).is_some() && memo.get(7, b).is_none() && memo.get(8, a).is_none());
        memo.put(7, Arc::new(Ranking::new(b, Vec::new(), true)));
        assert!(memo.get(7, a).is_none() && memo.get(7, b).is_some());
        memo.forget(7);
        assert!(memo.get(7, b).is_none() && memo.len() == 0);
        memo.count(true);
        memo.count(false);
        memo.count(false);
        assert_eq!(memo.stats(), MemoStats { kept: 0, hits: 1, misses: 2 });
        let off = RankingMemo::new(0);
        off.put(7, Arc::new(Ranking::new(a, Vec::new(), true)));
        assert!(!off.is_on() && off.get(7, a).is_none() && off.len() == 0);
    }

    #[test]
    fn a_reason_is_found_once_per_kept_item() {
        let r = Ranking::new(StateKey::of(1), vec![(1.0, ItemIdx(3)), (0.5, ItemIdx(4))], true);
        let calls = std::cell::Cell::new(0);
        let find = |found| {
            calls.set(calls.get() + 1);
            found
        };
        assert_eq!(r.because(0, || find(Some(ItemIdx(9)))), Some(ItemIdx(9)));
        assert_eq!(r.because(0, || find(None)), Some(ItemIdx(9)));
        assert_eq!(r.because(1, || find(None)), None);
        assert_eq!(r.because(1, || find(Some(ItemIdx(2)))), None);
        assert_eq!(calls.get(), 2);
    }
}
